"""The record of every task a key sent: its taskUUID (so a reuse is `conflictTaskUUID`) and every
reply it got (so `getResponse` can answer after the fact, after a disconnect or a restart).

Records live in SQLite beside the images and expire `ttl_s` seconds after the task finished (a
task that a stopped Kiln never finished, `ttl_s` after it started); an expired taskUUID is
unknown again and may be reused. Inline images (`imageBase64Data`, `guideImageDataURI`, ...)
are not copied into the records: they are re-encoded from the image store when read.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kiln.errors import ConflictError
from kiln.media import ImageStore
from kiln.service.outputs import output_fields
from kiln.storage import Database

log = logging.getLogger(__name__)
_INLINE_IMAGE_FIELDS = {"Base64Data": "base64Data", "DataURI": "dataURI"}  # suffix → outputType


@dataclass(frozen=True)
class TaskRecord:
    """What is known of one task: its type, whether it finished, and its replies in order.

    `interrupted` is true for a task that an earlier run of Kiln started and never finished
    (the process stopped): it will never finish.
    """

    task_type: str
    finished: bool
    interrupted: bool
    items: tuple[dict[str, Any], ...]
    errors: tuple[dict[str, Any], ...]


class TaskRegistry:
    """Task records per key. Another key's taskUUID is invisible: never a conflict, never found."""

    def __init__(self, db: Database, images: ImageStore, ttl_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._images = images
        self._ttl_s = ttl_s
        self._clock = clock
        self._run_id = str(uuid.uuid4())  # tells this run's tasks from those of a stopped one

    def claim(self, owner: str, task_uuid: str, task_type: str) -> None:
        """Record `task_uuid` as processing for `owner`; raise `ConflictError` if that key
        already used it (and its record has not expired)."""
        now = self._clock()
        self._forget_if_expired(owner, task_uuid, now)
        try:
            self._db.execute(
                "INSERT INTO tasks (owner, task_uuid, task_type, created_at, run_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (owner, task_uuid, task_type, now, self._run_id),
            )
        except sqlite3.IntegrityError:
            raise ConflictError(
                f"taskUUID '{task_uuid}' was already used; send a new UUID v4 for each task "
                f"(getResponse with it returns that task's results).",
                parameter="taskUUID",
            ) from None

    def add_item(self, owner: str, task_uuid: str, item: dict[str, Any]) -> None:
        """Keep one result item (as sent, with taskType and taskUUID; an inline image is kept
        as a reference to the stored image named by the item's `{prefix}UUID`)."""
        self._add(owner, task_uuid, "data", {
            key: None if _inline_image_prefix(key, item) else value for key, value in item.items()
        })

    def add_error(self, owner: str, task_uuid: str, error: dict[str, Any]) -> None:
        """Keep one error object of the task."""
        self._add(owner, task_uuid, "error", error)

    def finish(self, owner: str, task_uuid: str) -> None:
        """Mark the task finished: no more replies will come; its expiry clock starts."""
        self._db.execute(
            "UPDATE tasks SET finished_at = ? WHERE owner = ? AND task_uuid = ?",
            (self._clock(), owner, task_uuid),
        )

    def get(self, owner: str, task_uuid: str) -> TaskRecord | None:
        """The record of `owner`'s task, or None if unknown, expired or another key's."""
        rows = self._db.query(
            "SELECT task_type, run_id, finished_at FROM tasks WHERE owner = ? AND task_uuid = ?",
            (owner, task_uuid),
        )
        if not rows or self._expired(rows[0]["finished_at"], self._clock()):
            return None
        row = rows[0]
        replies = self._db.query(
            "SELECT kind, body FROM task_replies WHERE owner = ? AND task_uuid = ? ORDER BY id",
            (owner, task_uuid),
        )
        finished = row["finished_at"] is not None
        return TaskRecord(
            task_type=row["task_type"],
            finished=finished,
            interrupted=not finished and row["run_id"] != self._run_id,
            items=tuple(self._with_inline_images(json.loads(r["body"]))
                        for r in replies if r["kind"] == "data"),
            errors=tuple(json.loads(r["body"]) for r in replies if r["kind"] == "error"),
        )

    def _with_inline_images(self, item: dict[str, Any]) -> dict[str, Any]:
        """The item as it was sent: each inline image re-encoded from the image store."""
        for key, value in list(item.items()):
            prefix = _inline_image_prefix(key, item)
            if prefix is None or value is not None:
                continue
            stored = self._images.get(item[f"{prefix}UUID"])
            if stored is None:  # deleted by hand: media outlives task records (Settings)
                log.warning("image %s of a task record is gone", item[f"{prefix}UUID"])
                del item[key]
                continue
            output_type = _INLINE_IMAGE_FIELDS[key.removeprefix(prefix)]
            item.update(output_fields(prefix, output_type, "", stored, self._images.read(stored)))
        return item

    def _add(self, owner: str, task_uuid: str, kind: str, body: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO task_replies (owner, task_uuid, kind, body) VALUES (?, ?, ?, ?)",
            (owner, task_uuid, kind, json.dumps(body)),
        )

    def _expired(self, finished_at: float | None, now: float) -> bool:
        return finished_at is not None and finished_at < now - self._ttl_s

    def _forget_if_expired(self, owner: str, task_uuid: str, now: float) -> None:
        rows = self._db.query(
            "SELECT finished_at FROM tasks WHERE owner = ? AND task_uuid = ?", (owner, task_uuid)
        )
        if rows and self._expired(rows[0]["finished_at"], now):
            with self._db.transaction() as conn:
                conn.execute(
                    "DELETE FROM task_replies WHERE owner = ? AND task_uuid = ?", (owner, task_uuid)
                )
                conn.execute("DELETE FROM tasks WHERE owner = ? AND task_uuid = ?", (owner, task_uuid))

    def purge(self) -> int:
        """Delete the expired records: finished more than `ttl_s` ago, or started more than
        `ttl_s` ago by a Kiln that stopped before finishing them. Returns how many."""
        cutoff = self._clock() - self._ttl_s
        expired = ("SELECT owner, task_uuid FROM tasks WHERE finished_at < ?"
                   " OR (finished_at IS NULL AND run_id IS NOT ? AND created_at < ?)")
        params = (cutoff, self._run_id, cutoff)
        with self._db.transaction() as conn:
            conn.execute(f"DELETE FROM task_replies WHERE (owner, task_uuid) IN ({expired})", params)
            return conn.execute(f"DELETE FROM tasks WHERE (owner, task_uuid) IN ({expired})",
                                params).rowcount


def _inline_image_prefix(key: str, item: dict[str, Any]) -> str | None:
    """"image" for `imageBase64Data` (or "guideImage" for `guideImageDataURI`, ...) when the
    item names the stored image in `{prefix}UUID`; None for any other field."""
    for suffix in _INLINE_IMAGE_FIELDS:
        prefix = key.removesuffix(suffix)
        if prefix != key and f"{prefix}UUID" in item:
            return prefix
    return None
