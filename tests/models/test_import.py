"""`kiln models import DIR` registers a ComfyUI or AUTOMATIC1111 models folder in place, once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from kiln.cli import main
from kiln.models import Catalog
from kiln.models.importer import local_air
from kiln.storage import CatalogRepository, Database
from tests.models.checkpoint_files import (
    ADAPTER_FILES,
    published_ldm_shapes,
    write_header_only,
    write_small,
)

# Where each install keeps each kind of file, relative to the folder given to `kiln models import`.
LAYOUTS = {
    "comfyui": {"checkpoint": "models/checkpoints", "lora": "models/loras", "controlnet": "models/controlnet",
                "vae": "models/vae", "embeddings": "models/embeddings"},
    "a1111": {"checkpoint": "models/Stable-diffusion", "lora": "models/Lora", "controlnet": "models/ControlNet",
              "vae": "models/VAE", "embeddings": "embeddings"},
}


def _install(root: Path, layout: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Lay out a user's models under `root`; returns file name → (category, architecture) expected."""
    folders = {category: root / relative for category, relative in layout.items()}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    # Checkpoints with the real tensors' names and shapes (sparse files: the data is a hole).
    write_header_only(folders["checkpoint"] / "dreamshaper_8.safetensors", published_ldm_shapes("sd1"))
    (folders["checkpoint"] / "xl").mkdir()
    write_header_only(folders["checkpoint"] / "xl" / "sd_xl_base_1.0.safetensors", published_ldm_shapes("sdxl"))
    vae = {k.removeprefix("first_stage_model."): shape for k, shape in published_ldm_shapes("sdxl").items()
           if k.startswith("first_stage_model.")}
    write_header_only(folders["vae"] / "sdxl_vae.safetensors", vae)
    for category, name in (("lora", "detail_kohya.safetensors"), ("lora", "style_xl.safetensors"),
                           ("controlnet", "control_v11p_sd15_canny.safetensors"),
                           ("embeddings", "easynegative.safetensors")):
        write_small(folders[category] / name, ADAPTER_FILES[name][0])
    torch.save({"string_to_param": {"*": torch.ones(4, 768)}, "name": "bad_hands"},
               folders["embeddings"] / "bad_hands.pt")
    # What else such folders hold: previews, placeholders, pickles, models Kiln does not run.
    (folders["lora"] / "detail_kohya.preview.png").write_bytes(b"\x89PNG")
    (folders["checkpoint"] / "put_checkpoints_here").touch()
    (folders["checkpoint"] / "v1-5-pruned.ckpt").write_bytes(b"\x80\x02" * 64)
    write_small(folders["checkpoint"] / "flux1-dev.safetensors", {"double_blocks.0.img_attn.qkv.weight": (3, 3)})
    return {
        "dreamshaper_8": ("checkpoint", "sd1x"), "sd_xl_base_1.0": ("checkpoint", "sdxl"),
        "detail_kohya": ("lora", "sd1x"), "style_xl": ("lora", "sdxl"),
        "control_v11p_sd15_canny": ("controlnet", "sd1x"), "sdxl_vae": ("vae", "sdxl"),
        "easynegative": ("embeddings", "sd1x"), "bad_hands": ("embeddings", "sd1x"),
    }


def _rows(data_dir: Path) -> list[dict]:
    db = Database(data_dir / "kiln.sqlite3")
    rows = [dict(row) for row in CatalogRepository(db).all()]
    db.close()
    return rows


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_models_folder_is_registered_in_place_and_a_second_import_changes_nothing(tmp_path, capsys, layout):
    root, data_dir = tmp_path / layout, tmp_path / "kiln-data"
    expected = _install(root, LAYOUTS[layout])

    assert main(["--data-dir", str(data_dir), "models", "import", str(root)]) == 0
    first = capsys.readouterr().out

    entries = {entry.name: entry for entry in Catalog(Database(data_dir / "kiln.sqlite3")).all()}
    assert {name: (e.category, e.architecture) for name, e in entries.items()} == expected
    for name, entry in entries.items():  # referenced where they are, not copied
        assert Path(entry.path).stem == name and Path(entry.path).is_relative_to(root.resolve())
        assert re.fullmatch(rf"local:{re.escape(name.lower())}@[0-9a-f]{{8}}", entry.air)
        assert f"registered {entry.air}" in first
    assert entries["control_v11p_sd15_canny"].conditioning == "canny"
    for checkpoint in ("dreamshaper_8", "sd_xl_base_1.0"):
        config = Path(entries[checkpoint].config_path)
        assert config.parent == data_dir / "models" / "configs" and (config / "model_index.json").is_file()
    assert (Path(entries["sdxl_vae"].config_path) / "config.json").is_file()
    assert "skipped" in first and "flux1-dev.safetensors: flux1-dev.safetensors is a Flux model" in first
    assert "v1-5-pruned.ckpt is a pickle file" in first
    assert "preview.png" not in first and "put_checkpoints_here" not in first
    assert first.rstrip().endswith("8 registered, 0 already registered, 2 skipped")
    rows = _rows(data_dir)

    assert main(["--data-dir", str(data_dir), "models", "import", str(root)]) == 0
    second = capsys.readouterr().out

    assert second.rstrip().endswith("0 registered, 8 already registered, 2 skipped")
    assert _rows(data_dir) == rows  # not even a timestamp changed
    for entry in entries.values():
        assert f"unchanged  {entry.air}: already registered" in second


def test_the_air_hash_is_stable_and_tells_different_files_of_one_architecture_apart(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = (write_header_only(tmp_path / d / "model.safetensors", published_ldm_shapes("sd1")) for d in "ab")
    assert local_air(a) == local_air(a) == local_air(b)  # same name and bytes: same AIR, wherever
    with open(b, "r+b") as file:  # a fine-tune: same header, other weights
        file.seek(b.stat().st_size - 10)
        file.write(b"\x01" * 10)
    assert local_air(a) != local_air(b)


def test_a_folder_that_is_not_an_install_is_refused(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path / "data"), "models", "import", str(tmp_path)]) == 2
    assert "no ComfyUI or AUTOMATIC1111 model folders under" in capsys.readouterr().err
