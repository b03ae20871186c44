"""The routes beside the transports: media downloads and readiness."""

from __future__ import annotations

import base64
import io
import threading
import time
from dataclasses import replace
from typing import Any

from PIL import Image
from starlette.testclient import TestClient

from kiln.executor import InProcessExecutor
from kiln.server import create_app
from kiln.service import Services
from tests.conftest import SD, new_uuid, post


def wait_ready(client: TestClient, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while (response := client.get("/ready")).status_code != 200:
        assert time.monotonic() < deadline, response.json()
        time.sleep(0.05)
    return response


def test_media_is_immutable_and_never_sniffed(client):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    upload = {"taskType": "imageUpload", "taskUUID": new_uuid(),
              "image": base64.b64encode(buffer.getvalue()).decode()}
    (item,) = post(client, [upload]).json()["data"]
    response = client.get("/media/" + item["imageURL"].split("/media/", 1)[1])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_ready_once_the_engine_is_built(client):
    body = wait_ready(client).json()
    assert body == {"status": "ready", "checks": {"database": "ok", "engine": "ok"}}


class GatedEngine:
    """An engine that takes `gate` to build and `loaded` to load a model."""

    def __init__(self) -> None:
        self.gate, self.loaded = threading.Event(), threading.Event()

    def build(self) -> GatedEngine:
        assert self.gate.wait(timeout=60)
        return self

    def load(self, model: Any) -> None:
        assert self.loaded.wait(timeout=60)

    def generate_batch(self, requests: Any) -> list[Any]:
        return []

    def max_batch(self, request: Any) -> int:
        return 1

    def annotate(self, *args: Any) -> Any:
        raise AssertionError("not used")

    resident_bytes = 0
    evictions = 0


def test_ready_is_503_until_the_engine_and_preloaded_models_are_up(settings):
    engine = GatedEngine()
    services = Services.open(replace(settings), executor=InProcessExecutor(engine.build))
    with TestClient(create_app(services, preload=[SD, "civitai:1@1"])) as client:
        try:
            starting = client.get("/ready")
            engine.gate.set()
            while client.get("/ready").json()["checks"]["engine"] != "ok":
                time.sleep(0.02)
            loading = client.get("/ready")
            engine.loaded.set()
            while "loading" in client.get("/ready").json()["checks"]["models"].values():
                time.sleep(0.02)
            loaded = client.get("/ready")
            services.db.close()
            closed = client.get("/ready")
        finally:
            engine.gate.set()
            engine.loaded.set()
    assert starting.status_code == 503
    assert starting.json() == {"status": "unavailable", "checks": {
        "database": "ok", "engine": "starting", "models": {SD: "loading", "civitai:1@1": "loading"}}}
    assert loading.status_code == 503 and loading.json()["checks"]["models"][SD] == "loading"
    models = loaded.json()["checks"]["models"]
    assert loaded.status_code == 503 and models[SD] == "ok"  # the unknown model keeps it unready
    assert models["civitai:1@1"].startswith("failed:")
    assert closed.status_code == 503 and closed.json()["checks"]["database"].startswith("unreachable")
