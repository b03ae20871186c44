"""The preprocessors that need no model weights: canny edges, tile blur and content shuffle.

Each is a pure function of the image (and its options): the same input always gives the same
guide image, as large as the input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class CannyThresholds:
    """Hysteresis thresholds of the Canny detector (0-255, low < high)."""

    low: int = 100
    high: int = 200


def canny(image: Image.Image, thresholds: CannyThresholds) -> Image.Image:
    """White edges on black, where the image's grey levels change sharply."""
    grey = np.asarray(image.convert("L"))
    edges = cv2.Canny(grey, thresholds.low, thresholds.high)
    return Image.fromarray(edges).convert("RGB")


def tile(image: Image.Image, _: CannyThresholds) -> Image.Image:
    """The image softened by a Gaussian blur of 1/128 of its short side: what a tile
    ControlNet conditions on (colours and layout, without fine detail)."""
    radius = max(1.0, min(image.size) / 128)
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius))


def shuffle(image: Image.Image, _: CannyThresholds) -> Image.Image:
    """The image's content warped by a smooth random flow (fixed seed): what a shuffle
    ControlNet conditions on (its colours and textures, rearranged)."""
    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    rng = np.random.default_rng(0)
    coarse = rng.random((8, 8, 2), dtype=np.float32)
    flow = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    map_x = np.clip(flow[..., 0], 0, 1) * (width - 1)
    map_y = np.clip(flow[..., 1], 0, 1) * (height - 1)
    return Image.fromarray(cv2.remap(rgb, map_x, map_y, interpolation=cv2.INTER_LINEAR))


BUILT_IN: dict[str, Callable[[Image.Image, CannyThresholds], Image.Image]] = {
    "canny": canny,
    "tile": tile,
    "shuffle": shuffle,
}


def run_preprocessor(kind: str, image: Image.Image, thresholds: CannyThresholds) -> Image.Image:
    """The guide image of built-in preprocessor `kind` (a key of BUILT_IN) for `image`."""
    return BUILT_IN[kind](image, thresholds)
