"""IP-Adapter files: told apart by their tensors (family and variant, with the shapes of the
published files), registered by `kiln models add` only with an image encoder that fits."""

from __future__ import annotations

import json

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
