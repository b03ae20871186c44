"""`kiln models add` for FLUX and SD3: diffusers folders, a FLUX transformer file with `--base`,
and their adapters, as an operator registers them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kiln.cli import main
from kiln.engine.demo_flow_models import (
    build_tiny_flux,
    build_tiny_flux_controlnet,
    build_tiny_flux_fill,
    build_tiny_flux_lora,
    build_tiny_sd3,
)
from kiln.models import Catalog, CatalogEntry
from kiln.storage import Database


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow-files")
    flux = build_tiny_flux(root / "flux")
    transformer = root / "flux1-dev.safetensors"
    shutil.copy(flux / "transformer" / "diffusion_pytorch_model.safetensors", transformer)
    return {
        "flux": flux, "transformer": transformer, "sd3": build_tiny_sd3(root / "sd3"),
        "schnell": build_tiny_flux(root / "schnell", schnell=True), "fill": build_tiny_flux_fill(root / "fill"),
        "controlnet": build_tiny_flux_controlnet(root / "flux-controlnet-canny"),
        "lora": build_tiny_flux_lora(root / "lora"),
    }


def add(data_dir: Path, *args: str) -> int:
    return main(["--data-dir", str(data_dir), "models", "add", *args])


def entry(data_dir: Path, air: str) -> CatalogEntry:
    return Catalog(Database(data_dir / "kiln.sqlite3")).get(air)


def test_a_flux_folder_and_its_transformer_file_with_base(tmp_path, folders, capsys):
    assert add(tmp_path, str(folders["flux"]), "--architecture", "flux", "--air", "test:flux@1") == 0
    flux = entry(tmp_path, "test:flux@1")
    assert (flux.category, flux.architecture, flux.type, flux.config_path) == ("checkpoint", "flux", "base", None)
    assert (flux.defaults.width, flux.defaults.steps, flux.defaults.cfg) == (1024, 28, 3.5)

    file = str(folders["transformer"])
    assert add(tmp_path, file, "--air", "test:flux-file@1") == 2
    assert "--base AIR" in capsys.readouterr().err
    assert add(tmp_path, file, "--air", "test:flux-file@1", "--base", "test:flux@1", "--default-steps", "20") == 0
    assert "a FLUX.1 transformer file" in capsys.readouterr().out
    single = entry(tmp_path, "test:flux-file@1")  # registered after it loaded with the base's parts
    assert (single.architecture, single.type, single.path) == ("flux", "base", str(folders["transformer"]))
    assert single.config_path == flux.path and (single.defaults.steps, single.defaults.cfg) == (20, 3.5)


def test_base_must_be_a_registered_flux_folder(tmp_path, folders, capsys):
    assert add(tmp_path, str(folders["transformer"]), "--base", "test:nothing@1") == 2
    assert "not in the catalog" in capsys.readouterr().err
    assert add(tmp_path, str(folders["sd3"]), "--air", "test:sd3@1") == 0
    assert add(tmp_path, str(folders["transformer"]), "--base", "test:sd3@1") == 2
    assert "must be a FLUX diffusers folder" in capsys.readouterr().err
    assert add(tmp_path, str(folders["flux"]), "--air", "test:flux@1") == 0
    assert add(tmp_path, str(folders["lora"]), "--base", "test:flux@1") == 2
    assert "--base names the FLUX folder" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "expected"), [
    ("sd3", ("checkpoint", "sd3", "base", (1024, 28, 7.0), ())),
    ("schnell", ("checkpoint", "flux", "base", (1024, 4, 0.0), ("schnell",))),
    ("fill", ("checkpoint", "flux", "inpainting", (1024, 50, 30.0), ())),
    ("controlnet", ("controlnet", "flux", None, (None, None, None), ())),
    ("lora", ("lora", "flux", None, (None, None, None), ())),
])
def test_flow_models_and_adapters_are_recognised(tmp_path, folders, name, expected):
    assert add(tmp_path, str(folders[name]), "--air", f"test:{name}@1") == 0
    found = entry(tmp_path, f"test:{name}@1")
    defaults = (found.defaults.width, found.defaults.steps, found.defaults.cfg)
    assert (found.category, found.architecture, found.type, defaults, found.tags) == expected
    if name == "controlnet":
        assert found.conditioning == "canny"
