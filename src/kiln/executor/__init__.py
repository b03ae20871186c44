"""Where generation and all other device work run: the executor room.

`InProcessExecutor` is the embedded default: one worker thread owns the engine, batches the
images of concurrent requests (`batch_key` says which may share a pipeline call) and runs any
other device work between batches. `RayServeExecutor` (`kiln.executor.ray_serve`, imported only
by `open_executor` when the settings ask for it) runs engines as Ray Serve replicas, each with an
in-process executor of its own. Both are `Executor`s. `EngineLike` is what an executor needs of
an engine; `default_engine_factory` builds the real one.
"""

from __future__ import annotations

from collections.abc import Callable

from kiln.executor.batching import batch_key
from kiln.executor.engine import EngineLike, default_engine_factory
from kiln.executor.in_process import InProcessExecutor
from kiln.executor.metrics import ExecutorMetrics
from kiln.executor.protocol import Executor, MetricsExposition
from kiln.settings import Settings


def open_executor(settings: Settings, engine_factory: Callable[[], EngineLike] | None = None) -> Executor:
    """The executor `settings.executor` names: "in-process", or "ray" (which alone imports Ray;
    an `ImportError` saying what to install where Ray Serve is missing). Neither starts
    anything before its first use or `start`.

    `engine_factory` replaces the real engine of `settings` (for "ray" it must be picklable:
    each replica calls it).
    """
    if settings.executor == "ray":
        try:
            from kiln.executor.ray_serve import RayServeExecutor
        except ImportError as exc:
            raise ImportError(
                f"KILN_EXECUTOR=ray needs Ray Serve ({exc}): pip install 'kiln[cluster]'") from exc
        return RayServeExecutor(settings, engine_factory)
    return InProcessExecutor(
        engine_factory or default_engine_factory(settings), max_batch=settings.max_batch,
        batch_window_s=settings.batch_window_ms / 1000)


__all__ = [
    "EngineLike",
    "Executor",
    "ExecutorMetrics",
    "InProcessExecutor",
    "MetricsExposition",
    "batch_key",
    "default_engine_factory",
    "open_executor",
]
