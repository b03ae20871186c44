"""The one place tasks enter the service layer, whatever the transport.

Each task of a request runs independently: a bad task is answered with its own error and the
tasks beside it still run. Every reply echoes the task's `taskType` and `taskUUID`.

Every task with a taskUUID is recorded for its key, with each reply it gets (`TaskRegistry`), so
`getResponse` answers for any task type, sync or async, after a disconnect or a restart. A task
sent `deliveryMethod: "async"` or with a `webhookURL` is acknowledged at once and runs on in the
background; its results go to `getResponse` and, one POST each, to the webhook.

A task that sets `"progress": true` gets progress items (`kiln.service.progress`) before its
results where the transport streams them (the WebSocket, for tasks not in the background), and
`getResponse` shows its latest one while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from kiln.errors import InvalidRequestError, KilnError, RateLimitError, UnsupportedError
from kiln.keys import Principal
from kiln.logs import log_task
from kiln.progress import StepListener
from kiln.protocol.envelope import (
    TaskHeader,
    data_message,
    error_object,
    errors_message,
    peek_header,
    read_header,
)
from kiln.service.admission import Admission, Ticket
from kiln.service.delivery import (
    BackgroundTasks,
    DeliveryOptions,
    RetryPolicy,
    post_webhook,
    upload_image,
)
from kiln.service.get_response import GetResponseHandler
from kiln.service.image_inference import ImageInferenceHandler
from kiln.service.image_upload import ImageUploadHandler
from kiln.service.metrics import Metrics
from kiln.service.model_search import ModelSearchHandler
from kiln.service.preprocess import PreprocessHandler
from kiln.service.progress import ProgressBoard, TaskProgress
from kiln.service.services import Services

log = logging.getLogger(__name__)

UPLOADED_IMAGE_FIELDS = ("imageUUID", "guideImageUUID")
"""The reply fields naming the image that `uploadEndpoint` receives (imageInference,
preprocessing)."""
TASK_TYPES = ("authentication", "ping", "getResponse", "imageInference", "imageUpload",
              "modelSearch", "imageControlNetPreProcess", "controlNetPreprocess")
"""Every task type served; the last five have handlers (both names of preprocessing)."""


@dataclass(frozen=True)
class Reply:
    """One wire message (`{"data": [...]}` and/or `{"errors": [...]}`) and its HTTP status."""

    message: dict[str, Any]
    status: int = 200

    @property
    def is_error(self) -> bool:
        return "errors" in self.message

    @classmethod
    def error(cls, error: KilnError, header: TaskHeader | None = None) -> Reply:
        return cls(errors_message(error_object(error, header)), error.status)


Emit = Callable[[Reply], Awaitable[None]]


class TaskHandler(Protocol):
    def parse(self, task: dict[str, Any], /) -> Any:
        """The validated task, or its typed error. The dispatcher parses each task once, on a
        worker thread (a handler may look up the catalog), before admission and before an
        async acknowledgement. A parsed task with `numberResults` counts that many results
        against the key's limit."""
        ...

    def __call__(
        self, task: Any, principal: Principal, progress: StepListener | None, /
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield result items (without taskType/taskUUID) for the parsed `task` as they are ready.

        `progress` is set for a task that asked for step progress: a handler that generates
        images passes it to the executor; the others have no steps to report.
        """
        ...


@dataclass(frozen=True)
class _Run:
    """One admitted, claimed task on its way through `Dispatcher._execute`."""

    header: TaskHeader
    principal: Principal
    options: DeliveryOptions
    ticket: Ticket
    progress: TaskProgress | None  # for a task that asked for step progress

    @property
    def owner(self) -> str:
        return self.principal.key_id

    @property
    def task_uuid(self) -> str:
        assert self.header.task_uuid is not None
        return self.header.task_uuid


async def _send_message(emit: Emit, message: dict[str, Any]) -> None:
    await emit(Reply(message))


def _kiln_error(exc: Exception, task_uuid: str | None) -> KilnError:
    """`exc` as the error the client gets: itself when typed, else a logged `internalError`
    that tells nothing of the cause."""
    if isinstance(exc, KilnError):
        return exc
    log.exception("task %s failed unexpectedly", task_uuid)
    return KilnError("Internal error while running the task.")


class Dispatcher:
    """Routes task objects to their handler and turns results and errors into replies."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.metrics = Metrics(TASK_TYPES)
        self._handlers: dict[str, TaskHandler] = {
            "imageInference": ImageInferenceHandler(services, self.metrics.encoding),
            "imageUpload": ImageUploadHandler(services),
            "modelSearch": ModelSearchHandler(services),
            # both names of ControlNet preprocessing; replies echo the one received
            "imageControlNetPreProcess": PreprocessHandler(services),
            "controlNetPreprocess": PreprocessHandler(services),
        }
        settings = services.settings
        self._latest_progress = ProgressBoard()
        self._get_response = GetResponseHandler(services.tasks, self._latest_progress)
        self.admission = Admission(
            services.db, services.front.front_id,
            max_results_per_key=settings.max_results_in_flight_per_key,
            max_tasks=settings.max_queued_tasks,
        )
        self._retry = RetryPolicy(settings.delivery_attempts, settings.delivery_backoff_s)
        self.background = BackgroundTasks()
        self._draining = False
        self._running = 0  # admitted tasks not yet ended (sync and background)
        self._idle = asyncio.Event()
        self._idle.set()

    async def drain(self, timeout_s: float) -> None:
        """Shut down without losing a task: refuse new ones (`serverShuttingDown`), let those
        in flight finish for up to `timeout_s`, then cancel the rest, each of which is recorded
        `taskCancelled` for getResponse. Returns when no task runs."""
        self._draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        await self.background.cancel_all()

    @property
    def task_types(self) -> tuple[str, ...]:
        return TASK_TYPES

    def check_request_size(self, tasks: list[Any]) -> None:
        """Raise `RateLimitError` when one request carries more tasks than the server takes."""
        limit = self.services.settings.max_tasks_per_request
        if len(tasks) > limit:
            raise RateLimitError(
                f"A request may carry at most {limit} tasks; this one has {len(tasks)}. Send "
                f"them in several requests.",
                code="rateLimitExceeded",
            )

    async def run(self, tasks: list[Any], principal: Principal, emit: Emit) -> None:
        """Run every task concurrently; returns when all have been answered."""
        try:
            self.check_request_size(tasks)
        except KilnError as error:
            await emit(Reply.error(error))
            return
        await asyncio.gather(*(self.run_task(task, principal, emit) for task in tasks))

    async def run_task(
        self, task: Any, principal: Principal, emit: Emit, *, progress: Emit | None = None
    ) -> None:
        """Run one task, emitting each result as it is ready, or one error. Never raises.

        Background tasks (async, webhook) return after the acknowledgement. A task that asks
        for step progress (`"progress": true`) has its progress items sent through `progress`
        (the WebSocket's send; REST has none) before each of its results, unless it runs in the
        background; either way getResponse shows its latest one while it runs.
        """
        header = peek_header(task)
        started = time.monotonic()
        try:
            header = read_header(task)
            if header.task_type == "ping":
                self.metrics.reply("ping")
                await emit(Reply(data_message({"taskType": "ping", "pong": True})))
                log_task(None, "ping", principal.key_id, "success", time.monotonic() - started)
                return
            if header.task_type == "authentication":
                raise InvalidRequestError(
                    "An 'authentication' task must be the first task of a REST request (or its "
                    "own WebSocket frame).",
                    code="invalidTask", parameter="taskType",
                )
            assert header.task_uuid is not None and header.task_type is not None
            if header.task_type == "getResponse":
                reply = await self._get_response(header.task_uuid, principal)
                self.metrics.reply("getResponse")
                await emit(Reply(reply))
                log_task(header.task_uuid, "getResponse", principal.key_id, "success",
                         time.monotonic() - started)
                return
            handler = self._handler(header.task_type)
            if self._draining:
                raise KilnError(
                    "Kiln is shutting down and takes no new tasks; send this one to another "
                    "Kiln or again in a moment.", code="serverShuttingDown", status=503)
            parsed = await asyncio.to_thread(handler.parse, task)  # may look up the catalog
            options = await DeliveryOptions.read(task, self.services.delivery_policy)
            results = getattr(parsed, "numberResults", 1)
            ticket = await asyncio.to_thread(
                self.admission.admit, principal.key_id, results if isinstance(results, int) else 1)
            try:
                await asyncio.to_thread(
                    self.services.tasks.claim, principal.key_id, header.task_uuid, header.task_type)
            except BaseException:
                await asyncio.to_thread(ticket.release)
                raise
        except Exception as exc:
            error = _kiln_error(exc, header.task_uuid)
            self.metrics.reply(header.task_type, error.code)
            await emit(Reply.error(error, header))
            log_task(header.task_uuid, header.task_type, principal.key_id, error.code,
                     time.monotonic() - started)
            return
        reporter = None
        if getattr(parsed, "progress", False) is True:
            stream = None if options.background else progress
            reporter = TaskProgress(
                header, principal.key_id, self._latest_progress,
                previews=getattr(parsed, "progressPreviews", False),
                send=None if stream is None else partial(_send_message, stream),
            )
        run = _Run(header, principal, options, ticket, reporter)
        if options.background:
            self.background.spawn(self._execute(handler, parsed, run, None))
            await emit(Reply(data_message(
                {"taskType": header.task_type, "taskUUID": header.task_uuid, "status": "processing"}
            )))
        else:
            await self._execute(handler, parsed, run, emit)

    def _handler(self, task_type: str) -> TaskHandler:
        handler = self._handlers.get(task_type)
        if handler is None:
            raise UnsupportedError(
                f"Task type '{task_type}' is not served here. Supported: "
                + ", ".join(self.task_types) + ".",
                code="unsupportedTaskType",
                parameter="taskType",
            )
        return handler

    async def _execute(self, handler: TaskHandler, task: Any, run: _Run, emit: Emit | None) -> None:
        """Run an admitted (parsed) task to its end, recording every reply; `emit` is None for a
        background task. A cancelled task (Kiln shutting down) is recorded `taskCancelled`
        when the database is still open; a killed one is answered as interrupted later.
        Every database call runs on a worker thread."""
        tasks = self.services.tasks
        finished = False
        outcome = "success"  # or the code of the task's first error
        started = time.monotonic()
        self.metrics.in_flight.inc()
        self._running += 1
        self._idle.clear()
        try:
            async for result in handler(task, run.principal, run.progress):
                item = {"taskType": run.header.task_type, "taskUUID": run.task_uuid, **result}
                upload_error = await self._upload(item, run)
                await asyncio.to_thread(tasks.add_item, run.owner, run.task_uuid, item)
                if upload_error is not None:
                    if outcome == "success":
                        outcome = upload_error.code
                    await self._fail(upload_error, run, emit)
                    continue
                self.metrics.reply(run.header.task_type)
                if emit is not None:
                    await self._settle_progress(run)
                    await emit(Reply(data_message(item)))
                self._post(data_message({**item, "status": "success"}), run)
            finished = True
        except Exception as exc:
            error = _kiln_error(exc, run.task_uuid)
            if outcome == "success":
                outcome = error.code
            await self._fail(error, run, emit)
            finished = True
        except asyncio.CancelledError:
            cancelled = KilnError(
                "The task was cancelled before it finished (Kiln stopped); send it again with a "
                "new taskUUID.",
                code="taskCancelled",
            )
            outcome = cancelled.code
            await self._record(tasks.add_error, run, error_object(cancelled, run.header))
            await self._record(tasks.finish, run)
            raise
        finally:
            if finished:
                await self._record(tasks.finish, run)
                self.metrics.ran(run.header.task_type, time.monotonic() - started)
            try:
                await asyncio.to_thread(run.ticket.release)  # before idle: a drain waits for it
            finally:
                self.metrics.in_flight.dec()
                self._running -= 1
                if not self._running:
                    self._idle.set()
                if run.progress is not None:
                    run.progress.close()
                log_task(run.task_uuid, run.header.task_type, run.owner, outcome,
                         time.monotonic() - started)

    async def _upload(self, item: dict[str, Any], run: _Run) -> KilnError | None:
        """PUT the item's image (a generated image or a guide) to `uploadEndpoint`; the error if
        that finally failed. The image stays stored either way, so the item (and getResponse)
        still lead to it."""
        url = run.options.upload_endpoint
        field = next((name for name in UPLOADED_IMAGE_FIELDS if name in item), None)
        if url is None or field is None:
            return None
        stored = await asyncio.to_thread(self.services.images.get, item[field], owner=run.owner)
        if stored is None:
            return None
        try:
            secret = await asyncio.to_thread(self.services.keys.webhook_secret, run.owner)
            await upload_image(self.services.images, stored, url, self.services.delivery_policy, self._retry,
                               secret=secret)
        except KilnError as error:
            error.details[field] = item[field]
            return error
        return None

    async def _fail(self, error: KilnError, run: _Run, emit: Emit | None) -> None:
        self.metrics.reply(run.header.task_type, error.code)
        wire = error_object(error, run.header)
        await self._record(self.services.tasks.add_error, run, wire)
        if emit is not None:
            await self._settle_progress(run)
            await emit(Reply(errors_message(wire), error.status))
        self._post(errors_message({**wire, "status": "error"}), run)

    @staticmethod
    async def _settle_progress(run: _Run) -> None:
        """Before a reply: the progress items passed on so far go first."""
        if run.progress is not None:
            await run.progress.settle()

    @staticmethod
    async def _record(write: Callable[..., None], run: _Run, *args: Any) -> None:
        """`write(owner, task_uuid, *args)`, a write of the task's record, on a worker thread.
        A failure (the database gone) is logged, not raised: the client still gets its reply."""
        try:
            await asyncio.to_thread(write, run.owner, run.task_uuid, *args)
        except Exception:  # noqa: BLE001
            log.exception("the record of task %s was not updated", run.task_uuid)

    def _post(self, message: dict[str, Any], run: _Run) -> None:
        """POST `message` to the task's webhook in the background, never delaying the task."""
        if run.options.webhook_url is not None:
            self.background.spawn(self._post_webhook(run.options.webhook_url, message, run.owner))

    async def _post_webhook(self, url: str, message: dict[str, Any], owner: str) -> None:
        secret = await asyncio.to_thread(self.services.keys.webhook_secret, owner)
        await post_webhook(url, message, self.services.delivery_policy, self._retry, secret=secret)
