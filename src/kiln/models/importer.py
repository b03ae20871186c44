"""Registering the model files a user already has: one file, or a ComfyUI / AUTOMATIC1111 folder.

Files are referenced where they are, never copied. Each gets an AIR `local:<name>@<hash>` from its
file name and a short hash of its size and first and last MiB, so the same file gets the same AIR
on every run and importing a folder twice registers nothing the second time.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from kiln.architectures import FLOW_ARCHITECTURES, model_defaults
from kiln.models.catalog import Catalog, CatalogEntry, ModelDefaults
from kiln.models.checkpoints import ModelKind, TensorHeader, UnrecognisedModelError, inspect_model
from kiln.models.configs import config_folder, native_size
from kiln.models.ip_adapters import encoder_folder, encoder_width, fitting_encoder

FOLDER_CATEGORIES = {
    # ComfyUI's models/ and AUTOMATIC1111's models/ (and A1111's top-level embeddings/)
    "checkpoints": "checkpoint", "stable-diffusion": "checkpoint",
    "loras": "lora", "lora": "lora", "lycoris": "lycoris",
    "controlnet": "controlnet",
    "vae": "vae",
    "embeddings": "embeddings",
    "ipadapter": "ipadapter",
}
ENCODER_FOLDERS = ("clip_vision",)
"""ComfyUI's folder of CLIP vision towers, the image encoders an IP-Adapter is paired with."""
_COMPANIONS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".yaml", ".yml", ".json", ".txt", ".md",
               ".info", ".html", ".sha256"}
"""Files that sit beside models (previews, model cards, A1111's .yaml configs): passed over."""
_HASHED_BYTES = 2**20


