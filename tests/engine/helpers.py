"""Shared test records: the tiny models' specs, a small, fast request, and a counter of text
encoder passes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kiln.engine import Engine
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


def text_encoder_passes(engine: Engine, requests: list[GenerationRequest]) -> int:
    """How many times `generate_batch(requests)` runs the text encoders of their (one) model."""
    pipe = engine.pipeline(requests[0].model)
    encoders = [module for name, module in pipe.components.items()
                if name.startswith("text_encoder") and module is not None]
    passes = 0

    def counted(forward: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal passes
            passes += 1
            return forward(*args, **kwargs)
        return run

    for encoder in encoders:
        encoder.forward = counted(encoder.forward)
    try:
        results = engine.generate_batch(requests)
    finally:
        for encoder in encoders:
            del encoder.forward  # the class's own again
    assert all(not isinstance(result, Exception) for result in results), results
    return passes
