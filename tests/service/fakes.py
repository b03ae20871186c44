"""Test doubles at Kiln's boundaries: a fake engine behind a real executor, and an HTTP receiver
on loopback that stores what it gets and answers with scripted statuses."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image
from starlette.testclient import TestClient

from kiln.errors import InferenceError, KilnError
from kiln.executor import InProcessExecutor
from kiln.progress import StepListener, StepProgress
from kiln.server import create_app
from kiln.service import Services
from kiln.settings import Settings
from kiln.storage import STALE_AFTER_S, FrontRepository
from tests.conftest import API_KEY, inference, post


class FakeEngine:
    """Solid-colour images of the requested size, one per request of a batch, at once.

    A prompt containing "explode" fails that request (only) like a CUDA out-of-memory error; a
    batch with a prompt containing "hold" waits until `gate` is set. Given a step listener,
    every image reports its first step at once and the others after the gate. `calls` counts
    `generate_batch` calls and `batch_sizes` records the size of each.
    """

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0
        self.batch_sizes: list[int] = []

    def load(self, model: Any) -> None:
        pass

    def generate_batch(
        self, requests: Sequence[Any], on_step: StepListener | None = None
    ) -> list[Image.Image | KilnError]:
        self.calls += 1
        self.batch_sizes.append(len(requests))
        self._report(requests, first=True, on_step=on_step)
        if any("hold" in request.positive_prompt for request in requests):
            assert self.gate.wait(timeout=60), "test never opened the gate"
        self._report(requests, first=False, on_step=on_step)
        return [
            InferenceError("Generation failed: RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB")
            if "explode" in request.positive_prompt
            else Image.new("RGB", (request.width, request.height), (request.seeds[0] % 256, 64, 128))
            for request in requests
        ]

    @staticmethod
    def _report(requests: Sequence[Any], *, first: bool, on_step: StepListener | None) -> None:
        """Step 1 of each image (`first`), or its other steps."""
        if on_step is None:
            return
        for index, request in enumerate(requests):
            for step in [1] if first else range(2, request.steps + 1):
                on_step(StepProgress(index, step, request.steps))

    def max_batch(self, request: Any) -> int:
        return 1024

    def annotate(self, kind: str, path: str, image: Image.Image, options: Any) -> Image.Image:
        raise NotImplementedError("the fake engine has no annotators")

    resident_bytes = 0
    evictions = 0


@contextlib.contextmanager
def fake_kiln(settings: Settings, **overrides: Any) -> Iterator[tuple[TestClient, FakeEngine, Services]]:
    """A separate Kiln (own services, same data directory) on a `FakeEngine`, with `overrides`
    applied to its settings; closed on exit."""
    engine = FakeEngine()
    services = Services.open(replace(settings, **overrides), executor=InProcessExecutor(lambda: engine))
    with TestClient(create_app(services)) as client:
        try:
            yield client, engine, services
        finally:
            engine.gate.set()


def start_held_tasks(client: TestClient, engine: FakeEngine, count: int = 1) -> list[str]:
    """`count` async tasks whose generation waits on `engine.gate`, once the first is running;
    their taskUUIDs."""
    tasks = [inference(positivePrompt=f"hold {i}", deliveryMethod="async") for i in range(count)]
    for task in tasks:
        assert post(client, [task]).status_code == 200
    deadline = time.monotonic() + 10
    while not engine.calls:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return [task["taskUUID"] for task in tasks]


def get_response(client: TestClient, task_uuid: str, key: str = API_KEY) -> dict[str, Any]:
    """The reply to `getResponse` for `task_uuid` over REST (404 when the task is unknown)."""
    response = post(client, [{"taskType": "getResponse", "taskUUID": task_uuid}], key=key)
    assert response.status_code == (404 if "taskNotFound" in response.text else 200), response.json()
    return response.json()


def wait_finished(client: TestClient, task_uuid: str, key: str = API_KEY, timeout_s: float = 60) -> dict[str, Any]:
    """Poll `getResponse` until the task has no `processing` item; the last reply."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = get_response(client, task_uuid, key)
        if not any(item.get("status") == "processing" for item in reply.get("data", [])):
            return reply
        assert time.monotonic() < deadline, f"task {task_uuid} still processing: {reply}"
        time.sleep(0.05)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers the n-th one with
    `statuses[n]` (the last status repeats), after `delay_s` seconds."""

    def __init__(self, statuses: tuple[int, ...] = (200,), delay_s: float = 0.0) -> None:
        self.statuses = statuses
        self.delay_s = delay_s
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    n = len(receiver.received)
                    status = receiver.statuses[min(n, len(receiver.statuses) - 1)]
                    receiver.received.append(
                        Received(self.command, self.path, dict(self.headers), body, status)
                    )
                time.sleep(receiver.delay_s)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            do_PUT = do_POST = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"got {len(self.received)} of {count} requests"
            time.sleep(0.02)
        return list(self.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def receiver(statuses: tuple[int, ...] = (200,), delay_s: float = 0.0) -> Iterator[Receiver]:
    server = Receiver(statuses, delay_s)
    try:
        yield server
    finally:
        server.close()


def kill_front(services: Services) -> None:
    """Leave `services`' front as a killed process leaves it: no more heartbeats, the last one
    older than STALE_AFTER_S (so the other fronts count it dead now, not in 10 s)."""
    services.front.stop()
    FrontRepository(services.db).beat(services.front.front_id, time.time() - STALE_AFTER_S - 1)
