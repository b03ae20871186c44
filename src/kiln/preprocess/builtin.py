"""The preprocessors that need no model weights: canny edges, tile blur, content shuffle, line
art, scribbles and straight lines (mlsd).

Each is a pure function of the image (and its options): the same input always gives the same
guide image, as large as the input, white strokes on black where it draws lines.
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


def lineart(image: Image.Image, _: CannyThresholds) -> Image.Image:
    """Line art by difference of a Gaussian blur (the weight-free "lineart_standard" of
    controlnet_aux and the A1111 ControlNet extension): pixels darker than their neighbourhood
    become strokes, normalised by the median stroke strength, white on black."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    blurred = cv2.GaussianBlur(rgb, (0, 0), 6.0)
    intensity = np.min(blurred - rgb, axis=2).clip(0, 255)
    strokes = intensity[intensity > 8]
    intensity *= 127 / max(16.0, float(np.median(strokes)) if strokes.size else 0.0)
    return Image.fromarray(intensity.clip(0, 255).astype(np.uint8)).convert("RGB")


def scribble(image: Image.Image, _: CannyThresholds) -> Image.Image:
    """Bold binary strokes by extended difference of Gaussians (the A1111 ControlNet extension's
    weight-free "scribble_xdog", threshold 32): what a scribble ControlNet takes, white on black."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    fine = cv2.GaussianBlur(rgb, (0, 0), 0.5)
    coarse = cv2.GaussianBlur(rgb, (0, 0), 5.0)
    darkening = np.min(coarse - fine, axis=2)  # how much darker than its surroundings
    return Image.fromarray(np.where(2 * darkening > 32, 255, 0).astype(np.uint8)).convert("RGB")


def mlsd(image: Image.Image, _: CannyThresholds) -> Image.Image:
    """The image's straight line segments, drawn one pixel wide in white on black as M-LSD's
    annotator draws them; found by OpenCV's weight-free LSD detector, keeping segments at least
    1/32 of the short side long (shorter ones are texture, not structure)."""
    grey = np.asarray(image.convert("L"))
    segments = cv2.createLineSegmentDetector().detect(grey)[0]
    canvas = np.zeros(grey.shape, dtype=np.uint8)
    min_length = min(grey.shape) / 32
    for x1, y1, x2, y2 in (segments.reshape(-1, 4) if segments is not None else ()):
        if np.hypot(x2 - x1, y2 - y1) >= min_length:
            cv2.line(canvas, (round(x1), round(y1)), (round(x2), round(y2)), 255, 1)
    return Image.fromarray(canvas).convert("RGB")


BUILT_IN: dict[str, Callable[[Image.Image, CannyThresholds], Image.Image]] = {
    "canny": canny,
    "tile": tile,
    "shuffle": shuffle,
    "lineart": lineart,
    "scribble": scribble,
    "mlsd": mlsd,
}


def run_preprocessor(kind: str, image: Image.Image, thresholds: CannyThresholds) -> Image.Image:
    """The guide image of built-in preprocessor `kind` (a key of BUILT_IN) for `image`."""
    return BUILT_IN[kind](image, thresholds)
