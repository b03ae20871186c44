"""Server settings, read from `KILN_*` environment variables and overridable by CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


def _env_bool(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Prices:
    """The price model behind `cost` (USD): documented in the README, configurable by env."""

    per_megapixel_step: float = 0.0001
    nsfw_check: float = 0.0002
    prompt_weighting: float = 0.0001


@dataclass(frozen=True)
class Settings:
    """Everything an operator can set. Built by `Settings.from_env()`; immutable afterwards."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("kiln-data")
    api_keys: tuple[str, ...] = ()
    public_url: str | None = None
    allow_private_urls: bool = False
    device: str | None = None
    torch_threads: int | None = None
    max_body_bytes: int = 64 * 1024 * 1024
    max_tasks_per_request: int = 64
    prices: Prices = field(default_factory=Prices)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `KILN_*` variables from `env` (default: the process environment), then apply
        the non-None `overrides` (CLI flags win over the environment)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        if "KILN_HOST" in env:
            values["host"] = env["KILN_HOST"]
        if "KILN_PORT" in env:
            values["port"] = int(env["KILN_PORT"])
        if "KILN_DATA_DIR" in env:
            values["data_dir"] = Path(env["KILN_DATA_DIR"])
        if "KILN_API_KEYS" in env:
            values["api_keys"] = tuple(k.strip() for k in env["KILN_API_KEYS"].split(",") if k.strip())
        if env.get("KILN_PUBLIC_URL"):
            values["public_url"] = env["KILN_PUBLIC_URL"]
        if "KILN_ALLOW_PRIVATE_URLS" in env:
            values["allow_private_urls"] = _env_bool(env["KILN_ALLOW_PRIVATE_URLS"])
        if env.get("KILN_DEVICE"):
            values["device"] = env["KILN_DEVICE"]
        if env.get("KILN_TORCH_THREADS"):
            values["torch_threads"] = int(env["KILN_TORCH_THREADS"])
        prices = {
            name: float(env[var])
            for name, var in (
                ("per_megapixel_step", "KILN_PRICE_PER_MEGAPIXEL_STEP"),
                ("nsfw_check", "KILN_PRICE_NSFW_CHECK"),
                ("prompt_weighting", "KILN_PRICE_PROMPT_WEIGHTING"),
            )
            if var in env
        }
        if prices:
            values["prices"] = Prices(**prices)
        settings = cls(**values)
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def base_url(self) -> str:
        """The base of every `imageURL` Kiln hands out, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "kiln.sqlite3"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"
