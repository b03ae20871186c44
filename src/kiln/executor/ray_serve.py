"""The executor of a front whose engines run as Ray Serve replicas (`kiln serve --executor ray`).

`RayServeExecutor` offers what `InProcessExecutor` offers (the `Executor` protocol) and sends the
work to the `EngineReplica` deployment of `kiln.executor.ray_replica`:

- **One deployment per cluster.** `start` joins Ray (`settings.ray_address`; None starts a local
  Ray, or joins `RAY_ADDRESS`), then deploys the Serve application `kiln` unless it already
  runs: a second front on the same cluster takes the running deployment as it is (its own
  `replicas` and engine settings are not applied; after `serve shutdown`, the next front to
  start deploys its own). Replicas ask for one GPU each where Ray has GPUs, else
  `replica_cpus` CPUs.
- **Routing.** Each call names its checkpoint's AIR as Serve's multiplexed model ID, so it goes
  to a replica already holding that model while one has room (`requests_per_replica` calls),
  and otherwise to the replica holding the fewest models, which loads it.
- **Streaming.** A call streams step reports (with previews, drawn on the replica), then the
  images in seed order; errors arrive as values, typed as they were raised.
- **Faults.** When a replica dies (or goes silent for `stall_timeout_s`, although it sends a
  heartbeat every few seconds), the images of the call not yet received are sent once more, to
  another replica; a second failure answers them with an `InferenceError` naming both. A call
  that no replica takes within `route_timeout_s` fails with an `InferenceError`. Nothing waits
  unbounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any, TypeVar

import ray
from ray import serve
from ray.exceptions import (
    NodeDiedError,
    ObjectLostError,
    OutOfMemoryError,
    RayActorError,
    RayError,
    WorkerCrashedError,
)
from ray.serve.exceptions import RequestCancelledError
from ray.serve.schema import ReplicaState

from kiln.errors import InferenceError, KilnError
from kiln.executor.cluster_metrics import ClusterMetrics
from kiln.executor.engine import EngineLike
from kiln.executor.ray_replica import (
    APP_NAME,
    DEPLOYMENT_NAME,
    ENGINE_DEPLOYMENT,
    Failed,
    Generated,
    Heartbeat,
    ReplicaEvent,
    Report,
    Returned,
    Served,
    Step,
)
from kiln.generation import GenerationRequest, ModelSpec
from kiln.progress import StepListener, StepProgress
from kiln.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

REPLICA_LOST = (RayActorError, WorkerCrashedError, NodeDiedError, OutOfMemoryError, ObjectLostError)
"""What a call raises when its replica (or its node) died or cannot be reached."""


class ReplicaLost(Exception):
    """A call's replica died or stalled; the call may be sent again."""


