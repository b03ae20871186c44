"""Convert a diffusers SD 1.x / SDXL folder to an original (LDM, A1111-style) single-file checkpoint.

Used to exercise the engine's single-file loading path with the tiny demo models. The key layout
is the one `diffusers.loaders.single_file_utils` reads back (UNet `model.diffusion_model.*`, VAE
`first_stage_model.*`, CLIP `cond_stage_model.transformer.*` or SDXL `conditioner.embedders.*`),
derived from the folder's own configs so that non-standard block counts convert too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kiln.generation import Architecture

StateDict = dict[str, torch.Tensor]

_UNET_RESNET_RENAMES = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION_RENAMES = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)
_OPEN_CLIP_RENAMES = (
    ("embeddings.position_embedding.weight", "positional_embedding"),
    ("embeddings.token_embedding.weight", "token_embedding.weight"),
    ("final_layer_norm.", "ln_final."),
    ("encoder.layers.", "transformer.resblocks."),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("self_attn.", "attn."),
)


def write_single_file_checkpoint(
    diffusers_folder: Path, out_file: Path, architecture: Architecture
) -> None:
    """Write the UNet, VAE and text encoder(s) of `diffusers_folder` as one LDM `.safetensors`.

    The result loads with `from_single_file(out_file, config=diffusers_folder)` and reproduces
    the folder's weights exactly. Deterministic: same folder, same bytes.
    """
    folder = Path(diffusers_folder)
    unet = _convert_unet(_weights(folder, "unet"), _config(folder, "unet"))
    vae = _convert_vae(_weights(folder, "vae"), _config(folder, "vae"))
    checkpoint = _prefixed("model.diffusion_model.", unet) | _prefixed("first_stage_model.", vae)
    clip_l = _strip_text_model(_weights(folder, "text_encoder"))
    if architecture == "sd1x":
        checkpoint |= _prefixed("cond_stage_model.transformer.text_model.", clip_l)
    elif architecture == "sdxl":
        checkpoint |= _prefixed("conditioner.embedders.0.transformer.text_model.", clip_l)
        open_clip = _convert_open_clip(_strip_text_model(_weights(folder, "text_encoder_2")))
        checkpoint |= _prefixed("conditioner.embedders.1.model.", open_clip)
    else:
        raise ValueError(f"unknown architecture {architecture!r}; expected 'sd1x' or 'sdxl'")
    save_file({k: v.contiguous() for k, v in sorted(checkpoint.items())}, str(out_file))


def _weights(folder: Path, component: str) -> StateDict:
    files = sorted((folder / component).glob("*.safetensors"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .safetensors file in {folder / component}")
    return load_file(str(files[0]))


def _config(folder: Path, component: str) -> dict[str, Any]:
    return json.loads((folder / component / "config.json").read_text("utf-8"))


def _prefixed(prefix: str, state: StateDict) -> StateDict:
    return {prefix + key: value for key, value in state.items()}


def _strip_text_model(state: StateDict) -> StateDict:
    # transformers 5 saves CLIPTextModel flat and CLIPTextModelWithProjection under `text_model.`.
    return {key.removeprefix("text_model."): value for key, value in state.items()}


def _unet_prefix_map(config: dict[str, Any]) -> dict[str, str]:
    """Diffusers block prefixes → LDM block prefixes, for any block and layer count."""
    layers = config["layers_per_block"]
    down_types = config["down_block_types"]
    up_types = config["up_block_types"]
    prefixes: dict[str, str] = {}
    for i in range(len(down_types)):
        for j in range(layers):
            ldm = f"input_blocks.{1 + i * (layers + 1) + j}"
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"{ldm}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"{ldm}.1."
        if i < len(down_types) - 1:
            prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = (
                f"input_blocks.{(i + 1) * (layers + 1)}.0.op."
            )
    for i, block_type in enumerate(up_types):
        for j in range(layers + 1):
            ldm = f"output_blocks.{i * (layers + 1) + j}"
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"{ldm}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"{ldm}.1."
        if i < len(up_types) - 1:
            # The upsampler follows the last layer's attention when the block has one.
            slot = 2 if "CrossAttn" in block_type else 1
            prefixes[f"up_blocks.{i}.upsamplers.0."] = (
                f"output_blocks.{i * (layers + 1) + layers}.{slot}."
            )
    prefixes["mid_block.resnets.0."] = "middle_block.0."
    prefixes["mid_block.attentions.0."] = "middle_block.1."
    prefixes["mid_block.resnets.1."] = "middle_block.2."
    return prefixes


def _convert_unet(state: StateDict, config: dict[str, Any]) -> StateDict:
    prefixes = _unet_prefix_map(config)
    converted: StateDict = {}
    for key, value in state.items():
        converted[_unet_key(key, prefixes)] = value
    return converted


def _unet_key(key: str, prefixes: dict[str, str]) -> str:
    module, _, param = key.rpartition(".")
    if module in _UNET_TOP_LEVEL:
        return f"{_UNET_TOP_LEVEL[module]}.{param}"
    for diffusers_prefix, ldm_prefix in prefixes.items():
        if key.startswith(diffusers_prefix):
            rest = key.removeprefix(diffusers_prefix)
            if ".resnets." in diffusers_prefix:
                for old, new in _UNET_RESNET_RENAMES:
                    rest = rest.replace(old, new)
            return ldm_prefix + rest
    raise ValueError(f"no LDM equivalent for UNet key {key!r}")


def _convert_vae(state: StateDict, config: dict[str, Any]) -> StateDict:
    blocks = len(config["up_block_types"])
    converted: StateDict = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        new = new.replace("down_blocks.", "down.").replace(".resnets.", ".block.")
        new = new.replace(".downsamplers.0.", ".downsample.").replace(
            ".upsamplers.0.", ".upsample."
        )
        if new.startswith("decoder.up_blocks."):
            # LDM numbers decoder blocks from the lowest resolution up; diffusers the reverse.
            index, rest = new.removeprefix("decoder.up_blocks.").split(".", 1)
            new = f"decoder.up.{blocks - 1 - int(index)}.{rest}"
        if ".mid_block." in new:
            new = new.replace("mid_block.attentions.0.", "mid.attn_1.")
            for k in range(2):
                new = new.replace(f"mid_block.block.{k}.", f"mid.block_{k + 1}.")
            if ".attn_1." in new:
                for old, ldm in _VAE_ATTENTION_RENAMES:
                    new = new.replace(old, ldm)
                if value.ndim == 2:
                    value = value[:, :, None, None]  # LDM stores these projections as 1x1 convs
        converted[new] = value
    return converted


def _convert_open_clip(state: StateDict) -> StateDict:
    """CLIPTextModelWithProjection weights → OpenCLIP layout (SDXL's second text encoder)."""
    converted: StateDict = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == "text_projection.weight":
            converted["text_projection"] = value.T.contiguous()  # OpenCLIP multiplies x @ P
            continue
        new = key
        for old, ldm in _OPEN_CLIP_RENAMES:
            new = new.replace(old, ldm)
        head, _, tail = new.rpartition(".")
        if head.endswith(("attn.q_proj", "attn.k_proj", "attn.v_proj")):
            # OpenCLIP keeps q, k and v in one packed in_proj matrix.
            base, _, which = head.rpartition(".")
            fused.setdefault(f"{base}.in_proj_{tail}", {})[which] = value
            continue
        converted[new] = value
    for key, parts in fused.items():
        converted[key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return converted
