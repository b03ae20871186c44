"""The built-in preprocessors, called directly: pure functions of the image."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from kiln.preprocess import BUILT_IN, CannyThresholds, run_preprocessor
from kiln.protocol.preprocess import ALIASES, GROUPS


def scene() -> Image.Image:
    image = Image.new("RGB", (96, 64), (20, 20, 20))
    ImageDraw.Draw(image).rectangle([20, 16, 70, 48], fill=(230, 200, 40))
    return image


def test_every_alias_names_a_group_and_every_built_in_is_a_group():
    assert set(ALIASES.values()) <= set(GROUPS)
    assert set(BUILT_IN) <= set(GROUPS)


def test_each_built_in_keeps_the_size_and_is_deterministic():
    for kind in BUILT_IN:
        first = run_preprocessor(kind, scene(), CannyThresholds())
        assert first.size == (96, 64) and first.mode == "RGB"
        assert np.array_equal(np.asarray(first), np.asarray(run_preprocessor(kind, scene(), CannyThresholds())))


def test_canny_thresholds_matter():
    soft = Image.new("RGB", (64, 64), (100, 100, 100))
    ImageDraw.Draw(soft).rectangle([16, 16, 48, 48], fill=(120, 120, 120))  # a 20-level step
    assert np.asarray(run_preprocessor("canny", soft, CannyThresholds(10, 30))).any()
    assert not np.asarray(run_preprocessor("canny", soft, CannyThresholds(100, 200))).any()


def test_tile_blurs_and_shuffle_rearranges():
    original = np.asarray(scene(), dtype=np.int16)
    tiled = np.asarray(run_preprocessor("tile", scene(), CannyThresholds()), dtype=np.int16)
    assert 0 < np.abs(tiled - original).mean() < 10  # softened, not replaced
    shuffled = np.asarray(run_preprocessor("shuffle", scene(), CannyThresholds()), dtype=np.int16)
    assert np.abs(shuffled - original).mean() > 10
    # warped, not recoloured: every channel stays within the input's range
    assert shuffled.min() >= original.min() and shuffled.max() <= original.max()
