"""The rows of the model catalog (`kiln.models.catalog` turns them into `CatalogEntry`s)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select

from kiln.storage.database import Database
from kiln.storage.schema import models


class CatalogRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, row: Mapping[str, Any]) -> None:
        """Store the model `row` (every column of `models`), replacing one with its AIR."""
        insert = self._db.insert(models).values(**row)
        with self._db.write() as conn:
            conn.execute(insert.on_conflict_do_update(
                index_elements=["air"],
                set_={name: insert.excluded[name] for name in row if name != "air"},
            ))

    def remove(self, air: str) -> bool:
        """Delete the model `air`; whether there was one."""
        with self._db.write() as conn:
            return conn.execute(delete(models).where(models.c.air == air)).rowcount > 0

    def get(self, air: str) -> dict[str, Any] | None:
        """The row of the model `air` (every column of `models`), or None."""
        with self._db.read() as conn:
            row = conn.execute(select(models).where(models.c.air == air)).mappings().first()
            return None if row is None else dict(row)

    def all(self) -> list[dict[str, Any]]:
        """Every model's row, in AIR order."""
        with self._db.read() as conn:
            return [dict(row) for row in conn.execute(select(models).order_by(models.c.air)).mappings()]
