"""The one place tasks enter the service layer, whatever the transport.

Each task of a request runs independently: a bad task is answered with its own error and the
tasks beside it still run. Every reply echoes the task's `taskType` and `taskUUID`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kiln.errors import KilnError, UnsupportedError
from kiln.keys import Principal
from kiln.protocol.envelope import (
    TaskHeader,
    data_message,
    error_object,
    errors_message,
    peek_header,
    read_header,
)
from kiln.service.image_inference import ImageInferenceHandler
from kiln.service.image_upload import ImageUploadHandler
from kiln.service.model_search import ModelSearchHandler
from kiln.service.preprocess import PreprocessHandler
from kiln.service.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """One wire message (`{"data": [...]}` or `{"errors": [...]}`) and its HTTP status."""

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
    def __call__(self, task: dict[str, Any], principal: Principal) -> AsyncIterator[dict[str, Any]]:
        """Yield result items (without taskType/taskUUID) as they are ready."""
        ...


class Dispatcher:
    """Routes task objects to their handler and turns results and errors into replies."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._handlers: dict[str, TaskHandler] = {
            "imageInference": ImageInferenceHandler(services),
            "imageUpload": ImageUploadHandler(services),
            "modelSearch": ModelSearchHandler(services),
            # both names of ControlNet preprocessing; replies echo the one received
            "imageControlNetPreProcess": PreprocessHandler(services),
            "controlNetPreprocess": PreprocessHandler(services),
        }

    @property
    def task_types(self) -> tuple[str, ...]:
        return ("authentication", "ping", *self._handlers)

    async def run(self, tasks: list[Any], principal: Principal, emit: Emit) -> None:
        """Run every task concurrently; returns when all have been answered."""
        await asyncio.gather(*(self.run_task(task, principal, emit) for task in tasks))

    async def run_task(self, task: Any, principal: Principal, emit: Emit) -> None:
        """Run one task, emitting each result as it is ready, or one error. Never raises."""
        header = peek_header(task)
        try:
            header = read_header(task)
            if header.task_type == "ping":
                await emit(Reply(data_message({"taskType": "ping", "pong": True})))
                return
            handler = self._handlers.get(header.task_type or "")
            if handler is None:
                raise UnsupportedError(
                    f"Task type '{header.task_type}' is not served here. Supported: "
                    + ", ".join(self.task_types) + ".",
                    code="unsupportedTaskType",
                    parameter="taskType",
                )
            assert header.task_uuid is not None and header.task_type is not None
            self.services.tasks.claim(principal.key_id, header.task_uuid, header.task_type)
            async for item in handler(task, principal):
                await emit(Reply(data_message(
                    {"taskType": header.task_type, "taskUUID": header.task_uuid, **item}
                )))
        except KilnError as error:
            await emit(Reply.error(error, header))
        except Exception:
            log.exception("task %s failed unexpectedly", header.task_uuid)
            await emit(Reply.error(KilnError("Internal error while running the task."), header))
