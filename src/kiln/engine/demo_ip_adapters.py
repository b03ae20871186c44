"""Tiny random-weight IP-Adapters for kiln:tiny-sd@1 and kiln:tiny-sdxl@1, each with its tiny CLIP
image encoder, built offline and deterministically.

Each folder holds `ip-adapter.safetensors` in the layout of the published IP-Adapter files
(`image_proj.*` and `ip_adapter.<n>.to_k_ip/to_v_ip.*`) and `image_encoder/`, a transformers
`CLIPVisionModelWithProjection` with its image processor, as IP-Adapter's `models/image_encoder`.
The plain adapter projects the encoder's image embedding; the Plus one resamples its penultimate
hidden states (the original Resampler's key names). Real adapters are trained; these are random,
scaled so that their effect is plain to see.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.embeddings import IPAdapterPlusImageProjection
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from .demo_models import blank_name_or_path, tiny_unet_kwargs

WEIGHTS_FILE = "ip-adapter.safetensors"
ENCODER_FOLDER = "image_encoder"
_SEED = 0
_IMAGE_SIZE = 32
_TOKENS = 4  # image tokens of a plain IP-Adapter


def build_tiny_ip_adapter(out_dir: Path) -> Path:
    """An IP-Adapter for kiln:tiny-sd@1 (32-wide text features) in `out_dir`."""
    return _build(out_dir, cross_attention_dim=32)


def build_tiny_ip_adapter_sdxl(out_dir: Path) -> Path:
    """An IP-Adapter for kiln:tiny-sdxl@1 (32 + 64-wide text features) in `out_dir`."""
    return _build(out_dir, cross_attention_dim=32 + 64)


def build_tiny_ip_adapter_plus(out_dir: Path) -> Path:
    """An IP-Adapter Plus for kiln:tiny-sd@1 in `out_dir`."""
    return _build(out_dir, cross_attention_dim=32, plus=True)


def tiny_image_encoder() -> CLIPVisionModelWithProjection:
    """A 2-layer CLIP vision model on 32 px images with a 32-wide image embedding."""
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2,
        num_attention_heads=4, image_size=_IMAGE_SIZE, patch_size=8,
    ))


def _build(out_dir: Path, *, cross_attention_dim: int, plus: bool = False) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(_SEED)
    encoder = tiny_image_encoder()
    if plus:
        tensors = _resampler(encoder.config.hidden_size, cross_attention_dim)
    else:
        embed_dim = encoder.config.projection_dim
        tensors = {
            "image_proj.proj.weight": torch.randn(cross_attention_dim * _TOKENS, embed_dim) / embed_dim**0.5,
            "image_proj.proj.bias": torch.zeros(cross_attention_dim * _TOKENS),
            "image_proj.norm.weight": torch.ones(cross_attention_dim),
            "image_proj.norm.bias": torch.zeros(cross_attention_dim),
        }
    # The tiny UNet's layout: one to_k_ip/to_v_ip pair per cross-attention layer, numbered as
    # in the published files (1, 3, 5, ...: the odd attention processors of the original code).
    unet = UNet2DConditionModel(**tiny_unet_kwargs(cross_attention_dim=cross_attention_dim))
    cross_attentions = [name.removesuffix(".processor") for name in unet.attn_processors
                        if name.endswith("attn2.processor")]
    for number, name in zip(range(1, 2 * len(cross_attentions), 2), cross_attentions, strict=True):
        shape = unet.get_submodule(name).to_k.weight.shape  # (width, text width)
        for part in ("to_k_ip", "to_v_ip"):
            tensors[f"ip_adapter.{number}.{part}.weight"] = 2 * torch.randn(shape) / shape[1] ** 0.5
    save_file({key: tensor.contiguous() for key, tensor in tensors.items()}, out_dir / WEIGHTS_FILE)
    encoder.save_pretrained(out_dir / ENCODER_FOLDER, safe_serialization=True)
    blank_name_or_path(out_dir / ENCODER_FOLDER / "config.json")
    CLIPImageProcessor(size={"shortest_edge": _IMAGE_SIZE},
                       crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}).save_pretrained(out_dir / ENCODER_FOLDER)
    return out_dir


def _resampler(embed_dim: int, cross_attention_dim: int) -> dict[str, torch.Tensor]:
    """A random IP-Adapter Plus Resampler (4 layers, one 64-wide head, 4 queries) under the key
    names of the published files, which diffusers converts on load."""
    module = IPAdapterPlusImageProjection(
        embed_dims=embed_dim, output_dims=cross_attention_dim, hidden_dims=64, heads=1, num_queries=_TOKENS)
    published: dict[str, torch.Tensor] = {}
    for name, tensor in module.state_dict().items():
        for ours, theirs in ((".ln0.", ".0.norm1."), (".ln1.", ".0.norm2."), (".attn.to_q.", ".0.to_q."),
                             (".attn.to_out.0.", ".0.to_out."), (".ff.0.", ".1.0."),
                             (".ff.1.net.0.proj.", ".1.1."), (".ff.1.net.2.", ".1.3.")):
            name = name.replace(ours, theirs)
        if ".attn.to_k." in name:  # the original keeps keys and values in one matrix
            published[name.replace(".attn.to_k.", ".0.to_kv.")] = torch.cat(
                [tensor, module.state_dict()[name.replace(".to_k.", ".to_v.")]])
        elif ".attn.to_v." not in name:
            published[name] = tensor
    return {f"image_proj.{name}": tensor for name, tensor in published.items()}
