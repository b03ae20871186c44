"""Diffusers config folders for single-file checkpoints, written by Kiln instead of fetched from a hub.

`from_single_file(config=folder)` needs a folder with `model_index.json`, each component's config
and the tokenizers. `config_folder` derives every number the tensors show (block widths and
depths, cross-attention width, text encoder sizes, VAE channels) from the checkpoint's header and
takes the rest from the published Stable Diffusion configs of its family (head counts,
activations, noise schedule, VAE scaling factor), so a standard SD 1.5, SD 2.x or SDXL file gets
exactly the published configuration. Folders are named by their content and written once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

from kiln.models import clip_tokenizer
from kiln.models.kinds import (
    REFINER_OPEN_CLIP,
    SD1_CLIP,
    SD2_OPEN_CLIP,
    SDXL_CLIP,
    SDXL_OPEN_CLIP,
    UNET,
    VAE,
    ModelKind,
    TensorHeader,
    UnrecognisedModelError,
)

Shapes = Mapping[str, tuple[int, ...]]
Config = dict[str, Any]

NATIVE_SIZE = {"sd1": 512, "sd2": 512, "sd2-v": 768, "sdxl": 1024}
"""The resolution (pixels a side) each family was trained at; SD 2.x v-prediction models at 768."""
_NOISE_SCHEDULE: Config = {  # every SD 1.x, 2.x and XL model's training schedule
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "steps_offset": 1,
}
_HEAD_WIDTH = 64  # SD 2.x / SDXL UNets and every CLIP text encoder use 64-wide attention heads
_SD1_UNET_HEADS = 8  # SD 1.x uses 8 heads at every width


def native_size(kind: ModelKind) -> int:
    """The width and height, in pixels, that `kind`'s models were trained at."""
    if kind.family == "sd2" and kind.type == "base" and kind.prediction == "v_prediction":
        return NATIVE_SIZE["sd2-v"]
    return NATIVE_SIZE[kind.family or "sd1"]


def config_folder(header: TensorHeader, kind: ModelKind, configs_dir: Path) -> Path:
    """The config folder for a checkpoint or VAE of `kind` with `header`, written under
    `configs_dir` (as `<variant>-<content hash>`) unless a folder of the same content is there."""
    files = config_files(header, kind)
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]}\0".encode())
    prefix = "vae-" if kind.category == "vae" else ""
    folder = Path(configs_dir) / f"{prefix}{kind.variant}-{digest.hexdigest()[:10]}"
    return write_folder_once(folder, files, complete="config.json" if kind.category == "vae" else "model_index.json")


def write_folder_once(
    folder: Path, files: Mapping[str, str], *, complete: str, links: Mapping[str, Path] | None = None
) -> Path:
    """`folder` with `files` (relative path → text) and symbolic `links` (relative path →
    target), unless its `complete` file is there already. Written under a temporary name and
    renamed, so a folder that exists is complete; when another process writes it at the same
    time, either copy serves."""
    if (folder / complete).is_file():
        return folder
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for name, text in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text, "utf-8")
    for name, target in (links or {}).items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).symlink_to(target)
    try:
        staging.rename(folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / complete).is_file():
            raise
    return folder


def config_files(header: TensorHeader, kind: ModelKind) -> dict[str, str]:
    """The config folder's files (relative path → text) for a checkpoint or a VAE of `kind`:
    a whole pipeline's, or the VAE's `config.json` (for `AutoencoderKL.from_single_file`)."""
    if kind.category not in ("checkpoint", "vae") or kind.family is None:
        raise ValueError(f"config folders are for checkpoints and VAEs, not {kind.description}")
    shapes = header.shapes
    try:
        if kind.category == "vae":
            prefix = VAE if VAE + "decoder.conv_in.weight" in shapes else ""
            config = _vae_config(shapes, kind, native_size(kind), prefix)
            return {"config.json": json.dumps(config, indent=2, sort_keys=True) + "\n"}
        return _config_files(shapes, kind)
    except KeyError as exc:
        raise UnrecognisedModelError(
            f"{kind.description} without the tensor {exc.args[0]}: an incomplete or unusual file"
        ) from None


