"""Tiny random-weight FLUX and SD3 diffusers folders (and a Fill model, ControlNets and a LoRA
for them) for tests, demos and benchmarks.

Built offline and deterministically, like `kiln.engine.demo_models`: the same layout as the
real models (CLIP and T5 text encoders with their tokenizers, a 16-channel VAE with 8x
downsampling, a flow-matching Euler scheduler), so they load and run through exactly the code
of a real FLUX.1 or SD3 folder, at a tiny fraction of the cost. The T5 tokenizer is a
SentencePiece-style Unigram model over characters and a few whole words, built with the
`tokenizers` library (no vocabulary file ships in any installed package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetModel,
    FluxFillPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3ControlNetModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from .demo_models import (
    blank_name_or_path,
    clear_name_or_path,
    tiny_text_config,
    tiny_tokenizer,
    tiny_vae,
)

_SEED = 0
_T5_TOKENS = 128  # the tiny tokenizer's window (FLUX reads 512 tokens, SD3 256: min of both)
_WORDS = ("the", "a", "an", "and", "of", "on", "cat", "dog", "red", "blue", "circle", "photo")
_FLUX_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,  # 16 latent channels in 2x2 patches
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,  # the T5 width
    "pooled_projection_dim": 32,  # the CLIP width
    "guidance_embeds": True,  # as FLUX.1 dev: CFGScale is a transformer input
    "axes_dims_rope": (4, 6, 6),
}
_SD3_TRANSFORMER: dict[str, Any] = {
    "sample_size": 16,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "joint_attention_dim": 64,  # the T5 width, at least the two CLIP widths together
    "caption_projection_dim": 32,  # the transformer's width
    "pooled_projection_dim": 16 + 32,  # both CLIP encoders' projections
    "pos_embed_max_size": 96,  # as SD3: up to 96 2x2 patches a side (1536 px)
}


def build_tiny_flux(out_dir: Path, *, schnell: bool = False) -> Path:
    """Write a tiny FLUX.1 diffusers folder to `out_dir`: dev-like, with a guidance input, or
    as schnell, without one.

    Loads with `FluxPipeline.from_pretrained(out_dir, local_files_only=True)`.
    """
    torch.manual_seed(_SEED)
    transformer = FluxTransformer2DModel(**{**_FLUX_TRANSFORMER, "guidance_embeds": not schnell})
    return _save_flux(FluxPipeline, transformer, out_dir)


def build_tiny_flux_fill(out_dir: Path) -> Path:
    """Write a tiny FLUX.1 Fill (inpainting) folder: the transformer's input also takes the
    masked image's latents and the mask (16 + 16 + 64 channels, in 2x2 patches: 384)."""
    torch.manual_seed(_SEED + 1)
    transformer = FluxTransformer2DModel(**{**_FLUX_TRANSFORMER, "in_channels": 384, "out_channels": 64})
    return _save_flux(FluxFillPipeline, transformer, out_dir)


def _save_flux(
    pipeline: type[FluxPipeline] | type[FluxFillPipeline], transformer: FluxTransformer2DModel, out_dir: Path
) -> Path:
    tokenizer = tiny_tokenizer()
    pipe = pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        ),
        vae=tiny_flow_vae(scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=CLIPTextModel(tiny_text_config(tokenizer, hidden_size=32)),
        tokenizer=tokenizer,
        text_encoder_2=tiny_t5(d_model=32),
        tokenizer_2=tiny_t5_tokenizer(),
        transformer=transformer,
    )
    return _save(pipe, out_dir)


def build_tiny_sd3(out_dir: Path) -> Path:
    """Write a tiny Stable Diffusion 3 diffusers folder to `out_dir`: two CLIP encoders of
    different widths (as CLIP-L and OpenCLIP-bigG) and T5.

    Loads with `StableDiffusion3Pipeline.from_pretrained(out_dir, local_files_only=True)`.
    """
    torch.manual_seed(_SEED)
    tokenizer = tiny_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**_SD3_TRANSFORMER),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_flow_vae(scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=CLIPTextModelWithProjection(tiny_text_config(tokenizer, hidden_size=16, projection_dim=16)),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(tiny_text_config(tokenizer, hidden_size=32, projection_dim=32)),
        tokenizer_2=tiny_tokenizer(),
        text_encoder_3=tiny_t5(d_model=64),
        tokenizer_3=tiny_t5_tokenizer(),
    )
    return _save(pipe, out_dir)


