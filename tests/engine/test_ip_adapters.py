"""IP-Adapters in the engine: loaded into the resident UNet per batch, unloaded for a batch
without any, weighted, several at once, and batched with a guide image per request."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kiln.engine import Engine
from kiln.engine.demo_ip_adapters import (
    ENCODER_FOLDER,
    WEIGHTS_FILE,
    build_tiny_ip_adapter,
    build_tiny_ip_adapter_plus,
    build_tiny_ip_adapter_sdxl,
)
from kiln.engine.demo_models import build_tiny_controlnet
from kiln.errors import ModelLoadError
from kiln.executor.batching import batch_key
from kiln.generation import (
    ControlNetInput,
    GenerationRequest,
    IpAdapterInput,
    ModelSpec,
    RefinerInput,
)
from tests.images import max_difference
from tests.tiny_extras import build_refiner_folder

from .helpers import TinyModels, make_request


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelSpec]:
    root = tmp_path_factory.mktemp("ip-adapters")

    def spec(air: str, architecture: str, folder: Path) -> ModelSpec:
        return ModelSpec(air, architecture, str(folder / WEIGHTS_FILE), config_path=str(folder / ENCODER_FOLDER))

    return {
        "sd": spec("test:ip@1", "sd1x", build_tiny_ip_adapter(root / "sd")),
        "plus": spec("test:ip-plus@1", "sd1x", build_tiny_ip_adapter_plus(root / "plus")),
        "sdxl": spec("test:ip-xl@1", "sdxl", build_tiny_ip_adapter_sdxl(root / "sdxl")),
    }


def guide(shape: str = "square", colour: str = "red") -> Image.Image:
    image = Image.new("RGB", (96, 96), "white")
    draw = ImageDraw.Draw(image)
    (draw.rectangle if shape == "square" else draw.ellipse)([16, 16, 80, 80], fill=colour)
    return image


def run(engine: Engine, request: GenerationRequest) -> np.ndarray:
    [image] = engine.generate_batch([request])
    assert isinstance(image, Image.Image), image
    assert image.size == (request.width, request.height)
    return np.asarray(image, dtype=np.int16)


def with_ip(request: GenerationRequest, model: ModelSpec, *guides: Image.Image, weight: float = 1.0) -> GenerationRequest:
    return replace(request, ip_adapters=(*request.ip_adapters, IpAdapterInput(model, guides or (guide(),), weight)))


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).mean()) > 0.5


def one_call_like_each_alone(engine: Engine, requests: list[GenerationRequest]) -> list[Image.Image]:
    """`requests` batched: one pipeline call, each image within 2 grey levels of its request alone."""
    solo = [Image.fromarray(run(engine, request).astype(np.uint8)) for request in requests]
    calls = engine.pipeline_calls
    batched = engine.generate_batch(requests)
    assert engine.pipeline_calls == calls + 1
    for image, alone in zip(batched, solo, strict=True):
        assert isinstance(image, Image.Image) and max_difference(image, alone) <= 2
    return batched  # type: ignore[return-value]


def test_weight_zero_is_the_bare_model_and_the_bare_model_stays_bare(engine, tiny: TinyModels, adapters):
    bare = make_request(tiny.sd)
    plain = run(engine, bare)
    assert np.array_equal(run(engine, with_ip(bare, adapters["sd"], weight=0)), plain)
    steered = run(engine, with_ip(bare, adapters["sd"]))
    assert differs(steered, plain)
    # the adapter is unloaded for a batch without one: exactly the bare model again
    assert np.array_equal(run(engine, bare), plain)
    # and loads again, to the same result
    assert np.array_equal(run(engine, with_ip(bare, adapters["sd"])), steered)


def test_the_guide_image_and_the_weight_steer_the_result(engine, tiny: TinyModels, adapters):
    bare = make_request(tiny.sd)
    square = run(engine, with_ip(bare, adapters["sd"], guide("square", "red")))
    circle = run(engine, with_ip(bare, adapters["sd"], guide("circle", "blue")))
    half = run(engine, with_ip(bare, adapters["sd"], guide("square", "red"), weight=0.5))
    assert differs(square, circle) and differs(square, half)
    both = run(engine, with_ip(bare, adapters["sd"], guide("square", "red"), guide("circle", "blue")))
    assert differs(both, square) and differs(both, circle)


def test_several_adapters_at_once(engine, tiny: TinyModels, adapters):
    bare = make_request(tiny.sd)
    one = run(engine, with_ip(bare, adapters["sd"], guide("square")))
    two = run(engine, with_ip(with_ip(bare, adapters["sd"], guide("square")), adapters["sd"], guide("circle", "blue")))
    assert differs(one, two)
    off = run(engine, with_ip(with_ip(bare, adapters["sd"], guide("square")), adapters["sd"], guide("circle"), weight=0))
    assert np.array_equal(off, one)


def test_requests_with_their_own_guides_share_one_call_and_match_their_solo_images(tiny: TinyModels, adapters):
    engine = Engine(device="cpu")
    requests = [
        with_ip(make_request(tiny.sd, seeds=(seed,), positive_prompt=prompt), adapters["sd"], image)
        for seed, prompt, image in ((1, "the cat", guide("square")), (2, "a dog", guide("circle", "blue")),
                                    (3, "the red house", guide("square", "green")))
    ]
    assert len({batch_key(request) for request in requests}) == 1
    batched = one_call_like_each_alone(engine, requests)
    assert [np.asarray(image).tobytes() for image in engine.generate_batch(requests)] == [
        np.asarray(image).tobytes() for image in batched]
    # another weight is another call; a request without adapters too
    mixed = [requests[0], with_ip(make_request(tiny.sd), adapters["sd"], weight=0.5), make_request(tiny.sd)]
    calls = engine.pipeline_calls
    assert all(isinstance(image, Image.Image) for image in engine.generate_batch(mixed))
    assert engine.pipeline_calls == calls + 3


def test_a_plus_adapter_reads_the_hidden_states_and_batches_too(tiny: TinyModels, adapters):
    engine = Engine(device="cpu")
    bare = make_request(tiny.sd)
    plain = run(engine, bare)
    red, blue = (run(engine, with_ip(bare, adapters["plus"], guide("square", colour))) for colour in ("red", "blue"))
    assert differs(red, plain) and differs(red, blue)
    assert np.array_equal(run(engine, with_ip(bare, adapters["plus"], weight=0)), plain)
    # beside a plain adapter, and batched with a guide per request
    requests = [with_ip(with_ip(make_request(tiny.sd, seeds=(seed,)), adapters["plus"], guide("square", colour)),
                        adapters["sd"], guide("circle", colour)) for seed, colour in ((1, "red"), (2, "blue"))]
    one_call_like_each_alone(engine, requests)


def test_sdxl_and_image_to_image(engine, tiny: TinyModels, adapters):
    bare = make_request(tiny.sdxl)
    assert differs(run(engine, with_ip(bare, adapters["sdxl"])), run(engine, bare))
    seed_image = Image.new("RGB", (64, 64), "orange")
    image_mode = make_request(tiny.sd, mode="image", init_image=seed_image, strength=0.7)
    assert differs(run(engine, with_ip(image_mode, adapters["sd"])), run(engine, image_mode))


def test_with_a_controlnet_and_with_a_refiner(engine, tiny: TinyModels, adapters, tmp_path):
    net = ModelSpec("test:cn@1", "sd1x", str(build_tiny_controlnet(tmp_path / "cn")))
    controlled = make_request(tiny.sd, controlnets=(ControlNetInput(net, guide("circle", "white")),))
    assert differs(run(engine, with_ip(controlled, adapters["sd"])), run(engine, controlled))
    refiner = ModelSpec("test:refiner@1", "sdxl", str(build_refiner_folder(tmp_path / "refiner")))
    refined = make_request(tiny.sdxl, steps=4, refiner=RefinerInput(refiner, 0.5))
    # the base model's part is steered; the refiner, which has no adapter, finishes it
    assert differs(run(engine, with_ip(refined, adapters["sdxl"])), run(engine, refined))


def test_an_adapter_of_another_architecture_is_a_typed_error(engine, tiny: TinyModels, adapters):
    [result] = engine.generate_batch([with_ip(make_request(tiny.sd), adapters["sdxl"])])
    assert isinstance(result, ModelLoadError)
    assert result.parameter == "ipAdapters" and "does not fit" in result.message
    assert isinstance(engine.generate_batch([make_request(tiny.sd)])[0], Image.Image)


def test_a_missing_image_encoder_is_a_typed_error(engine, tiny: TinyModels, adapters, tmp_path):
    broken = replace(adapters["sd"], air="test:broken@1", config_path=str(tmp_path / "nothing"))
    [result] = engine.generate_batch([with_ip(make_request(tiny.sd), broken)])
    assert isinstance(result, ModelLoadError) and "image encoder" in result.message
