"""What every `kiln` command shares: its settings and the catalog and keys it opens."""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=Path(args.data_dir) if getattr(args, "data_dir", None) else None,
        public_url=getattr(args, "public_url", None),
        allow_private_urls=True if getattr(args, "allow_private_urls", False) else None,
        device=getattr(args, "device", None),
        preload_models=tuple(args.preload) if getattr(args, "preload", None) else None,
        executor=getattr(args, "executor", None),
        ray_address=getattr(args, "ray_address", None),
        replicas=getattr(args, "replicas", None),
    )


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from kiln.keys import KeyStore
    from kiln.models import Catalog
    from kiln.storage import Database

    settings = _settings(args)
    db = Database.open(settings)  # KILN_DATABASE_URL, or the SQLite file in the data dir
    return settings, KeyStore(db, settings.api_keys), Catalog(db)
