"""Where generation requests run: the in-process executor of the embedded default.

One worker thread owns the engine (and the device), so inference never runs on the event loop
and requests run one at a time in submission order. Images stream back to the awaiting
coroutine as each is ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from kiln.errors import InferenceError, KilnError
from kiln.generation import GenerationRequest, ModelSpec

log = logging.getLogger(__name__)


class EngineLike(Protocol):
    def generate(self, request: GenerationRequest) -> Iterator[Any]: ...
    def load(self, model: ModelSpec) -> None: ...


def default_engine_factory(
    device: str | None = None, torch_threads: int | None = None
) -> Callable[[], EngineLike]:
    """A factory that imports torch lazily, in the worker thread, on first use.

    `torch_threads` caps torch's intra-op threads: on a CPU shared with other busy processes,
    fewer threads avoid OpenMP barriers waiting on descheduled threads (measured 200x slower
    per UNet call with 2 threads on 2 contended cores).
    """

    def build() -> EngineLike:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        from kiln.engine import Engine

        return Engine(device=device)

    return build


class InProcessExecutor:
    """Runs `GenerationRequest`s on a single worker thread that owns one engine."""

    def __init__(self, engine_factory: Callable[[], EngineLike]) -> None:
        self._engine_factory = engine_factory
        self._engine: EngineLike | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiln-engine")

    def _engine_instance(self) -> EngineLike:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    @property
    def started(self) -> bool:
        """Whether the engine is built (by `start`, `warm` or a first request)."""
        return self._engine is not None

    async def start(self) -> None:
        """Build the engine on the worker thread now rather than on the first request."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._engine_instance)

    async def warm(self, model: ModelSpec) -> None:
        """Import the engine and load `model` ahead of the first request."""
        await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: self._engine_instance().load(model)
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Any]:
        """Yield one image per seed of `request`, in order, as each is ready.

        Engine failures surface as `KilnError`s (`InferenceError` for anything unexpected).
        If the caller stops iterating, the request still runs to its end on the worker.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def work() -> None:
            try:
                for image in self._engine_instance().generate(request):
                    put("image", image)
            except BaseException as exc:  # noqa: BLE001 - every failure is reported to the caller
                put("error", exc)
            else:
                put("done", None)

        self._pool.submit(work)
        while True:
            kind, value = await queue.get()
            if kind == "image":
                yield value
            elif kind == "done":
                return
            elif isinstance(value, KilnError):
                raise value
            else:
                log.exception("generation failed", exc_info=value)
                raise InferenceError(f"Generation failed: {type(value).__name__}: {value}")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
