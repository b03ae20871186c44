"""The record of every task a key sent: its taskUUID (so a reuse is `conflictTaskUUID`) and every
reply it got (so `getResponse` can answer after the fact, after a disconnect or a restart).

Records live in the database beside the image index and expire `ttl_s` seconds after the task
finished (a task that a stopped front never finished, `ttl_s` after it started); an expired
taskUUID is unknown again and may be reused. Inline images (`imageBase64Data`, `guideImageDataURI`, ...)
are not copied into the records: they are re-encoded from the image store when read.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kiln.errors import ConflictError
from kiln.media import ImageStore
from kiln.service.outputs import output_fields
from kiln.storage import Database, TaskRepository

log = logging.getLogger(__name__)
_INLINE_IMAGE_FIELDS = {"Base64Data": "base64Data", "DataURI": "dataURI"}  # suffix → outputType


@dataclass(frozen=True)
class TaskRecord:
    """What is known of one task: its type, whether it finished, and its replies in order.

    `interrupted` is true for an unfinished task whose front is no longer alive (it stopped,
    or was killed: its heartbeat is stale): it will never finish.
    """

    task_type: str
    finished: bool
    interrupted: bool
    items: tuple[dict[str, Any], ...]
    errors: tuple[dict[str, Any], ...]


class TaskRegistry:
    """Task records per key. Another key's taskUUID is invisible: never a conflict, never found.

    Records are shared by every front of the database: `getResponse` on any front answers the
    tasks of all. Every method reads or writes the database: call them off the event loop.
    """

    def __init__(self, db: Database, images: ImageStore, ttl_s: float, front_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        """Records of the tasks this front (`front_id`, registered in `fronts`) runs, and of
        every other front's."""
        self._tasks = TaskRepository(db)
        self._images = images
        self._ttl_s = ttl_s
        self._front_id = front_id
        self._clock = clock

    def claim(self, owner: str, task_uuid: str, task_type: str) -> None:
        """Record `task_uuid` as processing for `owner`; raise `ConflictError` if that key
        already used it (and its record has not expired)."""
        now = self._clock()
        if not self._tasks.claim(owner, task_uuid, task_type, front_id=self._front_id, now=now,
                                 expired_before=now - self._ttl_s):
            raise ConflictError(
                f"taskUUID '{task_uuid}' was already used; send a new UUID v4 for each task "
                f"(getResponse with it returns that task's results).",
                parameter="taskUUID",
            )

    def add_item(self, owner: str, task_uuid: str, item: dict[str, Any]) -> None:
        """Keep one result item (as sent, with taskType and taskUUID; an inline image is kept
        as a reference to the stored image named by the item's `{prefix}UUID`)."""
        self._tasks.add_reply(owner, task_uuid, "data", json.dumps({
            key: None if _inline_image_prefix(key, item) else value for key, value in item.items()
        }))

    def add_error(self, owner: str, task_uuid: str, error: dict[str, Any]) -> None:
        """Keep one error object of the task."""
        self._tasks.add_reply(owner, task_uuid, "error", json.dumps(error))

    def finish(self, owner: str, task_uuid: str) -> None:
        """Mark the task finished: no more replies will come; its expiry clock starts."""
        self._tasks.finish(owner, task_uuid, self._clock())

    def get(self, owner: str, task_uuid: str) -> TaskRecord | None:
        """The record of `owner`'s task, or None if unknown, expired or another key's."""
        now = self._clock()
        stored = self._tasks.get(owner, task_uuid, front_id=self._front_id, now=now)
        if stored is None or self._expired(stored.finished_at, now):
            return None
        finished = stored.finished_at is not None
        return TaskRecord(
            task_type=stored.task_type,
            finished=finished,
            interrupted=not finished and not stored.front_alive,
            items=tuple(self._with_inline_images(json.loads(body))
                        for kind, body in stored.replies if kind == "data"),
            errors=tuple(json.loads(body) for kind, body in stored.replies if kind == "error"),
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

    def _expired(self, finished_at: float | None, now: float) -> bool:
        return finished_at is not None and finished_at < now - self._ttl_s

    def purge(self) -> int:
        """Delete the expired records: finished more than `ttl_s` ago, or started more than
        `ttl_s` ago on a front that stopped before finishing them. Returns how many."""
        now = self._clock()
        return self._tasks.purge(now - self._ttl_s, front_id=self._front_id, now=now)


def _inline_image_prefix(key: str, item: dict[str, Any]) -> str | None:
    """"image" for `imageBase64Data` (or "guideImage" for `guideImageDataURI`, ...) when the
    item names the stored image in `{prefix}UUID`; None for any other field."""
    for suffix in _INLINE_IMAGE_FIELDS:
        prefix = key.removesuffix(suffix)
        if prefix != key and f"{prefix}UUID" in item:
            return prefix
    return None