class RayServeExecutor:
    """Sends generation and device work to the engine replicas of a Ray Serve deployment.

    Nothing happens until `start` (or a first call): constructing one neither joins Ray nor
    deploys. Any number of event loops may use one executor.

    Example:
        >>> executor = RayServeExecutor(Settings(executor="ray", replicas=2))  # doctest: +SKIP
        >>> await executor.start()  # joins Ray, deploys or joins the `kiln` app  # doctest: +SKIP
        >>> async for image in executor.generate(request, owner=key_id):  # doctest: +SKIP
        ...     image.save(...)
    """

    def __init__(
        self,
        settings: Settings,
        engine_factory: Callable[[], EngineLike] | None = None,
        *,
        replica_cpus: float = 1.0,
        requests_per_replica: int | None = None,
        start_timeout_s: float = 600.0,
        route_timeout_s: float = 300.0,
        stall_timeout_s: float = 60.0,
    ) -> None:
        """`engine_factory` (picklable; default: the real engine of `settings`) is called in
        each replica. `requests_per_replica` (default 4 x `max_batch`) bounds the calls one
        replica holds at once: beyond it, requests for a model spill over to another replica."""
        if settings.replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {settings.replicas}")
        self._settings = settings
        self._engine_factory = engine_factory
        self._replica_cpus = replica_cpus
        self._requests_per_replica = requests_per_replica or 4 * settings.max_batch
        self._start_timeout_s = start_timeout_s
        self._route_timeout_s = route_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self.metrics = ClusterMetrics()
        self._connect_lock = threading.Lock()
        self._handle: Any = None  # the app's DeploymentHandle, once started
        self._owns_ray = False
        self._closed = False
        self._responses: set[Any] = set()  # streams in flight, cancelled by `close`
        self._serving: Counter[str] = Counter()
        self._serving_lock = threading.Lock()

    @property
    def started(self) -> bool:
        """Whether this front holds the deployment and a replica of it runs (its engine built)."""
        return self._handle is not None

    @property
    def serving(self) -> dict[str, int]:
        """Replica (Ray actor name) -> calls this front awaits from it now."""
        with self._serving_lock:
            return dict(self._serving)

    async def start(self) -> None:
        """Join Ray and deploy (or join) the engines; returns once a replica runs, its engine
        built (Serve brings up the others meanwhile).

        Raises `InferenceError` if the deployment fails or is not running within
        `start_timeout_s`.
        """
        await self._connected()

    async def warm(self, model: ModelSpec) -> None:
        """Load `model` on the replica that Serve routes it to (`ModelLoadError` if it cannot)."""
        await self._call("warm", (model,), model.air)

    async def run(self, fn: Callable[[EngineLike], T]) -> T:
        """Run `fn(engine)` on some replica, between its batches, and return its value. `fn`
        and its value travel pickled (cloudpickle). A `KilnError` from `fn` propagates as is;
        any other exception as an `InferenceError`."""
        value: T = await self._call("run", (fn,), None)
        return value

    async def generate(
        self, request: GenerationRequest, owner: str = "", on_step: StepListener | None = None
    ) -> AsyncIterator[Any]:
        """Yield one image per seed of `request`, in seed order, as `InProcessExecutor.generate`
        does, from one replica (see the module docstring for faults).

        `on_step` is called on this event loop (not a worker thread) with each image's
        `StepProgress`, `index` its position in `request.seeds`, before that image is yielded;
        `preview()` returns the preview the replica drew at that step. If it raises, the error
        is logged and it hears no more of this request. Closing the generator early cancels
        the call: its images not yet in a batch are withdrawn on the replica.
        """
        todo = list(range(len(request.seeds)))  # positions of the seeds not yet yielded
        failures: list[str] = []
        while todo:
            offsets = list(todo)
            part = replace(request, seeds=tuple(request.seeds[i] for i in offsets))
            failure: KilnError | None = None
            try:
                events = self._events("generate", (part, owner, on_step is not None), request.model.air)
                async with aclosing(events):  # ends the call at once when this generator stops
                    async for event in events:
                        if isinstance(event, Step):
                            on_step = _tell(on_step, event, offsets)
                        elif isinstance(event, Generated):
                            todo.pop(0)
                            yield event.image
                        elif isinstance(event, Failed):
                            failure = event.error  # the last event but the replica's report
            except ReplicaLost as lost:
                self._after_loss(lost, failures, f"{len(todo)} image(s) of model {request.model.air}")
                continue
            if failure is not None:
                raise failure
            if todo:
                raise InferenceError("The engine replica ended the call before its last image.")

    def close(self) -> None:
        """Stop taking work and return at once: calls in flight are cancelled (their replicas
        withdraw their images) and fail with `InferenceError`. The deployment keeps running
        for the other fronts; a Ray this executor started itself is shut down."""
        self._closed = True
        for response in list(self._responses):
            response.cancel()
        if self._owns_ray:
            ray.shutdown()

    # --- calls ----------------------------------------------------------------------------------

    async def _call(self, method: str, args: tuple[Any, ...], model_id: str | None) -> Any:
        """A `warm` or `run` call: its `Returned` value, its `Failed` error raised; sent once
        more to another replica if its replica is lost."""
        failures: list[str] = []
        while True:
            answer: Returned | Failed | None = None
            try:
                async with aclosing(self._events(method, args, model_id)) as events:
                    async for event in events:  # to the end: the replica's report follows
                        if isinstance(event, Returned | Failed):
                            answer = event
            except ReplicaLost as lost:
                self._after_loss(lost, failures, "device work" if method == "run" else f"loading {model_id}")
                continue
            if isinstance(answer, Failed):
                raise answer.error
            if answer is None:
                raise InferenceError(f"The engine replica ended the {method} call without an answer.")
            return answer.value

    def _after_loss(self, lost: ReplicaLost, failures: list[str], what: str) -> None:
        """Log a lost replica and allow one more attempt; raise `InferenceError` at the second."""
        failures.append(str(lost))
        if len(failures) > 1:
            raise InferenceError(
                f"Engine replicas failed twice for {what}: {failures[0]}; then, on retry, {failures[1]}."
            ) from lost
        log.warning("%s; sending %s to another replica", lost, what)
        self.metrics.retries.inc()

    async def _events(
        self, method: str, args: tuple[Any, ...], model_id: str | None
    ) -> AsyncGenerator[ReplicaEvent, None]:
        """The events of one streaming call to a replica, `Served`, heartbeats and `Report`s
        consumed here. Raises `ReplicaLost` if the replica dies or stalls, `InferenceError` if
        no replica takes the call in time or Ray fails otherwise."""
        handle = await self._connected()
        options: dict[str, Any] = {"stream": True}
        if model_id is not None:
            options["multiplexed_model_id"] = model_id
        response = getattr(handle.options(**options), method).remote(*args)
        self._responses.add(response)
        replica: str | None = None
        try:
            while True:
                timeout_s = self._route_timeout_s if replica is None else self._stall_timeout_s
                try:
                    event = await asyncio.wait_for(anext(response), timeout_s)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if replica is None:
                        raise InferenceError(
                            f"No engine replica took this {method} call within {timeout_s:g} s.") from None
                    self.metrics.lost(replica)
                    raise ReplicaLost(f"engine replica {replica} sent nothing for {timeout_s:g} s") from None
                except REPLICA_LOST as exc:
                    self.metrics.lost(replica)
                    raise ReplicaLost(f"engine replica {replica or '(not yet known)'} was lost: "
                                      f"{type(exc).__name__}: {_first_line(exc)}") from exc
                except RequestCancelledError:
                    raise InferenceError("Kiln shut down before this ran.") from None
                except RayError as exc:
                    if isinstance(getattr(exc, "cause", None), KilnError):
                        raise exc.cause from exc  # type: ignore[attr-defined]
                    raise InferenceError(f"The engine replica failed: {type(exc).__name__}: {_first_line(exc)}") from exc
                if isinstance(event, Served):
                    replica = event.replica
                    self._track(replica, +1)
                elif isinstance(event, Report):
                    self.metrics.reported(event.replica, event.exposition)
                elif not isinstance(event, Heartbeat):
                    yield event
        finally:
            response.cancel()  # no-op once the stream ended; else the replica stops the work
            self._responses.discard(response)
            if replica is not None:
                self._track(replica, -1)

    def _track(self, replica: str, change: int) -> None:
        with self._serving_lock:  # event loops of several threads may share this executor
            self._serving[replica] += change
            self.metrics.calls_in_flight.labels(replica).inc(change)
            if not self._serving[replica]:
                del self._serving[replica]
                self.metrics.calls_in_flight.remove(replica)

    # --- joining Ray and the deployment ---------------------------------------------------------

    async def _connected(self) -> Any:
        if self._closed:
            raise InferenceError("Kiln is shutting down; no new generation is accepted.")
        if self._handle is None:
            await asyncio.to_thread(self._connect)
        return self._handle

    def _connect(self) -> None:
        """Blocking, once for all callers: join Ray, deploy or join the app, wait until it serves."""
        with self._connect_lock:
            if self._handle is not None:
                return
            if not ray.is_initialized():
                address = self._settings.ray_address
                ray.init(address=address, include_dashboard=False if address is None else None)
                # `ray.init()` without an address joins RAY_ADDRESS, else starts a Ray of its own
                self._owns_ray = address is None and not os.environ.get("RAY_ADDRESS")
            serve.start(proxy_location="Disabled")  # no HTTP ingress; settles nothing if Serve runs
            app = serve.status().applications.get(APP_NAME)
            if app is None or app.status == "DEPLOY_FAILED":
                self._deploy()
            else:
                log.info("joining the running Kiln engines (Serve application %r); this front's "
                         "replica and engine settings are not applied", APP_NAME)
            self._wait_until_serving()
            self._handle = serve.get_app_handle(APP_NAME)

    def _deploy(self) -> None:
        settings = self._settings
        gpus = ray.cluster_resources().get("GPU", 0) >= 1
        if gpus:
            actor_options: dict[str, Any] = {"num_gpus": 1}
            replica_settings = replace(settings, device="cuda")  # the one GPU Ray gives it
        else:
            actor_options = {"num_cpus": self._replica_cpus}
            device = settings.device if settings.device and not settings.device.startswith("cuda") else "cpu"
            replica_settings = replace(settings, device=device, torch_threads=(
                settings.torch_threads or max(1, int(self._replica_cpus))))
        log.info("deploying %d Kiln engine replica(s) with %s", settings.replicas, actor_options)
        app = ENGINE_DEPLOYMENT.options(
            num_replicas=settings.replicas, ray_actor_options=actor_options,
            max_ongoing_requests=self._requests_per_replica,
        ).bind(replica_settings, self._engine_factory)
        serve.run_many([serve.RunTarget(app, name=APP_NAME, route_prefix=None)],
                       wait_for_applications_running=False)

    def _wait_until_serving(self) -> None:
        """Until a replica runs (its engine built); Serve brings up the others meanwhile."""
        deadline = time.monotonic() + self._start_timeout_s
        while True:
            app = serve.status().applications.get(APP_NAME)
            engines = app.deployments.get(DEPLOYMENT_NAME) if app is not None else None
            if engines is not None and engines.replica_states.get(ReplicaState.RUNNING, 0) >= 1:
                return
            if app is not None and app.status == "DEPLOY_FAILED":
                raise InferenceError(f"The engine replicas failed to deploy: {app.message}")
            if time.monotonic() > deadline:
                state = "absent" if app is None else f"{app.status}: {app.message}"
                raise InferenceError(
                    f"The engine replicas were not running within {self._start_timeout_s:g} s ({state}).")
            time.sleep(0.25)


def _tell(listener: StepListener | None, event: Step, offsets: list[int]) -> StepListener | None:
    """Pass `event` to `listener` as a `StepProgress` numbered in the whole request; the
    listener, or None if it failed (it hears no more)."""
    if listener is None:
        return None
    preview = event.preview
    try:
        listener(StepProgress(offsets[event.index], event.step, event.steps, lambda: preview))
    except Exception:  # noqa: BLE001 - progress never stops generation
        log.exception("a step listener failed; its request goes on without progress")
        return None
    return listener


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else ""
