"""Step reports of Engine.generate_batch: each image's steps 1..steps once each, in order, with
its pixels unchanged, across a refiner's stage too; previews are a linear map of the latents."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from kiln.engine import Engine
from kiln.engine.steps import latent_preview
from kiln.generation import ModelSpec, RefinerInput
from kiln.progress import StepProgress
from tests.tiny_extras import build_refiner_folder

from .helpers import TinyModels, make_request


@pytest.mark.parametrize("arch", ["sd", "sdxl"])  # PNDM runs steps + 1 iterations, Euler steps
def test_each_image_reports_each_step_once_and_keeps_its_pixels(
    engine: Engine, tiny: TinyModels, arch: str
) -> None:
    batch = [make_request(getattr(tiny, arch), steps=4, seeds=(seed,)) for seed in (5, 6)]
    reports: list[StepProgress] = []
    previews: list[Image.Image | None] = []

    def listen(progress: StepProgress) -> None:
        reports.append(progress)
        previews.append(progress.preview())

    watched = engine.generate_batch(batch, on_step=listen)
    plain = engine.generate_batch(batch)
    assert [image.tobytes() for image in watched] == [image.tobytes() for image in plain]  # type: ignore[union-attr]
    assert [(r.index, r.step, r.steps) for r in reports] == [
        (index, step, 4) for step in (1, 2, 3, 4) for index in (0, 1)
    ]
    assert all(p is not None and p.size == (8, 8) and p.mode == "RGB" for p in previews)


@pytest.mark.parametrize(("strength", "steps"), [(0.5, 5), (0.8, 8)])  # 0.8: where PNDM repeats a timestep
def test_image_to_image_reports_the_steps_that_strength_runs(
    engine: Engine, tiny: TinyModels, strength: float, steps: int
) -> None:
    request = make_request(tiny.sd, steps=10, mode="image", strength=strength,
                           init_image=Image.new("RGB", (64, 64), "red"))
    reports: list[StepProgress] = []
    engine.generate_batch([request], on_step=reports.append)
    assert [(r.step, r.steps) for r in reports] == [(step, steps) for step in range(1, steps + 1)]


def test_previews_map_the_latent_channels_and_stay_small() -> None:
    grey = latent_preview(torch.zeros(4, 128, 96), "sd1x")
    assert grey is not None and grey.size == (48, 64)
    assert grey.getextrema() == ((128, 128),) * 3  # 0 is mid-grey: (0 + 1) / 2
    first_channel = torch.zeros(4, 8, 8)
    first_channel[0] = 1  # mostly luminance in both VAEs
    for architecture in ("sd1x", "sdxl"):
        bright = latent_preview(first_channel, architecture)  # type: ignore[arg-type]
        assert bright is not None and bright.size == (8, 8)
        assert min(bright.getpixel((0, 0))) > 150
    assert latent_preview(torch.zeros(16, 8, 8), "sdxl") is None  # not a 4-channel VAE


def test_a_refiner_goes_on_with_the_steps_of_its_base(
    engine: Engine, tiny: TinyModels, tmp_path: Path
) -> None:
    refiner = ModelSpec("test:refiner@1", "sdxl", str(build_refiner_folder(tmp_path / "refiner")))
    request = make_request(tiny.sdxl, steps=6, refiner=RefinerInput(refiner, 0.5))
    reports: list[StepProgress] = []
    engine.generate_batch([request], on_step=reports.append)
    assert [(r.step, r.steps) for r in reports] == [(step, 6) for step in range(1, 7)]
