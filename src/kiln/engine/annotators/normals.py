"""normalbae: surface normals from a Marigold normals model (diffusers `MarigoldNormalsPipeline`
folder, e.g. prs-eth/marigold-normals-v1-1), coloured as ControlNet 1.1's normalbae model expects.

Colour convention. Marigold predicts unit normals with +X right, +Y up and +Z towards the viewer
(diffusers' `MarigoldImageProcessor.visualize_normals`). ControlNet 1.1 normalbae was trained on
Bae et al.'s estimator, whose maps follow "blue is front, red is left, green is top" (the
ControlNet 1.1 README), coloured `((normal + 1) * 0.5) * 255` as in controlnet_aux's
NormalBaeDetector. Only X differs, so the colour is that of (-x, y, z), i.e. `visualize_normals`
with `flip_x=True`:

    facing the camera (0, 0, 1)  -> (127, 127, 255), the bluish lavender of normalbae maps
    facing right      (1, 0, 0)  -> (0, 127, 127)
    facing left      (-1, 0, 0)  -> (255, 127, 127)
    facing up         (0, 1, 0)  -> (127, 255, 127)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import MarigoldNormalsPipeline
from diffusers.pipelines.marigold import MarigoldImageProcessor
from PIL import Image

from kiln.engine.annotators.loading import AnnotatorOptions, load_once
from kiln.engine.residency import Residency

_SEED = 0


@dataclass
class _NormalsModel:
    pipeline: MarigoldNormalsPipeline
    lock: threading.Lock = field(default_factory=threading.Lock)
    """A pipeline call mutates its scheduler's timesteps: one call at a time per pipeline."""


def load(path: str, device: str) -> _NormalsModel:
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipeline = MarigoldNormalsPipeline.from_pretrained(path, local_files_only=True, dtype=dtype)
    config = pipeline.config
    # A Stable Diffusion folder has the same component names and would load, then fail (or
    # produce nonsense) at the first call; the Marigold config fields tell them apart.
    if config.prediction_type != "normals":
        raise ValueError(
            "not a Marigold normals pipeline (model_index.json has prediction_type "
            f"{config.prediction_type!r}, expected 'normals')"
        )
    if not config.default_denoising_steps or not config.default_processing_resolution:
        raise ValueError(
            "model_index.json lacks default_denoising_steps or default_processing_resolution"
        )
    pipeline.set_progress_bar_config(disable=True)
    return _NormalsModel(pipeline.to(device))


def normalbae_image(normals: np.ndarray) -> Image.Image:
    """The normalbae-coloured RGB image of Marigold `normals` (an H x W x 3 array in [-1, 1],
    +X right, +Y up, +Z towards the viewer): each pixel is `((-x, y, z) + 1) * 0.5 * 255`,
    truncated to uint8 as controlnet_aux does (see the module docstring)."""
    # a copy: visualize_normals flips X in place, in the array it is given
    return MarigoldImageProcessor.visualize_normals(
        np.array(normals, dtype=np.float32), flip_x=True
    )[0]


def estimate_normals(
    path: str, image: Image.Image, device: str, _: AnnotatorOptions,
    residency: Residency | None = None,
) -> Image.Image:
    """The normalbae guide image of `image` from the Marigold normals pipeline in folder `path`:
    an RGB image of `image`'s size, coloured as described in the module docstring.

    Runs the model's own number of denoising steps and processing resolution, one ensemble
    member, from a fixed seed: the same image and model give the same bytes.
    """
    model = load_once("normalbae", path, device, load, residency)
    with model.lock, torch.inference_mode():
        prediction = model.pipeline(
            image.convert("RGB"),
            ensemble_size=1,
            match_input_resolution=True,
            generator=torch.Generator("cpu").manual_seed(_SEED),
            output_type="np",
        ).prediction
    return normalbae_image(prediction[0])
