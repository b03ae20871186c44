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


# NudeNet classes that make an image NSFW (README: NSFW check). Covered body parts, faces, feet,
# belly, armpits and the male chest are detected but do not count.
NSFW_CLASSES = (
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)


_NUMERIC_VARIABLES: tuple[tuple[str, str, type], ...] = (
    ("max_body_bytes", "KILN_MAX_BODY_BYTES", int),
    ("max_tasks_per_request", "KILN_MAX_TASKS_PER_REQUEST", int),
    ("task_ttl_s", "KILN_TASK_TTL", float),
    ("drain_s", "KILN_DRAIN_S", float),
    ("media_ttl_s", "KILN_MEDIA_TTL", float),
    ("delivery_attempts", "KILN_DELIVERY_ATTEMPTS", int),
    ("delivery_backoff_s", "KILN_DELIVERY_BACKOFF", float),
    ("delivery_timeout_s", "KILN_DELIVERY_TIMEOUT", float),
    ("max_results_in_flight_per_key", "KILN_MAX_RESULTS_IN_FLIGHT_PER_KEY", int),
    ("max_queued_tasks", "KILN_MAX_QUEUED_TASKS", int),
    ("max_input_pixels_per_task", "KILN_MAX_INPUT_PIXELS_PER_TASK", int),
    ("nsfw_threshold", "KILN_NSFW_THRESHOLD", float),
)


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
    # delivery (README: Delivery)
    task_ttl_s: float = 24 * 3600
    media_ttl_s: float = 7 * 24 * 3600  # images (generated and uploaded) are deleted after this
    drain_s: float = 30.0  # on shutdown, how long tasks in flight may take to finish
    delivery_attempts: int = 5
    delivery_backoff_s: float = 1.0
    delivery_timeout_s: float = 30.0
    # admission limits (README: Limits)
    max_results_in_flight_per_key: int = 40
    max_queued_tasks: int = 256
    max_input_pixels_per_task: int = 4 * 4096 * 4096  # decoded pixels of all image inputs of a task
    # NSFW check
    nsfw_classes: tuple[str, ...] = NSFW_CLASSES
    nsfw_threshold: float = 0.5
    preload_models: tuple[str, ...] = ()  # AIRs loaded at start; /ready waits for them
    log_format: str = "text"  # or "json": one object a line (kiln.logs)

    def __post_init__(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ValueError(f"KILN_LOG_FORMAT must be text or json, not {self.log_format!r}")
        if self.media_ttl_s < self.task_ttl_s:
            raise ValueError(
                f"KILN_MEDIA_TTL ({self.media_ttl_s:g} s) must be at least KILN_TASK_TTL "
                f"({self.task_ttl_s:g} s): getResponse answers with the images of a task record")

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
        if env.get("KILN_PRELOAD_MODELS"):
            values["preload_models"] = tuple(
                air.strip() for air in env["KILN_PRELOAD_MODELS"].split(",") if air.strip())
        if env.get("KILN_LOG_FORMAT"):
            values["log_format"] = env["KILN_LOG_FORMAT"].strip().lower()
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
        for name, var, kind in _NUMERIC_VARIABLES:
            if env.get(var):
                values[name] = kind(env[var])
        if env.get("KILN_NSFW_CLASSES"):
            values["nsfw_classes"] = tuple(
                c.strip().upper() for c in env["KILN_NSFW_CLASSES"].split(",") if c.strip()
            )
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
