"""API keys (their hashes), what each key generated, and the secret that signs its webhooks."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from kiln.storage.database import Database
from kiln.storage.schema import api_keys, key_usage, webhook_secrets


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    name: str
    created_at: float


@dataclass(frozen=True)
class StoredUsage:
    """The usage of one key; `name` is None for a key that is not stored (a configured one)."""

    key_id: str
    name: str | None
    images: int
    cost: float


class KeyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, key_id: str, name: str, created_at: float) -> None:
        with self._db.write() as conn:
            conn.execute(api_keys.insert().values(key_id=key_id, name=name, created_at=created_at))

    def exists(self, key_id: str) -> bool:
        with self._db.read() as conn:
            return conn.execute(
                select(api_keys.c.key_id).where(api_keys.c.key_id == key_id)).first() is not None

    def any_exists(self) -> bool:
        with self._db.read() as conn:
            return conn.execute(select(api_keys.c.key_id).limit(1)).first() is not None

    def all(self) -> list[StoredKey]:
        """Every stored key, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id))
            return [StoredKey(row.key_id, row.name, row.created_at) for row in rows]

    def webhook_secret(self, key_id: str, new_secret: str, created_at: float) -> str:
        """The secret of `key_id`; `new_secret` is stored first when it has none. Concurrent
        first uses (on any front) all get the secret stored first."""
        query = select(webhook_secrets.c.secret).where(webhook_secrets.c.key_id == key_id)
        with self._db.read() as conn:
            secret = conn.execute(query).scalar()
        if secret is not None:
            return str(secret)
        with self._db.write() as conn:
            conn.execute(self._db.insert(webhook_secrets).values(
                key_id=key_id, secret=new_secret, created_at=created_at,
            ).on_conflict_do_nothing(index_elements=["key_id"]))
            return str(conn.execute(query).scalar_one())

    def add_usage(self, key_id: str, *, images: int, cost: float) -> None:
        """Add `images` and `cost` to the usage of `key_id` (atomic)."""
        insert = self._db.insert(key_usage).values(key_id=key_id, images=images, cost=cost)
        with self._db.write() as conn:
            conn.execute(insert.on_conflict_do_update(index_elements=["key_id"], set_={
                "images": key_usage.c.images + insert.excluded.images,
                "cost": key_usage.c.cost + insert.excluded.cost,
            }))

    def usage(self) -> list[StoredUsage]:
        """The usage of every key that generated something, most expensive first."""
        query = (
            select(key_usage.c.key_id, key_usage.c.images, key_usage.c.cost, api_keys.c.name)
            .join_from(key_usage, api_keys, api_keys.c.key_id == key_usage.c.key_id, isouter=True)
            .order_by(key_usage.c.cost.desc(), key_usage.c.key_id)
        )
        with self._db.read() as conn:
            return [StoredUsage(row.key_id, row.name, row.images, row.cost)
                    for row in conn.execute(query)]
