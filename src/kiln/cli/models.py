"""The `kiln models` commands: build the demo models, register, import, list and remove models of
the catalog."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kiln.cli.common import _open

PROGRESS_BAR_BYTES = 256 * 2**20
"""`kiln models add` shows a progress bar while it reads a checkpoint at least this large."""


def cmd_models_init(args: argparse.Namespace) -> int:
    from kiln.models.demo import init_demo_models

    settings, _, catalog = _open(args)
    for entry in init_demo_models(catalog, settings.models_dir):
        print(f"registered {entry.air} ({entry.architecture}) at {entry.path}")
    return 0


def cmd_models_add(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from kiln.errors import ModelLoadError
    from kiln.models import CatalogEntry, ModelDefaults, parse_air
    from kiln.models.importer import local_air
    from kiln.preprocess import ANNOTATED

    settings, _, catalog = _open(args)
    air = str(parse_air(args.air)) if args.air else None
    path = Path(args.path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if args.category == "annotator":
        if args.conditioning in ANNOTATED:
            from kiln.engine.annotators import check_annotator  # imports torch

            try:  # refuse files a request could not load, before they are registered
                check_annotator(args.conditioning, args.path)
            except ModelLoadError as error:
                print(f"kiln: {error.message}", file=sys.stderr)
                return 2
        entry = CatalogEntry(
            air=air or local_air(path), name=args.name or path.stem, version="",
            category="annotator", architecture=args.architecture or "sd1x", path=args.path,
            conditioning=args.conditioning,
        )
    else:
        base = _flux_base(catalog, args.base) if args.base else None
        entry = _detected_entry(args, path, air, settings.models_dir / "configs", base)
    entry = replace(
        entry,
        version=args.version or entry.air.rsplit("@", 1)[1],
        type=args.type or entry.type,
        config_path=args.config or entry.config_path,
        tags=tuple(t for t in args.tags.split(",") if t) if args.tags is not None else entry.tags,
        comment=args.comment if args.comment is not None else entry.comment,
        defaults=ModelDefaults(
            width=args.default_width or entry.defaults.width,
            height=args.default_height or entry.defaults.height,
            steps=args.default_steps or entry.defaults.steps,
            cfg=args.default_cfg if args.default_cfg is not None else entry.defaults.cfg,
            scheduler=args.default_scheduler or entry.defaults.scheduler,
        ),
    )
    if (entry.category == "ipadapter") != bool(args.image_encoder):
        raise ValueError(f"{path.name} is an IP-Adapter: name the folder of its CLIP image encoder with --image-encoder"
                         if entry.category == "ipadapter" else "--image-encoder is for IP-Adapters only")
    if entry.category == "ipadapter":
        from kiln.models.ip_adapters import check_image_encoder, encoder_folder
        from kiln.models.kinds import read_header

        encoder = encoder_folder(Path(args.image_encoder), settings.models_dir / "configs")
        check_image_encoder(read_header(path).shapes, encoder)
        entry = replace(entry, config_path=str(encoder))
    if entry.category == "checkpoint" and not args.no_load_check:
        problem = _load_problem(entry)
        if problem:
            print(f"kiln: {path} does not load, so it is not registered: {problem}", file=sys.stderr)
            return 2
    entry = catalog.add(entry)
    print(f"registered {entry.air} ({entry.category}, {entry.architecture}) at {entry.path}")
    if entry.config_path and not args.config:
        print(f"  configs and tokenizers: {entry.config_path}")
    return 0


def _flux_base(catalog, air: str):  # type: ignore[no-untyped-def]
    """The registered FLUX folder `--base` names, whose text encoders, tokenizers and VAE a FLUX
    transformer file runs with."""
    base = catalog.find(air)
    if base is None:
        raise ValueError(f"--base {air} is not in the catalog: register the FLUX folder first")
    if base.category != "checkpoint" or base.architecture != "flux" or not Path(base.path).is_dir():
        raise ValueError(f"--base {air} must be a FLUX diffusers folder registered as a checkpoint; it is "
                         f"a {base.architecture} {base.category} at {base.path}")
    return base


def _detected_entry(args: argparse.Namespace, path: Path, air: str | None, configs_dir: Path, base=None):  # type: ignore[no-untyped-def]
    """The catalog entry of `path` as its tensors tell it, with the command line's category,
    architecture, prediction and conditioning overriding what was detected; a FLUX transformer
    file runs with the parts of the FLUX folder entry `base`."""
    from dataclasses import replace

    from kiln.models.checkpoints import ModelKind, UnrecognisedModelError, inspect_model
    from kiln.models.importer import catalog_entry, local_air

    families = {"sd1x": "sd1", "sdxl": "sdxl", "flux": "flux", "sd3": "sd3"}
    try:
        kind, header = inspect_model(path)
    except UnrecognisedModelError:
        if not (args.category and args.architecture and (args.category != "checkpoint" or args.config)):
            raise
        # The operator says what it is; a checkpoint then needs --config, as nothing is derived.
        kind, header = ModelKind(args.category, families[args.architecture], "a model"), None
    if args.category and args.category != kind.category:
        raise ValueError(f"{path.name} is {kind.description}, not a {args.category}")
    if args.architecture and args.architecture != kind.architecture:
        if kind.architecture:
            print(f"note: {path.name} looks like {kind.description}; registered as {args.architecture} "
                  "as --architecture says")
        kind = replace(kind, family=families[args.architecture], notes=())
    if args.prediction:
        kind = replace(kind, prediction=args.prediction, notes=())
    if args.conditioning:
        kind = replace(kind, conditioning=args.conditioning)
    print(f"{path.name}: {kind.description}")
    for note in kind.notes:
        print(f"note: {note}")
    if args.config:
        header = None  # the operator's config folder replaces the derived one
    if base is not None and not (kind.category == "checkpoint" and kind.architecture == "flux" and header is not None):
        raise ValueError(f"--base names the FLUX folder a FLUX transformer file runs with; {path.name} is "
                         f"{kind.description}")
    entry = catalog_entry(path, kind, header, air or local_air(path), configs_dir, base=base)
    return replace(entry, name=args.name or entry.name)


def _load_problem(entry) -> str | None:  # type: ignore[no-untyped-def]
    """Why the checkpoint of `entry` does not load through the engine, or None when it does.

    Reads a multi-GB file with a progress bar first, so that the load itself (from the page
    cache) is quick and the wait is visible.
    """
    import torch
    from diffusers.utils import logging as diffusers_logging

    from kiln.engine.pipelines import load_pipeline  # imports torch and diffusers
    from kiln.errors import ModelLoadError

    diffusers_logging.set_verbosity_error()  # float16 on a CPU is fine for a check; no warning
    path = Path(entry.path)
    if path.is_file() and path.stat().st_size >= PROGRESS_BAR_BYTES:
        _read_with_progress(path)
    try:
        load_pipeline(entry.spec, "cpu", torch.float16)
    except ModelLoadError as error:
        return error.message
    return None


def _read_with_progress(path: Path, chunk: int = 64 * 2**20) -> None:
    from tqdm import tqdm

    with open(path, "rb") as file, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"reading {path.name}"
    ) as bar:
        while block := file.read(chunk):
            bar.update(len(block))


def cmd_models_import(args: argparse.Namespace) -> int:
    from kiln.models.importer import import_folder

    settings, _, catalog = _open(args)
    import_folder(Path(args.folder), catalog, settings.models_dir / "configs")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    _, _, catalog = _open(args)
    for e in catalog.all():
        print(f"{e.air:32} {e.category:11} {e.architecture:5} {e.path}")
    return 0


def cmd_models_remove(args: argparse.Namespace) -> int:
    _, _, catalog = _open(args)
    if not catalog.remove(args.air):
        print(f"no model {args.air}", file=sys.stderr)
        return 1
    return 0
