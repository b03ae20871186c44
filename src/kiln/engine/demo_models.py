"""Tiny random-weight SD 1.x and SDXL diffusers folders for tests, demos and benchmarks.

Built offline and deterministically: the same call writes the same bytes every time. The images
they produce are noise, but every code path (tokenizer, clip skip, schedulers, VAE scale factor 8,
single-file conversion) behaves as with a real model, at a tiny fraction of the cost.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

_SEED = 0
_MAX_LENGTH = 77
_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
# Whole-word merges so that a few common words are single tokens, as with the real vocabulary.
_MERGES = (("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("c", "a"), ("ca", "t</w>"))
# SD 1.5's training noise schedule, shared by both architectures.
_BETAS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
}


def build_tiny_sd(out_dir: Path) -> Path:
    """Write a tiny SD 1.x diffusers folder to `out_dir` and return it.

    Loads with `StableDiffusionPipeline.from_pretrained(out_dir, local_files_only=True)`. The text
    encoder has 4 layers of width 32 so clip skip 0-3 is meaningful.
    """
    return _build_sd1x(out_dir, StableDiffusionPipeline, unet_in_channels=4)


def build_tiny_sd_inpaint(out_dir: Path) -> Path:
    """Write a tiny SD 1.x inpainting diffusers folder (9-channel UNet) to `out_dir`.

    Same components as `build_tiny_sd` except the UNet, whose input is the noisy latents, the
    mask and the masked image's latents (4 + 1 + 4 channels), as in SD 1.5's inpainting model.
    Loads with `StableDiffusionInpaintPipeline.from_pretrained(out_dir, local_files_only=True)`.
    """
    return _build_sd1x(out_dir, StableDiffusionInpaintPipeline, unet_in_channels=9)


def _build_sd1x(
    out_dir: Path,
    pipeline: type[StableDiffusionPipeline] | type[StableDiffusionInpaintPipeline],
    *,
    unet_in_channels: int,
) -> Path:
    torch.manual_seed(_SEED)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(tiny_text_config(tokenizer, hidden_size=32))
    unet = UNet2DConditionModel(
        **{**tiny_unet_kwargs(cross_attention_dim=32), "in_channels": unet_in_channels}
    )
    pipe = pipeline(
        vae=tiny_vae(scaling_factor=0.18215),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**_BETAS, skip_prk_steps=True, set_alpha_to_one=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, out_dir)


def build_tiny_sdxl(out_dir: Path) -> Path:
    """Write a tiny SDXL diffusers folder to `out_dir` and return it.

    Loads with `StableDiffusionXLPipeline.from_pretrained(out_dir, local_files_only=True)`. The
    two text encoders have different widths (32 and 64), as CLIP-L and OpenCLIP-bigG do, because
    diffusers' single-file loader tells them apart by width.
    """
    torch.manual_seed(_SEED)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(tiny_text_config(tokenizer, hidden_size=32))
    text_encoder_2 = CLIPTextModelWithProjection(
        tiny_text_config(tokenizer, hidden_size=64, projection_dim=32)
    )
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        **tiny_unet_kwargs(cross_attention_dim=32 + 64),
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        # 6 micro-conditioning numbers (original size, crop, target size) plus the pooled text.
        projection_class_embeddings_input_dim=6 * time_embed_dim + 32,
    )
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(scaling_factor=0.13025),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tiny_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(**_BETAS, timestep_spacing="leading"),
        force_zeros_for_empty_prompt=True,
    )
    return _save(pipe, out_dir)


def _byte_chars() -> list[str]:
    """CLIP's (GPT-2's) reversible map of the 256 byte values to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    by_byte = dict(zip(printable, codes, strict=True))
    return [chr(by_byte[b]) for b in range(256)]


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer with a tiny byte-level vocabulary (the same every time), 77 tokens long."""
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(pair) for pair in _MERGES]
    tokens += [_BOS, _EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
        merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES)
        (folder / "merges.txt").write_text(merges, "utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.model_max_length = _MAX_LENGTH
    return tokenizer


def tiny_text_config(
    tokenizer: CLIPTokenizer, *, hidden_size: int, projection_dim: int | None = None
) -> CLIPTextConfig:
    """A 4-layer CLIP text encoder config for `tokenizer`."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=_MAX_LENGTH,
        projection_dim=projection_dim or hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_unet_kwargs(*, cross_attention_dim: int) -> dict[str, Any]:
    """`UNet2DConditionModel` arguments of a tiny SD-layout UNet (3 levels, 4 latent channels)."""
    # Attention only at the lowest resolution: attention at full latent resolution is what
    # makes diffusers' own test UNet 40x slower at 512 px.
    return {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (8, 16, 16),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": 4,
    }


