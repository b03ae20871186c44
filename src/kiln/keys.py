"""API keys: accepted from settings or from the database, where only their hash is stored."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from kiln.storage import Database


def key_id(api_key: str) -> str:
    """The stable, non-reversible identity of a key; owns the images and tasks made with it."""
    return hashlib.sha256(api_key.encode()).hexdigest()


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

    def any_exists(self) -> bool:
        return bool(self._configured) or bool(self._db.query("SELECT 1 FROM api_keys LIMIT 1"))
