"""The benches' models: the tiny demo model, and the full-size SD 1.5 and SDXL architectures
with random weights, built offline and deterministically (seed 0) from their published configs
as diffusers folders of fp16 safetensors, once per `--models-dir`.

Random weights draw noise, but every layer computes what the trained model's does, so times
and memory are those of the real model. Only the tokenizers are not the published ones: they
are the tiny models' byte-level tokenizer (its vocabulary size is the text encoders'), which
changes nothing the benches measure beyond a few embedding rows.

Building on a GPU (`device="cuda"`) initialises the weights there, in seconds; on a CPU the
SDXL build takes minutes and about 14 GB of memory.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from kiln.engine.demo_models import build_tiny_sd, tiny_tokenizer
from kiln.models import Catalog, CatalogEntry, ModelDefaults
from kiln.models.demo import BUILD_VERSION
from kiln.storage import Database

SEED = 0
BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def _text_encoder(tokenizer: Any, width: int, layers: int, heads: int, act: str,
                  projection: bool = False) -> torch.nn.Module:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width,
        num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
        hidden_act=act, projection_dim=width, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae(scaling_factor: float, sample_size: int) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
        layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=sample_size,
        scaling_factor=scaling_factor)


def sd15_pipeline() -> StableDiffusionPipeline:
    """SD 1.5: UNet 320/640/1280/1280 (860 M parameters), CLIP ViT-L/14 text encoder, the
    128/256/512/512 VAE, PNDM."""
    tokenizer = tiny_tokenizer()
    text_encoder = _text_encoder(tokenizer, 768, 12, 12, "quick_gelu")  # seeded in this order
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
        cross_attention_dim=768, norm_num_groups=32)
    vae = _vae(0.18215, 512)
    scheduler = PNDMScheduler(num_train_timesteps=1000, steps_offset=1, skip_prk_steps=True,
                              set_alpha_to_one=False, **BETAS)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def sdxl_pipeline() -> StableDiffusionXLPipeline:
    """SDXL base 1.0: UNet 320/640/1280 with 1/2/10 transformer layers (2.6 B parameters),
    CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text encoders, the VAE with SDXL's scaling (upcast
    to fp32 for decoding, as the published VAE is), Euler."""
    tokenizer = tiny_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(320, 640, 1280), layers_per_block=2,
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        norm_num_groups=32)
    vae = _vae(0.13025, 1024)
    vae.register_to_config(force_upcast=True)
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, steps_offset=1,
                                       timestep_spacing="leading", **BETAS)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=_text_encoder(tokenizer, 768, 12, 12, "quick_gelu"),
        text_encoder_2=_text_encoder(tokenizer, 1280, 32, 20, "gelu", projection=True),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)


def build_random(make: Callable[[], Any]) -> Callable[[Path, str], None]:
    """A builder that writes `make()`'s pipeline, its weights initialised with seed 0 on
    `device`, as a diffusers folder of fp16 safetensors (a killed build leaves no folder)."""

    def build(folder: Path, device: str) -> None:
        torch.manual_seed(SEED)
        with torch.device(device):
            pipe = make()
        pipe.to(dtype=torch.float16)
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        pipe.save_pretrained(staging, safe_serialization=True)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)

    return build


@dataclass(frozen=True)
class BenchModel:
    air: str
    architecture: str  # Kiln's: sd1x or sdxl
    folder: str
    build: Callable[[Path, str], Any]
    version: str  # bump when the build changes, so existing folders are rebuilt

    def ensure(self, models_dir: Path, device: str = "cpu") -> Path:
        """The model's folder under `models_dir`, built first (on `device`) if missing or
        outdated."""
        folder = models_dir / self.folder
        stamp = folder / ".bench-build"
        if not (stamp.is_file() and stamp.read_text() == self.version):
            print(f"building {self.air} in {folder} on {device} ...", flush=True)
            started = time.perf_counter()
            folder.parent.mkdir(parents=True, exist_ok=True)
            self.build(folder, device)
            stamp.write_text(self.version)
            print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
        return folder

    def register(self, folder: Path, data_dir: Path) -> None:
        """Add the model, built in `folder`, to the catalog of the Kiln data directory `data_dir`."""
        data_dir.mkdir(parents=True, exist_ok=True)
        Catalog(Database(data_dir / "kiln.sqlite3")).add(CatalogEntry(
            air=self.air, name=folder.name, version="1", category="checkpoint", type="base",
            architecture=self.architecture, path=str(folder.resolve()), defaults=ModelDefaults()))


MODELS = {
    "tiny": BenchModel("kiln:tiny-sd@1", "sd1x", "tiny-sd",
                       lambda folder, device: build_tiny_sd(folder), BUILD_VERSION),
    "sd15": BenchModel("bench:sd15-random@1", "sd1x", "sd15-random", build_random(sd15_pipeline), "1"),
    "sdxl": BenchModel("bench:sdxl-random@1", "sdxl", "sdxl-random", build_random(sdxl_pipeline), "1"),
}
