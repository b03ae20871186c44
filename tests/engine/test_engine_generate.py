"""Engine.generate through the public API on the tiny SD 1.x and SDXL models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

import kiln.engine
from kiln.engine import Engine
from kiln.errors import InferenceError, InvalidRequestError

from .helpers import TinyModels, make_request


def pixels(images: object) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]  # type: ignore[attr-defined]


def test_public_surface() -> None:
    assert kiln.engine.__all__ == ["Engine"]
    engine = Engine(device="cpu")
    assert engine.device == "cpu"
    assert engine.loaded_models == ()


@pytest.mark.parametrize("arch", ["sd", "sdxl"])
@pytest.mark.parametrize(("width", "height"), [(64, 64), (128, 64), (64, 96)])
def test_one_rgb_image_per_seed_at_requested_size(
    engine: Engine, tiny: TinyModels, arch: str, width: int, height: int
) -> None:
    request = make_request(getattr(tiny, arch), width=width, height=height, seeds=(1, 2))
    images = list(engine.generate(request))
    assert len(images) == 2
    for image in images:
        assert isinstance(image, Image.Image)
        assert image.mode == "RGB"
        assert image.size == (width, height)


@pytest.mark.parametrize("arch", ["sd", "sdxl"])
def test_same_request_gives_identical_pixels(engine: Engine, tiny: TinyModels, arch: str) -> None:
    request = make_request(getattr(tiny, arch), seeds=(7, 2**63 - 1))
    first = pixels(engine.generate(request))
    second = pixels(engine.generate(request))
    for a, b in zip(first, second, strict=True):
        assert a.tobytes() == b.tobytes()


def test_an_image_depends_only_on_its_own_seed(engine: Engine, tiny: TinyModels) -> None:
    batch = pixels(engine.generate(make_request(tiny.sd, seeds=(11, 12, 13))))
    alone = pixels(engine.generate(make_request(tiny.sd, seeds=(12,))))[0]
    assert np.array_equal(batch[1], alone)
    assert not np.array_equal(batch[0], batch[1])
    assert not np.array_equal(batch[1], batch[2])


@pytest.mark.parametrize("arch", ["sd", "sdxl"])
def test_clip_skip_changes_the_image(engine: Engine, tiny: TinyModels, arch: str) -> None:
    model = getattr(tiny, arch)
    images = [pixels(engine.generate(make_request(model, clip_skip=skip)))[0] for skip in (0, 1, 2)]
    assert not np.array_equal(images[0], images[1])
    assert not np.array_equal(images[1], images[2])
    assert not np.array_equal(images[0], images[2])


@pytest.mark.parametrize("arch", ["sd", "sdxl"])
def test_negative_prompt_and_cfg_change_the_image(
    engine: Engine, tiny: TinyModels, arch: str
) -> None:
    model = getattr(tiny, arch)
    base = pixels(engine.generate(make_request(model)))[0]
    negative = pixels(engine.generate(make_request(model, negative_prompt="blurry cat")))[0]
    low_cfg = pixels(engine.generate(make_request(model, cfg_scale=3.0)))[0]
    no_cfg = pixels(engine.generate(make_request(model, cfg_scale=1.0)))[0]
    assert not np.array_equal(base, negative)
    assert not np.array_equal(base, low_cfg)
    assert not np.array_equal(base, no_cfg)


def test_negative_prompt_is_ignored_without_guidance(engine: Engine, tiny: TinyModels) -> None:
    plain = pixels(engine.generate(make_request(tiny.sd, cfg_scale=1.0)))[0]
    negative = pixels(
        engine.generate(make_request(tiny.sd, cfg_scale=1.0, negative_prompt="blurry"))
    )[0]
    assert np.array_equal(plain, negative)


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"width": 0}, "width"),
        ({"height": 60}, "height"),
        ({"steps": 0}, "steps"),
        ({"seeds": (1, -1)}, "seed"),
        ({"seeds": (2**63,)}, "seed"),
    ],
)
def test_invalid_parameters_are_rejected_before_generating(
    engine: Engine, tiny: TinyModels, changes: dict[str, object], parameter: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        engine.generate(make_request(tiny.sd, **changes))
    assert info.value.parameter == parameter


def test_out_of_memory_while_generating_is_an_inference_error(
    engine: Engine, tiny: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", out_of_memory)
    with pytest.raises(InferenceError, match="out of device memory"):
        engine.generate(make_request(tiny.sd))


def test_clip_skip_beyond_the_text_encoder_is_rejected(engine: Engine, tiny: TinyModels) -> None:
    with pytest.raises(InvalidRequestError) as info:
        engine.generate(make_request(tiny.sd, clip_skip=3))
    assert info.value.parameter == "clipSkip"
