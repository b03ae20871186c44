"""Judges an image of one shape on a background by its pixels: what a scene's caption would say.

Pure numpy: each pixel takes the nearest palette colour; the most common is the background, the
most common of the rest the shape's colour. The shape's pixels give its type (fill ratio of the
bounding box and the number of corners of its outline seen from the centroid), its position
(centroid) and its size (area).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from kiln.demo.scenes import COLOURS, EXTENT, MARGIN_128, RADIUS_RANGES_128, STAR_INNER

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
_NAMES = list(COLOURS)
# Fill ratio of the bounding box of each shape, rendered exactly.
_FILL = {
    "star": 5 * STAR_INNER * math.sin(math.radians(36))
    / (2 * math.sin(math.radians(72)) * (1 + math.cos(math.radians(36)))),
    "triangle": 0.5,
    "circle": math.pi / 4,
    "square": 1.0,
}
_CORNERS = {3: "triangle", 4: "square", 5: "star"}
# Area of each shape relative to the circle of the same radius (see scenes.shape_polygon).
_AREA = {"circle": 1.0, "square": 1.0, "triangle": 3 * math.sqrt(3) / 4 * 1.1**2 / math.pi,
         "star": 5 * STAR_INNER * math.sin(math.radians(36)) * EXTENT**2 / math.pi}
_ANGLE_BINS = 72
MIN_SHAPE_FRACTION = 0.005  # below this share of the pixels there is no shape


@dataclass(frozen=True)
class Classification:
    """What the image shows; `shape`, `colour`, `position` and `size` are None with no shape."""

    background: str
    colour: str | None
    shape: str | None
    position: str | None
    size: str | None
    fill: float = 0.0  # area / bounding-box area
    corners: int = 0  # corners of the outline seen from the centroid


def classify(image: Image.Image | np.ndarray) -> Classification:
    """Classify an RGB image of a scene (any size, square)."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image,
                        dtype=np.float32)
    height, width = pixels.shape[:2]
    labels = nearest_colours(pixels)
    counts = np.bincount(labels.ravel(), minlength=len(_NAMES))
    background = int(counts.argmax())
    counts[background] = 0
    colour = int(counts.argmax())
    mask = labels != background
    if mask.sum() < MIN_SHAPE_FRACTION * height * width:
        return Classification(_NAMES[background], None, None, None, None)
    mask = _largest_component(_open(mask))
    if not mask.any():
        return Classification(_NAMES[background], None, None, None, None)

    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    fill = float(mask.sum() / box)
    corners, roundness = _corners(mask, cx, cy)
    by_fill = min(_FILL, key=lambda name: abs(_FILL[name] - fill))
    by_corners = _CORNERS.get(corners)
    if roundness < 0.12 and fill > 0.65:
        shape = "circle"
    elif by_corners and abs(_FILL[by_corners] - fill) < 0.25:  # corners, if the fill agrees
        shape = by_corners
    else:
        shape = by_fill
    equivalent_radius = math.sqrt(mask.sum() / (math.pi * _AREA[shape])) / width * 128
    return Classification(
        background=_NAMES[background],
        colour=_NAMES[colour],
        shape=shape,
        position=_position(cx / width, cy / height, equivalent_radius / 128),
        size=_size(equivalent_radius),
        fill=fill,
        corners=corners,
    )


