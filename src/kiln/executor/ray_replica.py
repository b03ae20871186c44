"""The engine as a Ray Serve deployment: `EngineReplica`, and the events its calls stream back.

Each replica owns one `InProcessExecutor` around one engine, so the batcher of the in-process
executor runs inside every replica: concurrent calls that reach one replica share pipeline calls.
Every call streams plain, picklable events: first `Served` (which replica took it), then the
call's own events (`Step`, `Generated`, `Returned`, `Failed`), with a `Heartbeat` whenever
`HEARTBEAT_S` passes without one, and last a `Report` of the replica's executor metrics. Errors
travel as `Failed` values holding the `KilnError`, never as exceptions of the call, so their
code and parameter arrive intact.

Importing this module imports Ray: only `kiln.executor.ray_serve` does, and only that imports it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve

from kiln.errors import InferenceError, KilnError
from kiln.executor.engine import EngineLike, default_engine_factory
from kiln.executor.in_process import InProcessExecutor
from kiln.generation import GenerationRequest, ModelSpec
from kiln.progress import StepProgress
from kiln.settings import Settings

log = logging.getLogger(__name__)

APP_NAME = "kiln"
"""The Serve application every Kiln front of a cluster deploys or joins."""
DEPLOYMENT_NAME = "engine"
HEARTBEAT_S = 5.0
"""A call that has nothing to report for this long reports a `Heartbeat`."""
MODELS_PER_REPLICA = 8
"""How many checkpoints Serve remembers a replica as holding, for routing. What a replica really
holds is its engine's business (its byte budget); this list only steers requests to it."""


@dataclass(frozen=True)
class Served:
    """The call reached replica `replica` (its Ray actor name)."""

    replica: str


@dataclass(frozen=True)
class Heartbeat:
    """The replica is alive and still working on the call."""


@dataclass(frozen=True)
class Step:
    """`StepProgress` of image `index` of the call's request, with its preview already drawn."""

    index: int
    step: int
    steps: int
    preview: Any = None  # PIL.Image.Image, or None where none could be made


@dataclass(frozen=True)
class Generated:
    """The next image of the call's request, in seed order."""

    image: Any  # PIL.Image.Image


@dataclass(frozen=True)
class Returned:
    """The value of `run` (None for `warm`)."""

    value: Any


@dataclass(frozen=True)
class Failed:
    """The call's typed failure; nothing follows but the `Report`."""

    error: KilnError


@dataclass(frozen=True)
class Report:
    """The replica's executor metrics (Prometheus text) as the call ended."""

    replica: str
    exposition: bytes


ReplicaEvent = Served | Heartbeat | Step | Generated | Returned | Failed | Report
Put = Callable[[ReplicaEvent], None]


class EngineReplica:
    """One engine replica (deployed as `ENGINE_DEPLOYMENT`). Its engine is built before Serve
    counts the replica as running, so no call waits for a replica's engine to be built.

    Requests carry their checkpoint's AIR as Serve's multiplexed model ID: Serve routes them to
    a replica that already holds the model while one has room, and loads it on another
    otherwise. Every method is a stream of `ReplicaEvent`s (see the module docstring); a
    cancelled call withdraws its images that are not yet in a batch.
    """

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self, settings: Settings, engine_factory: Callable[[], EngineLike] | None = None
    ) -> None:
        self._name = ray.get_runtime_context().get_actor_name() or "engine-replica"
        self._executor = InProcessExecutor(
            engine_factory or default_engine_factory(settings), max_batch=settings.max_batch,
            batch_window_s=settings.batch_window_ms / 1000)
        self._specs: dict[str, ModelSpec] = {}
        await self._executor.start()

    async def generate(self, request: GenerationRequest, owner: str, steps: bool) -> AsyncIterator[ReplicaEvent]:
        """`Generated` per seed in order, or a `Failed` for the first that fails; with `steps`,
        each image's `Step`s before it."""
        async for event in self._stream(lambda put: self._generate(request, owner, steps, put)):
            yield event

    async def warm(self, model: ModelSpec) -> AsyncIterator[ReplicaEvent]:
        """`Returned(None)` once `model` is resident here, or its `Failed(ModelLoadError)`."""
        async def load(put: Put) -> None:
            await self._resident(model)
            put(Returned(None))

        async for event in self._stream(load):
            yield event

    async def run(self, fn: Callable[[EngineLike], Any]) -> AsyncIterator[ReplicaEvent]:
        """`Returned(fn(engine))`, run between batches, or its `Failed`."""
        async def call(put: Put) -> None:
            put(Returned(await self._executor.run(fn)))

        async for event in self._stream(call):
            yield event

    async def _generate(self, request: GenerationRequest, owner: str, steps: bool, put: Put) -> None:
        loop = asyncio.get_running_loop()

        def on_step(progress: StepProgress) -> None:  # on the executor's worker thread
            try:
                preview = progress.preview()  # valid only during this callback
            except Exception:  # noqa: BLE001 - a preview never stops generation
                log.exception("drawing a step preview failed")
                preview = None
            loop.call_soon_threadsafe(put, Step(progress.index, progress.step, progress.steps, preview))

        await self._resident(request.model)
        # the executor reports an image's steps (call_soon_threadsafe, in order) before its
        # image resolves on this loop, so each `Step` is put before its `Generated`
        async for image in self._executor.generate(request, owner, on_step if steps else None):
            put(Generated(image))

    async def _resident(self, model: ModelSpec) -> None:
        self._specs[model.air] = model
        await self._load_multiplexed(model.air)

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def _load_multiplexed(self, air: str) -> str:
        """Load the checkpoint `air` (Serve calls this once per AIR it routes here, and then
        advertises this replica as holding it)."""
        await self._executor.warm(self._specs[air])
        return air

    async def _stream(self, work: Callable[[Put], Coroutine[Any, Any, None]]) -> AsyncIterator[ReplicaEvent]:
        """`Served`, then what `work` puts (any exception of it as a `Failed`), heartbeats in
        the gaps, then the `Report`. Cancelling the stream cancels `work`."""
        yield Served(self._name)
        events: asyncio.Queue[ReplicaEvent | None] = asyncio.Queue()
        task = asyncio.create_task(self._guarded(work, events))
        try:
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), HEARTBEAT_S)
                except TimeoutError:
                    event = Heartbeat()
                if event is None:
                    break
                yield event
        finally:
            task.cancel()
        yield Report(self._name, self._executor.metrics.exposition())

    @staticmethod
    async def _guarded(work: Callable[[Put], Coroutine[Any, Any, None]],
                       events: asyncio.Queue[ReplicaEvent | None]) -> None:
        try:
            await work(events.put_nowait)
        except KilnError as exc:
            events.put_nowait(Failed(exc))
        except Exception as exc:  # noqa: BLE001 - the caller receives it, typed
            log.exception("engine replica call failed")
            events.put_nowait(Failed(InferenceError(f"Generation failed: {type(exc).__name__}: {exc}")))
        finally:
            events.put_nowait(None)


ENGINE_DEPLOYMENT = serve.deployment(name=DEPLOYMENT_NAME)(EngineReplica)
"""`EngineReplica` as a Serve deployment; `.options(...)` sets replicas and resources."""
