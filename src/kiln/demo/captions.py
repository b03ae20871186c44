"""What a scene's caption says, in words redrawn at each use, and the pairs training never shows.

Every attribute a caption leaves unsaid has one meaning (background: white, position: centre,
size: medium), so a prompt fully determines what the model should draw. The held-out pairs are
excluded from every training stage by `training_scene`; the adherence benchmark prompts exactly
them (`benchmark_cases`), to measure generalisation honestly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kiln.demo.scenes import COLOURS, POSITIONS, Scene, random_scene

HELD_OUT_COLOUR_SHAPE: tuple[tuple[str, str], ...] = (
    ("purple", "circle"),
    ("blue", "square"),
    ("orange", "triangle"),
    ("green", "star"),
)
HELD_OUT_SHAPE_POSITION: tuple[tuple[str, str], ...] = (
    ("circle", "top right"),
    ("square", "bottom left"),
    ("triangle", "top left"),
    ("star", "bottom right"),
)

COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in COLOURS},
    "purple": ("purple", "violet"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "dot"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "medium": ("",),
    "large": ("large", "big", "huge"),
}
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "centre": ("in the centre", "in the center", "in the middle"),
    **{
        corner: (f"in the {corner}", f"at the {corner}", f"in the {corner} corner",
                 f"in the {corner.replace('top', 'upper').replace('bottom', 'lower')} corner")
        for corner in POSITIONS[1:]
    },
}
BACKGROUND_PHRASES = ("on a {} background", "on {}", ", {} background", "against a {} background",
                      "with a {} background")
ARTICLES = ("a", "one", "")
UNSAID_BACKGROUND_SAID = 0.5  # how often a white background (the unsaid default) is said anyway
UNSAID_POSITION_SAID = 0.5  # the same for the centre; corners are always said


def is_held_out(scene: Scene) -> bool:
    """Whether the scene shows a held-out colour+shape or shape+position pair."""
    return ((scene.colour, scene.shape) in HELD_OUT_COLOUR_SHAPE
            or (scene.shape, scene.position) in HELD_OUT_SHAPE_POSITION)


def training_scene(rng: np.random.Generator) -> Scene:
    """A scene from the training distribution that shows no held-out pair."""
    while True:
        scene = random_scene(rng)
        if not is_held_out(scene):
            return scene


def describe(scene: Scene, rng: np.random.Generator, *, say_all: bool = False) -> str:
    """A caption of `scene` with synonyms and word order drawn from `rng`.

    Small and large sizes, corners and non-white backgrounds are always said; the defaults
    (medium, centre, white) sometimes, or always with `say_all`.
    """

    def pick(options: tuple[str, ...]) -> str:
        return options[rng.integers(len(options))]

    words = [pick(SIZE_WORDS[scene.size]), pick(COLOUR_WORDS[scene.colour]),
             pick(SHAPE_WORDS[scene.shape])]
    article = pick(ARTICLES)
    if article == "a" and words[0 if words[0] else 1][0] in "aeiou":
        article = "an"
    parts = [" ".join(w for w in (article, *words) if w)]
    extras = []
    if say_all or scene.position != "centre" or rng.random() < UNSAID_POSITION_SAID:
        extras.append(pick(POSITION_PHRASES[scene.position]))
    if say_all or scene.background != "white" or rng.random() < UNSAID_BACKGROUND_SAID:
        extras.append(pick(BACKGROUND_PHRASES).format(pick(COLOUR_WORDS[scene.background])))
    if rng.random() < 0.5:
        extras.reverse()
    for extra in extras:
        parts.append(extra if extra.startswith(",") else " " + extra)
    return "".join(parts)


def vocabulary() -> list[str]:
    """Every word a caption can contain (a comma counts as a word), sorted."""
    phrases = [*ARTICLES, "an", *(w for ws in (COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS,
                                                 POSITION_PHRASES) for v in ws.values() for w in v),
               *(p.format("") for p in BACKGROUND_PHRASES)]
    return sorted({word for phrase in phrases for word in phrase.replace(",", " , ").split()})


@dataclass(frozen=True)
class BenchmarkCase:
    """A prompt and the scene it asks for; `split` names the held-out pair it tests."""

    prompt: str
    scene: Scene
    split: str  # "colour+shape" or "shape+position"
    seed: int


def benchmark_cases(count: int = 96, seed: int = 0) -> list[BenchmarkCase]:
    """`count` prompts, half on each kind of held-out pair, every attribute said.

    The colour+shape prompts put the shape at positions seen with it in training, the
    shape+position prompts use colours seen with the shape, so each prompt tests one unseen pair.
    """
    rng = np.random.default_rng([seed, 7])
    cases = []
    for i in range(count):
        split = ("colour+shape", "shape+position")[i % 2]
        while True:
            scene = random_scene(rng)
            if split == "colour+shape":
                colour, shape = HELD_OUT_COLOUR_SHAPE[(i // 2) % len(HELD_OUT_COLOUR_SHAPE)]
                position = scene.position
            else:
                shape, position = HELD_OUT_SHAPE_POSITION[(i // 2) % len(HELD_OUT_SHAPE_POSITION)]
                colour = scene.colour
            if colour == scene.background:
                continue
            scene = replace(scene, shape=shape, colour=colour, position=position, offset=(0, 0))
            other_pair = ((scene.shape, scene.position) in HELD_OUT_SHAPE_POSITION
                          if split == "colour+shape"
                          else (scene.colour, scene.shape) in HELD_OUT_COLOUR_SHAPE)
            if not other_pair:
                break
        cases.append(BenchmarkCase(describe(scene, rng, say_all=True), scene, split, 1000 + i))
    return cases

