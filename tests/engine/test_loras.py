"""LoRA adapters on the engine: file-level mismatches and the per-pipeline LRU cache."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kiln.engine import Engine
from kiln.engine.demo_models import build_tiny_lora, build_tiny_lora_kohya
from kiln.errors import ModelLoadError
from kiln.generation import LoraInput, ModelSpec

from .helpers import make_request


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> tuple[ModelSpec, ModelSpec]:
    root = tmp_path_factory.mktemp("loras")
    return (ModelSpec("test:lora@1", "sd1x", str(build_tiny_lora(root / "peft"))),
            ModelSpec("test:kohya@1", "sd1x", str(build_tiny_lora_kohya(root / "kohya"))))


def image(engine: Engine, request) -> np.ndarray:
    return np.asarray(next(iter(engine.generate(request))), dtype=np.int16)


def test_a_lora_for_other_layers_is_a_load_error(tiny, loras):
    engine = Engine(device="cpu")
    sd1x_lora = replace(loras[0], architecture="sdxl")  # mis-registered: its shapes are SD 1.x's
    with pytest.raises(ModelLoadError) as caught:
        engine.generate(make_request(tiny.sdxl, loras=(LoraInput(sd1x_lora, 1.0),)))
    assert caught.value.details["air"] == "test:lora@1"
    plain = make_request(tiny.sdxl)  # the model is left as it was
    assert np.array_equal(image(engine, plain), image(Engine(device="cpu"), plain))


def test_eviction_keeps_results_exact(tiny, loras):
    engine = Engine(device="cpu", max_loras_per_model=1)  # every switch unloads the other
    first, second = (make_request(tiny.sd, loras=(LoraInput(lora, 1.0),)) for lora in loras)
    a, b = image(engine, first), image(engine, second)
    assert np.abs(a - b).mean() > 0.5
    assert np.array_equal(image(engine, first), a) and np.array_equal(image(engine, second), b)