def _open(mask: np.ndarray) -> np.ndarray:
    """Morphological opening with a 3x3 cross: drops specks and one-pixel lines."""
    eroded = mask.copy()
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    dilated = eroded.copy()
    dilated[1:] |= eroded[:-1]
    dilated[:-1] |= eroded[1:]
    dilated[:, 1:] |= eroded[:, :-1]
    dilated[:, :-1] |= eroded[:, 1:]
    return dilated


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the 4-connected regions of `mask` (by repeated min-pooling), and their sizes."""
    height, width = mask.shape
    big = height * width + 1
    labels = np.where(mask, np.arange(height * width).reshape(height, width), big)
    while True:
        shifted = labels.copy()
        np.minimum(shifted[1:], labels[:-1], out=shifted[1:])
        np.minimum(shifted[:-1], labels[1:], out=shifted[:-1])
        np.minimum(shifted[:, 1:], labels[:, :-1], out=shifted[:, 1:])
        np.minimum(shifted[:, :-1], labels[:, 1:], out=shifted[:, :-1])
        shifted[~mask] = big
        if np.array_equal(shifted, labels):
            break
        labels = shifted
    ids, counts = np.unique(labels[mask], return_counts=True)
    return labels, counts if len(ids) else np.zeros(0, dtype=int)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, counts = _components(mask)
    if not len(counts):
        return mask
    ids = np.unique(labels[mask])
    return labels == ids[counts.argmax()]


def count_shapes(image: Image.Image, min_fraction: float = 0.003) -> int:
    """How many separate shapes the image shows (regions off the background colour that cover
    at least `min_fraction` of it), judged at 128 px: one, or a tiled scene."""
    small = image.convert("RGB").resize((128, 128), Image.Resampling.BOX)
    labels = nearest_colours(np.asarray(small, dtype=np.float32))
    background = np.bincount(labels.ravel(), minlength=len(_NAMES)).argmax()
    _, counts = _components(_open(labels != background))
    return int((counts >= min_fraction * labels.size).sum())


def nearest_colours(pixels: np.ndarray) -> np.ndarray:
    """The index (into `scenes.COLOURS`) of the nearest palette colour of each pixel of an
    (H, W, 3) array."""
    return ((pixels[:, :, None, :] - _PALETTE) ** 2).sum(-1).argmin(-1)


def _corners(mask: np.ndarray, cx: float, cy: float) -> tuple[int, float]:
    """Corners of the outline (peaks of its distance from the centroid by angle) and its
    roundness (spread of that distance / its mean; 0 for a circle)."""
    ys, xs = np.nonzero(mask)
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    angle = ((np.arctan2(dy, dx) + math.pi) / (2 * math.pi) * _ANGLE_BINS).astype(int)
    angle %= _ANGLE_BINS
    profile = np.zeros(_ANGLE_BINS)
    np.maximum.at(profile, angle, np.hypot(dx, dy))
    # circular smoothing, then peaks that stand out from the neighbouring valleys
    kernel = np.array([1, 2, 3, 2, 1], dtype=float) / 9
    padded = np.concatenate([profile[-2:], profile, profile[:2]])
    smooth = np.convolve(padded, kernel, mode="valid")
    mean = smooth.mean()
    roundness = float((smooth.max() - smooth.min()) / mean)
    peaks = 0
    window = _ANGLE_BINS // 12
    for i in range(_ANGLE_BINS):
        around = np.take(smooth, range(i - window, i + window + 1), mode="wrap")
        if smooth[i] == around.max() and smooth[i] - around.min() > 0.08 * mean:
            if smooth[i] > smooth[i - 1] or peaks == 0:  # count a flat top once
                peaks += 1
    return peaks, roundness


def _position(x: float, y: float, radius: float) -> str:
    """Centre, or the corner whose quadrant holds the centroid (x, y as fractions)."""
    corner_offset = 0.5 - (EXTENT * radius + MARGIN_128 / 128)
    if max(abs(x - 0.5), abs(y - 0.5)) < max(0.5 * corner_offset, 0.04):
        return "centre"
    return f"{'top' if y < 0.5 else 'bottom'} {'left' if x < 0.5 else 'right'}"


def _size(radius_128: float) -> str:
    """Small, medium or large by the radius (in 128 px units), split between the ranges."""
    small, medium, large = (RADIUS_RANGES_128[s] for s in ("small", "medium", "large"))
    if radius_128 < (small[1] + medium[0]) / 2:
        return "small"
    if radius_128 < (medium[1] + large[0]) / 2:
        return "medium"
    return "large"
