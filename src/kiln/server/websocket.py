"""The WebSocket transport: authentication first, then many tasks in flight per socket.

The read loop never waits for a task: pings are answered inline, every other task runs in its
own coroutine, and results are sent as each is ready (one message per result or error), after
the progress items of a task that asked for them (`"progress": true`; REST never sends any). Until
the socket is authenticated it takes only frames of `UNAUTHENTICATED_FRAME_BYTES`; a larger one
is answered `payloadTooLarge` and the socket closed (1009), without parsing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from kiln.errors import KilnError, PayloadTooLargeError
from kiln.keys import Principal
from kiln.protocol.envelope import data_message, peek_header
from kiln.server.auth import AUTH_HEADER, authenticate_task, missing_key
from kiln.server.parsing import parse_tasks
from kiln.service import Dispatcher, Reply

log = logging.getLogger(__name__)

UNAUTHENTICATED_FRAME_BYTES = 64 * 1024
"""The largest frame (in characters of a text frame, bytes of a binary one) taken before the
socket is authenticated: an authentication task or a ping needs a few hundred."""
MESSAGE_TOO_BIG = 1009


class WebSocketSession:
    def __init__(self, websocket: WebSocket, dispatcher: Dispatcher) -> None:
        self._ws = websocket
        self._dispatcher = dispatcher
        self._principal: Principal | None = None
        self._send_lock = asyncio.Lock()
        self._open = True
        self._running: set[asyncio.Task[None]] = set()

    async def send(self, reply: Reply) -> None:
        """Send one message; after the client left, results are dropped, not raised."""
        if not self._open:
            return
        text = json.dumps(reply.message)
        async with self._send_lock:
            try:
                await self._ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._open = False

    async def run(self) -> None:
        await self._ws.accept()
        try:
            while True:
                frame = await self._ws.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                raw = frame.get("text") if frame.get("text") is not None else frame.get("bytes")
                if raw is None:
                    continue
                if self._principal is None and len(raw) > UNAUTHENTICATED_FRAME_BYTES:
                    await self._refuse_unauthenticated(len(raw))
                    break
                await self._handle_frame(raw)
        except WebSocketDisconnect:
            pass
        finally:
            self._open = False

    async def _refuse_unauthenticated(self, size: int) -> None:
        error = PayloadTooLargeError(
            f"This frame has {size} bytes; until the socket is authenticated frames may carry "
            f"at most {UNAUTHENTICATED_FRAME_BYTES}. Send [{{\"taskType\": \"authentication\", "
            "\"apiKey\": \"...\"}] first.",
            code="payloadTooLarge",
        )
        await self.send(Reply.error(error, AUTH_HEADER))
        self._open = False
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self._ws.close(MESSAGE_TOO_BIG)

    async def _handle_frame(self, raw: str | bytes) -> None:
        try:
            tasks = await parse_tasks(raw)
            self._dispatcher.check_request_size(tasks)
        except KilnError as error:
            await self.send(Reply.error(error))
            return
        for task in tasks:
            task_type = peek_header(task).task_type
            if task_type == "authentication":
                await self._authenticate(task)
            elif task_type == "ping":
                await self.send(Reply(data_message({"taskType": "ping", "pong": True})))
            elif self._principal is None:
                await self.send(Reply.error(missing_key(), peek_header(task)))
            else:
                self._spawn(self._dispatcher.run_task(task, self._principal, self.send, progress=self.send))

    async def _authenticate(self, task: dict[str, Any]) -> None:
        try:
            self._principal, item = await authenticate_task(self._dispatcher.services.keys, task)
        except KilnError as error:
            await self.send(Reply.error(error, AUTH_HEADER))
            return
        await self.send(Reply(data_message(item)))

    def _spawn(self, coroutine: Any) -> None:
        # Tasks outlive a disconnect: their results are stored even if nobody reads them now.
        running = asyncio.get_running_loop().create_task(coroutine)
        self._running.add(running)
        running.add_done_callback(self._running.discard)
