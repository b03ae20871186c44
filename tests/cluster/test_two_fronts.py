"""Fronts on one PostgreSQL and one S3 bucket are interchangeable: whatever one front stored,
recorded or admitted, another sees. Real `kiln serve` processes, started with the environment
file of docs/deploy.md (docs/deploy/front.env)."""

from __future__ import annotations

import base64
import io
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from kiln.models import Catalog
from kiln.models.demo import init_demo_models
from kiln.storage import STALE_AFTER_S, Database
from tests.cluster.fronts import Front
from tests.conftest import API_KEY, inference, new_uuid
from tests.images import data_uri, gradient
from tests.postgres import PostgresServer
from tests.s3 import REGION, S3Server, s3_server

FRONT_ENV = Path(__file__).parents[2] / "docs" / "deploy" / "front.env"
RESULTS_PER_KEY = 2


def front_env(database_url: str, s3: S3Server) -> dict[str, str]:
    """docs/deploy/front.env with this cluster's values filled in."""
    values = {"database_url": database_url, "bucket": s3.bucket, "s3_endpoint": s3.endpoint,
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
              "aws_region": REGION, "api_keys": API_KEY,
              "max_results_in_flight_per_key": str(RESULTS_PER_KEY)}
    env = {}
    for line in string.Template(FRONT_ENV.read_text()).substitute(values).splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    # loopback only in tests; one torch thread each on a shared CPU
    return {**env, "KILN_HOST": "127.0.0.1", "KILN_ALLOW_PRIVATE_URLS": "1",
            "KILN_TORCH_THREADS": "1"}


@pytest.fixture(scope="module")
def cluster_env(postgres: PostgresServer, data_dir: Path) -> Iterator[dict[str, str]]:
    database_url = postgres.create_database()
    db = Database(database_url)
    init_demo_models(Catalog(db), data_dir / "models", log=lambda _: None)
    db.close()
    with s3_server() as s3:
        yield front_env(database_url, s3)


@pytest.fixture(scope="module")
def fronts(cluster_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Front, Front]]:
    """Two fronts, each with a data directory of its own: nothing shared but the database and
    the bucket."""
    started = [Front(tmp_path_factory.mktemp(f"front-{name}"), cluster_env,
                     tmp_path_factory.mktemp("logs") / f"front-{name}.log") for name in "ab"]
    try:
        for front in started:
            front.wait_ready()
        yield started[0], started[1]
    finally:
        for front in started:
            front.stop()


def post(front: Front, tasks: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(front.base + "/v1", json=tasks, timeout=120,
                      headers={"Authorization": f"Bearer {API_KEY}"})


def get_response(front: Front, task_uuid: str) -> dict[str, Any]:
    return post(front, [{"taskType": "getResponse", "taskUUID": task_uuid}]).json()


def wait_for(front: Front, task_uuid: str, status: str, timeout_s: float = 120) -> dict[str, Any]:
    """getResponse on `front` until an item (or error) of `status` appears; that message."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = get_response(front, task_uuid)
        if any(item.get("status") == status for item in [*body.get("data", []),
                                                           *body.get("errors", [])]):
            return body
        assert time.monotonic() < deadline, f"no {status} for {task_uuid}: {body}"
        time.sleep(0.3)


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def png_of(item: dict[str, Any]) -> Image.Image:
    return png(base64.b64decode(item["imageBase64Data"]))


def slow_inference(**overrides: Any) -> dict[str, Any]:
    """A task that runs for seconds on the tiny model (long enough to be seen in flight)."""
    return inference(deliveryMethod="async", width=512, height=512, steps=30, **overrides)


def test_a_task_sent_to_one_front_is_answered_and_served_by_the_other(fronts):
    a, b = fronts
    task = inference(deliveryMethod="async", outputType="URL")
    acknowledged = post(a, [task])
    assert acknowledged.status_code == 200, acknowledged.text

    body = wait_for(b, task["taskUUID"], "success")
    [item] = [item for item in body["data"] if item["status"] == "success"]
    name = item["imageURL"].rsplit("/", 1)[1]
    served = {front: httpx.get(f"{front.base}/media/{name}", timeout=30) for front in fronts}
    assert all(response.status_code == 200 for response in served.values())
    assert served[a].content == served[b].content
    assert png(served[b].content).size == (128, 128)
    # the same task sent again to the other front is a conflict: one record for both
    again = post(b, [task]).json()
    assert again["errors"][0]["code"] == "conflictTaskUUID"


def test_an_image_uploaded_through_one_front_is_used_by_the_other(fronts):
    a, b = fronts
    upload = post(a, [{"taskType": "imageUpload", "taskUUID": new_uuid(),
                       "image": data_uri(gradient())}]).json()
    image_uuid = upload["data"][0]["imageUUID"]
    result = post(b, [inference(seedImage=image_uuid, strength=0.5)]).json()
    assert "errors" not in result, result
    assert png_of(result["data"][0]).size == (128, 128)
    assert httpx.get(f"{b.base}/media/{image_uuid}.png", timeout=30).status_code == 200


def test_admission_limits_hold_across_both_fronts(fronts):
    a, b = fronts
    busy = slow_inference(numberResults=RESULTS_PER_KEY)
    assert post(a, [busy]).status_code == 200
    refused = post(b, [inference()])
    assert refused.status_code == 429, refused.text
    error = refused.json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("rateLimitExceeded", "numberResults")

    wait_for(b, busy["taskUUID"], "success", timeout_s=300)
    assert post(b, [inference()]).status_code == 200


def test_a_killed_fronts_async_tasks_are_answered_by_another(fronts, cluster_env,
                                                            tmp_path_factory):
    _, b = fronts
    doomed = Front(tmp_path_factory.mktemp("front-c"), cluster_env,
                   tmp_path_factory.mktemp("logs") / "front-c.log")
    try:
        doomed.wait_ready()
        task = slow_inference()
        assert post(doomed, [task]).status_code == 200
        wait_for(b, task["taskUUID"], "processing")  # its front lives: still processing
        doomed.kill()
        body = wait_for(b, task["taskUUID"], "error", timeout_s=STALE_AFTER_S * 3)
        error = body["errors"][0]
        assert error["code"] == "taskFailed" and "stopped" in error["message"]
        # its admission ticket no longer counts: the key may use its whole share again
        assert post(b, [inference(numberResults=RESULTS_PER_KEY)]).status_code == 200
    finally:
        doomed.kill()
