"""The plain, validated request that crosses from the service layer to the engine.

Nothing here imports torch: the service builds these records, the engine consumes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Architecture = Literal["sd1x", "sdxl"]


@dataclass(frozen=True)
class ModelSpec:
    """Where a checkpoint lives and how to load it.

    `path` is a diffusers folder or a single-file `.safetensors` checkpoint. For a single file,
    `config_path` names a local diffusers folder holding the configs and tokenizer(s) (weights not
    needed); when None the engine uses the config folder it ships for `architecture`.
    """

    air: str
    architecture: Architecture
    path: str
    config_path: str | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """One text-to-image generation: one image per entry of `seeds`, in that order.

    `scheduler` is a Runware scheduler name (see `kiln.schedulers`) or None for the model's own.
    `clip_skip` counts CLIP layers skipped from the end (0 = last layer).
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
