"""The image store: encoded images in a blob store (a folder or an S3 bucket), indexed in the
database with their owner.

A UUID is only visible to the key that owns it; another key's UUID is answered exactly as an
unknown one, so keys cannot probe each other's images. Images are kept until `purge` removes
them (the server's retention does, `media_ttl_s` after they were stored).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from kiln.errors import NotFoundError
from kiln.media.blobs import Blobs
from kiln.media.encoding import MIME_BY_EXTENSION
from kiln.storage import Database, ImageIndex


@dataclass(frozen=True)
class StoredImage:
    """An indexed image, whose bytes are the blob `name`. `public_url` is where clients fetch
    it without Kiln (KILN_MEDIA_PUBLIC_BASE), or None: Kiln's `/media/<name>` serves it."""

    image_uuid: str
    owner: str
    extension: str
    width: int
    height: int
    public_url: str | None

    @property
    def name(self) -> str:
        return f"{self.image_uuid}.{self.extension}"


class ImageStore:
    def __init__(self, db: Database, blobs: Blobs) -> None:
        """The images indexed in `db`, their bytes in `blobs` (see `kiln.media.open_blobs`)."""
        self._index = ImageIndex(db)
        self._blobs = blobs

    def put(
        self, data: bytes, *, owner: str, extension: str, width: int, height: int, origin: str
    ) -> StoredImage:
        """Store `data` under a new UUID; the blob is complete before it is indexed, so an
        indexed image can be read. `MediaUnavailableError` if the blob store fails."""
        image_uuid = str(uuid.uuid4())
        name = f"{image_uuid}.{extension}"
        self._blobs.put(name, data, MIME_BY_EXTENSION[extension])
        self._index.add(image_uuid, owner=owner, extension=extension, width=width, height=height,
                        origin=origin, created_at=time.time())
        return StoredImage(image_uuid, owner, extension, width, height, self._blobs.public_url(name))

    def purge(self, created_before: float, batch: int = 500) -> int:
        """Delete the images stored before `created_before` (epoch seconds): the index row
        first, so a UUID is unknown before its blob goes. Returns how many were deleted.

        If the blob store fails, the purge stops with `MediaUnavailableError`; the blobs of the
        rows already deleted stay behind (on S3, a lifecycle rule on the prefix removes them)."""
        deleted = 0
        while True:
            rows = self._index.created_before(created_before, batch)
            if not rows:
                return deleted
            self._index.remove([image_uuid for image_uuid, _ in rows])
            for image_uuid, extension in rows:
                self._blobs.delete(f"{image_uuid}.{extension}")
            deleted += len(rows)

    def read(self, stored: StoredImage) -> bytes:
        """The encoded bytes of `stored` (blocking I/O: call it off the event loop).
        `NotFoundError` when its blob is gone (purged since `get`), `MediaUnavailableError`
        when the blob store fails."""
        data = self._blobs.get(stored.name)
        if data is None:
            raise NotFoundError(f"Image {stored.image_uuid} no longer exists.",
                                imageUUID=stored.image_uuid)
        return data

    def get(self, image_uuid: str, owner: str | None = None) -> StoredImage | None:
        """The image, if it exists (and, when `owner` is given, belongs to that owner)."""
        row = self._index.get(image_uuid)
        if row is None or (owner is not None and row["owner"] != owner):
            return None
        return StoredImage(
            row["image_uuid"], row["owner"], row["format"], row["width"], row["height"],
            self._blobs.public_url(f"{row['image_uuid']}.{row['format']}"),
        )
