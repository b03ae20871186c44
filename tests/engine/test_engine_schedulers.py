"""Every Runware scheduler name produces an image, and a request's scheduler stays its own."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.engine import Engine
from kiln.errors import InvalidRequestError
from kiln.schedulers import SCHEDULER_NAMES

from .helpers import TinyModels, make_request


def _image(engine: Engine, tiny: TinyModels, scheduler: str | None) -> np.ndarray:
    request = make_request(tiny.sd, scheduler=scheduler, steps=3)
    return np.asarray(next(iter(engine.generate(request))))


def test_every_scheduler_name_produces_an_image(engine: Engine, tiny: TinyModels) -> None:
    images = {name: _image(engine, tiny, name) for name in SCHEDULER_NAMES}
    for name, image in images.items():
        assert image.shape == (64, 64, 3), name
    distinct = {image.tobytes() for image in images.values()}
    assert len(distinct) >= 3


def test_default_scheduler_is_the_models_own(engine: Engine, tiny: TinyModels) -> None:
    assert np.array_equal(_image(engine, tiny, None), _image(engine, tiny, "Default"))
    assert np.array_equal(_image(engine, tiny, None), _image(engine, tiny, "PNDMScheduler"))


def test_a_scheduler_does_not_leak_into_the_next_request(engine: Engine, tiny: TinyModels) -> None:
    before = _image(engine, tiny, None)
    _image(engine, tiny, "Euler a")
    assert np.array_equal(before, _image(engine, tiny, None))


def test_unknown_scheduler_is_rejected(engine: Engine, tiny: TinyModels) -> None:
    with pytest.raises(InvalidRequestError) as info:
        engine.generate(make_request(tiny.sd, scheduler="Nope"))
    assert info.value.parameter == "scheduler"
