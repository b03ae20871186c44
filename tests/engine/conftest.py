"""Tiny random-weight models built once per session, and one shared engine."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from kiln.engine import Engine  # noqa: E402
from kiln.engine.demo_models import build_tiny_sd, build_tiny_sdxl  # noqa: E402
from kiln.engine.single_file import write_single_file_checkpoint  # noqa: E402
from kiln.generation import ModelSpec  # noqa: E402

from .helpers import TinyModels  # noqa: E402


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    root = tmp_path_factory.mktemp("tiny-models")
    sd = build_tiny_sd(root / "sd")
    sdxl = build_tiny_sdxl(root / "sdxl")
    write_single_file_checkpoint(sd, root / "sd.safetensors", "sd1x")
    write_single_file_checkpoint(sdxl, root / "sdxl.safetensors", "sdxl")
    return TinyModels(
        sd=ModelSpec("test:sd@1", "sd1x", str(sd)),
        sdxl=ModelSpec("test:sdxl@1", "sdxl", str(sdxl)),
        sd_single_file=ModelSpec(
            "test:sd-file@1", "sd1x", str(root / "sd.safetensors"), config_path=str(sd)
        ),
        sdxl_single_file=ModelSpec(
            "test:sdxl-file@1", "sdxl", str(root / "sdxl.safetensors"), config_path=str(sdxl)
        ),
    )


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine(device="cpu")
