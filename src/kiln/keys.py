"""API keys: accepted from settings or from the database, where only their hash is stored."""

from __future__ import annotations

import builtins
import hashlib
import secrets
import time
from dataclasses import dataclass

from kiln.storage import Database, KeyRepository


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
    """Checks keys against the configured ones and the hashed ones in the database.

    Every method but those on configured keys reads or writes the database: call them off
    the event loop.
    """

    def __init__(self, db: Database, configured: tuple[str, ...] = ()) -> None:
        self._keys = KeyRepository(db)
        self._configured = frozenset(key_id(k) for k in configured)

    def authenticate(self, api_key: object) -> Principal | None:
        """The principal for `api_key`, or None if it is not a valid key."""
        if not isinstance(api_key, str) or not api_key:
            return None
        kid = key_id(api_key)
        if kid in self._configured or self._keys.exists(kid):
            return Principal(kid)
        return None

    def create(self, name: str = "default") -> str:
        """Create a key and return it; it cannot be recovered later."""
        api_key = "kiln_" + secrets.token_urlsafe(32)
        self._keys.add(key_id(api_key), name, time.time())
        return api_key

    def list(self) -> list[tuple[str, str, float]]:
        """(key id prefix, name, created_at) of every stored key."""
        return [(key.key_id[:12], key.name, key.created_at) for key in self._keys.all()]

    def webhook_secret(self, kid: str) -> str:
        """The secret that signs the webhooks and uploads of the key `kid`; made on first use
        and the same afterwards, on every front (`kiln keys webhook-secret KEY` shows it). Read
        on every delivery, written only the first time."""
        return self._keys.webhook_secret(kid, "whsec_" + secrets.token_urlsafe(32), time.time())

    def any_exists(self) -> bool:
        return bool(self._configured) or self._keys.any_exists()

    def record_usage(self, kid: str, *, images: int, cost: float) -> None:
        """Add `images` and `cost` to the usage of the key `kid` (atomic)."""
        self._keys.add_usage(kid, images=images, cost=cost)

    def usage(self) -> builtins.list[KeyUsage]:
        """Usage of every key that generated something, most expensive first. Keys from the
        settings have no stored name: they are named "configured"."""
        return [
            KeyUsage(
                usage.key_id,
                usage.name or ("configured" if usage.key_id in self._configured else "unknown"),
                usage.images,
                usage.cost,
            )
            for usage in self._keys.usage()
        ]