def tiny_t5_tokenizer() -> T5TokenizerFast:
    """A T5 tokenizer (the same every time): a Unigram model over the printable ASCII
    characters, each also word-initial (`▁x`), and a few whole words, with T5's special tokens
    (`<pad>` 0, `</s>` 1, `<unk>` 2) and `</s>` appended, as SentencePiece's T5 vocabulary does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    characters = [chr(code) for code in range(33, 127)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in characters] + [("▁" + c, -3.5) for c in characters]
    pieces += [("▁" + word, -1.0) for word in _WORDS]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_ids=0, model_max_length=_T5_TOKENS,
    )


def tiny_t5(*, d_model: int) -> T5EncoderModel:
    """A 2-layer T5 v1.1-style (gated GELU) encoder of width `d_model` for the tiny tokenizer."""
    return T5EncoderModel(T5Config(
        vocab_size=len(tiny_t5_tokenizer()), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))


def tiny_flow_vae(*, scaling_factor: float, shift_factor: float) -> AutoencoderKL:
    """A tiny random `AutoencoderKL` with FLUX's and SD3's 16 latent channels and 8x
    downsampling, without quant convolutions (as theirs)."""
    return tiny_vae(scaling_factor=scaling_factor, latent_channels=16, shift_factor=shift_factor,
                    use_quant_conv=False, use_post_quant_conv=False)


def _save(pipe: Any, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    clear_name_or_path(out_dir)
    return out_dir


# ---- Adapters: ControlNets and a LoRA, randomised where real ones start at zero ---------------


def build_tiny_flux_controlnet(out_dir: Path) -> Path:
    """Write a ControlNet folder for `build_tiny_flux`'s model (InstantX layout: the guide is
    VAE-encoded), with random, non-zero output projections."""
    torch.manual_seed(_SEED + 7)
    config = {key: value for key, value in _FLUX_TRANSFORMER.items() if key != "in_channels"}
    net = FluxControlNetModel(**config, in_channels=64)
    return _save_controlnet(net, ("controlnet_blocks", "controlnet_single_blocks", "controlnet_x_embedder"), out_dir)


def build_tiny_sd3_controlnet(out_dir: Path) -> Path:
    """Write a ControlNet folder for `build_tiny_sd3`'s model (16-channel guide latents), with
    random, non-zero output projections."""
    torch.manual_seed(_SEED + 8)
    config = {key: value for key, value in _SD3_TRANSFORMER.items() if key != "num_layers"}
    net = SD3ControlNetModel(**config, num_layers=1, extra_conditioning_channels=0)
    return _save_controlnet(net, ("controlnet_blocks", "pos_embed_input"), out_dir)


def _save_controlnet(net: torch.nn.Module, zero_initialised: tuple[str, ...], out_dir: Path) -> Path:
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name.startswith(zero_initialised):
                parameter.normal_(std=0.3)
    out_dir = Path(out_dir)
    net.save_pretrained(out_dir, safe_serialization=True)
    blank_name_or_path(out_dir / "config.json")
    return out_dir


def build_tiny_flux_lora(out_dir: Path) -> Path:
    """Write a LoRA for `build_tiny_flux`'s transformer in diffusers (PEFT) format:
    `out_dir/pytorch_lora_weights.safetensors`, keys `transformer.<module>.lora_A/B.weight`
    on the attention projections of every block."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(_SEED + 11)
    transformer = FluxTransformer2DModel(**_FLUX_TRANSFORMER)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    out_dir = Path(out_dir)
    FluxPipeline.save_lora_weights(
        out_dir, transformer_lora_layers=get_peft_model_state_dict(transformer), safe_serialization=True)
    return out_dir / "pytorch_lora_weights.safetensors"