def short_hash(path: Path) -> str:
    """8 hex digits of SHA-256 over the file's size, first MiB and last MiB: stable across runs,
    different for different fine-tunes of one architecture (their headers can be identical),
    and cheap for multi-GB files. A folder hashes each of its files' names and hashes."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        listing = "".join(f"{p.relative_to(path)}\0{short_hash(p)}\0" for p in files)
        return hashlib.sha256(listing.encode()).hexdigest()[:8]
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode() + b"\0")
    with open(path, "rb") as file:
        digest.update(file.read(_HASHED_BYTES))
        if size > _HASHED_BYTES:
            file.seek(max(_HASHED_BYTES, size - _HASHED_BYTES))
            digest.update(file.read(_HASHED_BYTES))
    return digest.hexdigest()[:8]


def local_air(path: Path) -> str:
    """`local:<file name, lower case, as [a-z0-9._-]>@<short hash>`."""
    stem = path.name if path.is_dir() else path.stem
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.") or "model"
    return f"local:{name}@{short_hash(path)}"


def catalog_entry(
    path: Path, kind: ModelKind, header: TensorHeader | None, air: str, configs_dir: Path, comment: str = "",
    base: CatalogEntry | None = None,
) -> CatalogEntry:
    """The catalog entry of a model file `inspect_model` told `kind` and `header` of. A single-file
    checkpoint or VAE gets its config folder, written under `configs_dir` if new (a VAE's holds
    its `config.json`), and a checkpoint its native size as default width and height. A FLUX or
    SD3 checkpoint gets its family's defaults (`kiln.architectures.model_defaults`); a FLUX
    transformer file runs with the parts of the FLUX folder `base` (required for one)."""
    if kind.architecture is None:
        raise UnrecognisedModelError(f"{path.name} is {kind.description}: {' '.join(kind.notes)}")
    config_path = None
    defaults = ModelDefaults()
    if kind.category == "checkpoint" and kind.architecture in FLOW_ARCHITECTURES:
        if header is not None:
            if base is None:
                raise UnrecognisedModelError(
                    f"{path.name} is {kind.description}, which runs with the text encoders, tokenizers and "
                    f"VAE of a FLUX folder: register it with `kiln models add {path} --base AIR`")
            config_path = base.path
        size, steps, cfg = model_defaults(kind.architecture, kind.type, kind.timestep_distilled)
        defaults = ModelDefaults(width=size, height=size, steps=steps, cfg=cfg)
    elif kind.category in ("checkpoint", "vae") and header is not None:  # a single file, not a folder
        config_path = str(config_folder(header, kind, configs_dir))
        if kind.category == "checkpoint":
            size = native_size(kind)
            defaults = ModelDefaults(width=size, height=size)
    return CatalogEntry(
        air=air, name=path.name if path.is_dir() else path.stem, version=air.rsplit("@", 1)[1], category=kind.category,
        type=kind.type, architecture=kind.architecture, path=str(path), config_path=config_path,
        tags=("sd2",) if kind.family == "sd2" else ("schnell",) if kind.timestep_distilled else (),
        conditioning=kind.conditioning, comment=comment or kind.description.capitalize(), defaults=defaults,
    )


@dataclass(frozen=True)
class ImportReport:
    """What `import_folder` did, each list in file order."""

    registered: list[CatalogEntry]
    unchanged: list[CatalogEntry]
    skipped: list[tuple[Path, str]]


def import_folder(
    root: Path, catalog: Catalog, configs_dir: Path, log: Callable[[str], None] = print
) -> ImportReport:
    """Register every model file under a ComfyUI or AUTOMATIC1111 install (or its `models/`).

    Each file's category and architecture come from its tensors (the folder it sits in is only
    a hint, reported when they disagree). Files already registered are left as they are; files
    that are not models Kiln runs are listed in `skipped` with the reason.
    """
    folders = model_folders(root)
    if not folders:
        raise FileNotFoundError(
            f"no ComfyUI or AUTOMATIC1111 model folders under {root} (looked for "
            f"{', '.join(sorted(set(FOLDER_CATEGORIES)))} in it and in its models/)"
        )
    report = ImportReport([], [], [])
    for folder, hinted in folders:
        for path in _model_files(folder):
            try:
                kind, header = inspect_model(path)
                air = local_air(path)
                existing = catalog.find(air)
                if existing is not None:
                    report.unchanged.append(existing)
                    log(f"unchanged  {existing.air}: already registered ({existing.category}, "
                        f"{existing.architecture}) at {path}")
                    continue
                entry = catalog_entry(path, kind, header, air, configs_dir,
                                      comment=f"{kind.description.capitalize()}, imported from {root}")
                if kind.category == "ipadapter" and header is not None:
                    entry = replace(entry, config_path=str(_paired_encoder(header, root, configs_dir)))
                entry = catalog.add(entry)
            except (UnrecognisedModelError, ValueError, OSError) as exc:
                report.skipped.append((path, str(exc)))
                log(f"skipped    {path}: {exc}")
                continue
            report.registered.append(entry)
            elsewhere = kind.category != hinted and {kind.category, hinted} != {"lora", "lycoris"}
            moved = f" (found in the {folder.name}/ folder)" if elsewhere else ""
            log(f"registered {entry.air}: {kind.description}{moved} at {path}")
            for note in kind.notes:
                log(f"           note: {note}")
    log(f"{len(report.registered)} registered, {len(report.unchanged)} already registered, "
        f"{len(report.skipped)} skipped")
    return report


def _paired_encoder(header: TensorHeader, root: Path, configs_dir: Path) -> Path:
    """The folder of the image encoder under `root`'s clip_vision/ whose output the IP-Adapter of
    `header` reads (ValueError naming what is missing)."""
    encoders = [path for base in (root, root / "models") for name in ENCODER_FOLDERS
                if (base / name).is_dir() for path in _model_files(base / name)]
    encoder = fitting_encoder(header.shapes, encoders)
    if encoder is None:
        field, width = encoder_width(header.shapes)
        raise ValueError(f"no CLIP vision file in clip_vision/ gives the {width}-wide features ({field}) this "
                         "IP-Adapter reads: add one, or register it with `kiln models add FILE --image-encoder PATH`")
    return encoder_folder(encoder, configs_dir)


def model_folders(root: Path) -> list[tuple[Path, str]]:
    """The category folders of a ComfyUI / A1111 install at `root`, with the category each hints."""
    found: dict[Path, str] = {}
    for base in (root, root / "models"):
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            category = FOLDER_CATEGORIES.get(child.name.lower())
            if category and child.is_dir():
                found.setdefault(child.resolve(), category)
    return list(found.items())


def _model_files(folder: Path) -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            if name.startswith(".") or path.suffix.lower() in _COMPANIONS:
                continue
            if name.startswith("put_") and path.stat().st_size == 0:  # ComfyUI's placeholders
                continue
            yield path
