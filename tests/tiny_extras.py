"""VAEs, textual-inversion embeddings and SDXL refiners for the tiny demo models, built the way
users have them: a single-file VAE in the LDM layout (as A1111 and ComfyUI keep them) and a
diffusers VAE folder; embeddings in A1111's `.safetensors` and `.pt` and diffusers' `.bin`
formats; a diffusers refiner folder whose text encoder matches tiny-sdxl's second one.

Random weights, built deterministically. Embedding vectors are large (std 0.5) so that a trigger
word visibly changes the noise the tiny models draw.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextModelWithProjection

from kiln.engine.demo_models import tiny_text_config, tiny_tokenizer, tiny_unet_kwargs, tiny_vae
from kiln.engine.single_file import _convert_vae

SD_WIDTH = 32  # tiny-sd's text encoder; tiny-sdxl's first one
SDXL_WIDTH_2 = 64  # tiny-sdxl's second text encoder
_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "steps_offset": 1}


def write_vae_file(path: Path, seed: int = 21) -> Path:
    """A single-file SD VAE in the LDM layout (`encoder.down.N.block.M...`, no prefix), with the
    32 norm groups of the published VAEs so that the config Kiln writes for it fits."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=32,
        latent_channels=4, sample_size=64, scaling_factor=0.18215,
    )
    state = _convert_vae(vae.state_dict(), dict(vae.config))
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(path))
    return path


def build_vae_folder(folder: Path, seed: int = 22) -> Path:
    """A diffusers VAE folder (`config.json` and weights) of the tiny models' shape, for SDXL."""
    torch.manual_seed(seed)
    tiny_vae(scaling_factor=0.13025).save_pretrained(folder, safe_serialization=True)
    return folder


def _vectors(seed: int, count: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, width, generator=generator) * 0.5


def write_a1111_safetensors(path: Path, seed: int = 31) -> Path:
    """An SD 1.x embedding as A1111 saves `.safetensors`: `{"emb_params": (vectors, width)}`."""
    save_file({"emb_params": _vectors(seed, 3, SD_WIDTH)}, str(path))
    return path


def write_a1111_pt(path: Path, seed: int = 32) -> Path:
    """An SD 1.x embedding as A1111 saves `.pt`: `string_to_param["*"]` with its bookkeeping."""
    torch.save({
        "string_to_token": {"*": 265},
        "string_to_param": {"*": _vectors(seed, 2, SD_WIDTH)},
        "name": path.stem,
        "step": 1000,
        "sd_checkpoint": "0123abcd",
        "sd_checkpoint_name": "tiny-sd",
    }, path)
    return path


def write_diffusers_bin(path: Path, seed: int = 33) -> Path:
    """An SD 1.x embedding as diffusers' textual-inversion script saves it: `{token: vector}`."""
    torch.save({"<tiny-concept>": _vectors(seed, 1, SD_WIDTH)[0]}, path)
    return path


def write_sdxl_embedding(path: Path, seed: int = 34) -> Path:
    """An SDXL embedding: `clip_l` and `clip_g` vectors for the two text encoders."""
    save_file({"clip_l": _vectors(seed, 2, SD_WIDTH), "clip_g": _vectors(seed + 1, 2, SDXL_WIDTH_2)}, str(path))
    return path


def build_refiner_folder(folder: Path, seed: int = 41) -> Path:
    """An SDXL refiner diffusers folder for tiny-sdxl: no first text encoder, a second one as wide
    as tiny-sdxl's (so SDXL embeddings load into it too), a UNet conditioned on 5 numbers
    (original size, crop, aesthetic score) and `requires_aesthetics_score`."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    unet = UNet2DConditionModel(
        **tiny_unet_kwargs(cross_attention_dim=SDXL_WIDTH_2),
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=5 * 8 + 32,
    )
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=tiny_vae(scaling_factor=0.13025),
        text_encoder=None,
        text_encoder_2=CLIPTextModelWithProjection(
            tiny_text_config(tokenizer, hidden_size=SDXL_WIDTH_2, projection_dim=32)),
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**_SCHEDULE, timestep_spacing="leading"),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
