"""The request and reply envelopes of the task protocol (PROTOCOL.md sections 2-5).

Requests are JSON arrays of task objects; replies are `{"data": [...]}` and/or
`{"errors": [...]}` objects whose items always echo `taskType` and `taskUUID`.
"""

from __future__ import annotations

import codecs
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from kiln.errors import InvalidRequestError, KilnError, echoed


@dataclass(frozen=True)
class TaskHeader:
    """The routing fields of one task object. `task_uuid` is None only for auth and ping."""

    task_type: str | None
    task_uuid: str | None


UNROUTED_TASK_TYPES = frozenset({"authentication", "ping"})


MAX_DEPTH = 32
"""How deeply arrays and objects may nest in a request (the body's array counts as one level)."""
MAX_STRING_CHARS = 32 * 1024 * 1024
"""The longest string a request may carry: room for a 20 MB image as a base64 data URI."""
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_body(raw: bytes | str) -> list[Any]:
    """Decode a request body into its list of task objects.

    Raises `InvalidRequestError` with `invalidJSON` when the body is not JSON, and with
    `invalidRequestBody` when it is not an array of tasks, nests more than `MAX_DEPTH` levels,
    holds a string longer than `MAX_STRING_CHARS` or a lone UTF-16 surrogate (`"\\ud800"`, valid
    JSON but not Unicode text). Any body is answered with one of these or a list, never another
    exception. The elements are returned otherwise unchecked; see `read_header`.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            f"The request body is not valid JSON: {exc}.", code="invalidJSON"
        ) from None
    except RecursionError:  # the C parser stops at the interpreter's recursion limit
        raise _too_deep() from None
    if isinstance(body, dict) and "taskType" in body:
        body = [body]  # a lone task object: clients forget the brackets more often than not
    if not isinstance(body, list):
        raise InvalidRequestError(
            "The request body must be a JSON array of task objects, e.g. "
            '[{"taskType": "ping", "ping": true}].',
            code="invalidRequestBody",
        )
    for task in body:
        _check_task(task)
    return body


def first_task(prefix: bytes) -> Any:
    """The first element of the JSON array that the body `prefix` starts, checked like
    `parse_body`'s; None when `prefix` does not hold it whole or starts no array.

    Reads nothing past that element, so the cost is bounded by `len(prefix)` whatever follows.
    """
    try:  # a character cut at the end of the prefix waits in the decoder instead of failing
        text = codecs.getincrementaldecoder("utf-8")().decode(prefix)
    except UnicodeDecodeError:
        return None
    text = text.lstrip(_JSON_SPACE)
    if not text.startswith("["):
        return None
    try:
        task, _ = json.JSONDecoder().raw_decode(text[1:].lstrip(_JSON_SPACE))
    except ValueError:
        return None
    except RecursionError:
        raise _too_deep() from None
    _check_task(task)
    return task


_JSON_SPACE = " \t\n\r"


def _check_task(task: Any) -> None:
    if not isinstance(task, dict):
        _check_value(task, None, depth=2)
        return
    for key, value in task.items():
        _check_string(key, None)
        _check_value(value, key if len(key) <= 64 else None, depth=3)  # named in errors


def _check_value(value: Any, parameter: str | None, depth: int) -> None:
    """Raise when `value`, at `depth` in the body, nests too deeply or holds a bad string."""
    pending: list[tuple[Any, int]] = [(value, depth)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_string(item, parameter)
        elif isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                raise _too_deep(parameter)
            if isinstance(item, dict):
                for key in item:
                    _check_string(key, parameter)
                item = item.values()
            pending.extend((child, depth + 1) for child in item if isinstance(child, (str, list, dict)))


def _check_string(text: str, parameter: str | None) -> None:
    where = f" in '{parameter}'" if parameter else ""
    if len(text) > MAX_STRING_CHARS:
        raise InvalidRequestError(
            f"A string{where} has {len(text)} characters; a request takes at most "
            f"{MAX_STRING_CHARS} (a 20 MB image as base64).",
            code="invalidRequestBody", parameter=parameter, max=MAX_STRING_CHARS,
        )
    if not text.isascii() and _SURROGATE.search(text):
        raise InvalidRequestError(
            f"A string{where} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
            "escape), which is not Unicode text.",
            code="invalidRequestBody", parameter=parameter,
        )


def _too_deep(parameter: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(
        f"The request body nests arrays and objects more than {MAX_DEPTH} levels deep.",
        code="invalidRequestBody", parameter=parameter, max=MAX_DEPTH,
    )


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
            f"'taskUUID' must be a UUID string such as '{uuid.uuid4()}', got {echoed(raw_uuid)}.",
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
