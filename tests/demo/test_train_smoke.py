"""A few steps of every training stage with a tiny recipe, on the CPU: the machinery, not images.

The losses fall, an interrupted run resumes from its last checkpoint to the same weights, and
the folder written loads with plain diffusers calls and generates.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from kiln.demo.card import ADHERENCE_START, PLACEHOLDER
from kiln.demo.inpaint import train_inpaint
from kiln.demo.train import TrainConfig, train

RECIPE = dataclasses.replace(TrainConfig.tiny(), vae_steps=24, unet_steps=20, inpaint_steps=12)


class Interrupted(Exception):
    pass


def record(losses: dict[str, list[float]], stop_at: tuple[str, int] | None = None):  # type: ignore[no-untyped-def]
    def callback(stage: str, step: int, loss: float) -> None:
        losses[stage].append(loss)
        if (stage, step) == stop_at:
            raise Interrupted

    return callback


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[float]]]:
    losses: dict[str, list[float]] = defaultdict(list)
    out = tmp_path_factory.mktemp("run") / "shapes"
    train(out, RECIPE, precision="fp32", progress=False, callback=record(losses))
    return out, losses


def falls(losses: list[float]) -> bool:
    third = len(losses) // 3
    return float(np.mean(losses[-third:])) < float(np.mean(losses[:third]))


def test_vae_and_unet_losses_fall(trained: tuple[Path, dict[str, list[float]]]) -> None:
    _, losses = trained
    assert len(losses["vae"]) == RECIPE.vae_steps and falls(losses["vae"])
    assert len(losses["unet"]) == RECIPE.unet_steps and falls(losses["unet"])


def test_an_interrupted_run_resumes_from_its_last_checkpoint(
        trained: tuple[Path, dict[str, list[float]]], tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    first: dict[str, list[float]] = defaultdict(list)
    with pytest.raises(Interrupted):  # after step 7; the last checkpoint is step 5
        train(out, RECIPE, precision="fp32", progress=False, callback=record(first, ("unet", 7)))
    steps: list[tuple[str, int]] = []
    train(out, RECIPE, precision="fp32", progress=False,
          callback=lambda stage, step, loss: steps.append((stage, step)))
    assert steps == [("unet", step) for step in range(6, RECIPE.unet_steps + 1)]  # VAE done
    resumed = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    uninterrupted = load_file(trained[0] / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def test_the_folder_loads_with_diffusers_and_draws_128_px(
        trained: tuple[Path, dict[str, list[float]]]) -> None:
    folder, _ = trained
    with safe_open(str(folder / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
    for config in folder.glob("*/config.json"):
        assert json.loads(config.read_text()).get("_name_or_path", "") == ""
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())[
        "_class_name"] == "PNDMScheduler"
    card = (folder / "README.md").read_text()
    assert ADHERENCE_START in card and PLACEHOLDER in card and "parameters" in card

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.float32}
    image = pipe("a red circle on a blue background", num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (128, 128)


def test_the_inpainting_unet_fine_tunes_from_the_model(
        trained: tuple[Path, dict[str, list[float]]], tmp_path: Path) -> None:
    losses: dict[str, list[float]] = defaultdict(list)
    out = train_inpaint(trained[0], tmp_path / "inpaint", RECIPE, precision="fp32",
                        progress=False, callback=record(losses))
    assert len(losses["inpaint"]) == RECIPE.inpaint_steps
    assert all(np.isfinite(losses["inpaint"]))
    pipe = StableDiffusionInpaintPipeline.from_pretrained(out, local_files_only=True)
    assert pipe.unet.config.in_channels == 9 and pipe.unet.dtype == torch.float32
    image = pipe("a yellow circle", image=Image.new("RGB", (128, 128), "blue"),
                 mask_image=Image.new("L", (128, 128), 255), height=128, width=128,
                 num_inference_steps=2).images[0]
    assert image.size == (128, 128)
