"""Pixel work of the editing modes: sizes, masks, outpaint canvas, crops, paste-back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kiln.errors import InvalidRequestError
from kiln.media import compose
from tests.images import gradient, pixels


@pytest.mark.parametrize(("size", "expected"), [
    ((128, 128), (128, 128)), ((300, 200), (256, 192)), ((100, 5000), (128, 2048)),
])
def test_default_size_rounds_down_to_64_and_clamps(size, expected):
    assert compose.default_size(*size) == expected


def test_prepare_mask_accepts_gray_rgb_and_rgba_of_any_size_with_the_same_aspect():
    gray = Image.new("L", (64, 64), 0)
    gray.paste(200, (16, 16, 48, 48))
    rgba = Image.new("RGBA", (256, 256), (0, 0, 0, 0))  # transparent = keep
    rgba.paste((255, 255, 255, 255), (64, 64, 192, 192))
    for mask in (gray, gray.convert("RGB"), rgba):
        binary = np.asarray(compose.prepare_mask(mask, (128, 128)))
        assert set(np.unique(binary)) == {0, 255}
        assert binary[64, 64] == 255 and binary[5, 5] == 0 and binary[120, 120] == 0


def test_prepare_mask_refuses_another_aspect_ratio():
    with pytest.raises(InvalidRequestError) as caught:
        compose.prepare_mask(Image.new("L", (64, 128)), (128, 128))
    assert caught.value.code == "invalidMaskImage"
    assert "64x128" in caught.value.message


def test_feathered_paste_back_keeps_every_unmasked_pixel_exactly():
    original, generated = gradient(), Image.new("RGB", (128, 128), (0, 0, 0))
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (32, 32, 96, 96))
    out = pixels(compose.feathered_paste_back(original, generated, mask, feather=4))
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], pixels(original)[keep])
    assert np.array_equal(out[48:80, 48:80], np.zeros((32, 32, 3)))  # mask centre: generated
    assert 0 < np.abs(out[32, 64] - pixels(original)[32, 64]).sum()  # edge: blended


def test_outpaint_canvas_places_the_seed_and_masks_the_borders_and_the_seam():
    seed = gradient(64, 64)
    canvas, mask = compose.outpaint_canvas(seed, compose.Padding(64, 0, 0, 64), blur=8)
    assert canvas.size == mask.size == (128, 128)
    assert np.array_equal(pixels(canvas)[64:, 64:], pixels(seed))
    m = np.asarray(mask)
    assert m[:64].min() == 255 and m[:, :64].min() == 255  # new borders
    assert m[64:72, 64:].min() == 255 and m[64:, 64:72].min() == 255  # seam band
    assert m[72:, 72:].max() == 0  # the rest of the seed is kept


def test_mask_crop_box_and_working_size():
    mask = Image.new("L", (512, 512), 0)
    mask.paste(255, (200, 220, 260, 300))
    box = compose.mask_crop_box(mask, 32)
    assert box == (168, 188, 292, 332)
    assert compose.mask_crop_box(Image.new("L", (64, 64), 0), 32) is None
    width, height = compose.working_size(box, 128 * 128)
    assert width % 8 == height % 8 == 0
    assert abs(width / height - 124 / 144) < 0.1
    assert abs(width * height - 128 * 128) < 0.15 * 128 * 128
