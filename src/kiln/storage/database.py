"""One SQLite database per data directory, safe to use from the event loop and worker threads.

Statements are short; a single connection guarded by a lock serialises them. WAL mode lets the
CLI read while a server writes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     TEXT PRIMARY KEY,   -- sha256 of the key; the key itself is never stored
    name       TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    air          TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    category     TEXT NOT NULL,
    type         TEXT,
    architecture TEXT NOT NULL,
    path         TEXT NOT NULL,
    config_path  TEXT,
    tags         TEXT NOT NULL,    -- JSON list
    conditioning TEXT,
    comment      TEXT NOT NULL,
    defaults     TEXT NOT NULL,    -- JSON object: width, height, steps, cfg, scheduler
    created_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    image_uuid TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    format     TEXT NOT NULL,      -- file extension: png, jpg, webp
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    origin     TEXT NOT NULL,      -- generated | uploaded
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    owner       TEXT NOT NULL,
    task_uuid   TEXT NOT NULL,
    task_type   TEXT NOT NULL,
    created_at  REAL NOT NULL,
    run_id      TEXT,              -- the server run that executes it (see TaskRegistry)
    finished_at REAL,              -- NULL while processing
    PRIMARY KEY (owner, task_uuid)
);
CREATE TABLE IF NOT EXISTS task_replies (   -- every result item and error of a task, in order
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    owner     TEXT NOT NULL,
    task_uuid TEXT NOT NULL,
    kind      TEXT NOT NULL,       -- data | error
    body      TEXT NOT NULL        -- the JSON item as sent
);
CREATE INDEX IF NOT EXISTS task_replies_task ON task_replies (owner, task_uuid);
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at);
CREATE INDEX IF NOT EXISTS images_created ON images (created_at);
CREATE TABLE IF NOT EXISTS webhook_secrets (   -- signs the key's webhooks and uploads
    key_id     TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS key_usage (
    key_id TEXT PRIMARY KEY,
    images INTEGER NOT NULL,
    cost   REAL NOT NULL
);
"""


class Database:
    """A thread-safe handle on `path`; creates the schema on open."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            # WAL + NORMAL: no fsync per commit (each cost ~10 ms here), still never corrupt;
            # a power cut may lose the last commits, not the database.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._add_missing_columns()
            self._conn.executescript(_SCHEMA)

    def _add_missing_columns(self) -> None:
        """Bring a data directory made by an older Kiln up to the current `tasks` table."""
        existing = {row[1] for row in self._conn.execute("PRAGMA table_info(tasks)")}
        if existing:
            for column in ("run_id TEXT", "finished_at REAL"):
                if column.split()[0] not in existing:
                    self._conn.execute(f"ALTER TABLE tasks ADD COLUMN {column}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        with self._lock:
            return self._conn.execute(sql, params).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock for several statements that must commit together."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
