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


_NUMERIC_VARIABLES: tuple[tuple[str, str, type, float, float], ...] = (
    # (field, variable, type, smallest, largest allowed)
    ("port", "KILN_PORT", int, 1, 65535),
    ("torch_threads", "KILN_TORCH_THREADS", int, 1, 1024),
    ("max_body_bytes", "KILN_MAX_BODY_BYTES", int, 1024, 2**31),
    ("max_tasks_per_request", "KILN_MAX_TASKS_PER_REQUEST", int, 1, 10_000),
    ("task_ttl_s", "KILN_TASK_TTL", float, 1, 10 * 365 * 86400),
    ("drain_s", "KILN_DRAIN_S", float, 0, 86400),
    ("media_ttl_s", "KILN_MEDIA_TTL", float, 1, 10 * 365 * 86400),
    ("delivery_attempts", "KILN_DELIVERY_ATTEMPTS", int, 1, 100),
    ("delivery_backoff_s", "KILN_DELIVERY_BACKOFF", float, 0, 3600),
    ("delivery_timeout_s", "KILN_DELIVERY_TIMEOUT", float, 0.1, 3600),
    ("max_results_in_flight_per_key", "KILN_MAX_RESULTS_IN_FLIGHT_PER_KEY", int, 1, 100_000),
    ("max_queued_tasks", "KILN_MAX_QUEUED_TASKS", int, 1, 1_000_000),
    ("max_input_pixels_per_task", "KILN_MAX_INPUT_PIXELS_PER_TASK", int, 1, 2**40),
    ("nsfw_threshold", "KILN_NSFW_THRESHOLD", float, 0, 1),
    ("max_batch", "KILN_MAX_BATCH", int, 1, 256),
    ("replicas", "KILN_REPLICAS", int, 1, 1024),
    ("batch_window_ms", "KILN_BATCH_WINDOW_MS", float, 0, 10_000),
    ("vae_tiling_pixels", "KILN_VAE_TILING_PIXELS", int, 64 * 64, 2**40),
    ("per_megapixel_step", "KILN_PRICE_PER_MEGAPIXEL_STEP", float, 0, 1e6),
    ("nsfw_check", "KILN_PRICE_NSFW_CHECK", float, 0, 1e6),
    ("prompt_weighting", "KILN_PRICE_PROMPT_WEIGHTING", float, 0, 1e6),
)
_PRICE_FIELDS = ("per_megapixel_step", "nsfw_check", "prompt_weighting")


