"""Request bodies and WebSocket frames to task lists, without stalling the event loop."""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from kiln.protocol.envelope import parse_body

OFF_LOOP_BYTES = 64 * 1024
"""Bodies larger than this are parsed on a worker thread (a 20 MB one takes ~0.1 s to decode
and check), so that pings and results of other tasks are not held up meanwhile."""


async def parse_tasks(raw: bytes | str) -> list[Any]:
    """`parse_body(raw)`, on a worker thread when `raw` is larger than `OFF_LOOP_BYTES`."""
    if len(raw) <= OFF_LOOP_BYTES:
        return parse_body(raw)
    return await anyio.to_thread.run_sync(parse_body, raw)
