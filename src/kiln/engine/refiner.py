"""SDXL's ensemble of experts: the base model denoises the noisiest part of the schedule and hands
its latents to a refiner, an image-to-image pipeline that denoises the rest and decodes them.

Both stages run batched: one base call for the units of a call, then one refiner call for the
latents it returned, each image with its own generator carried from one stage to the next.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from kiln.errors import InvalidRequestError
from kiln.generation import GenerationRequest

from .devices import set_vae_tiling
from .grouping import Unit, batched_kwargs


@dataclass
class Refinement:
    """The refiner stage of one unit: the refiner's view and the unit's arguments for it."""

    pipe: DiffusionPipeline
    kwargs: dict[str, Any]


def check_refinable(pipe: DiffusionPipeline) -> None:
    """Raise InvalidRequestError (`refiner`) when the base pipeline cannot stop part-way
    (diffusers' SDXL ControlNet image-to-image pipeline has no `denoising_end`)."""
    if "denoising_end" not in inspect.signature(pipe.__call__).parameters:
        raise InvalidRequestError(
            f"a refiner cannot follow {type(pipe).__name__}: send the request without 'refiner', "
            "or without ControlNets",
            code="invalidRefiner", parameter="refiner",
        )


def ensemble_kwargs(
    request: GenerationRequest, kwargs: dict[str, Any], refiner_prompts: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The base call's arguments (`kwargs` stopped at the refiner's start, returning latents)
    and the refiner call's (its own prompt embeddings, the same schedule from that point)."""
    assert request.refiner is not None
    start = request.refiner.start
    base = {**kwargs, "denoising_end": start, "output_type": "latent"}
    refine = {
        **refiner_prompts,
        "num_inference_steps": kwargs["num_inference_steps"],
        "guidance_scale": kwargs["guidance_scale"],
        "denoising_start": start,
        "output_type": "pil",
    }
    return base, refine


def refine(
    units: list[Unit], latents: torch.Tensor, generator: Any, callback: Any, tiling_pixels: int
) -> list[Image.Image]:
    """Run the refiner once over the base call's `latents` for `units` (each with its
    `Refinement`); the decoded images, in order."""
    first = units[0]
    assert first.refine is not None
    pipe = first.refine.pipe
    stage = [Unit(unit.index, unit.request, unit.refine.kwargs) for unit in units if unit.refine is not None]
    set_vae_tiling(pipe.vae, first.request.width, first.request.height, tiling_pixels)
    images: list[Image.Image] = pipe(
        **batched_kwargs(pipe, stage), image=latents, generator=generator, callback_on_step_end=callback
    ).images
    return images
