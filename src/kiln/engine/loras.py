"""LoRA adapters: loaded once into a resident pipeline, activated per batch.

Adapters stay unfused and are switched with `set_adapters`, which costs nothing measurable and,
unlike `fuse_lora`/`unfuse_lora`, never leaves a scale behind in the base weights. diffusers
reads both the diffusers (PEFT) and the kohya `.safetensors` layouts.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from diffusers import DiffusionPipeline

from kiln.errors import ModelLoadError
from kiln.generation import LoraInput, ModelSpec

from .residency import Lease, Residency, file_bytes


class LoraAdapters:
    """The LoRAs loaded into the resident pipelines, at most `per_model` per pipeline.

    Each adapter is an entry of `residency`, a child of its pipeline's: evicting it deletes the
    adapter from the pipeline, evicting the pipeline drops its adapters. `activate` loads what a
    batch needs (first evicting the least recently used adapters the batch does not use when
    the pipeline already holds `per_model`) and sets the batch's weights; a batch without LoRAs
    runs with every adapter disabled, so its images are exactly those of the bare model.
    Calls must be serialised (the engine's worker).
    """

    def __init__(self, residency: Residency, per_model: int = 8) -> None:
        if per_model < 1:
            raise ValueError(f"per_model must be at least 1, got {per_model}")
        self._residency = residency
        self._per_model = per_model
        self._names = (f"kiln_lora_{n}" for n in itertools.count())  # a name is never reused
        self._lock = threading.Lock()

    def activate(
        self, lease: Lease, pipe: DiffusionPipeline, pipe_key: Hashable, loras: tuple[LoraInput, ...]
    ) -> None:
        """Make exactly `loras`, with their weights, active on `pipe` (the resident pipeline
        held under `pipe_key`); the adapters stay pinned by `lease`.

        Raises ModelLoadError when a LoRA file cannot be read or has no weights for this
        model's layers (a LoRA of another architecture).
        """
        with self._lock:
            if not loras:
                if self._residency.children(pipe_key):
                    pipe.disable_lora()
                return
            keep: set[Hashable] = {_key(pipe_key, lora.model) for lora in loras}
            weights: dict[str, float] = {}
            for lora in loras:
                key = _key(pipe_key, lora.model)
                if key not in self._residency.keys():
                    self._make_room(pipe_key, keep)
                name = lease.get(
                    key,
                    lambda model=lora.model: self._load(pipe, model),  # type: ignore[misc]
                    size=lambda name: _adapter_bytes(pipe, name),
                    expected_size=file_bytes(lora.model.path),
                    parent=pipe_key,
                    on_evict=lambda name: _forget(pipe, name),
                )
                weights[name] = weights.get(name, 0.0) + lora.weight
            pipe.enable_lora()
            pipe.set_adapters(list(weights), list(weights.values()))

    def _make_room(self, pipe_key: Hashable, keep: set[Hashable]) -> None:
        loaded = [key for key in self._residency.children(pipe_key) if key[0] == "lora"]  # type: ignore[index]
        for old in [key for key in loaded if key not in keep][: max(0, len(loaded) + 1 - self._per_model)]:
            self._residency.evict(old)

    def _load(self, pipe: DiffusionPipeline, model: ModelSpec) -> str:
        name = next(self._names)
        try:
            pipe.load_lora_weights(str(Path(model.path)), adapter_name=name)
        except Exception as exc:  # unreadable file, unknown key layout, shape mismatch
            _forget(pipe, name)
            raise ModelLoadError(
                f"LoRA {model.air} could not be loaded from {model.path}: "
                f"{type(exc).__name__}: {exc}",
                parameter="lora", air=model.air,
            ) from exc
        if not any(name in names for names in pipe.get_list_adapters().values()):
            _forget(pipe, name)
            raise ModelLoadError(
                f"LoRA {model.air} has no weights for the layers of this model: it was made "
                f"for another architecture or model family.",
                parameter="lora", air=model.air,
            )
        return name


def _key(pipe_key: Hashable, model: ModelSpec) -> tuple[Any, ...]:
    return ("lora", pipe_key, model.air, model.path)


def _adapter_bytes(pipe: DiffusionPipeline, name: str) -> int:
    """Bytes of the adapter's own weights in the pipeline's modules."""
    marker = f".{name}."
    return sum(
        parameter.numel() * parameter.element_size()
        for component in pipe.components.values()
        if hasattr(component, "named_parameters")
        for parameter_name, parameter in component.named_parameters()
        if marker in parameter_name
    )


def _forget(pipe: DiffusionPipeline, name: str) -> None:
    if any(name in names for names in pipe.get_list_adapters().values()):
        pipe.delete_adapters(name)
