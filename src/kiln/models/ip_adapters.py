"""IP-Adapter files as `kiln models add` reads them: which kind of adapter, for which model
family, and whether a CLIP image encoder folder fits it. Reads tensor shapes and configs only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

_FAMILY_BY_CONTEXT = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
"""The family of an adapter by the width of the text features its keys and values replace."""


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
