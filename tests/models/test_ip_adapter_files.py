"""IP-Adapter files: told apart by their tensors (family and variant, with the shapes of the
published files), registered by `kiln models add` only with an image encoder that fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.cli import main
from kiln.engine.demo_ip_adapters import (
    ENCODER_FOLDER,
    WEIGHTS_FILE,
    build_tiny_ip_adapter,
    build_tiny_ip_adapter_plus,
)
from kiln.models import Catalog
from kiln.models.checkpoints import UnrecognisedModelError, inspect_model
from kiln.storage import Database
from tests.models.checkpoint_files import write_header_only


def published(variant: str, context: int, width: int) -> dict[str, tuple[int, ...]]:
    """The shapes of h94/IP-Adapter's files: `context` the text width, `width` the image
    features read (the encoder's projection for plain adapters, its hidden size otherwise)."""
    kv = {f"ip_adapter.{n}.to_{p}_ip.weight": (320, context) for n in (1, 3) for p in ("k", "v")}
    if variant == "plain":
        projection = {"proj.weight": (4 * context, width), "proj.bias": (4 * context,),
                      "norm.weight": (context,), "norm.bias": (context,)}
    elif variant == "full-face":
        projection = {"proj.0.weight": (width, width), "proj.2.weight": (context, width), "proj.3.weight": (context,)}
    elif variant == "plus":
        projection = {"latents": (1, 16, 768), "proj_in.weight": (768, width), "proj_out.weight": (context, 768)}
    else:  # Face ID
        projection = {"proj.0.weight": (1024, 512), "proj.2.weight": (4 * context, 1024), "norm.weight": (context,)}
    return {**kv, **{f"image_proj.{name}": shape for name, shape in projection.items()}}


@pytest.mark.parametrize(("variant", "context", "width", "description"), [
    ("plain", 768, 1024, "an SD 1.x IP-Adapter"),  # ip-adapter_sd15: ViT-H's 1024-wide embedding
    ("plus", 768, 1280, "an SD 1.x IP-Adapter Plus"),  # ip-adapter-plus_sd15: ViT-H's hidden states
    ("full-face", 768, 1280, "an SD 1.x IP-Adapter full-face"),
    ("plain", 2048, 1280, "an SDXL IP-Adapter"),  # ip-adapter_sdxl: ViT-bigG's embedding
    ("plus", 2048, 1280, "an SDXL IP-Adapter Plus"),  # ip-adapter-plus_sdxl_vit-h
])
def test_published_ip_adapters_are_told_apart(tmp_path, variant, context, width, description):
    path = write_header_only(tmp_path / "adapter.safetensors", published(variant, context, width))
    kind, _ = inspect_model(path)
    assert (kind.category, kind.architecture, kind.description) == (
        "ipadapter", "sdxl" if context == 2048 else "sd1x", description)


def test_face_id_adapters_are_refused_saying_why(tmp_path):
    path = write_header_only(tmp_path / "faceid.safetensors", published("faceid", 768, 512))
    with pytest.raises(UnrecognisedModelError, match="Face ID.*InsightFace"):
        inspect_model(path)


def write_encoder(folder, **config) -> str:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "clip_vision_model", **config}))
    return str(folder)


def add(tmp_path, *args: str) -> int:
    return main(["--data-dir", str(tmp_path / "data"), "models", "add", *args])


def test_kiln_models_add_registers_an_ip_adapter_with_an_encoder_that_fits(tmp_path, capsys):
    path = write_header_only(tmp_path / "ip-adapter_sd15.safetensors", published("plain", 768, 1024))
    assert add(tmp_path, str(path)) == 2
    assert "--image-encoder" in capsys.readouterr().err
    small = write_encoder(tmp_path / "vit-b", projection_dim=512, hidden_size=768)
    assert add(tmp_path, str(path), "--image-encoder", small) == 2
    assert "reads 1024-wide image features (projection_dim)" in capsys.readouterr().err
    text = write_encoder(tmp_path / "text", model_type="clip_text_model")
    assert add(tmp_path, str(path), "--image-encoder", text) == 2
    assert "not a CLIP vision model" in capsys.readouterr().err
    vit_h = write_encoder(tmp_path / "vit-h", projection_dim=1024, hidden_size=1280)
    assert add(tmp_path, str(path), "--air", "runware:55@5", "--image-encoder", vit_h) == 0
    assert "(ipadapter, sd1x)" in capsys.readouterr().out
    entry = Catalog(Database(tmp_path / "data" / "kiln.sqlite3")).get("runware:55@5")
    assert (entry.category, entry.architecture, entry.config_path) == ("ipadapter", "sd1x", vit_h)
    assert add(tmp_path, str(path), "--image-encoder", vit_h, "--category", "lora") == 2
    assert "IP-Adapter, not a lora" in capsys.readouterr().err


@pytest.mark.parametrize("build", [build_tiny_ip_adapter, build_tiny_ip_adapter_plus])
def test_the_tiny_adapters_register_with_their_architecture_said(tmp_path, capsys, build):
    folder = build(tmp_path / "tiny")
    args = (str(folder / WEIGHTS_FILE), "--image-encoder", str(folder / ENCODER_FOLDER))
    assert add(tmp_path, *args) == 2
    assert "--architecture" in capsys.readouterr().err
    assert add(tmp_path, *args, "--architecture", "sd1x", "--air", "test:ip@1") == 0
    assert "(ipadapter, sd1x)" in capsys.readouterr().out


