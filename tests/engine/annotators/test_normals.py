"""normalbae annotator: a tiny random Marigold normals pipeline, saved as diffusers saves the real
ones, loaded and run through `annotate`; the normal → colour convention on known normals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, MarigoldNormalsPipeline, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel

from kiln.engine.annotators import annotate
from kiln.engine.annotators.normals import normalbae_image
from kiln.engine.demo_models import (
    build_tiny_sd,
    tiny_text_config,
    tiny_tokenizer,
    tiny_unet_kwargs,
    tiny_vae,
)
from kiln.errors import ModelLoadError


def tiny_normals_model(directory: Path) -> str:
    """Write a tiny random-weight Marigold normals pipeline folder (the layout of
    prs-eth/marigold-normals-v1-1: unet, vae, scheduler, text_encoder, tokenizer and the
    Marigold fields of model_index.json) to `directory` and return its path."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    pipeline = MarigoldNormalsPipeline(
        # The UNet sees the image's latents and the noisy normals' latents side by side.
        unet=UNet2DConditionModel(**{**tiny_unet_kwargs(cross_attention_dim=32), "in_channels": 8}),
        vae=tiny_vae(scaling_factor=0.18215),
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            clip_sample=False,
            set_alpha_to_one=False,
            prediction_type="v_prediction",
            timestep_spacing="trailing",
        ),
        text_encoder=CLIPTextModel(tiny_text_config(tokenizer, hidden_size=32)),
        tokenizer=tokenizer,
        prediction_type="normals",
        use_full_z_range=True,
        default_denoising_steps=2,
        default_processing_resolution=64,
    )
    pipeline.save_pretrained(directory, safe_serialization=True)
    return str(directory)


@pytest.fixture(scope="module")
def normals_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_normals_model(tmp_path_factory.mktemp("marigold-normals"))


def _photo(width: int = 80, height: int = 48) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_guide_image_is_rgb_at_the_input_size(normals_model: str) -> None:
    guide = annotate("normalbae", normals_model, _photo(80, 48).convert("RGBA"), device="cpu")
    assert (guide.mode, guide.size) == ("RGB", (80, 48))


def test_same_image_gives_same_bytes(normals_model: str) -> None:
    first = annotate("normalbae", normals_model, _photo(), device="cpu")
    second = annotate("normalbae", normals_model, _photo(), device="cpu")
    assert first.tobytes() == second.tobytes()


def test_every_pixel_encodes_a_unit_normal(normals_model: str) -> None:
    guide = np.asarray(annotate("normalbae", normals_model, _photo(), device="cpu"))
    normals = guide.astype(np.float64) / 255 * 2 - 1
    lengths = np.linalg.norm(normals, axis=-1)
    # uint8 truncation moves each component by at most 2/255
    assert np.all(np.abs(lengths - 1) < 0.03), (lengths.min(), lengths.max())


@pytest.mark.parametrize(
    ("normal", "colour"),
    [
        ((0, 0, 1), (128, 128, 255)),  # facing the camera: normalbae's bluish lavender
        ((1, 0, 0), (0, 128, 128)),  # facing right: red is left in normalbae
        ((-1, 0, 0), (255, 128, 128)),
        ((0, 1, 0), (128, 255, 128)),  # facing up: green is top
        ((0, -1, 0), (128, 0, 128)),
    ],
)
def test_marigold_normals_take_normalbae_colours(
    normal: tuple[int, int, int], colour: tuple[int, int, int]
) -> None:
    normals = np.broadcast_to(np.array(normal, dtype=np.float32), (4, 6, 3))
    image = normalbae_image(normals)
    assert (image.mode, image.size) == ("RGB", (6, 4))
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    assert np.all(np.abs(pixels - colour) <= 1), pixels[0]


def test_stable_diffusion_folder_is_not_a_normals_model(tmp_path: Path) -> None:
    folder = build_tiny_sd(tmp_path / "sd")
    with pytest.raises(ModelLoadError, match="prediction_type"):
        annotate("normalbae", str(folder), _photo(), device="cpu")


def test_folder_without_a_pipeline_raises_model_load_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match="normalbae"):
        annotate("normalbae", str(tmp_path), _photo(), device="cpu")
