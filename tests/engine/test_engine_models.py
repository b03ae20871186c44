"""Model loading: folders, single files, failures, the LRU cache, and the demo builders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kiln.engine import Engine
from kiln.engine.demo_models import build_tiny_sd, build_tiny_sdxl
from kiln.errors import ModelLoadError
from kiln.generation import ModelSpec

from .helpers import TinyModels, make_request


@pytest.mark.parametrize(
    ("folder", "single"), [("sd", "sd_single_file"), ("sdxl", "sdxl_single_file")]
)
def test_single_file_checkpoint_matches_the_folder(
    engine: Engine, tiny: TinyModels, folder: str, single: str
) -> None:
    from_folder = np.asarray(engine.generate(make_request(getattr(tiny, folder)))[0])
    from_file = np.asarray(engine.generate(make_request(getattr(tiny, single)))[0])
    difference = np.abs(from_folder.astype(int) - from_file.astype(int))
    assert difference.max() <= 1


def test_unknown_path_raises_model_load_error(engine: Engine, tmp_path: Path) -> None:
    model = ModelSpec("test:missing@1", "sd1x", str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadError, match="test:missing@1"):
        engine.load(model)


def test_corrupt_folder_raises_model_load_error(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="test:corrupt@1"):
        engine.generate(make_request(ModelSpec("test:corrupt@1", "sd1x", str(tmp_path))))


def test_single_file_without_config_folder_raises(engine: Engine, tiny: TinyModels) -> None:
    model = ModelSpec("test:no-config@1", "sd1x", tiny.sd_single_file.path, config_path=None)
    with pytest.raises(ModelLoadError, match="config"):
        engine.load(model)


def test_cache_evicts_least_recently_used(tiny: TinyModels) -> None:
    engine = Engine(device="cpu", memory_budget=1_600_000)  # one tiny model (0.7 or 1.4 MB)
    engine.load(tiny.sd)
    engine.load(tiny.sdxl)
    assert engine.loaded_models == (tiny.sdxl.air,)
    assert len(list(engine.generate(make_request(tiny.sd)))) == 1
    assert engine.loaded_models == (tiny.sd.air,)


@pytest.mark.parametrize("builder", [build_tiny_sd, build_tiny_sdxl])
def test_builders_are_deterministic(tmp_path: Path, builder: object) -> None:
    first = builder(tmp_path / "a")  # type: ignore[operator]
    second = builder(tmp_path / "b")  # type: ignore[operator]
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert any(p.suffix == ".safetensors" for p in files)
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
