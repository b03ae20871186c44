"""The demo models a fresh machine gets from `kiln models init`: built offline, registered.

The random-weight models draw noise; they exist so every architecture's code path runs
without downloading anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kiln.models.catalog import Catalog, CatalogEntry, ModelDefaults

BUILD_VERSION = "1"  # bump when a builder changes, so `init` rebuilds existing folders


@dataclass(frozen=True)
class DemoModel:
    air: str
    folder: str
    architecture: str
    builder: str  # name of a function in kiln.engine.demo_models
    comment: str
    defaults: ModelDefaults


DEMO_MODELS = (
    DemoModel(
        "kiln:tiny-sd@1", "tiny-sd", "sd1x", "build_tiny_sd",
        "Random weights in the SD 1.x architecture: draws noise; for testing the code path.",
        ModelDefaults(width=128, height=128, steps=4, cfg=7.0),
    ),
    DemoModel(
        "kiln:tiny-sdxl@1", "tiny-sdxl", "sdxl", "build_tiny_sdxl",
        "Random weights in the SDXL architecture: draws noise; for testing the code path.",
        ModelDefaults(width=128, height=128, steps=4, cfg=7.0),
    ),
)


def init_demo_models(catalog: Catalog, models_dir: Path, log: Callable[[str], None] = print) -> list[CatalogEntry]:
    """Build (if missing or outdated) and register every demo model. Idempotent."""
    from kiln.engine import demo_models  # imports torch: only the CLI and tests get here

    entries = []
    for demo in DEMO_MODELS:
        folder = models_dir / demo.folder
        stamp = folder / ".kiln-build"
        if not (stamp.exists() and stamp.read_text() == BUILD_VERSION):
            log(f"building {demo.air} in {folder}")
            getattr(demo_models, demo.builder)(folder)
            stamp.write_text(BUILD_VERSION)
        entries.append(catalog.add(CatalogEntry(
            air=demo.air, name=demo.folder, version=demo.air.rsplit("@", 1)[1],
            category="checkpoint", type="base", architecture=demo.architecture,
            path=str(folder), tags=("demo", "random-weights"), comment=demo.comment,
            defaults=demo.defaults,
        )))
    return entries
