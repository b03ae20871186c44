"""The index of stored images: which key owns each UUID, its format and size (the bytes live in
the media store, `kiln.media`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from kiln.storage.database import Database
from kiln.storage.schema import images


class ImageIndex:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, image_uuid: str, *, owner: str, extension: str, width: int, height: int,
            origin: str, created_at: float) -> None:
        with self._db.write() as conn:
            conn.execute(images.insert().values(
                image_uuid=image_uuid, owner=owner, format=extension, width=width,
                height=height, origin=origin, created_at=created_at,
            ))

    def get(self, image_uuid: str) -> dict[str, Any] | None:
        """The row of `image_uuid` (the columns of `kiln.storage.schema.images`), or None."""
        with self._db.read() as conn:
            row = conn.execute(
                select(images).where(images.c.image_uuid == image_uuid)).mappings().first()
            return None if row is None else dict(row)

    def created_before(self, created_before: float, limit: int) -> list[tuple[str, str]]:
        """(UUID, extension) of at most `limit` images stored before `created_before`."""
        query = (select(images.c.image_uuid, images.c.format)
                 .where(images.c.created_at < created_before).limit(limit))
        with self._db.read() as conn:
            return [(row.image_uuid, row.format) for row in conn.execute(query)]

    def remove(self, image_uuids: list[str]) -> None:
        with self._db.write() as conn:
            conn.execute(delete(images).where(images.c.image_uuid.in_(image_uuids)))

    def count(self, origin: str | None = None) -> int:
        """How many images are indexed (of `origin` only, when given)."""
        query = select(func.count()).select_from(images)
        if origin is not None:
            query = query.where(images.c.origin == origin)
        with self._db.read() as conn:
            return int(conn.execute(query).scalar_one())
