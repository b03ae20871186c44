"""The WebSocket transport: authentication first, then many tasks in flight per socket.

The read loop never waits for a task: pings are answered inline, every other task runs in its
own coroutine, and results are sent as each is ready (one message per result or error).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from kiln.errors import KilnError
from kiln.keys import Principal
from kiln.protocol.envelope import data_message, parse_body, peek_header
from kiln.server.auth import AUTH_HEADER, authenticate_task, missing_key
from kiln.service import Dispatcher, Reply

log = logging.getLogger(__name__)


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
                if raw is not None:
                    await self._handle_frame(raw)
        except WebSocketDisconnect:
            pass
        finally:
            self._open = False

    async def _handle_frame(self, raw: str | bytes) -> None:
        try:
            tasks = parse_body(raw)
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
                self._spawn(self._dispatcher.run_task(task, self._principal, self.send))

    async def _authenticate(self, task: dict[str, Any]) -> None:
        try:
            self._principal, item = authenticate_task(self._dispatcher.services.keys, task)
        except KilnError as error:
            await self.send(Reply.error(error, AUTH_HEADER))
            return
        await self.send(Reply(data_message(item)))

    def _spawn(self, coroutine: Any) -> None:
        # Tasks outlive a disconnect: their results are stored even if nobody reads them now.
        running = asyncio.get_running_loop().create_task(coroutine)
        self._running.add(running)
        running.add_done_callback(self._running.discard)
