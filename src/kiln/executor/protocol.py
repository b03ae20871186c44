"""What the service layer needs of an executor, whichever runs the engine: `Executor`.

Two executors satisfy it: `InProcessExecutor` (the engine on a worker thread of this process)
and `RayServeExecutor` (engines as Ray Serve replicas); `kiln.executor.open_executor` picks one
from the settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

from kiln.executor.engine import EngineLike
from kiln.generation import GenerationRequest, ModelSpec
from kiln.progress import StepListener

T = TypeVar("T")


class MetricsExposition(Protocol):
    def exposition(self) -> bytes:
        """Metrics in Prometheus' text format, appended to the app's own on `/metrics`."""
        ...


class Executor(Protocol):
    """Runs generation and other device work. Usable from any number of event loops.

    Guarantees shared by every executor:
    - `generate` yields one image per seed, in seed order; a failed image raises its
      `KilnError` after the images before it were yielded; an image's step reports all reach
      `on_step` before the image is yielded.
    - Failures reach callers as `KilnError`s (`InferenceError` for anything unexpected), never
      as silence: every wait on the device or on a replica is bounded or fails when it dies.
    - `close` never waits for the device; work not yet done fails with `InferenceError`.
    """

    @property
    def metrics(self) -> MetricsExposition: ...

    @property
    def started(self) -> bool:
        """Whether the engine(s) are built and reachable (by `start` or first use)."""
        ...

    async def start(self) -> None:
        """Build or reach the engine(s) now rather than on first use."""
        ...

    async def warm(self, model: ModelSpec) -> None:
        """Load `model` ahead of the first request (`ModelLoadError` if it cannot)."""
        ...

    async def run(self, fn: Callable[[EngineLike], T]) -> T:
        """Run `fn(engine)` where the engine lives, between batches, and return its value."""
        ...

    def generate(
        self, request: GenerationRequest, owner: str = "", on_step: StepListener | None = None
    ) -> AsyncIterator[Any]:
        """Yield one PIL image per seed of `request`, in seed order (see the class docstring)."""
        ...

    def close(self) -> None:
        """Stop taking work and return at once."""
        ...
