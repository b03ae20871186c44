"""Shared fixtures: one data directory with the demo models, one Kiln app per storage backend,
for the session.

Building the tiny models and importing torch take seconds, so they happen once; every test
drives the public API (REST, WebSocket) of that one app in-process. Every test that uses the
`settings` runs twice: on SQLite (the data directory's file) and on PostgreSQL (a server of the
session's own, `tests.postgres`; skipped where PostgreSQL is not installed, unless
KILN_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import base64
import io
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from PIL import Image
from starlette.testclient import TestClient

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from kiln.models import Catalog  # noqa: E402
from kiln.models.demo import init_demo_models  # noqa: E402
from kiln.server import create_app  # noqa: E402
from kiln.service import Services  # noqa: E402
from kiln.settings import Settings  # noqa: E402
from kiln.storage import Database  # noqa: E402
from tests.postgres import PostgresServer, postgres_server, require_postgres  # noqa: E402

API_KEY = "test-key-1"
OTHER_KEY = "test-key-2"
SD = "kiln:tiny-sd@1"
SDXL = "kiln:tiny-sdxl@1"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kiln-data")
    init_demo_models(Catalog(Database(root / "kiln.sqlite3")), root / "models", log=lambda _: None)
    return root


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (skips, or fails under KILN_REQUIRE_POSTGRES, without)."""
    require_postgres()
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend of the session's Kiln: "sqlite" or "postgresql"."""
    return str(request.param)


@pytest.fixture(scope="session")
def settings(backend: str, data_dir: Path, request: pytest.FixtureRequest) -> Settings:
    database_url = None
    if backend == "postgresql":  # one database for the session; the demo models registered
        database_url = request.getfixturevalue("postgres").create_database()
        db = Database(database_url)
        init_demo_models(Catalog(db), data_dir / "models", log=lambda _: None)
        db.close()
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        api_keys=(API_KEY, OTHER_KEY),
        public_url="http://testserver",
        allow_private_urls=True,
        torch_threads=1,  # byte-exact determinism and no OpenMP stalls on a shared CPU
    )


@pytest.fixture
def own_database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """For a test that needs a database of its own on the session's backend: a new PostgreSQL
    database's URL, or None on SQLite (the file in the test's own data directory)."""
    return request.getfixturevalue("postgres").create_database() if backend == "postgresql" else None


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment for a `kiln` command on the database of `settings`."""
    env = {**os.environ, **extra}
    if settings.database_url:
        env["KILN_DATABASE_URL"] = settings.database_url
    return env


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Services]:
    services = Services.open(settings)
    yield services
    services.front.stop()  # closed by the app's shutdown, or not: no heartbeat after the session


@pytest.fixture(scope="session")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as client:
        yield client


@pytest.fixture(scope="session")
def ws_url(services: Services) -> Iterator[str]:
    """Kiln on a real uvicorn, on a loopback port: `ws://127.0.0.1:PORT/v1`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # lifespan off: the session's services are shared with the in-process client and closed there
    config = uvicorn.Config(create_app(services), host="127.0.0.1", port=port, lifespan="off",
                            log_level="warning", ws_max_size=services.settings.max_body_bytes * 2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"ws://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


def http_base(ws_url: str) -> str:
    """`http://127.0.0.1:PORT` of the live server behind `ws_url`."""
    return ws_url.replace("ws://", "http://").removesuffix("/v1")


def new_uuid() -> str:
    return str(uuid.uuid4())


def inference(**overrides: Any) -> dict[str, Any]:
    """A small, fast imageInference task on the tiny SD 1.x model."""
    task = {
        "taskType": "imageInference",
        "taskUUID": new_uuid(),
        "model": SD,
        "positivePrompt": "a red circle on a blue background",
        "width": 128,
        "height": 128,
        "steps": 2,
        "seed": 1234,
        "outputType": "base64Data",
        "outputFormat": "PNG",
    }
    task.update(overrides)
    return {k: v for k, v in task.items() if v is not None}


def post(client: TestClient, tasks: Any, key: str | None = API_KEY, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/v1", json=tasks, headers=headers, **kwargs)


def decode_image(item: dict[str, Any]) -> Image.Image:
    """The image of a result item, whatever its outputType."""
    if "imageBase64Data" in item:
        data = base64.b64decode(item["imageBase64Data"])
    elif "imageDataURI" in item:
        data = base64.b64decode(item["imageDataURI"].split(",", 1)[1])
    else:
        raise AssertionError(f"no inline image in {item}")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
