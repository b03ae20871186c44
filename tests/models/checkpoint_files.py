"""Checkpoint files for the detection and import tests, cheap to make.

- `build_mini_sd` / `build_mini_sdxl`: small random-weight diffusers folders that keep the
  published architecture's rules (CLIP's real 49,408-token vocabulary, 32 norm groups, SD 1.x's 8
  heads, 64-wide heads elsewhere) at small widths, so a single file written from them loads with
  the config folder Kiln derives from its header.
- `write_header_only`: a `.safetensors` file with the given tensor names and shapes whose data is
  a hole (a sparse file): a full-size SDXL header costs nothing on disk.
- `published_ldm_shapes`: the LDM tensor names and shapes of a real SD 1.5, SD 2.x or SDXL
  checkpoint, from the published diffusers configs below, with models built on the meta device.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from kiln.engine.single_file import (
    _convert_open_clip,
    _convert_unet,
    _convert_vae,
    _prefixed,
    _strip_text_model,
)
from kiln.models import clip_tokenizer

_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "steps_offset": 1}


def clip_tokenizer_for(pad_token: str) -> CLIPTokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in clip_tokenizer.tokenizer_files(pad_token).items():
            (Path(tmp) / name).write_text(text, "utf-8")
        return CLIPTokenizer.from_pretrained(tmp, local_files_only=True)


def _text_config(width: int, *, activation: str, projection: int | None = None) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=clip_tokenizer.VOCAB_SIZE, hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=2, num_attention_heads=width // 64, max_position_embeddings=77,
        hidden_act=activation, projection_dim=projection or width,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )


def _mini_vae(scaling_factor: float) -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=32,
        latent_channels=4, sample_size=64, scaling_factor=scaling_factor,
    )


def build_mini_sd(out_dir: Path) -> Path:
    """An SD 1.x diffusers folder at small widths (2 UNet levels of 32 and 64 channels)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32,
    )
    pipe = StableDiffusionPipeline(
        vae=_mini_vae(0.18215), text_encoder=CLIPTextModel(_text_config(64, activation="quick_gelu")),
        tokenizer=clip_tokenizer_for(clip_tokenizer.EOS), unet=unet,
        scheduler=PNDMScheduler(**_SCHEDULE, skip_prk_steps=True, set_alpha_to_one=False),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


def build_mini_sdxl(out_dir: Path) -> Path:
    """An SDXL diffusers folder at small widths: text encoders of 64 and 128, 3 UNet levels with
    attention on the last two (1 and 2 transformer layers), as SDXL's [0, 2, 10]."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), cross_attention_dim=64 + 128,
        attention_head_dim=(1, 1, 1), use_linear_projection=True, norm_num_groups=32,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 96,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_mini_vae(0.13025),
        text_encoder=CLIPTextModel(_text_config(64, activation="quick_gelu")),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(128, activation="gelu", projection=96)),
        tokenizer=clip_tokenizer_for(clip_tokenizer.EOS), tokenizer_2=clip_tokenizer_for("!"), unet=unet,
        scheduler=EulerDiscreteScheduler(**_SCHEDULE, timestep_spacing="leading"),
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


def write_mini_refiner(out_file: Path) -> Path:
    """An SDXL refiner checkpoint at small widths, in the LDM layout: one OpenCLIP text encoder
    (`conditioner.embedders.0.model.*`), a UNet with attention on its middle levels and 5
    micro-conditioning numbers (original size, crop, aesthetic score)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=2, cross_attention_dim=128, attention_head_dim=(1, 1, 1),
        use_linear_projection=True, norm_num_groups=32, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=5 * 8 + 96,
    )
    text = CLIPTextModelWithProjection(_text_config(128, activation="gelu", projection=96))
    vae = _mini_vae(0.13025)
    state = _prefixed("model.diffusion_model.", _convert_unet(unet.state_dict(), dict(unet.config)))
    state |= _prefixed("first_stage_model.", _convert_vae(vae.state_dict(), dict(vae.config)))
    state |= _prefixed("conditioner.embedders.0.model.", _convert_open_clip(_strip_text_model(text.state_dict())))
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_file))
    return Path(out_file)


