"""How a batch of one-seed requests becomes pipeline calls: which requests share a pipeline
view (`setup_key`), which of those share a call (`call_key`), and the arguments of that call
(`batched_kwargs`)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from diffusers import DiffusionPipeline

from kiln.generation import GenerationRequest

if TYPE_CHECKING:
    from .refiner import Refinement

PER_IMAGE_INPUTS = frozenset({
    "prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds",
    "image", "mask_image", "control_image", "ip_adapter_image_embeds",
})
"""Pipeline arguments that differ per image of a call; every other argument is shared."""


@dataclass
class Unit:
    """One request of a batch, ready to run: its position, its solo pipeline arguments and,
    with a refiner, those of the refiner stage."""

    index: int
    request: GenerationRequest
    kwargs: dict[str, Any]
    refine: Refinement | None = None


def setup_key(request: GenerationRequest) -> Hashable:
    """What requests must share to run on one pipeline view (with its VAE and refiner) with one
    LoRA and embedding state."""
    return (
        request.model,
        request.mode,
        request.scheduler,
        request.cfg_scale > 1,  # ModedMultiControlNet's guidance
        tuple((control.model, control.control_mode) for control in request.controlnets),
        request.loras,
        request.vae,
        request.embeddings,
        request.refiner,
        tuple((adapter.model, adapter.weight) for adapter in request.ip_adapters),  # loaded and scaled
    )


def call_key(kwargs: dict[str, Any], refine: dict[str, Any] | None = None) -> Hashable:
    """Requests whose keys are equal can share a pipeline call: the same shared arguments and
    per-image tensors of the same shapes, in the call and in its refiner stage's (`refine`)."""
    shared = tuple(sorted(
        (name, tuple(value) if isinstance(value, list) else value)
        for name, value in kwargs.items() if name not in PER_IMAGE_INPUTS
    ))
    shapes = tuple(
        (name, _shapes(value)) for name, value in sorted(kwargs.items())
        if name in PER_IMAGE_INPUTS or isinstance(value, torch.Tensor)
    )
    return shared, shapes, None if refine is None else call_key(refine)


def _shapes(value: Any) -> Hashable:
    """The shape of a tensor, of each tensor of a list (IP-Adapter embeddings), else None."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, list) and all(isinstance(item, torch.Tensor) for item in value):
        return tuple(tuple(item.shape) for item in value)
    return None


def batched_kwargs(pipe: DiffusionPipeline, units: list[Unit]) -> dict[str, Any]:
    """The arguments of one call for `units`: embeddings concatenated, seed and mask images as
    lists, each ControlNet's guides as one tensor of the batch, preprocessed as the pipeline
    would preprocess each guide (not every ControlNet pipeline takes nested lists; a pipeline of
    one ControlNet takes the guides as a list), and each IP-Adapter's image embeddings as the
    pipeline splits them: every unconditional half first, then every conditional one."""
    if len(units) == 1:
        return units[0].kwargs
    kwargs = dict(units[0].kwargs)
    # SD's ControlNet pipelines have their own processor; FLUX's and SD3's use the VAE's
    processor = getattr(pipe, "control_image_processor", None) or pipe.image_processor
    for name, value in units[0].kwargs.items():
        if name not in PER_IMAGE_INPUTS or value is None:
            continue
        values = [unit.kwargs[name] for unit in units]
        if name == "ip_adapter_image_embeds":
            halves = 2 if kwargs["guidance_scale"] > 1 else 1
            kwargs[name] = [
                torch.cat([embeds.chunk(halves)[part] for part in range(halves) for embeds in per_adapter])
                for per_adapter in zip(*values, strict=True)
            ]
        elif isinstance(value, torch.Tensor):
            kwargs[name] = torch.cat(values)
        elif isinstance(value, list):  # [per net] guide images
            kwargs[name] = [
                processor.preprocess(
                    list(guides), height=kwargs.get("height"), width=kwargs.get("width")
                ).to(dtype=torch.float32)
                for guides in zip(*values, strict=True)
            ]
        else:
            kwargs[name] = values
    return kwargs