def _number(variable: str, raw: str, kind: type, low: float, high: float) -> float:
    """`raw` as `kind`, or a ValueError naming `variable` and the range it must be in."""
    what = "an integer" if kind is int else "a number"
    try:
        value = kind(raw.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ValueError(f"{variable} must be {what} from {low:g} to {high:g}, got {raw!r}")
    return value


_BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
               "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1024,
               "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_bytes(variable: str, raw: str) -> int:
    """A byte count such as "12GiB", "500MB" or "1073741824"; ValueError naming `variable`."""
    text = raw.strip().lower().replace(" ", "")
    number = text.rstrip("kmgtib")
    unit = text[len(number):]
    try:
        value = float(number) * _BYTE_UNITS[unit]
    except (ValueError, KeyError):
        value = -1
    if value < 1:
        raise ValueError(f"{variable} must be a size such as 12GiB, 500MB or a byte count, got {raw!r}")
    return int(value)


@dataclass(frozen=True)
class Settings:
    """Everything an operator can set. Built by `Settings.from_env()`; immutable afterwards."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("kiln-data")
    api_keys: tuple[str, ...] = ()
    public_url: str | None = None
    allow_private_urls: bool = False
    outbound_proxy: str | None = None  # the proxy for requests to client URLs; none by default
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
    # the executor (README: Throughput): batching, model memory, device paths
    max_batch: int = 8  # images per pipeline call; 1 gives byte-exact solo results
    batch_window_ms: float = 5.0  # how long a lone request may wait for others to batch with
    model_memory_bytes: int | None = None  # model residency budget; None: from the device
    dtype: str = "auto"  # fp16 | bf16 | fp32; auto: fp16 on CUDA, fp32 on CPU
    channels_last: bool | None = None  # None: on CUDA only
    compile: bool = False  # torch.compile the UNet (first call per size compiles, slowly)
    vae_tiling_pixels: int = 1536 * 1536  # decode images larger than this in VAE tiles
    log_format: str = "text"  # or "json": one object a line (kiln.logs)
    # past one machine (README: Cluster, docs/deploy.md)
    database_url: str | None = None  # None: SQLite in the data dir; or postgresql://...
    media_url: str | None = None  # None: <data dir>/media; or s3://bucket/prefix
    media_public_base: str | None = None  # imageURLs point here (e.g. the bucket's public base)
    executor: str = "in-process"  # or "ray": engines as Ray Serve replicas
    ray_address: str | None = None  # None: start a local Ray (or join RAY_ADDRESS)
    replicas: int = 1  # Ray Serve engine replicas (--executor ray)
    # FLUX and SD3 weights kept in CPU memory between uses: none | model | sequential (needs a GPU)
    cpu_offload: str = "none"

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "fp16", "bf16", "fp32"):
            raise ValueError(f"KILN_DTYPE must be auto, fp16, bf16 or fp32, not {self.dtype!r}")
        if self.cpu_offload not in ("none", "model", "sequential"):
            raise ValueError(f"KILN_CPU_OFFLOAD must be none, model or sequential, not {self.cpu_offload!r}")
        if self.executor not in ("in-process", "ray"):
            raise ValueError(f"KILN_EXECUTOR must be in-process or ray, not {self.executor!r}")
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
        if "KILN_DATA_DIR" in env:
            values["data_dir"] = Path(env["KILN_DATA_DIR"])
        if "KILN_API_KEYS" in env:
            values["api_keys"] = tuple(k.strip() for k in env["KILN_API_KEYS"].split(",") if k.strip())
        if env.get("KILN_PUBLIC_URL"):
            values["public_url"] = env["KILN_PUBLIC_URL"]
        if "KILN_ALLOW_PRIVATE_URLS" in env:
            values["allow_private_urls"] = _env_bool(env["KILN_ALLOW_PRIVATE_URLS"])
        if env.get("KILN_OUTBOUND_PROXY"):
            values["outbound_proxy"] = env["KILN_OUTBOUND_PROXY"]
        if env.get("KILN_DEVICE"):
            values["device"] = env["KILN_DEVICE"]
        if env.get("KILN_PRELOAD_MODELS"):
            values["preload_models"] = tuple(
                air.strip() for air in env["KILN_PRELOAD_MODELS"].split(",") if air.strip())
        if env.get("KILN_LOG_FORMAT"):
            values["log_format"] = env["KILN_LOG_FORMAT"].strip().lower()
        for name, var in (("database_url", "KILN_DATABASE_URL"), ("media_url", "KILN_MEDIA_URL"),
                          ("media_public_base", "KILN_MEDIA_PUBLIC_BASE"),
                          ("ray_address", "KILN_RAY_ADDRESS")):
            if env.get(var):
                values[name] = env[var].strip()
        if env.get("KILN_EXECUTOR"):
            values["executor"] = env["KILN_EXECUTOR"].strip().lower()
        if env.get("KILN_MODEL_MEMORY"):
            values["model_memory_bytes"] = parse_bytes("KILN_MODEL_MEMORY", env["KILN_MODEL_MEMORY"])
        if env.get("KILN_DTYPE"):
            values["dtype"] = env["KILN_DTYPE"].strip().lower()
        if env.get("KILN_CHANNELS_LAST"):
            values["channels_last"] = _env_bool(env["KILN_CHANNELS_LAST"])
        if "KILN_COMPILE" in env:
            values["compile"] = _env_bool(env["KILN_COMPILE"])
        if env.get("KILN_CPU_OFFLOAD"):
            values["cpu_offload"] = env["KILN_CPU_OFFLOAD"].strip().lower()
        for name, var, kind, low, high in _NUMERIC_VARIABLES:
            if env.get(var):
                values[name] = _number(var, env[var], kind, low, high)
        prices = {name: values.pop(name) for name in _PRICE_FIELDS if name in values}
        if prices:
            values["prices"] = Prices(**prices)
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