def write_header_only(path: Path, shapes: Mapping[str, tuple[int, ...]],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """A valid float16 `.safetensors` file of `shapes` whose data is never written (a sparse hole)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in sorted(shapes):
        size = 2
        for dim in shapes[name]:
            size *= dim
        header[name] = {"dtype": "F16", "shape": list(shapes[name]), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded)
    os.truncate(path, 8 + len(encoded) + offset)
    return Path(path)


def write_small(path: Path, tensors: Mapping[str, tuple[int, ...]]) -> Path:
    """A small float16 `.safetensors` file of zeros with these names and shapes."""
    save_file({name: torch.zeros(shape, dtype=torch.float16) for name, shape in tensors.items()}, str(path))
    return Path(path)


SD15_TO_K = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
ADAPTER_FILES = {
    # Adapter, VAE and embedding files: their real tensor names, with the shapes that tell them apart,
# and (category, architecture, conditioning) as Kiln should register them.
    "detail_kohya.safetensors": ({f"lora_unet_{SD15_TO_K.replace('.', '_')}.lora_down.weight": (4, 768),
                                  f"lora_unet_{SD15_TO_K.replace('.', '_')}.lora_up.weight": (320, 4),
                                  f"lora_unet_{SD15_TO_K.replace('.', '_')}.alpha": ()},
                                 ("lora", "sd1x", None)),
    "style_xl.safetensors": ({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (8, 2048),
                              "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (8, 768)},
                             ("lora", "sdxl", None)),
    "peft.safetensors": ({f"unet.{SD15_TO_K}.lora_A.weight": (4, 768), f"unet.{SD15_TO_K}.lora_B.weight": (320, 4)},
                         ("lora", "sd1x", None)),
    "loha.safetensors": ({f"lora_unet_{SD15_TO_K.replace('.', '_')}.hada_w1_a": (320, 4),
                          f"lora_unet_{SD15_TO_K.replace('.', '_')}.hada_w1_b": (4, 768)},
                         ("lycoris", "sd1x", None)),
    "control_v11p_sd15_canny.safetensors": ({"control_model.input_hint_block.0.weight": (16, 3, 3, 3),
                                             "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)},
                                            ("controlnet", "sd1x", "canny")),
    "controlnet-depth-sdxl-1.0.safetensors": ({"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
                                               "add_embedding.linear_1.weight": (1280, 2816),
                                               "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (640, 2048)},
                                              ("controlnet", "sdxl", "depth")),
    "sdxl_vae.safetensors": ({"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 4, 3, 3)},
                             ("vae", "sdxl", None)),
    "vae-ft-mse-840000-ema-pruned.safetensors": ({"encoder.conv_in.weight": (128, 3, 3, 3),
                                                  "decoder.conv_in.weight": (512, 4, 3, 3)},
                                                 ("vae", "sd1x", None)),
    "easynegative.safetensors": ({"emb_params": (8, 768)}, ("embeddings", "sd1x", None)),
    "negative_xl.safetensors": ({"clip_l": (4, 768), "clip_g": (4, 1280)}, ("embeddings", "sdxl", None)),
}


# ---- the published architectures ---------------------------------------------------------------
# From the diffusers configs of runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1,
# stable-diffusion-2-inpainting, stable-diffusion-xl-base-1.0, stable-diffusion-xl-refiner-1.0 and
# diffusers/stable-diffusion-xl-1.0-inpainting-0.1 (unet/, vae/, text_encoder*/config.json).

SD_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
SD_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
PUBLISHED_UNETS: dict[str, dict[str, Any]] = {
    "sd1": {"in_channels": 4, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
            "down_block_types": SD_DOWN, "up_block_types": SD_UP, "cross_attention_dim": 768,
            "attention_head_dim": 8, "use_linear_projection": False, "sample_size": 64},
    "sd2": {"in_channels": 4, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
            "down_block_types": SD_DOWN, "up_block_types": SD_UP, "cross_attention_dim": 1024,
            "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True, "sample_size": 96,
            "upcast_attention": True},
    "sdxl": {"in_channels": 4, "block_out_channels": [320, 640, 1280], "layers_per_block": 2,
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
             "transformer_layers_per_block": [1, 2, 10], "cross_attention_dim": 2048,
             "attention_head_dim": [5, 10, 20], "use_linear_projection": True, "sample_size": 128,
             "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
             "projection_class_embeddings_input_dim": 2816},
    "sdxl-refiner": {"in_channels": 4, "block_out_channels": [384, 768, 1536, 1536], "layers_per_block": 2,
                     "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                     "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                     "transformer_layers_per_block": 4, "cross_attention_dim": 1280,
                     "attention_head_dim": [6, 12, 24, 24], "use_linear_projection": True, "sample_size": 128,
                     "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                     "projection_class_embeddings_input_dim": 2560},
}
PUBLISHED_VAE: dict[str, Any] = {
    "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3, "out_channels": 3, "norm_num_groups": 32,
}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
          "hidden_act": "quick_gelu", "vocab_size": 49408, "max_position_embeddings": 77}
OPEN_CLIP_H = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,  # 24, less the last
               "num_attention_heads": 16, "hidden_act": "gelu", "vocab_size": 49408, "max_position_embeddings": 77}
OPEN_CLIP_BIG_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                   "num_attention_heads": 20, "hidden_act": "gelu", "vocab_size": 49408,
                   "max_position_embeddings": 77, "projection_dim": 1280}


def published_ldm_shapes(kind: str, *, in_channels: int = 4) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a real LDM checkpoint of `kind` (sd1, sd2, sdxl, sdxl-refiner);
    `in_channels` 9 for an inpainting UNet, whose first convolution alone differs."""
    shapes = dict(_published_ldm_shapes(kind))
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    width, _, *kernel = shapes[conv_in]
    shapes[conv_in] = (width, in_channels, *kernel)
    return shapes


@cache
def _published_ldm_shapes(kind: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    unet_config = PUBLISHED_UNETS[kind]
    with init_empty_weights():  # shapes only: nothing is allocated
        unet = UNet2DConditionModel(**unet_config).state_dict()
        vae = AutoencoderKL(**PUBLISHED_VAE).state_dict()
        clip_l = CLIPTextModel(CLIPTextConfig(**CLIP_L)).state_dict()
        open_clip = CLIPTextModelWithProjection(CLIPTextConfig(
            **({**OPEN_CLIP_H, "num_hidden_layers": 24, "projection_dim": 1024} if kind == "sd2" else OPEN_CLIP_BIG_G)
        )).state_dict()
        state = _prefixed("model.diffusion_model.", _convert_unet(unet, unet_config))
        state |= _prefixed("first_stage_model.", _convert_vae(vae, PUBLISHED_VAE))
        open_clip = _convert_open_clip(_strip_text_model(open_clip))
    if kind == "sd1":
        state |= _prefixed("cond_stage_model.transformer.text_model.", _strip_text_model(clip_l))
    elif kind == "sd2":
        state |= _prefixed("cond_stage_model.model.", open_clip)
    elif kind == "sdxl":
        state |= _prefixed("conditioner.embedders.0.transformer.text_model.", _strip_text_model(clip_l))
        state |= _prefixed("conditioner.embedders.1.model.", open_clip)
    else:
        state |= _prefixed("conditioner.embedders.0.model.", open_clip)
    return tuple((name, tuple(tensor.shape)) for name, tensor in sorted(state.items()))
