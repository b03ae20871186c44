"""The pixel classifier recognises rendered scenes: background, colour, shape, position, size."""

from __future__ import annotations

from collections import Counter

import numpy as np
from PIL import Image, ImageFilter

from kiln.demo.classify import classify, count_shapes
from kiln.demo.scenes import random_scene, render

ATTRIBUTES = ("background", "colour", "shape", "position", "size")


def errors(images_and_scenes: list) -> Counter:  # type: ignore[type-arg]
    wrong: Counter = Counter()  # type: ignore[type-arg]
    for image, scene in images_and_scenes:
        seen = classify(image)
        wrong.update(a for a in ATTRIBUTES if getattr(seen, a) != getattr(scene, a))
    return wrong


def test_recognises_rendered_scenes_at_128_and_256_px() -> None:
    rng = np.random.default_rng(10)
    samples = [(render(s, size), s) for size, n in ((128, 120), (256, 20))
               for s in (random_scene(rng) for _ in range(n))]
    assert errors(samples) == Counter()


def test_tolerates_blur_noise_and_washed_out_colours() -> None:
    rng = np.random.default_rng(11)
    samples = []
    for _ in range(60):
        s = random_scene(rng)
        blurred = np.asarray(render(s).filter(ImageFilter.GaussianBlur(1.0)), dtype=float)
        noisy = blurred * 0.9 + 12 + rng.normal(0, 10, blurred.shape)
        samples.append((Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), s))
    wrong = errors(samples)
    assert all(count <= 2 for count in wrong.values()), wrong


def test_a_blank_image_shows_no_shape() -> None:
    seen = classify(Image.new("RGB", (128, 128), (30, 70, 225)))
    assert seen.background == "blue" and seen.shape is None and seen.position is None


def test_counts_the_shapes_of_a_tiled_scene() -> None:
    tile = render(random_scene(np.random.default_rng(12)))
    tiled = Image.new("RGB", (256, 256))
    for x in (0, 128):
        for y in (0, 128):
            tiled.paste(tile, (x, y))
    assert count_shapes(tile) == 1
    assert count_shapes(tiled) == 4
