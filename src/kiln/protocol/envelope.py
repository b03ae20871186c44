"""The request and reply envelopes of the task protocol (PROTOCOL.md sections 2-5).

Requests are JSON arrays of task objects; replies are `{"data": [...]}` and/or
`{"errors": [...]}` objects whose items always echo `taskType` and `taskUUID`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from kiln.errors import InvalidRequestError, KilnError


@dataclass(frozen=True)
class TaskHeader:
    """The routing fields of one task object. `task_uuid` is None only for auth and ping."""

    task_type: str | None
    task_uuid: str | None


UNROUTED_TASK_TYPES = frozenset({"authentication", "ping"})


def parse_body(raw: bytes | str) -> list[Any]:
    """Decode a request body into its list of task objects.

    Raises `InvalidRequestError` (`invalidJSON`, `invalidRequestBody`) when the body is not a
    JSON array. The elements are returned unchecked; see `read_header`.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            f"The request body is not valid JSON: {exc}.", code="invalidJSON"
        ) from None
    if isinstance(body, dict) and "taskType" in body:
        body = [body]  # a lone task object: clients forget the brackets more often than not
    if not isinstance(body, list):
        raise InvalidRequestError(
            "The request body must be a JSON array of task objects, e.g. "
            '[{"taskType": "ping", "ping": true}].',
            code="invalidRequestBody",
        )
    return body


def peek_header(task: Any) -> TaskHeader:
    """Whatever routing fields `task` carries, without validating them (for error replies)."""
    if not isinstance(task, dict):
        return TaskHeader(None, None)
    task_type, task_uuid = task.get("taskType"), task.get("taskUUID")
    return TaskHeader(
        task_type if isinstance(task_type, str) else None,
        task_uuid if isinstance(task_uuid, str) else None,
    )


def read_header(task: Any) -> TaskHeader:
    """Validate the routing fields of one task object.

    Raises `InvalidRequestError` with `invalidTask`, `missingTaskType`, `missingTaskUUID` or
    `invalidTaskUUID`. `taskUUID` must be a UUID (any version), except for auth and ping.
    """
    if not isinstance(task, dict):
        raise InvalidRequestError(
            f"Each element of the request array must be a task object, got {type(task).__name__}.",
            code="invalidTask",
        )
    header = peek_header(task)
    if header.task_type is None:
        raise InvalidRequestError(
            "The task has no 'taskType' string.", code="missingTaskType", parameter="taskType"
        )
    if header.task_type in UNROUTED_TASK_TYPES:
        return header
    raw_uuid = task.get("taskUUID")
    if raw_uuid is None:
        raise InvalidRequestError(
            "The task has no 'taskUUID'; send a UUID v4 that identifies it.",
            code="missingTaskUUID",
            parameter="taskUUID",
        )
    try:
        if not isinstance(raw_uuid, str):
            raise ValueError
        uuid.UUID(raw_uuid)
    except ValueError:
        raise InvalidRequestError(
            f"'taskUUID' must be a UUID string such as '{uuid.uuid4()}', got {raw_uuid!r}.",
            code="invalidTaskUUID",
            parameter="taskUUID",
            type="string",
        ) from None
    return header


def error_object(error: KilnError, header: TaskHeader | None = None) -> dict[str, Any]:
    """The wire form of `error` for the task `header` (fields that do not apply are omitted)."""
    fields: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "parameter": error.parameter,
        **error.details,
    }
    if header is not None:
        fields["taskType"] = header.task_type
        fields["taskUUID"] = header.task_uuid
    return {k: v for k, v in fields.items() if v is not None}


def data_message(*items: dict[str, Any]) -> dict[str, Any]:
    return {"data": list(items)}


def errors_message(*errors: dict[str, Any]) -> dict[str, Any]:
    return {"errors": list(errors)}
