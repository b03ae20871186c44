"""The record of every taskUUID a key has used, so a reuse is answered `conflictTaskUUID`."""

from __future__ import annotations

import sqlite3
import time

from kiln.errors import ConflictError
from kiln.storage import Database


class TaskRegistry:
    def __init__(self, db: Database) -> None:
        self._db = db

    def claim(self, owner: str, task_uuid: str, task_type: str) -> None:
        """Record `task_uuid` for `owner`; raise `ConflictError` if that key already used it.

        UUIDs are scoped per key: another key's task is invisible, never a conflict.
        """
        try:
            self._db.execute(
                "INSERT INTO tasks (owner, task_uuid, task_type, created_at) VALUES (?, ?, ?, ?)",
                (owner, task_uuid, task_type, time.time()),
            )
        except sqlite3.IntegrityError:
            raise ConflictError(
                f"taskUUID '{task_uuid}' was already used; send a new UUID v4 for each task.",
                parameter="taskUUID",
            ) from None
