"""LoRA adapters: loaded once per pipeline, kept in an LRU cache, activated per request.

Adapters stay unfused and are switched with `set_adapters`, which costs nothing measurable and,
unlike `fuse_lora`/`unfuse_lora`, never leaves a scale behind in the base weights. diffusers
reads both the diffusers (PEFT) and the kohya `.safetensors` layouts.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

from diffusers import DiffusionPipeline

from kiln.errors import ModelLoadError
from kiln.generation import LoraInput, ModelSpec


class LoraAdapters:
    """The LoRAs loaded into each cached pipeline, at most `capacity` per pipeline.

    `activate` loads what a request needs (evicting the least recently used adapters the
    request does not use) and sets the request's weights; a request without LoRAs runs with
    every adapter disabled, so its images are exactly those of the bare model. A pipeline's
    adapters are forgotten with the pipeline. Calls must be serialised (the engine's worker).
    """

    def __init__(self, capacity: int = 8) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._loaded: weakref.WeakKeyDictionary[DiffusionPipeline, OrderedDict[tuple[str, str], str]] = (
            weakref.WeakKeyDictionary()
        )
        self._names = (f"kiln_lora_{n}" for n in itertools.count())  # a name is never reused
        self._lock = threading.Lock()

    def activate(self, pipe: DiffusionPipeline, loras: tuple[LoraInput, ...]) -> None:
        """Make exactly `loras`, with their weights, active on `pipe` (a cached pipeline).

        Raises ModelLoadError when a LoRA file cannot be read or has no weights for this
        model's layers (a LoRA of another architecture).
        """
        with self._lock:
            loaded = self._loaded.setdefault(pipe, OrderedDict())
            if not loras:
                if loaded:
                    pipe.disable_lora()
                return
            weights: dict[str, float] = {}
            for lora in loras:
                name = self._ensure_loaded(pipe, loaded, lora.model, keep={_key(x.model) for x in loras})
                weights[name] = weights.get(name, 0.0) + lora.weight
            pipe.enable_lora()
            pipe.set_adapters(list(weights), list(weights.values()))

    def _ensure_loaded(
        self,
        pipe: DiffusionPipeline,
        loaded: OrderedDict[tuple[str, str], str],
        model: ModelSpec,
        keep: set[tuple[str, str]],
    ) -> str:
        key = _key(model)
        if key in loaded:
            loaded.move_to_end(key)
            return loaded[key]
        for old in [k for k in loaded if k not in keep][: max(0, len(loaded) + 1 - self._capacity)]:
            pipe.delete_adapters(loaded.pop(old))
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
        loaded[key] = name
        return name


def _key(model: ModelSpec) -> tuple[str, str]:
    return (model.air, model.path)


def _forget(pipe: DiffusionPipeline, name: str) -> None:
    if any(name in names for names in pipe.get_list_adapters().values()):
        pipe.delete_adapters(name)
