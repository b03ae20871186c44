"""The REST transport: `POST /v1` with a JSON array, answered once with everything.

Authentication is a Bearer header or an `authentication` task first in the array. The status is
200 when any task succeeded (failures are in `errors` beside `data`), otherwise the status of the
first error (400, 401, 404, 409, 413, 429, 500...).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from kiln.errors import KilnError, PayloadTooLargeError
from kiln.keys import KeyStore, Principal
from kiln.protocol.envelope import data_message, first_task, peek_header
from kiln.server.auth import AUTH_HEADER, authenticate_task, invalid_key, missing_key
from kiln.server.parsing import parse_tasks
from kiln.service import Dispatcher, Reply

UNAUTHENTICATED_BYTES = 64 * 1024
"""Without an `Authorization` header, how much of a body is read to find the authentication
task that must then come first; the rest is read only once its key is valid."""


class _Body:
    """A request body read on demand, never more than `limit` bytes."""

    def __init__(self, request: Request, limit: int) -> None:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        self._chunks: AsyncIterator[bytes] = request.stream().__aiter__()
        self._limit = limit
        self.data = bytearray()
        self.complete = False

    async def read(self, size: int | None = None) -> bytes:
        """The body read so far, after reading more than `size` bytes (default: all of it)."""
        while not self.complete and (size is None or len(self.data) <= size):
            try:
                self.data += await self._chunks.__anext__()
            except StopAsyncIteration:
                self.complete = True
            if len(self.data) > self._limit:
                raise _too_large(self._limit)
        return bytes(self.data)


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
    """Answer one `POST`. No byte of the body is read before a Bearer header is checked, and
    without one no more than `UNAUTHENTICATED_BYTES` before the first task's key is."""
    keys = dispatcher.services.keys
    replies: list[Reply] = []

    async def collect(reply: Reply) -> None:
        replies.append(reply)

    try:
        principal = await _bearer(request, keys)
        body = _Body(request, dispatcher.services.settings.max_body_bytes)
        if principal is None:
            prefix = await body.read(UNAUTHENTICATED_BYTES)
            if not body.complete:
                first = first_task(prefix[:UNAUTHENTICATED_BYTES])
                if peek_header(first).task_type != "authentication":
                    raise missing_key()
                await authenticate_task(keys, first)  # refused here, before the rest is read
        tasks = await parse_tasks(await body.read())
        if tasks and peek_header(tasks[0]).task_type == "authentication":
            principal, item = await authenticate_task(keys, tasks.pop(0))
            replies.append(Reply(data_message(item)))
        if principal is None:
            raise missing_key()
    except KilnError as error:
        header = AUTH_HEADER if error.status == 401 else None
        return _respond([Reply.error(error, header)])
    await dispatcher.run(tasks, principal, collect)
    return _respond(replies)


async def _bearer(request: Request, keys: KeyStore) -> Principal | None:
    header = request.headers.get("authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    principal = None
    if scheme.lower() == "bearer":
        principal = await asyncio.to_thread(keys.authenticate, token.strip())
    if principal is None:
        raise invalid_key()
    return principal
