"""The `getResponse` task: the full current state of an earlier task (PROTOCOL.md 6.4).

Every poll answers cumulatively, typed with the ORIGINAL `taskType`: finished results in `data`
with `status: "success"`, one `status: "processing"` item while the task runs (for a task that
asked for progress, its latest progress item: `step`, `steps`, `imageIndex`), and failures in
`errors` with `status: "error"`. This works for every task type and for tasks that were sent
`sync` (the Python SDK polls after a reconnect).
"""

from __future__ import annotations

import asyncio
from typing import Any

from kiln.errors import KilnError, NotFoundError
from kiln.keys import Principal
from kiln.protocol.envelope import TaskHeader, error_object
from kiln.service.progress import ProgressBoard
from kiln.service.task_registry import TaskRegistry


def unknown_task(task_uuid: str) -> NotFoundError:
    return NotFoundError(
        f"No task '{task_uuid}' is known for this API key: it was never sent with this key, "
        f"or its record expired. Send getResponse with the taskUUID of your original task.",
        code="taskNotFound",
        parameter="taskUUID",
    )


def interrupted(header: TaskHeader) -> dict[str, Any]:
    error = KilnError(
        "The Kiln that ran this task stopped before it finished, so it never will; send it "
        "again with a new taskUUID.",
        code="taskFailed",
    )
    return error_object(error, header)


class GetResponseHandler:
    """Answers `getResponse` for the key's own tasks; another key's task is answered exactly
    as an unknown one."""

    def __init__(self, tasks: TaskRegistry, progress: ProgressBoard) -> None:
        self._tasks = tasks
        self._progress = progress

    async def __call__(self, task_uuid: str, principal: Principal) -> dict[str, Any]:
        """The reply message for the task `task_uuid`, or `NotFoundError` (`taskNotFound`).
        The record (and the images it re-encodes) is read on a worker thread."""
        record = await asyncio.to_thread(self._tasks.get, principal.key_id, task_uuid)
        if record is None:
            raise unknown_task(task_uuid)
        header = TaskHeader(record.task_type, task_uuid)
        data = [{**item, "status": "success"} for item in record.items]
        errors = [{**error, "status": "error"} for error in record.errors]
        if record.interrupted:
            errors.append({**interrupted(header), "status": "error"})
        elif not record.finished:
            latest = self._progress.get(principal.key_id, task_uuid)
            data.append(latest or {"taskType": record.task_type, "taskUUID": task_uuid, "status": "processing"})
        message: dict[str, Any] = {}
        if data or not errors:
            message["data"] = data
        if errors:
            message["errors"] = errors
        return message