def _config_files(shapes: Shapes, kind: ModelKind) -> dict[str, str]:
    family, size = kind.family, native_size(kind)
    components: dict[str, Config] = {"scheduler/scheduler_config.json": _scheduler(kind)}
    index: Config = {"_diffusers_version": version("diffusers")}
    tokenizers: dict[str, str] = {}
    if family == "sdxl":
        refiner = kind.type == "refiner"
        open_clip = REFINER_OPEN_CLIP if refiner else SDXL_OPEN_CLIP
        text_2 = _open_clip_config(shapes, open_clip, projection=True, drop_last_layer=False)
        components["text_encoder_2/config.json"] = text_2
        tokenizers["tokenizer_2"] = "!"
        if not refiner:
            components["text_encoder/config.json"] = _clip_config(shapes, SDXL_CLIP)
            tokenizers["tokenizer"] = clip_tokenizer.EOS
        unet = _unet_config(shapes, kind, size)
        time_ids = 5 if refiner else 6  # sizes and crop (6), or original size, crop, aesthetic score (5)
        adm_width = shapes[UNET + "label_emb.0.0.weight"][1]
        unet |= {
            "addition_embed_type": "text_time",
            "addition_embed_type_num_heads": 64,
            "addition_time_embed_dim": (adm_width - text_2["projection_dim"]) // time_ids,
            "projection_class_embeddings_input_dim": adm_width,
        }
        pipeline = {"base": "StableDiffusionXLPipeline", "inpainting": "StableDiffusionXLInpaintPipeline",
                    "refiner": "StableDiffusionXLImg2ImgPipeline"}[str(kind.type)]
        index |= {
            "_class_name": pipeline,
            "text_encoder": [None, None] if refiner else ["transformers", "CLIPTextModel"],
            "tokenizer": [None, None] if refiner else ["transformers", "CLIPTokenizer"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "force_zeros_for_empty_prompt": not refiner,
            "image_encoder": [None, None],
            "feature_extractor": [None, None],
        }
        if kind.type != "base":
            index["requires_aesthetics_score"] = refiner
    else:
        if family == "sd2":
            encoder = _open_clip_config(shapes, SD2_OPEN_CLIP, projection=False, drop_last_layer=True)
            tokenizers["tokenizer"] = "!"
        else:
            encoder = _clip_config(shapes, SD1_CLIP)
            tokenizers["tokenizer"] = clip_tokenizer.EOS
        components["text_encoder/config.json"] = encoder
        unet = _unet_config(shapes, kind, size)
        pipeline = "StableDiffusionInpaintPipeline" if kind.type == "inpainting" else "StableDiffusionPipeline"
        index |= {
            "_class_name": pipeline,
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            "image_encoder": [None, None],
            "requires_safety_checker": False,
        }
    index |= {
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", components["scheduler/scheduler_config.json"]["_class_name"]],
    }
    components["unet/config.json"] = unet
    components["vae/config.json"] = _vae_config(shapes, kind, size)
    files = {name: json.dumps(config, indent=2, sort_keys=True) + "\n" for name, config in components.items()}
    files["model_index.json"] = json.dumps(index, indent=2, sort_keys=True) + "\n"
    for folder, pad_token in tokenizers.items():
        for name, text in clip_tokenizer.tokenizer_files(pad_token).items():
            files[f"{folder}/{name}"] = text
    return files


def _count(shapes: Shapes, prefix: str) -> int:
    """How many numbered children (`prefix0.`, `prefix1.`, ...) have tensors."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for key in shapes if (m := pattern.match(key))})


def _unet_config(shapes: Shapes, kind: ModelKind, size: int) -> Config:
    """UNet2DConditionModel config of an LDM UNet (`model.diffusion_model.*`)."""
    levels: list[list[tuple[int, int]]] = [[]]  # per level: (channels, transformer depth) per layer
    for block in range(1, _count(shapes, UNET + "input_blocks.")):
        prefix = f"{UNET}input_blocks.{block}."
        if prefix + "0.op.weight" in shapes:  # a downsampler closes the level
            levels.append([])
            continue
        depth = _count(shapes, prefix + "1.transformer_blocks.")
        levels[-1].append((shapes[prefix + "0.out_layers.3.weight"][0], depth))
    layers = len(levels[0])
    if layers == 0 or any(len(level) != layers for level in levels):
        raise UnrecognisedModelError(f"{kind.description} with an irregular UNet ({[len(x) for x in levels]} "
                                     "layers per level)")
    channels = [level[0][0] for level in levels]
    depths = [level[0][1] for level in levels]
    attention = [depth > 0 for depth in depths]
    mid_depth = _count(shapes, UNET + "middle_block.1.transformer_blocks.")
    if mid_depth == 0:
        raise UnrecognisedModelError(f"{kind.description} without attention in its middle block")
    used = {depth for depth in depths if depth} | {mid_depth}
    if len(used) == 1:
        transformer_layers: int | list[int] = used.pop()
    elif mid_depth == depths[-1]:
        transformer_layers = [depth or 1 for depth in depths]
    else:
        raise UnrecognisedModelError(f"{kind.description} whose middle block depth ({mid_depth}) "
                                     f"differs from its last level's ({depths[-1]})")
    context = next(shapes[key] for key in sorted(shapes)
                   if key.startswith(UNET) and key.endswith(".attn2.to_k.weight"))
    proj_in = next(shapes[key] for key in sorted(shapes) if key.startswith(UNET) and key.endswith(".proj_in.weight"))
    heads: int | list[int] = (
        _SD1_UNET_HEADS if kind.family == "sd1" else [max(1, c // _HEAD_WIDTH) for c in channels]
    )
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": size // 8,
        "in_channels": shapes[UNET + "input_blocks.0.0.weight"][1],
        "out_channels": shapes[UNET + "out.2.weight"][0],
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "transformer_layers_per_block": transformer_layers,
        "cross_attention_dim": context[1],
        "attention_head_dim": heads,
        "use_linear_projection": len(proj_in) == 2,
        "upcast_attention": kind.family == "sd2" and kind.prediction == "v_prediction",
        "act_fn": "silu",
        "norm_num_groups": 32,
        "norm_eps": 1e-05,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "center_input_sample": False,
    }


def _clip_config(shapes: Shapes, prefix: str) -> Config:
    """CLIPTextModel config of OpenAI's CLIP text encoder stored in transformers' layout."""
    vocab, width = shapes[prefix + "embeddings.token_embedding.weight"]
    return _text_config(
        "CLIPTextModel", vocab=vocab, width=width,
        layers=_count(shapes, prefix + "encoder.layers."),
        intermediate=shapes[prefix + "encoder.layers.0.mlp.fc1.weight"][0],
        positions=shapes[prefix + "embeddings.position_embedding.weight"][0],
        activation="quick_gelu", projection=width, pad_token=clip_tokenizer.EOS,
    )


def _open_clip_config(shapes: Shapes, prefix: str, *, projection: bool, drop_last_layer: bool) -> Config:
    """CLIPTextModel(WithProjection) config of an OpenCLIP text encoder in OpenCLIP's layout.

    SD 2.x conditions on the penultimate layer, so its converted encoder has one layer fewer
    (diffusers drops the last); SDXL keeps every layer and picks the penultimate itself.
    """
    vocab, width = shapes[prefix + "token_embedding.weight"]
    layers = _count(shapes, prefix + "transformer.resblocks.")
    return _text_config(
        "CLIPTextModelWithProjection" if projection else "CLIPTextModel", vocab=vocab, width=width,
        layers=layers - 1 if drop_last_layer else layers,
        intermediate=shapes[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0],
        positions=shapes[prefix + "positional_embedding"][0],
        activation="gelu", projection=shapes.get(prefix + "text_projection", (width, width))[1],
        pad_token="!",
    )


def _text_config(
    architecture: str, *, vocab: int, width: int, layers: int, intermediate: int, positions: int,
    activation: str, projection: int, pad_token: str,
) -> Config:
    vocabulary = clip_tokenizer.vocabulary()
    return {
        "architectures": [architecture],
        "model_type": "clip_text_model",
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, width // _HEAD_WIDTH),
        "max_position_embeddings": positions,
        "hidden_act": activation,
        "projection_dim": projection,
        "layer_norm_eps": 1e-05,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "bos_token_id": vocabulary[clip_tokenizer.BOS],
        "eos_token_id": vocabulary[clip_tokenizer.EOS],
        "pad_token_id": vocabulary[pad_token],
    }


def _vae_config(shapes: Shapes, kind: ModelKind, size: int, prefix: str = VAE) -> Config:
    """AutoencoderKL config of a VAE in the LDM layout (`encoder.down.N.block.M`) or diffusers'
    (`encoder.down_blocks.N.resnets.M`), its tensor names starting with `prefix`."""
    ldm = _count(shapes, prefix + "encoder.down.") > 0
    level, layer = ("encoder.down.", ".block.") if ldm else ("encoder.down_blocks.", ".resnets.")
    levels = _count(shapes, prefix + level)
    channels = [shapes[f"{prefix}{level}{i}{layer}0.conv2.weight"][0] for i in range(levels)]
    config: Config = {
        "_class_name": "AutoencoderKL",
        "sample_size": size,
        "in_channels": shapes[prefix + "encoder.conv_in.weight"][1],
        "out_channels": shapes[prefix + "decoder.conv_out.weight"][0],
        "latent_channels": shapes[prefix + "decoder.conv_in.weight"][1],
        "block_out_channels": channels,
        "layers_per_block": _count(shapes, f"{prefix}{level}0{layer}"),
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "scaling_factor": 0.13025 if kind.family == "sdxl" else 0.18215,
    }
    if kind.family == "sdxl":
        config["force_upcast"] = True  # SDXL's VAE overflows in float16
    return config


def _scheduler(kind: ModelKind) -> Config:
    """The published scheduler of the family: Euler for SDXL, DDIM for v-prediction, else PNDM."""
    prediction = kind.prediction or "epsilon"
    if kind.family == "sdxl":
        config: Config = {
            "_class_name": "EulerDiscreteScheduler", **_NOISE_SCHEDULE, "prediction_type": prediction,
            "interpolation_type": "linear", "timestep_spacing": "leading", "use_karras_sigmas": False,
        }
        if kind.zero_snr:
            config["rescale_betas_zero_snr"] = True
        return config
    base = {**_NOISE_SCHEDULE, "prediction_type": prediction, "clip_sample": False, "set_alpha_to_one": False}
    if prediction == "v_prediction":
        return {"_class_name": "DDIMScheduler", **base, "rescale_betas_zero_snr": kind.zero_snr}
    return {"_class_name": "PNDMScheduler", **base, "skip_prk_steps": True}