# --- ComfyUI's models/clip_vision/ single files ------------------------------------------------

TOWERS = {  # the published CLIP vision towers' configs (transformers' names)
    "ViT-L": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "projection_dim": 768,
              "hidden_act": "quick_gelu"},
    "ViT-H": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "projection_dim": 1024,
              "hidden_act": "gelu"},
    "ViT-bigG": {"hidden_size": 1664, "intermediate_size": 8192, "num_hidden_layers": 48, "projection_dim": 1280,
                 "hidden_act": "gelu"},
}


def tower_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of a transformers CLIPVisionModelWithProjection of `config` (built on
    the meta device: no memory), as the file ComfyUI downloads holds them."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**config))
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def write_tower(path, name: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_header_only(path, tower_shapes({**TOWERS[name], "num_attention_heads": 16, "patch_size": 14,
                                                 "image_size": 224}))


@pytest.mark.parametrize("name", list(TOWERS))
def test_a_clip_vision_file_gets_the_config_it_was_built_with(tmp_path, name):
    from kiln.models.ip_adapters import encoder_folder

    file = write_tower(tmp_path / "clip_vision" / f"CLIP-{name}-14.safetensors", name)
    folder = encoder_folder(file, tmp_path / "configs")
    config = json.loads((folder / "config.json").read_text())
    assert config | TOWERS[name] == config  # every published value derived from the shapes
    assert (config["num_attention_heads"], config["patch_size"], config["image_size"]) == (16, 14, 224)
    assert tower_shapes(config) == tower_shapes({**TOWERS[name], "num_attention_heads": 16, "patch_size": 14,
                                                 "image_size": 224})
    assert (folder / "model.safetensors").resolve() == file.resolve()
    assert encoder_folder(file, tmp_path / "configs") == folder  # written once


def test_other_clip_vision_files_are_refused_saying_why(tmp_path):
    from kiln.models.ip_adapters import encoder_folder

    small = write_header_only(tmp_path / "vit-b.safetensors", tower_shapes(
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 2, "projection_dim": 512}))
    with pytest.raises(ValueError, match="768-wide CLIP vision tower"):
        encoder_folder(small, tmp_path / "configs")
    open_clip = write_header_only(tmp_path / "open_clip.safetensors", {"visual.proj": (1280, 1024)})
    with pytest.raises(ValueError, match="OpenCLIP"):
        encoder_folder(open_clip, tmp_path / "configs")


def test_kiln_models_add_takes_a_clip_vision_file_as_the_encoder(tmp_path, capsys):
    path = write_header_only(tmp_path / "ip-adapter_sd15.safetensors", published("plain", 768, 1024))
    big_g = write_tower(tmp_path / "clip_vision" / "CLIP-ViT-bigG-14.safetensors", "ViT-bigG")
    assert add(tmp_path, str(path), "--image-encoder", str(big_g)) == 2
    assert "reads 1024-wide image features (projection_dim)" in capsys.readouterr().err
    vit_h = write_tower(tmp_path / "clip_vision" / "CLIP-ViT-H-14.safetensors", "ViT-H")
    assert add(tmp_path, str(path), "--air", "runware:55@5", "--image-encoder", str(vit_h)) == 0
    entry = Catalog(Database(tmp_path / "data" / "kiln.sqlite3")).get("runware:55@5")
    assert (Path(entry.config_path) / "model.safetensors").resolve() == vit_h.resolve()


def test_kiln_models_import_pairs_comfyui_ip_adapters_with_their_clip_vision_files(tmp_path, capsys):
    comfy = tmp_path / "ComfyUI" / "models"
    write_tower(comfy / "clip_vision" / "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "ViT-H")
    write_tower(comfy / "clip_vision" / "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors", "ViT-bigG")
    (comfy / "ipadapter").mkdir()
    adapters = {
        "ip-adapter_sd15.safetensors": published("plain", 768, 1024),  # ViT-H's embedding
        "ip-adapter-plus_sd15.safetensors": published("plus", 768, 1280),  # ViT-H's hidden states
        "ip-adapter_sdxl.safetensors": published("plain", 2048, 1280),  # ViT-bigG's embedding
        "ip-adapter-odd.safetensors": published("plain", 768, 512),  # no encoder gives 512
    }
    for name, shapes in adapters.items():
        write_header_only(comfy / "ipadapter" / name, shapes)
    assert main(["--data-dir", str(tmp_path / "data"), "models", "import", str(tmp_path / "ComfyUI")]) == 0
    out = capsys.readouterr().out
    assert "3 registered" in out and "no CLIP vision file in clip_vision/ gives the 512-wide" in out
    encoders = {Path(entry.path).name: (Path(entry.config_path) / "model.safetensors").resolve().name
                for entry in Catalog(Database(tmp_path / "data" / "kiln.sqlite3")).all()}
    assert encoders == {
        "ip-adapter_sd15.safetensors": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
        "ip-adapter-plus_sd15.safetensors": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
        "ip-adapter_sdxl.safetensors": "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors",
    }
