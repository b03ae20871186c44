"""The image store: encoded images on local disk, indexed in the database with their owner.

A UUID is only visible to the key that owns it; another key's UUID is answered exactly as an
unknown one, so keys cannot probe each other's images. Images are kept until `purge` removes
them (the server's retention does, `media_ttl_s` after they were stored).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kiln.storage import Database


@dataclass(frozen=True)
class StoredImage:
    image_uuid: str
    owner: str
    extension: str
    width: int
    height: int
    path: Path


class ImageStore:
    def __init__(self, db: Database, root: Path) -> None:
        """Open the store in `root`; files half-written by a process that stopped mid-write
        (`*.part`) are deleted."""
        self._db = db
        self._root = root
        root.mkdir(parents=True, exist_ok=True)
        for partial in root.glob("*.part"):
            partial.unlink(missing_ok=True)

    def put(
        self, data: bytes, *, owner: str, extension: str, width: int, height: int, origin: str
    ) -> StoredImage:
        """Write `data` under a new UUID; the file is complete before it is indexed."""
        image_uuid = str(uuid.uuid4())
        path = self._root / f"{image_uuid}.{extension}"
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self._db.execute(
            "INSERT INTO images (image_uuid, owner, format, width, height, origin, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (image_uuid, owner, extension, width, height, origin, time.time()),
        )
        return StoredImage(image_uuid, owner, extension, width, height, path)

    def purge(self, created_before: float, batch: int = 500) -> int:
        """Delete the images stored before `created_before` (epoch seconds): the index row
        first, so a UUID is unknown before its file goes. Returns how many were deleted."""
        deleted = 0
        while True:
            rows = self._db.query(
                "SELECT image_uuid, format FROM images WHERE created_at < ? LIMIT ?",
                (created_before, batch),
            )
            if not rows:
                return deleted
            with self._db.transaction() as conn:
                conn.executemany("DELETE FROM images WHERE image_uuid = ?",
                                 [(row["image_uuid"],) for row in rows])
            for row in rows:
                (self._root / f"{row['image_uuid']}.{row['format']}").unlink(missing_ok=True)
            deleted += len(rows)

    def read(self, stored: StoredImage) -> bytes:
        """The encoded bytes of `stored` (blocking I/O: call it off the event loop)."""
        return stored.path.read_bytes()

    def get(self, image_uuid: str, owner: str | None = None) -> StoredImage | None:
        """The image, if it exists (and, when `owner` is given, belongs to that owner)."""
        rows = self._db.query("SELECT * FROM images WHERE image_uuid = ?", (image_uuid,))
        if not rows or (owner is not None and rows[0]["owner"] != owner):
            return None
        row = rows[0]
        return StoredImage(
            row["image_uuid"], row["owner"], row["format"], row["width"], row["height"],
            self._root / f"{row['image_uuid']}.{row['format']}",
        )
