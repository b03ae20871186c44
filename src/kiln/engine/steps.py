"""Step reports from inside a pipeline call: a `callback_on_step_end` that tells a
`StepListener` each image's step, with a cheap preview of its latents."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from kiln.generation import Architecture
from kiln.progress import StepListener, StepProgress

PREVIEW_PX = 64
"""The longest side of a preview; smaller latents keep their own size (1/8 of the image)."""

RGB = tuple[float, float, float]

LATENT_RGB: dict[Architecture, tuple[tuple[RGB, ...], RGB]] = {
    # (R, G, B) weights of each latent channel, and the bias: the "latent2rgb" previews of
    # ComfyUI (comfy/latent_formats.py), fitted on each architecture's VAE
    "sd1x": (
        ((0.3512, 0.2297, 0.3227),
         (0.3250, 0.4974, 0.2350),
         (-0.2829, 0.1762, 0.2721),
         (-0.2120, -0.2616, -0.7177)),
        (0.0, 0.0, 0.0),
    ),
    "sdxl": (
        ((0.3651, 0.4232, 0.4341),
         (-0.2533, -0.0042, 0.1068),
         (0.1076, 0.1111, -0.0362),
         (-0.3165, -0.2492, -0.2188)),
        (0.1084, -0.0175, -0.0011),
    ),
}
"""Per architecture, a fixed linear map from the pipeline's (scaled) latents to RGB in [-1, 1]."""


def latent_preview(latents: torch.Tensor, architecture: Architecture) -> Image.Image | None:
    """An RGB approximation of what one image's latents ([channels, h, w]) decode to, at most
    `PREVIEW_PX` on its longer side; None for latents of another channel count, and for
    architectures without a map (FLUX and SD3: 16-channel latents, FLUX's packed)."""
    if architecture not in LATENT_RGB:
        return None
    weights, bias = LATENT_RGB[architecture]
    if latents.ndim != 3 or latents.shape[0] != len(weights):
        return None
    x = latents.detach().float()
    height, width = x.shape[1:]
    scale = PREVIEW_PX / max(height, width)
    if scale < 1:  # average first: 4 channels of a few thousand pixels cost nothing to map
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = torch.nn.functional.interpolate(x[None], size=size, mode="area")[0]
    rgb = torch.einsum("chw,cr->hwr", x, torch.tensor(weights, device=x.device))
    rgb = rgb + torch.tensor(bias, device=x.device)
    pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(pixels)


class StepReporter:
    """The `callback_on_step_end` of the pipeline calls that denoise the images `indices`
    (their positions in the engine's batch, in call order) for requests of `steps` steps: one
    call, or consecutive stages of one schedule (a base model, then its refiner).

    The images denoise from the first call's first timestep to the end of the schedule, so
    they run that share of `steps` (all of them in text mode, fewer where the image modes skip
    the start); each step is reported once, when the sampler's iterations (more than steps
    for some samplers) reach it. Apart from locating the first timestep (one read of the
    device), it reads only Python numbers until a listener asks for a preview.
    """

    def __init__(self, indices: Sequence[int], architecture: Architecture, steps: int,
                 listener: StepListener) -> None:
        self._indices = tuple(indices)
        self._architecture = architecture
        self._steps = steps
        self._listener = listener
        self._total = 0  # iterations of the whole schedule
        self._remaining = 0  # iterations from the first one run to the end of the schedule
        self._ran = 0  # iterations run so far, over every call
        self._reported = 0

    def __call__(self, pipe: DiffusionPipeline, iteration: int, timestep: Any,
                 tensors: dict[str, Any]) -> dict[str, Any]:
        if not self._total:
            schedule = pipe.scheduler.timesteps
            self._total = len(schedule)
            self._remaining = self._total - _position(schedule, timestep, pipe.num_timesteps)
        self._ran += 1
        steps = max(1, round(self._steps * self._remaining / self._total))
        step = min(steps, self._ran * steps // self._remaining)
        if step > self._reported:
            self._reported = step
            latents = tensors["latents"]
            for position, index in enumerate(self._indices):
                preview = partial(latent_preview, latents[position], self._architecture)
                self._listener(StepProgress(index, step, steps, preview))
        return tensors


def _position(schedule: torch.Tensor, timestep: Any, iterations: int) -> int:
    """Where a call of `iterations` that starts at `timestep` starts in `schedule`: where it
    runs to the end if `timestep` is there (PNDM repeats a timestep), else its first place."""
    places = (schedule == torch.as_tensor(timestep, device=schedule.device)).nonzero().flatten().tolist()
    to_the_end = len(schedule) - iterations
    return to_the_end if to_the_end in places or not places else places[0]
