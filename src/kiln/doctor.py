"""`kiln doctor`: checks what a Kiln needs before it serves, and says what to fix.

Each check is independent: one failing never hides another. Nothing is changed except the
database, which opening creates (an SQLite file) or migrates when needed, as `kiln serve` would.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kiln.settings import Settings

MIN_FREE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Check:
    """One finding: `ok`, what was found, and (when not ok) what to do about it."""

    name: str
    ok: bool
    found: str
    fix: str = ""


def _torch(settings: Settings) -> Check:
    try:
        import torch
    except Exception as exc:  # a broken install raises more than ImportError
        return Check("torch", False, f"cannot import torch: {exc}",
                     "reinstall: .venv/bin/pip install torch==2.13.0")
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        return Check("device", False, f"KILN_DEVICE is {device} but torch {torch.__version__} "
                     "sees no CUDA device", "install a CUDA build of torch, or set KILN_DEVICE=cpu")
    return Check("device", True, f"torch {torch.__version__} on {device}")


def _data_dir(settings: Settings) -> Check:
    folder = settings.data_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".kiln-doctor"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return Check("data dir", False, f"{folder} is not writable: {exc.strerror}",
                     "set KILN_DATA_DIR (or --data-dir) to a writable folder")
    return Check("data dir", True, str(folder.resolve()))


def _disk(settings: Settings) -> Check:
    free = shutil.disk_usage(settings.data_dir if settings.data_dir.exists() else Path.cwd()).free
    found = f"{free / 1024**3:.1f} GiB free"
    if free < MIN_FREE_BYTES:
        return Check("disk", False, found, "free space, or lower KILN_MEDIA_TTL so images are "
                     "deleted sooner (`kiln media prune` deletes expired ones now)")
    return Check("disk", True, found)


def _database(settings: Settings) -> Check:
    from kiln.storage import SCHEMA_VERSION, Database, database_url

    if settings.database_url is None:
        fix = "check the file's permissions, or move it aside to start afresh"
    else:
        fix = "check KILN_DATABASE_URL: the server is up and reachable from here, the user, the password"
    where = "KILN_DATABASE_URL"
    try:
        where = database_url(settings.database_url or settings.database_path).render_as_string(
            hide_password=True)
        db = Database.open(settings)
        db.ping()
        db.close()
    except Exception as exc:
        cause = exc.__cause__ or exc
        return Check("database", False, f"{where}: {type(cause).__name__}: {cause}", fix)
    return Check("database", True, f"{where} (schema version {SCHEMA_VERSION})")


def _catalog(settings: Settings) -> Check:
    from kiln.models import Catalog
    from kiln.storage import Database

    try:
        db = Database.open(settings)
        entries = Catalog(db).search()
        db.close()
    except Exception as exc:
        return Check("catalog", False, f"cannot read the catalog: {exc}", "see the database check")
    missing = [f"{e.air} ({e.path})" for e in entries
               if not os.path.exists(e.path) or (e.config_path and not os.path.exists(e.config_path))]
    if missing:
        return Check("catalog", False, f"{len(missing)} of {len(entries)} models have no files: "
                     + ", ".join(missing), "restore the files, or `kiln models remove AIR`")
    if not entries:
        return Check("catalog", False, "no models registered",
                     "`kiln models init` registers the demo models; `kiln models add` yours")
    return Check("catalog", True, f"{len(entries)} models, every file present")


CHECKS: tuple[Callable[[Settings], Check], ...] = (_torch, _data_dir, _disk, _database, _catalog)


def diagnose(settings: Settings) -> list[Check]:
    """Every check's finding, in order."""
    return [check(settings) for check in CHECKS]
