"""ControlNets: loading the models, and running several per request, each with its own weight,
denoising window and control mode.

Control modes (A1111's names in brackets):
- `balanced`: the standard residuals ("Balanced").
- `controlnet`: guess-mode conditioning ("ControlNet is more important"): the residuals act on
  the prompt-conditioned half of the CFG batch only, scaled from 0.1 at the shallowest block up
  to 1 at the middle block, as diffusers' `guess_mode` does.
- `prompt`: the residuals are scaled down progressively toward the shallow layers, 0.825 per
  block from the middle block (x1) outwards ("My prompt is more important").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, MultiControlNetModel  # the top-level import: trap 6

from kiln.errors import ModelLoadError
from kiln.generation import ControlMode, ControlNetInput, GenerationRequest, ModelSpec

PROMPT_MODE_DECAY = 0.825


class ModedMultiControlNet(MultiControlNetModel):
    """Several ControlNets whose summed residuals each follow their own control mode.

    `guidance` says whether the pipeline batches [unconditional, conditional] for CFG.
    """

    def __init__(self, nets: list[ControlNetModel], modes: list[ControlMode], guidance: bool) -> None:
        super().__init__(nets)
        self.modes = list(modes)
        self.guidance = guidance

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor,
                controlnet_cond: list[torch.Tensor], conditioning_scale: list[float],
                return_dict: bool = True, **kwargs: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        kwargs.pop("guess_mode", None)  # per net, below
        total_down: list[torch.Tensor] | None = None
        total_mid: torch.Tensor | None = None
        for image, scale, net, mode in zip(controlnet_cond, conditioning_scale, self.nets, self.modes, strict=True):
            down, mid = net(sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                            controlnet_cond=image, conditioning_scale=scale, return_dict=False, **kwargs)
            down, mid = self._apply_mode(mode, list(down), mid)
            if total_down is None:
                total_down, total_mid = down, mid
            else:
                total_down = [a + b for a, b in zip(total_down, down, strict=True)]
                total_mid = total_mid + mid
        assert total_down is not None and total_mid is not None
        return total_down, total_mid

    def _apply_mode(
        self, mode: ControlMode, down: list[torch.Tensor], mid: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if mode == "balanced":
            return down, mid
        count = len(down)
        if mode == "prompt":
            scales = [PROMPT_MODE_DECAY ** (count - i) for i in range(count)]
        else:  # "controlnet"
            scales = torch.logspace(-1, 0, count + 1).tolist()[:count]
        down = [residual * factor for residual, factor in zip(down, scales, strict=True)]
        if mode == "controlnet" and self.guidance:
            half = mid.shape[0] // 2  # diffusers batches [unconditional, conditional]
            down = [torch.cat([torch.zeros_like(r[:half]), r[half:]]) for r in down]
            mid = torch.cat([torch.zeros_like(mid[:half]), mid[half:]])
        return down, mid


def control_call_kwargs(request: GenerationRequest, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` plus the guide images, weights and windows of `request`'s ControlNets.

    Text-to-image pipelines take the guides as `image`; image-to-image and inpainting ones
    as `control_image` (their `image` is the seed image).
    """
    controls: tuple[ControlNetInput, ...] = request.controlnets
    if not controls:
        return kwargs
    guide_key = "image" if request.mode == "text" else "control_image"
    return {
        **kwargs,
        guide_key: [control.guide_image for control in controls],
        "controlnet_conditioning_scale": [control.weight for control in controls],
        "control_guidance_start": [control.start for control in controls],
        "control_guidance_end": [control.end for control in controls],
    }


def load_controlnet(model: ModelSpec, device: str, dtype: torch.dtype) -> ControlNetModel:
    """The ControlNet of `model` (a diffusers folder or a single file) on `device`; raises
    ModelLoadError (parameter `controlNet`) naming the model when it cannot be loaded."""
    path = Path(model.path)
    try:
        if path.is_dir():
            controlnet = ControlNetModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        else:
            controlnet = ControlNetModel.from_single_file(str(path), torch_dtype=dtype, local_files_only=True)
        return controlnet.to(device)
    except Exception as exc:  # unreadable file, missing config, wrong layout
        raise ModelLoadError(
            f"ControlNet {model.air} could not be loaded from {path}: {type(exc).__name__}: {exc}",
            parameter="controlNet", air=model.air,
        ) from exc
