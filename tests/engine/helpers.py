"""Shared test records: the tiny models' specs and a small, fast request."""

from __future__ import annotations

from dataclasses import dataclass, replace

from kiln.generation import GenerationRequest, ModelSpec


@dataclass(frozen=True)
class TinyModels:
    """Specs of the tiny demo models built once per test session."""

    sd: ModelSpec
    sdxl: ModelSpec
    sd_single_file: ModelSpec
    sdxl_single_file: ModelSpec


def make_request(model: ModelSpec, **changes: object) -> GenerationRequest:
    """A 64 px, 2-step, CFG 7 request for seed 1; keyword arguments override its fields."""
    base = GenerationRequest(
        model=model,
        positive_prompt="the cat and the dog",
        negative_prompt=None,
        width=64,
        height=64,
        steps=2,
        cfg_scale=7.0,
        clip_skip=0,
        scheduler=None,
        seeds=(1,),
    )
    return replace(base, **changes)  # type: ignore[arg-type]
