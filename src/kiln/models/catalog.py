"""The catalog of models an operator registered, stored in the database.

A `CatalogEntry` carries what the engine needs to load a model (`spec`) and what the protocol
exposes through `modelSearch` and defaults of `imageInference`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kiln.categories import CATEGORIES
from kiln.errors import NotFoundError
from kiln.generation import ModelSpec
from kiln.models.air import parse_air
from kiln.preprocess import ANNOTATED
from kiln.storage import CatalogRepository, Database

ARCHITECTURES = ("sd1x", "sdxl", "flux", "sd3")


@dataclass(frozen=True)
class ModelDefaults:
    """Per-model defaults applied when a request omits the parameter."""

    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    scheduler: str | None = None


@dataclass(frozen=True)
class CatalogEntry:
    air: str
    name: str
    version: str
    category: str
    architecture: str
    path: str
    type: str | None = None
    config_path: str | None = None
    tags: tuple[str, ...] = ()
    conditioning: str | None = None
    comment: str = ""
    defaults: ModelDefaults = field(default_factory=ModelDefaults)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(
            air=self.air,
            architecture=self.architecture,  # type: ignore[arg-type]
            path=self.path,
            config_path=self.config_path,
        )


class Catalog:
    """Registered models, keyed by normalised AIR. Every method reads or writes the database:
    call them off the event loop."""

    def __init__(self, db: Database) -> None:
        self._rows = CatalogRepository(db)

    def add(self, entry: CatalogEntry) -> CatalogEntry:
        """Register (or replace) `entry`; validates the AIR, category, architecture and path."""
        air = str(parse_air(entry.air))
        if entry.category not in CATEGORIES:
            raise ValueError(f"category must be one of {', '.join(CATEGORIES)}")
        if entry.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}")
        if entry.category == "annotator" and entry.conditioning not in ANNOTATED:
            raise ValueError(
                "an annotator needs a conditioning naming the preprocessor it serves, one of "
                f"{', '.join(ANNOTATED)} (the others are built in)"
            )
        if not Path(entry.path).exists():
            raise FileNotFoundError(entry.path)
        if entry.category == "ipadapter" and not (entry.config_path and Path(entry.config_path).is_dir()):
            raise ValueError("an IP-Adapter needs the folder of its CLIP image encoder as config_path "
                             "(`kiln models add PATH --image-encoder FOLDER`)")
        self._rows.put({
            "air": air, "name": entry.name, "version": entry.version, "category": entry.category,
            "type": entry.type, "architecture": entry.architecture,
            "path": str(Path(entry.path).resolve()),
            "config_path": str(Path(entry.config_path).resolve()) if entry.config_path else None,
            "tags": json.dumps(list(entry.tags)), "conditioning": entry.conditioning,
            "comment": entry.comment, "defaults": json.dumps(asdict(entry.defaults)),
            "created_at": time.time(),
        })
        return self.get(air)

    def remove(self, air: str) -> bool:
        return self._rows.remove(str(parse_air(air)))

    def find(self, air: str) -> CatalogEntry | None:
        row = self._rows.get(str(parse_air(air)))
        return None if row is None else _entry(row)

    def get(self, air: str, parameter: str = "model") -> CatalogEntry:
        """The entry for `air`; `unknownModel` naming `parameter` when none is registered."""
        entry = self.find(str(parse_air(air, parameter)))
        if entry is None:
            raise NotFoundError(
                f"No model '{air}' in this server's catalog. `modelSearch` lists the models "
                "available; operators register more with `kiln models add`.",
                code="unknownModel",
                parameter=parameter,
            )
        return entry

    def all(self) -> list[CatalogEntry]:
        return [_entry(row) for row in self._rows.all()]

    def search(
        self,
        text: str | None = None,
        *,
        tags: tuple[str, ...] = (),
        **fields: str | None,
    ) -> list[CatalogEntry]:
        """Entries matching every filter given, best match first.

        `text` matches (case-insensitive) the name, AIR, version or a tag; an entry whose name
        is exactly `text` ranks first, then names containing it, then other matches, each group
        in AIR order. Every tag of `tags` must be among the entry's tags. `fields` filters on
        `category`, `type`, `architecture` or `conditioning` (case-insensitive equality).
        """
        needle = (text or "").strip().lower()
        wanted_tags = {tag.lower() for tag in tags}
        ranked: list[tuple[int, CatalogEntry]] = []
        for entry in self.all():
            if any(
                value is not None and str(getattr(entry, name) or "").lower() != value.lower()
                for name, value in fields.items()
            ):
                continue
            entry_tags = {tag.lower() for tag in entry.tags}
            if not wanted_tags <= entry_tags:
                continue
            name = entry.name.lower()
            if not needle or name == needle:
                rank = 0
            elif needle in name:
                rank = 1
            elif needle in entry.air.lower() or needle in entry.version.lower() or any(
                needle in tag for tag in entry_tags
            ):
                rank = 2
            else:
                continue
            ranked.append((rank, entry))
        ranked.sort(key=lambda pair: pair[0])  # stable: AIR order within a rank
        return [entry for _, entry in ranked]


def _entry(row: Mapping[str, Any]) -> CatalogEntry:
    return CatalogEntry(
        air=row["air"],
        name=row["name"],
        version=row["version"],
        category=row["category"],
        type=row["type"],
        architecture=row["architecture"],
        path=row["path"],
        config_path=row["config_path"],
        tags=tuple(json.loads(row["tags"])),
        conditioning=row["conditioning"],
        comment=row["comment"],
        defaults=ModelDefaults(**json.loads(row["defaults"])),
    )
