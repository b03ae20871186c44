"""The built-in preprocessors, called directly: pure functions of the image."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from kiln.preprocess import ANNOTATED, BUILT_IN, CannyThresholds, run_preprocessor
from kiln.protocol.preprocess import ALIASES, GROUPS


def scene() -> Image.Image:
    image = Image.new("RGB", (96, 64), (20, 20, 20))
    ImageDraw.Draw(image).rectangle([20, 16, 70, 48], fill=(230, 200, 40))
    return image


def test_every_alias_names_a_group_and_every_group_is_built_in_or_annotated():
    assert set(ALIASES.values()) <= set(GROUPS)
    assert set(BUILT_IN) | set(ANNOTATED) == set(GROUPS)
    assert not set(BUILT_IN) & set(ANNOTATED)


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


def outlined() -> Image.Image:
    """A dark 3-pixel outline of a rectangle on a light ground that brightens smoothly from left
    to right (a gradient: no line anywhere in it)."""
    image = Image.new("RGB", (128, 128))
    draw = ImageDraw.Draw(image)
    for x in range(128):
        draw.line([(x, 0), (x, 127)], fill=(180 + x // 2,) * 3)
    draw.rectangle([30, 20, 100, 70], outline=(20, 20, 20), width=3)
    return image


def strokes(kind: str) -> np.ndarray:
    return np.asarray(run_preprocessor(kind, outlined(), CannyThresholds()).convert("L")) > 60


def near_the_outline(ys: np.ndarray, xs: np.ndarray, tolerance: int) -> np.ndarray:
    on_vertical = ((np.abs(xs - 31) <= tolerance) | (np.abs(xs - 99) <= tolerance)) & (ys >= 19 - tolerance) & (ys <= 71 + tolerance)
    on_horizontal = ((np.abs(ys - 21) <= tolerance) | (np.abs(ys - 69) <= tolerance)) & (xs >= 29 - tolerance) & (xs <= 101 + tolerance)
    return on_vertical | on_horizontal


def test_lineart_and_scribble_draw_the_dark_outline_and_nothing_else():
    for kind in ("lineart", "scribble"):
        drawn = strokes(kind)
        ys, xs = np.nonzero(drawn)
        assert len(xs) > 300, kind  # about 2 x (70 + 50) pixels of outline, 3 wide
        assert near_the_outline(ys, xs, tolerance=2).all(), kind
        assert drawn[21, 30:100].all() and drawn[20:70, 31].all(), kind  # the whole outline


def test_mlsd_draws_the_four_straight_sides_thin():
    drawn = strokes("mlsd")
    ys, xs = np.nonzero(drawn)
    assert near_the_outline(ys, xs, tolerance=3).all()
    for row in (21, 69):  # each side is found (LSD finds both borders of a 3-pixel stroke)
        assert drawn[row - 3:row + 4, 40:90].any(axis=0).all()
    for column in (31, 99):
        assert drawn[30:60, column - 3:column + 4].any(axis=1).all()
    assert drawn.sum() < 4 * 2 * 130  # one-pixel lines, not filled strokes
    assert not drawn[80:].any()  # the gradient has no straight edges
