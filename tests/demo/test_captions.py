"""Captions: synonyms redrawn each time, defaults unsaid, held-out pairs never trained on."""

from __future__ import annotations

from collections import Counter

import numpy as np

from kiln.demo.captions import (
    HELD_OUT_COLOUR_SHAPE,
    HELD_OUT_SHAPE_POSITION,
    benchmark_cases,
    describe,
    is_held_out,
    training_scene,
    vocabulary,
)
from kiln.demo.scenes import COLOURS, POSITIONS, SHAPES


def test_training_never_draws_a_held_out_pair_but_sees_each_word_with_others() -> None:
    rng = np.random.default_rng(0)
    scenes = [training_scene(rng) for _ in range(4000)]
    assert not any(is_held_out(s) for s in scenes)
    pairs = Counter((s.colour, s.shape) for s in scenes) + Counter(
        (s.shape, s.position) for s in scenes)
    assert not set(HELD_OUT_COLOUR_SHAPE + HELD_OUT_SHAPE_POSITION) & set(pairs)
    # every colour, shape and position still appears, with other partners
    assert {s.colour for s in scenes} == set(COLOURS)
    assert {s.shape for s in scenes} == set(SHAPES)
    assert {s.position for s in scenes} == set(POSITIONS)


def test_captions_are_redrawn_and_use_only_the_vocabulary() -> None:
    rng = np.random.default_rng(1)
    scene = training_scene(rng)
    captions = {describe(scene, rng) for _ in range(50)}
    assert len(captions) > 5
    words = set(vocabulary())
    for _ in range(500):
        caption = describe(training_scene(rng), rng)
        assert set(caption.replace(",", " , ").split()) <= words, caption


def test_unsaid_attributes_have_one_meaning() -> None:
    rng = np.random.default_rng(2)
    for _ in range(500):
        scene = training_scene(rng)
        caption = describe(scene, rng)
        if "background" not in caption and " on " not in caption:
            assert scene.background == "white", caption
        if not any(w in caption for w in ("top", "bottom", "upper", "lower", "cent", "middle")):
            assert scene.position == "centre", caption
        if scene.position != "centre":
            assert "left" in caption or "right" in caption


def test_benchmark_prompts_are_exactly_the_held_out_pairs() -> None:
    cases = benchmark_cases(96)
    assert len(cases) == 96 and cases == benchmark_cases(96)
    splits = Counter(case.split for case in cases)
    assert splits == {"colour+shape": 48, "shape+position": 48}
    for case in cases:
        s = case.scene
        if case.split == "colour+shape":
            assert (s.colour, s.shape) in HELD_OUT_COLOUR_SHAPE
            assert (s.shape, s.position) not in HELD_OUT_SHAPE_POSITION
        else:
            assert (s.shape, s.position) in HELD_OUT_SHAPE_POSITION
            assert (s.colour, s.shape) not in HELD_OUT_COLOUR_SHAPE
        assert any(w in case.prompt for w in ("background", " on "))
    assert {(c.scene.colour, c.scene.shape) for c in cases} >= set(HELD_OUT_COLOUR_SHAPE)
    assert {(c.scene.shape, c.scene.position) for c in cases} >= set(HELD_OUT_SHAPE_POSITION)
