"""Scenes of one coloured shape on a plain background, rendered with Pillow.

A `Scene` is resolution-free (sizes and offsets are fractions of the canvas), so the same scene
renders alike at 128 and 256 px: the model learns one shape per image at both sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (250, 220, 20),
    "green": (30, 160, 50),
    "blue": (30, 70, 225),
    "purple": (140, 40, 180),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "medium", "large")
POSITIONS = ("centre", "top left", "top right", "bottom left", "bottom right")

# Radius ranges in pixels of a 128 px canvas (DEMO-MODEL.md's recipe); "medium" is the unsaid size.
RADIUS_RANGES_128: dict[str, tuple[float, float]] = {
    "small": (13, 17),
    "medium": (21, 26),
    "large": (32, 38),
}
JITTER_128 = 4.0  # largest offset, in pixels of a 128 px canvas, from the position's anchor
MARGIN_128 = 6.0  # gap between a corner shape's extent and the canvas edge, before jitter
EXTENT = 1.15  # every shape lies within EXTENT * radius of its centre (the star reaches it)
TRIANGLE_RADIUS = 1.1  # circumradius / radius: the triangle's area is close to the circle's
STAR_RADIUS = EXTENT  # outer radius / radius
STAR_INNER = 0.382  # inner / outer radius of a regular five-pointed star
SUPERSAMPLING = 2


@dataclass(frozen=True)
class Scene:
    """One shape on a background. `radius` and `offset` are fractions of the canvas side."""

    shape: str
    colour: str
    background: str
    size: str
    position: str
    radius: float
    offset: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, not {self.shape!r}")
        if self.colour not in COLOURS or self.background not in COLOURS:
            raise ValueError(f"colours must be among {tuple(COLOURS)}")
        if self.colour == self.background:
            raise ValueError("the shape's colour must differ from the background's")
        if self.size not in SIZES or self.position not in POSITIONS:
            raise ValueError(f"size must be in {SIZES}, position in {POSITIONS}")

    @property
    def centre(self) -> tuple[float, float]:
        """The shape's centre (x, y) as fractions of the canvas, jitter included."""
        ax, ay = anchor(self.position, self.radius)
        return ax + self.offset[0], ay + self.offset[1]

    @property
    def codes(self) -> tuple[int, int, int, int, int]:
        """The scene's words as indices (shape, colour, background, size, position)."""
        return (SHAPES.index(self.shape), list(COLOURS).index(self.colour),
                list(COLOURS).index(self.background), SIZES.index(self.size),
                POSITIONS.index(self.position))

    @classmethod
    def from_codes(cls, codes: tuple[int, ...] | list[int]) -> Scene:
        """The scene `codes` describes, at the middle of its size's radius range, unjittered."""
        shape, colour, background, size, position = (int(c) for c in codes)
        low, high = RADIUS_RANGES_128[SIZES[size]]
        names = list(COLOURS)
        return cls(SHAPES[shape], names[colour], names[background], SIZES[size],
                   POSITIONS[position], radius=(low + high) / 2 / 128)


def anchor(position: str, radius: float) -> tuple[float, float]:
    """Where a shape of `radius` is centred for `position`: corners keep the whole shape inside."""
    if position == "centre":
        return 0.5, 0.5
    near = EXTENT * radius + MARGIN_128 / 128
    x = near if position.endswith("left") else 1 - near
    y = near if position.startswith("top") else 1 - near
    return x, y


def random_scene(rng: np.random.Generator) -> Scene:
    """A scene drawn from the training distribution (before held-out pairs are excluded).

    Shape, size and position are uniform; the background is white one time in five, else
    uniform over the other colours; the shape's colour is uniform over those not the background.
    """
    names = list(COLOURS)
    weights = [0.2 if name == "white" else 0.8 / (len(names) - 1) for name in names]
    background = names[rng.choice(len(names), p=weights)]
    colour = rng.choice([n for n in names if n != background])
    size = SIZES[rng.integers(len(SIZES))]
    low, high = RADIUS_RANGES_128[size]
    jitter = JITTER_128 / 128
    return Scene(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=str(colour),
        background=background,
        size=size,
        position=POSITIONS[rng.integers(len(POSITIONS))],
        radius=float(rng.uniform(low, high)) / 128,
        offset=(float(rng.uniform(-jitter, jitter)), float(rng.uniform(-jitter, jitter))),
    )


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The outline of a square, triangle or star of `radius` r centred at (cx, cy), in pixels."""
    if shape == "square":
        h = math.sqrt(math.pi) / 2 * r  # same area as the circle of radius r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return _ring(cx, cy, [TRIANGLE_RADIUS * r] * 3)
    if shape == "star":
        outer = STAR_RADIUS * r
        return _ring(cx, cy, [outer, outer * STAR_INNER] * 5)
    raise ValueError(f"{shape!r} has no polygon")


def _ring(cx: float, cy: float, radii: list[float]) -> list[tuple[float, float]]:
    """Points at equal angles from straight up, clockwise, at the given distances."""
    step = 2 * math.pi / len(radii)
    return [(cx + d * math.sin(i * step), cy - d * math.cos(i * step)) for i, d in enumerate(radii)]


def render(scene: Scene, size: int = 128) -> Image.Image:
    """The scene as an RGB image `size` px square, drawn 2x larger and box-filtered down."""
    big = size * SUPERSAMPLING
    image = Image.new("RGB", (big, big), COLOURS[scene.background])
    draw = ImageDraw.Draw(image)
    fx, fy = scene.centre
    cx, cy, r = fx * big, fy * big, scene.radius * big
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(shape_polygon(scene.shape, cx, cy, r), fill=fill)
    return image.resize((size, size), Image.Resampling.BOX)


def to_array(images: list[Image.Image]) -> np.ndarray:
    """Images as a float32 array (N, 3, H, W) in [-1, 1], the VAE's input range."""
    stacked = np.stack([np.asarray(image, dtype=np.float32) for image in images])
    return (stacked / 127.5 - 1.0).transpose(0, 3, 1, 2)
