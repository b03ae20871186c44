"""The plain, validated request that crosses from the service layer to the engine.

Nothing here imports torch: the service builds these records, the engine consumes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Architecture = Literal["sd1x", "sdxl", "flux", "sd3"]
Mode = Literal["text", "image", "inpaint"]
"""text-to-image; image-to-image (`init_image` + `strength`); inpainting (`init_image` +
`mask_image`). Outpainting reaches the engine as inpainting of a padded image."""
ControlMode = Literal["balanced", "prompt", "controlnet"]
PromptWeighting = Literal["compel", "sdEmbeds"]


@dataclass(frozen=True)
class ModelSpec:
    """Where a checkpoint lives and how to load it.

    `path` is a diffusers folder or a single-file `.safetensors` checkpoint. For a single file,
    `config_path` names a local diffusers folder holding the configs and tokenizer(s) (weights not
    needed); when None the engine uses the config folder it ships for `architecture`. For a FLUX
    transformer file, `config_path` is a complete FLUX diffusers folder: its text encoders,
    tokenizers, VAE and scheduler run with the file's transformer.
    """

    air: str
    architecture: Architecture
    path: str
    config_path: str | None = None


@dataclass(frozen=True)
class ControlNetInput:
    """One ControlNet of a request. `start`/`end` are fractions of the denoising (0-1)."""

    model: ModelSpec
    guide_image: Any  # PIL.Image.Image (RGB), already decoded
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    control_mode: ControlMode = "balanced"


@dataclass(frozen=True)
class LoraInput:
    """One LoRA of a request, with its (already normalised) weight."""

    model: ModelSpec
    weight: float


@dataclass(frozen=True)
class EmbeddingInput:
    """One textual-inversion embedding of a request: its vectors, times `weight`, stand wherever
    `trigger` appears in a prompt as a whole word, in any case (see `trigger_pattern`)."""

    model: ModelSpec
    trigger: str
    weight: float = 1.0


@dataclass(frozen=True)
class IpAdapterInput:
    """One IP-Adapter of a request: an image prompt. `model.path` holds the adapter's weights and
    `model.config_path` the folder of the CLIP image encoder it was trained with; the encoder's
    embeddings of `guide_images` (one or more, their tokens side by side) steer the
    cross-attention with scale `weight` (0: no effect)."""

    model: ModelSpec
    guide_images: tuple[Any, ...]  # PIL.Image.Image (RGB), already decoded
    weight: float = 1.0


@dataclass(frozen=True)
class RefinerInput:
    """An SDXL refiner that takes over the denoising at `start` (a fraction, 0-1) of the steps:
    the base model denoises up to it and hands its latents over (ensemble of experts)."""

    model: ModelSpec
    start: float


def trigger_pattern(trigger: str) -> re.Pattern[str]:
    """`trigger` as a whole word (no letter, digit or `_` on either side), in any case."""
    return re.compile(rf"(?<!\w){re.escape(trigger)}(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class GenerationRequest:
    """One text-to-image generation: one image per entry of `seeds`, in that order.

    `scheduler` is a Runware scheduler name (see `kiln.schedulers`) or None for the model's own.
    `clip_skip` counts CLIP layers skipped from the end (0 = last layer). `vae` replaces the
    model's VAE (of the same architecture); `embeddings` add textual-inversion tokens to the
    prompts; `refiner` finishes the denoising with an SDXL refiner; `ip_adapters` add image
    prompts (SD 1.x and SDXL).
    """

    model: ModelSpec
    positive_prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    cfg_scale: float
    clip_skip: int
    scheduler: str | None
    seeds: tuple[int, ...]
    mode: Mode = "text"
    init_image: Any = None  # PIL.Image.Image (RGB) of width x height, for image and inpaint
    mask_image: Any = None  # PIL.Image.Image ("L") of width x height; white repaints
    strength: float = 0.8
    prompt_weighting: PromptWeighting | None = None
    controlnets: tuple[ControlNetInput, ...] = ()
    loras: tuple[LoraInput, ...] = ()
    vae: ModelSpec | None = None
    embeddings: tuple[EmbeddingInput, ...] = ()
    refiner: RefinerInput | None = None
    ip_adapters: tuple[IpAdapterInput, ...] = ()
