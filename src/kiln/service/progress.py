"""Step progress of the tasks that ask for it with Kiln's extension field `"progress": true`:
throttled progress items on the task's stream (the WebSocket), and the latest one for
`getResponse`.

A progress item is `{"taskType", "taskUUID", "status": "processing", "step", "steps",
"imageIndex"}`, plus `"previewDataURI"` (a JPEG of at most 64 px) when the task also set
`"progressPreviews": true`.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

from kiln.media import encode_image
from kiln.progress import StepProgress
from kiln.protocol.envelope import TaskHeader, data_message

PROGRESS_INTERVAL_S = 0.25
"""A task gets at most one progress item per interval, besides the last step of each image."""
PREVIEW_QUALITY = 80

Send = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]
"""Sends one wire message on the task's stream."""


class ProgressBoard:
    """The latest progress item of each running task that asks for progress, for getResponse.

    Held in memory by this process, and only while the task runs.
    """

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, owner: str, task_uuid: str) -> dict[str, Any] | None:
        """The latest progress item of `owner`'s task, or None (none yet, or not running)."""
        return self._latest.get((owner, task_uuid))

    def put(self, owner: str, task_uuid: str, item: dict[str, Any]) -> None:
        self._latest[(owner, task_uuid)] = item

    def forget(self, owner: str, task_uuid: str) -> None:
        self._latest.pop((owner, task_uuid), None)


class TaskProgress:
    """One task's progress: a `StepListener` that the executor calls on its worker thread.

    It passes on at most one step per `interval_s` (for each image of the task in that
    pipeline call), and the last step of every image, to the event loop that made it; there
    the item becomes the task's latest on `board` and, with `send`, a message on the task's
    stream. Build it on the task's event loop.
    """

    def __init__(
        self,
        header: TaskHeader,
        owner: str,
        board: ProgressBoard,
        *,
        previews: bool,
        send: Send | None,
        interval_s: float = PROGRESS_INTERVAL_S,
    ) -> None:
        assert header.task_uuid is not None
        self._header = header
        self._key = (owner, header.task_uuid)
        self._board = board
        self._previews = previews
        self._send = send
        self._interval_s = interval_s
        self._loop = asyncio.get_running_loop()
        # when a step was last passed on, and which (read and written on the worker thread)
        self._last_s, self._last_step = -math.inf, 0
        self._sending: list[asyncio.Task[None]] = []
        self._closed = False

    def __call__(self, progress: StepProgress) -> None:
        now = time.monotonic()
        passes = (
            now - self._last_s >= self._interval_s
            or progress.step >= progress.steps  # an image's last step
            or progress.step == self._last_step  # the task's other images in the same call
        )
        if self._closed or not passes:
            return
        self._last_s, self._last_step = now, progress.step
        item: dict[str, Any] = {
            "taskType": self._header.task_type,
            "taskUUID": self._header.task_uuid,
            "status": "processing",
            "step": progress.step,
            "steps": progress.steps,
            "imageIndex": progress.index,
        }
        if self._previews:
            preview = progress.preview()  # only here: the latents are valid during the call
            if preview is not None:
                jpeg = base64.b64encode(encode_image(preview, "JPG", PREVIEW_QUALITY)).decode()
                item["previewDataURI"] = f"data:image/jpeg;base64,{jpeg}"
        self._loop.call_soon_threadsafe(self._publish, item)

    def _publish(self, item: dict[str, Any]) -> None:
        if self._closed:  # an image still running after its task ended
            return
        self._board.put(*self._key, item)
        if self._send is not None:
            # Tasks start in this order and the stream's send lock is first come, first served.
            self._sending.append(self._loop.create_task(self._send(data_message(item))))

    async def settle(self) -> None:
        """Wait until every item passed on so far is sent: a reply sent next comes after them.

        The executor reports an image's steps before it yields the image, so once a result is
        in hand, its progress items are among these.
        """
        sending, self._sending = self._sending, []
        await asyncio.gather(*sending)

    def close(self) -> None:
        """The task ended: pass on nothing more, and take its item off the board."""
        self._closed = True
        self._board.forget(*self._key)
