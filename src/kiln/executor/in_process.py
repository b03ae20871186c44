"""The embedded executor: one worker thread owns the engine, and so the device.

Guarantees:
- Everything that touches the engine (building it, model loads, batches of images, the device
  work given to `run`) runs on one worker thread, one thing at a time; never on an event loop.
- Images of concurrent requests are batched. A request of N seeds becomes N one-seed units.
  A batch gathers until `batch_window_s` has passed since the last unit of its key arrived, and
  never longer than `GATHER_WINDOWS` windows after the oldest pending unit arrived: a lone unit
  waits one window, a burst whose requests reach the queue a little apart (each one decoded,
  authenticated and admitted first) still meets in one batch. A full batch goes at once; while
  the worker is busy, units simply accumulate. Units that
  share a `batch_key` run in one `generate_batch` call of at most
  min(`max_batch`, `engine.max_batch(...)`) images. Turns rotate over owners
  (`kiln.executor.batching`), so one owner's long request cannot hold back another's.
- Device work and batches run in the order they arrived (a batch counts from its oldest unit).
- Any number of event loops may use one executor, one after another or at once: the worker
  thread schedules, and each result reaches its caller on the caller's own loop.
- `close` never waits for the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from kiln.errors import InferenceError, KilnError
from kiln.executor.batching import Unit, UnitQueue
from kiln.executor.engine import EngineLike
from kiln.executor.metrics import ExecutorMetrics
from kiln.generation import GenerationRequest, ModelSpec
from kiln.progress import StepListener, StepProgress

log = logging.getLogger(__name__)

GATHER_WINDOWS = 10
"""The longest a batch gathers, in batching windows after its oldest unit arrived."""

T = TypeVar("T")


@dataclass(eq=False)
class _QueuedImage(Unit):
    future: Future[Any] = field(default_factory=Future)
    image_index: int = 0  # its position in its request's seeds
    on_step: StepListener | None = None


@dataclass(eq=False)
class _DeviceJob:
    fn: Callable[[EngineLike], Any]
    arrived_s: float
    future: Future[Any] = field(default_factory=Future)


class InProcessExecutor:
    """Runs generation and other device work on a single worker thread that owns one engine.

    `engine_factory` is called on the worker thread on first use (or by `start`).

    Example:
        >>> executor = InProcessExecutor(default_engine_factory(), max_batch=8)  # doctest: +SKIP
        >>> async for image in executor.generate(request, owner=key_id):  # doctest: +SKIP
        ...     image.save(...)
    """

    def __init__(
        self,
        engine_factory: Callable[[], EngineLike],
        *,
        max_batch: int = 8,
        batch_window_s: float = 0.005,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._engine_factory = engine_factory
        self._max_batch = max_batch
        self._window_s = batch_window_s
        self.metrics = ExecutorMetrics()
        self._engine: EngineLike | None = None
        # guards the queue, the jobs and `_closed`; the worker waits on it for work
        self._lock = threading.Condition()
        self._units: UnitQueue[_QueuedImage] = UnitQueue()
        self._jobs: deque[_DeviceJob] = deque()
        self._closed = False
        self._worker: threading.Thread | None = None

    @property
    def started(self) -> bool:
        """Whether the engine is built (by `start`, `warm`, `run` or a first image)."""
        return self._engine is not None

    async def start(self) -> None:
        """Build the engine now rather than on first use; the factory's exception as is."""
        await self._submit(lambda engine: None)

    async def warm(self, model: ModelSpec) -> None:
        """Load `model` ahead of the first request (`ModelLoadError` if it cannot)."""
        await self._submit(lambda engine: engine.load(model))

    async def run(self, fn: Callable[[EngineLike], T]) -> T:
        """Run `fn(engine)` on the worker thread, between batches, and return its value.

        A `KilnError` from `fn` propagates as is; any other exception as an `InferenceError`.
        """
        try:
            return await self._submit(fn)
        except KilnError:
            raise
        except Exception as exc:
            log.error("device work failed", exc_info=exc)
            raise InferenceError(f"Device work failed: {type(exc).__name__}: {exc}") from exc

    async def generate(
        self, request: GenerationRequest, owner: str = "", on_step: StepListener | None = None
    ) -> AsyncIterator[Any]:
        """Yield one image per seed of `request`, in seed order, each once it and every image
        before it are done.

        `owner` (the API key) is the unit of fairness. A failed image raises its `KilnError`
        (`InferenceError` for anything unexpected) after the images before it were yielded.
        When the generator is closed early (the caller broke off, was cancelled, or dropped the
        generator), its images not yet in a batch are withdrawn; those already in a batch
        finish and are discarded.

        `on_step`, when given, receives each image's `StepProgress` on the worker thread, with
        `index` its position in `request.seeds`; an image's steps are all reported before the
        image is yielded. If it raises, the error is logged and it hears no more of that image;
        generation goes on. A batch in which no image has a listener runs without step reports.
        """
        arrived_s = time.monotonic()
        units = [
            _QueuedImage(replace(request, seeds=(seed,)), owner, arrived_s, image_index=index, on_step=on_step)
            for index, seed in enumerate(request.seeds)
        ]
        with self._lock:
            self._check_open()
            for unit in units:
                self._units.push(unit)
            self._queue_changed()
        try:
            for unit in units:
                yield await asyncio.wrap_future(unit.future)
        finally:
            self._withdraw(units)

    def close(self) -> None:
        """Stop taking work and return at once. Pending images and device work fail with
        `InferenceError`; what runs now finishes on the worker thread, which then ends."""
        with self._lock:
            self._closed = True
            pending: list[_QueuedImage | _DeviceJob] = [*self._units.drain(), *self._jobs]
            self._jobs.clear()
            self._queue_changed()
        for item in pending:
            with contextlib.suppress(InvalidStateError):  # its caller cancelled it meanwhile
                item.future.set_exception(InferenceError("Kiln shut down before this ran."))

    # --- the event loops' side -----------------------------------------------------------------

    async def _submit(self, fn: Callable[[EngineLike], T]) -> T:
        job = _DeviceJob(fn, time.monotonic())
        with self._lock:
            self._check_open()
            self._jobs.append(job)
            self._lock.notify()
        result: T = await asyncio.wrap_future(job.future)
        return result

    def _withdraw(self, units: list[_QueuedImage]) -> None:
        with self._lock:
            for unit in units:
                if unit.future.cancel():  # False once it is in a batch or done
                    self._units.remove(unit)
            self._queue_changed()

    def _check_open(self) -> None:
        """Under the lock: refuse work once closed; start the worker on first use."""
        if self._closed:
            raise InferenceError("Kiln is shutting down; no new generation is accepted.")
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="kiln-engine", daemon=True)
            self._worker.start()

    def _queue_changed(self) -> None:
        """Under the lock: wake the worker and publish the queue depth."""
        self.metrics.queue_depth.set(len(self._units))
        self._lock.notify()

    # --- the worker thread ---------------------------------------------------------------------

    def _work(self) -> None:
        while (work := self._next_work()) is not None:
            if isinstance(work, _DeviceJob):
                self._run_job(work)
            else:
                self._run_batch(work)
            self._record_engine_state()

    def _next_work(self) -> _DeviceJob | _QueuedImage | None:
        """Block until a job is due or a batch should start (then its leader); None once closed."""
        with self._lock:
            while not self._closed:
                oldest_s = self._units.oldest_arrival()
                if self._jobs and (oldest_s is None or self._jobs[0].arrived_s <= oldest_s):
                    job = self._jobs.popleft()
                    if job.future.set_running_or_notify_cancel():
                        return job
                elif oldest_s is None:
                    self._lock.wait()
                else:
                    leader = self._units.leader()
                    assert leader is not None
                    newest_s = self._units.newest_arrival(leader.key) or oldest_s
                    due_s = min(newest_s + self._window_s, oldest_s + GATHER_WINDOWS * self._window_s)
                    wait_s = due_s - time.monotonic()
                    # full by our own limit; a lower engine limit costs at most the window
                    if wait_s <= 0 or self._units.count(leader.key) >= self._max_batch:
                        return leader
                    self._lock.wait(wait_s)
            return None

    def _run_job(self, job: _DeviceJob) -> None:
        try:
            result = job.fn(self._engine_instance())
        except Exception as exc:  # noqa: BLE001 - the caller receives it
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    def _run_batch(self, leader: _QueuedImage) -> None:
        limit = self._batch_limit(leader.request)
        with self._lock:
            if self._units.leader() is not leader:
                return  # withdrawn while the limit was computed: choose again
            batch = [unit for unit in self._units.take(limit) if unit.future.set_running_or_notify_cancel()]
            self._queue_changed()
        if not batch:
            return
        started_s = time.monotonic()
        results = self._generate(batch)
        self.metrics.batch_ran([started_s - unit.arrived_s for unit in batch], time.monotonic() - started_s)
        for unit, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                unit.future.set_exception(result)
            else:
                unit.future.set_result(result)

    def _batch_limit(self, request: GenerationRequest) -> int:
        try:
            return max(1, min(self._max_batch, self._engine_instance().max_batch(request)))
        except Exception:  # noqa: BLE001 - generation will report the engine's fault
            log.exception("the engine could not size a batch; running one image")
            return 1

    def _generate(self, batch: list[_QueuedImage]) -> list[Any]:
        """One result per unit: its image or its `KilnError`; a whole call's failure fails
        every unit of it (with its own copy of the error)."""
        requests = [unit.request for unit in batch]
        try:
            engine = self._engine_instance()
            if any(unit.on_step is not None for unit in batch):
                results = engine.generate_batch(requests, on_step=partial(_route_step, batch))
            else:
                results = engine.generate_batch(requests)
            if len(results) != len(batch):
                raise RuntimeError(f"the engine returned {len(results)} results for {len(batch)} images")
            return list(results)
        except Exception as exc:  # noqa: BLE001 - reported to each unit's caller
            log.exception("a batch of %d images failed", len(batch))
            failure = exc if isinstance(exc, KilnError) else InferenceError(
                f"Generation failed: {type(exc).__name__}: {exc}")
            return [copy.copy(failure) for _ in batch]

    def _engine_instance(self) -> EngineLike:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    def _record_engine_state(self) -> None:
        engine = self._engine
        if engine is None:
            return
        try:
            self.metrics.engine_state(engine.resident_bytes, engine.evictions)
        except Exception:  # noqa: BLE001 - a metric never stops the worker
            log.exception("reading the engine's model memory failed")


def _route_step(batch: list[_QueuedImage], progress: StepProgress) -> None:
    """Pass the engine's report on image `progress.index` of `batch` to that image's listener,
    renumbered as its position in its request. A listener that fails is dropped for the image."""
    unit = batch[progress.index]
    if unit.on_step is None:
        return
    try:
        unit.on_step(replace(progress, index=unit.image_index))
    except Exception:  # noqa: BLE001 - progress never stops generation
        log.exception("a step listener failed; its image goes on without progress")
        unit.on_step = None
