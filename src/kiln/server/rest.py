"""The REST transport: `POST /v1` with a JSON array, answered once with everything.

Authentication is a Bearer header or an `authentication` task first in the array. The status is
200 when any task succeeded (failures are in `errors` beside `data`), otherwise the status of the
first error (400, 401, 404, 409, 413, 429, 500...).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from kiln.errors import KilnError, PayloadTooLargeError
from kiln.keys import Principal
from kiln.protocol.envelope import data_message, parse_body, peek_header
from kiln.server.auth import AUTH_HEADER, authenticate_task, invalid_key, missing_key
from kiln.service import Dispatcher, Reply


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body exceeds {limit // (1024 * 1024)} MB.", code="payloadTooLarge"
    )


def _respond(replies: list[Reply]) -> JSONResponse:
    data = [item for r in replies for item in r.message.get("data", [])]
    errors = [item for r in replies for item in r.message.get("errors", [])]
    body: dict[str, Any] = {}
    if data or not errors:
        body["data"] = data
    if errors:
        body["errors"] = errors
    status = 200 if data or not errors else next(r.status for r in replies if r.is_error)
    return JSONResponse(body, status_code=status)


async def handle_rest(request: Request, dispatcher: Dispatcher) -> JSONResponse:
    replies: list[Reply] = []

    async def collect(reply: Reply) -> None:
        replies.append(reply)

    try:
        tasks = parse_body(await _read_body(request, dispatcher.services.settings.max_body_bytes))
        principal = _bearer(request, dispatcher)
        if tasks and peek_header(tasks[0]).task_type == "authentication":
            principal, item = authenticate_task(dispatcher.services.keys, tasks.pop(0))
            replies.append(Reply(data_message(item)))
        if principal is None:
            raise missing_key()
    except KilnError as error:
        header = AUTH_HEADER if error.status == 401 else None
        return _respond([Reply.error(error, header)])
    await dispatcher.run(tasks, principal, collect)
    return _respond(replies)


def _bearer(request: Request, dispatcher: Dispatcher) -> Principal | None:
    header = request.headers.get("authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    principal = dispatcher.services.keys.authenticate(token.strip()) if scheme.lower() == "bearer" else None
    if principal is None:
        raise invalid_key()
    return principal