def tiny_vae(*, scaling_factor: float, latent_channels: int = 4, **config: Any) -> AutoencoderKL:
    """A tiny random `AutoencoderKL` with SD's 8x downsampling and 4 latent channels (or
    `latent_channels`, and any other `AutoencoderKL` argument in `config`)."""
    # Four blocks so the latent is 1/8 of the image, as in the real VAEs.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=latent_channels,
        sample_size=64,
        scaling_factor=scaling_factor,
        **config,
    )


def _save(
    pipe: StableDiffusionPipeline | StableDiffusionXLPipeline | StableDiffusionInpaintPipeline,
    out_dir: Path,
) -> Path:
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    clear_name_or_path(out_dir)
    return out_dir


def blank_name_or_path(config_file: Path) -> None:
    """Set `_name_or_path` of one saved config to "": it would record the build folder."""
    config = json.loads(config_file.read_text("utf-8"))
    config["_name_or_path"] = ""
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", "utf-8")


def clear_name_or_path(folder: Path) -> None:
    """Blank `_name_or_path` in saved configs: it would record the temporary build folder."""
    for config_file in folder.glob("*/config.json"):
        config = json.loads(config_file.read_text("utf-8"))
        if config.get("_name_or_path"):
            config["_name_or_path"] = ""
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", "utf-8")


# ---- Adapters for the tiny models: ControlNets and LoRAs --------------------------------------
# Real ControlNets start with zero convolutions and real LoRAs with a zero `lora_B`, so a fresh
# adapter has no effect at all; these are randomised so that tests can see what they do.

_LORA_RANK = 4
_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def build_tiny_controlnet(out_dir: Path) -> Path:
    """Write a ControlNet folder for the tiny SD 1.x model (random, non-zero output convs)."""
    return _controlnet(UNet2DConditionModel(**tiny_unet_kwargs(cross_attention_dim=32)), out_dir)


def build_tiny_controlnet_sdxl(out_dir: Path) -> Path:
    """Write a ControlNet folder for the tiny SDXL model (random, non-zero output convs)."""
    unet = UNet2DConditionModel(
        **tiny_unet_kwargs(cross_attention_dim=32 + 64),
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
    )
    return _controlnet(unet, out_dir)


def build_tiny_lora(out_dir: Path) -> Path:
    """Write a LoRA for the tiny SD 1.x UNet in diffusers (PEFT) format:
    `out_dir/pytorch_lora_weights.safetensors`, keys `unet.<module>.lora_A/B.weight`."""
    from diffusers import StableDiffusionPipeline as Pipeline

    out_dir = Path(out_dir)
    Pipeline.save_lora_weights(out_dir, unet_lora_layers=_lora_layers(seed=11), safe_serialization=True)
    return out_dir / "pytorch_lora_weights.safetensors"


def build_tiny_lora_kohya(out_dir: Path) -> Path:
    """Write a LoRA for the tiny SD 1.x UNet in kohya format: `out_dir/lora.safetensors`, keys
    `lora_unet_<module_with_underscores>.lora_down/lora_up.weight` and `.alpha`."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in _lora_layers(seed=12).items():
        module, kind = key.rsplit(".lora_", 1)
        prefix = "lora_unet_" + module.replace(".", "_")
        if kind.startswith("A"):
            tensors[f"{prefix}.lora_down.weight"] = tensor.contiguous()
            tensors[f"{prefix}.alpha"] = torch.tensor(float(_LORA_RANK))
        else:
            tensors[f"{prefix}.lora_up.weight"] = tensor.contiguous()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out_dir / "lora.safetensors")
    return out_dir / "lora.safetensors"


def _controlnet(unet: UNet2DConditionModel, out_dir: Path) -> Path:
    from diffusers import ControlNetModel

    torch.manual_seed(_SEED + 7)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 8))
    zero_initialised = ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.endswith("bias") and name.startswith(("controlnet_cond_embedding", *zero_initialised)):
                parameter.zero_()  # a constant offset would drown what the guide image says
            elif name.startswith(zero_initialised):
                parameter.normal_(std=0.3)
            elif name.startswith("controlnet_cond_embedding"):
                # the default init shrinks the guide's signal ~1000x over the embedding's 7 convs
                parameter.normal_(std=0.25)
    out_dir = Path(out_dir)
    controlnet.save_pretrained(out_dir, safe_serialization=True)
    blank_name_or_path(out_dir / "config.json")
    return out_dir


def _lora_layers(seed: int) -> dict[str, torch.Tensor]:
    """PEFT LoRA weights (diffusers key names, without the `unet.` prefix) for the tiny UNet."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_kwargs(cross_attention_dim=32))
    unet.add_adapter(LoraConfig(r=_LORA_RANK, lora_alpha=_LORA_RANK, target_modules=_LORA_TARGETS))
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    return get_peft_model_state_dict(unet)
