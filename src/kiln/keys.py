"""API keys: accepted from settings or from the database, where only their hash is stored."""

from __future__ import annotations

import builtins
import hashlib
import secrets
import time
from dataclasses import dataclass

from kiln.storage import Database


def key_id(api_key: str) -> str:
    """The stable, non-reversible identity of a key; owns the images and tasks made with it."""
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyUsage:
    """What one key has generated so far: images and their cost (USD, the price model's)."""

    key_id: str
    name: str
    images: int
    cost: float


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    key_id: str


class KeyStore:
    """Checks keys against the configured ones and the hashed ones in the database."""

    def __init__(self, db: Database, configured: tuple[str, ...] = ()) -> None:
        self._db = db
        self._configured = frozenset(key_id(k) for k in configured)

    def authenticate(self, api_key: object) -> Principal | None:
        """The principal for `api_key`, or None if it is not a valid key."""
        if not isinstance(api_key, str) or not api_key:
            return None
        kid = key_id(api_key)
        if kid in self._configured or self._db.query(
            "SELECT 1 FROM api_keys WHERE key_id = ?", (kid,)
        ):
            return Principal(kid)
        return None

    def create(self, name: str = "default") -> str:
        """Create a key and return it; it cannot be recovered later."""
        api_key = "kiln_" + secrets.token_urlsafe(32)
        self._db.execute(
            "INSERT INTO api_keys (key_id, name, created_at) VALUES (?, ?, ?)",
            (key_id(api_key), name, time.time()),
        )
        return api_key

    def list(self) -> list[tuple[str, str, float]]:
        """(key id prefix, name, created_at) of every stored key."""
        return [
            (r["key_id"][:12], r["name"], r["created_at"])
            for r in self._db.query("SELECT * FROM api_keys ORDER BY created_at")
        ]

    def webhook_secret(self, kid: str) -> str:
        """The secret that signs the webhooks and uploads of the key `kid`; made on first use
        and the same afterwards (`kiln keys webhook-secret KEY` shows it). Read on every
        delivery, written only the first time."""
        query = "SELECT secret FROM webhook_secrets WHERE key_id = ?"
        rows = self._db.query(query, (kid,))
        if not rows:  # ON CONFLICT: a concurrent first use keeps the secret stored first
            self._db.execute(
                "INSERT INTO webhook_secrets (key_id, secret, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key_id) DO NOTHING",
                (kid, "whsec_" + secrets.token_urlsafe(32), time.time()),
            )
            rows = self._db.query(query, (kid,))
        return str(rows[0]["secret"])

    def any_exists(self) -> bool:
        return bool(self._configured) or bool(self._db.query("SELECT 1 FROM api_keys LIMIT 1"))

    def record_usage(self, kid: str, *, images: int, cost: float) -> None:
        """Add `images` and `cost` to the usage of the key `kid` (atomic)."""
        self._db.execute(
            "INSERT INTO key_usage (key_id, images, cost) VALUES (?, ?, ?) ON CONFLICT (key_id)"
            " DO UPDATE SET images = images + excluded.images, cost = cost + excluded.cost",
            (kid, images, cost),
        )

    def usage(self) -> builtins.list[KeyUsage]:
        """Usage of every key that generated something, most expensive first. Keys from the
        settings have no stored name: they are named "configured"."""
        rows = self._db.query(
            "SELECT u.key_id, u.images, u.cost, k.name FROM key_usage u"
            " LEFT JOIN api_keys k ON k.key_id = u.key_id ORDER BY u.cost DESC, u.key_id"
        )
        return [
            KeyUsage(
                r["key_id"],
                r["name"] or ("configured" if r["key_id"] in self._configured else "unknown"),
                r["images"],
                r["cost"],
            )
            for r in rows
        ]
