"""Which diffusers pipeline class serves a request: architecture × mode × ControlNet.

Every variant shares the cached components of the model through `from_pipe`.
"""

from __future__ import annotations

import diffusers
from diffusers import DiffusionPipeline

from kiln.generation import Architecture, Mode

_CLASS_NAMES: dict[tuple[Architecture, Mode, bool], str] = {
    ("sd1x", "text", False): "StableDiffusionPipeline",
    ("sd1x", "image", False): "StableDiffusionImg2ImgPipeline",
    ("sd1x", "inpaint", False): "StableDiffusionInpaintPipeline",
    ("sd1x", "text", True): "StableDiffusionControlNetPipeline",
    ("sd1x", "image", True): "StableDiffusionControlNetImg2ImgPipeline",
    ("sd1x", "inpaint", True): "StableDiffusionControlNetInpaintPipeline",
    ("sdxl", "text", False): "StableDiffusionXLPipeline",
    ("sdxl", "image", False): "StableDiffusionXLImg2ImgPipeline",
    ("sdxl", "inpaint", False): "StableDiffusionXLInpaintPipeline",
    ("sdxl", "text", True): "StableDiffusionXLControlNetPipeline",
    ("sdxl", "image", True): "StableDiffusionXLControlNetImg2ImgPipeline",
    ("sdxl", "inpaint", True): "StableDiffusionXLControlNetInpaintPipeline",
}


def pipeline_class(architecture: Architecture, mode: Mode, controlnet: bool) -> type[DiffusionPipeline]:
    """The pipeline class for this combination (every combination has one)."""
    return getattr(diffusers, _CLASS_NAMES[(architecture, mode, controlnet)])
