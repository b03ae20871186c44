"""IP-Adapter files as `kiln models add` and `import` read them: which kind of adapter, for which
model family, and which CLIP image encoder fits it. An encoder is a transformers folder, or a
single `.safetensors` file of a published CLIP vision tower as ComfyUI keeps them in
`models/clip_vision/`, for which a folder is written. Reads tensor shapes and configs only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kiln.models.configs import write_folder_once
from kiln.models.kinds import read_header

_FAMILY_BY_CONTEXT = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
"""The family of an adapter by the width of the text features its keys and values replace."""
CLIP_VISION_TOWERS = {1024: ("ViT-L/14", "quick_gelu"), 1280: ("ViT-H/14", "gelu"), 1664: ("ViT-bigG/14", "gelu")}
"""The published CLIP vision towers by width: OpenAI's ViT-L/14 and LAION's OpenCLIP ViT-H/14
and ViT-bigG/14 (the IP-Adapter encoders), all with 16 attention heads. A single file of
another width is refused: its head count is not in its shapes."""
_VISION = "vision_model."


def ip_adapter_kind(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str | None, str] | None:
    """(family or None where the shapes do not tell it, variant: plain, Plus or full-face) of an
    IP-Adapter file's tensors; None for other files. Raises ValueError for the Face ID variants, which need face
    embeddings (InsightFace) instead of a CLIP image encoder."""
    projection = {key.removeprefix("image_proj."): shape for key, shape in shapes.items()
                  if key.startswith("image_proj.")}
    key = next((key for key in shapes if key.startswith("ip_adapter.") and key.endswith(".to_k_ip.weight")), None)
    if not projection or key is None:
        return None
    # diffusers' own order: plain (proj), full-face (proj.3), Face ID Plus (perceiver_resampler),
    # Face ID (norm without proj), else Plus (a resampler's latents)
    if "perceiver_resampler.proj_in.weight" in projection or (
            "norm.weight" in projection and "proj.weight" not in projection and "proj.3.weight" not in projection):
        raise ValueError("it is an IP-Adapter Face ID, which embeds faces with InsightFace rather than a CLIP "
                         "image encoder; Kiln serves plain, Plus and full-face IP-Adapters")
    variant = "plain" if "proj.weight" in projection else "full-face" if "proj.3.weight" in projection else "Plus"
    return _FAMILY_BY_CONTEXT.get(shapes[key][1]), variant


def encoder_width(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, int]:
    """(the encoder output the adapter reads, its width): a plain adapter projects the image
    embedding (`projection_dim`), Plus and full-face ones the hidden states (`hidden_size`)."""
    if "image_proj.proj.weight" in shapes:
        return "projection_dim", shapes["image_proj.proj.weight"][-1]
    if "image_proj.proj.0.weight" in shapes:
        return "hidden_size", shapes["image_proj.proj.0.weight"][-1]
    return "hidden_size", shapes["image_proj.proj_in.weight"][-1]


def check_image_encoder(shapes: Mapping[str, tuple[int, ...]], folder: Path) -> None:
    """Raise ValueError, saying what to use instead, unless `folder` holds a CLIP vision model
    (with projection) whose output the adapter of `shapes` reads."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} is not a CLIP image encoder folder (no config.json); use the "
                         "image_encoder folder published with the IP-Adapter")
    config = json.loads(config_file.read_text("utf-8"))
    if config.get("model_type") != "clip_vision_model":
        raise ValueError(f"{folder} holds a {config.get('model_type') or 'model of unknown type'}, not a CLIP "
                         "vision model (CLIPVisionModelWithProjection)")
    field, width = encoder_width(shapes)
    if config.get(field) != width:
        raise ValueError(f"the adapter reads {width}-wide image features ({field}) but the encoder in {folder} "
                         f"gives {config.get(field)}: use the image encoder the adapter was trained with "
                         "(ViT-H/14 for most SD 1.5 and SDXL adapters, ViT-bigG/14 for the SDXL base ones)")


def encoder_folder(path: Path, configs_dir: Path) -> Path:
    """The transformers folder of the image encoder at `path`: the folder itself, or for a single
    `.safetensors` file of a published CLIP vision tower, a folder under `configs_dir` (named by
    the file's path, size and modification time) holding its `config.json` and a link to it. Raises ValueError
    saying what `path` is otherwise."""
    path = Path(path)
    if path.is_dir():
        return path
    config = clip_vision_config(read_header(path).shapes, path.name)
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return write_folder_once(
        Path(configs_dir) / f"clip-vision-{config['hidden_size']}-{digest}",
        {"config.json": json.dumps(config, indent=2, sort_keys=True) + "\n"},
        complete="config.json", links={"model.safetensors": path.resolve()},
    )


def clip_vision_config(shapes: Mapping[str, tuple[int, ...]], name: str = "the file") -> dict[str, Any]:
    """The transformers `CLIPVisionConfig` of a CLIP vision tower file (transformers' key
    layout) of a width in `CLIP_VISION_TOWERS`; ValueError otherwise."""
    embedding = shapes.get(_VISION + "embeddings.class_embedding")
    projection = shapes.get("visual_projection.weight")
    if embedding is None or projection is None:
        layout = "OpenCLIP's (visual.*)" if any(key.startswith("visual.") for key in shapes) else "not a CLIP vision"
        raise ValueError(f"{name} is {layout} layout, not a transformers CLIPVisionModelWithProjection "
                         "(vision_model.* and visual_projection tensors): use IP-Adapter's image_encoder folder")
    hidden = embedding[0]
    if hidden not in CLIP_VISION_TOWERS:
        raise ValueError(f"{name} is a {hidden}-wide CLIP vision tower, not one of the published ViT-L/H/bigG "
                         "ones whose configs Kiln knows: register its transformers folder (with config.json)")
    patch = shapes[_VISION + "embeddings.patch_embedding.weight"][-1]
    positions = shapes[_VISION + "embeddings.position_embedding.weight"][0]
    layers = {int(match[1]) for key in shapes if (match := re.match(re.escape(_VISION) + r"encoder\.layers\.(\d+)\.", key))}
    return {
        "architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model",
        "hidden_size": hidden, "intermediate_size": shapes[_VISION + "encoder.layers.0.mlp.fc1.weight"][0],
        "num_hidden_layers": len(layers), "num_attention_heads": 16, "projection_dim": projection[0],
        "patch_size": patch, "image_size": patch * round((positions - 1) ** 0.5), "num_channels": 3,
        "hidden_act": CLIP_VISION_TOWERS[hidden][1], "layer_norm_eps": 1e-5,
    }


def fitting_encoder(shapes: Mapping[str, tuple[int, ...]], encoders: list[Path]) -> Path | None:
    """The first of `encoders` (CLIP vision tower files) whose output the adapter of `shapes`
    reads, or None."""
    field, width = encoder_width(shapes)
    for encoder in encoders:
        try:
            if clip_vision_config(read_header(encoder).shapes, encoder.name)[field] == width:
                return encoder
        except (ValueError, KeyError):
            continue
    return None
