"""The scene renderer: one shape, in the asked colour and place, alike at 128 and 256 px."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kiln.demo.scenes import COLOURS, Scene, random_scene, render


def scene(**overrides: object) -> Scene:
    values = {"shape": "circle", "colour": "red", "background": "blue", "size": "medium",
              "position": "centre", "radius": 24 / 128}
    values.update(overrides)
    return Scene(**values)  # type: ignore[arg-type]


def pixel(image: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    return image.getpixel((int(x * image.width), int(y * image.height)))  # type: ignore[return-value]


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "star"])
def test_shape_in_its_colour_on_the_background(shape: str, size: int) -> None:
    image = render(scene(shape=shape), size)
    assert image.size == (size, size) and image.mode == "RGB"
    assert pixel(image, 0.5, 0.5) == COLOURS["red"]
    assert pixel(image, 0.02, 0.02) == pixel(image, 0.98, 0.98) == COLOURS["blue"]


@pytest.mark.parametrize("position, x, y", [("top left", 0.25, 0.25), ("top right", 0.75, 0.25),
                                            ("bottom left", 0.25, 0.75),
                                            ("bottom right", 0.75, 0.75)])
def test_corners(position: str, x: float, y: float) -> None:
    image = render(scene(position=position, size="small", radius=15 / 128))
    assert pixel(image, x, y) == COLOURS["red"]
    assert pixel(image, 0.5, 0.5) == COLOURS["blue"]


def test_a_larger_canvas_draws_the_same_scene_larger() -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        s = random_scene(rng)
        small = np.asarray(render(s, 128), dtype=float)
        large = np.asarray(render(s, 256).resize((128, 128), Image.Resampling.BOX), dtype=float)
        assert np.abs(small - large).mean() < 2


def test_the_square_has_the_circles_area() -> None:
    def area(shape: str) -> int:
        return int((np.asarray(render(scene(shape=shape), 256))[:, :, 2] < 128).sum())

    assert area("square") == pytest.approx(area("circle"), rel=0.02)


def test_shapes_stay_inside_the_canvas_and_edges_are_smoothed() -> None:
    rng = np.random.default_rng(4)
    for _ in range(100):
        s = random_scene(rng)
        image = np.asarray(render(s, 128))
        frame = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        assert (frame == COLOURS[s.background]).all(), s
        if s.shape != "square":  # a square's edges may fall on pixel boundaries
            assert len(np.unique(image.reshape(-1, 3), axis=0)) > 2  # 2x supersampled edges


def test_a_shape_never_takes_the_backgrounds_colour() -> None:
    rng = np.random.default_rng(5)
    assert all(s.colour != s.background for s in (random_scene(rng) for _ in range(500)))
    with pytest.raises(ValueError, match="differ"):
        scene(colour="blue")
