"""Step progress (Kiln's `"progress": true`) over WebSocket on the tiny models: items before the
task's image with `step` rising to `steps`, previews that decode, each task of a batch its own
items, getResponse while an async task runs; nothing new without the field, nor over REST."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from kiln.executor import InProcessExecutor
from tests.conftest import SD, SDXL, inference, post
from tests.server.test_websocket import auth
from tests.service.fakes import fake_kiln, get_response, wait_finished

PROGRESS_KEYS = {"taskType", "taskUUID", "status", "step", "steps", "imageIndex"}


def receive_items(ws: Any, results: dict[str, int]) -> list[dict[str, Any]]:
    """Every data item `ws` receives until each taskUUID of `results` has that many images."""
    items: list[dict[str, Any]] = []
    images = dict.fromkeys(results, 0)
    while any(images[task_uuid] < count for task_uuid, count in results.items()):
        message = ws.receive_json()
        assert "errors" not in message, message
        for item in message["data"]:
            items.append(item)
            if "imageUUID" in item:
                images[item["taskUUID"]] += 1
    return items


def run_over_websocket(client: Any, *tasks: dict[str, Any]) -> list[dict[str, Any]]:
    with client.websocket_connect("/v1") as ws:
        auth(ws)
        ws.send_text(json.dumps(list(tasks)))
        return receive_items(ws, {task["taskUUID"]: task.get("numberResults", 1) for task in tasks})


def check_progress(items: list[dict[str, Any]], task: dict[str, Any], image_index: int = 0) -> None:
    """The task's items of image `image_index`: progress items first, steps rising to `steps`."""
    mine = [item for item in items if item["taskUUID"] == task["taskUUID"]]
    images = [item for item in mine if "imageUUID" in item]
    image_at = mine.index(images[image_index])
    progress = [item for item in mine if item.get("imageIndex") == image_index]
    assert progress and all(mine.index(item) < image_at for item in progress)
    steps = [item["step"] for item in progress]
    assert steps == sorted(set(steps)) and steps[0] == 1 and steps[-1] == task["steps"]
    for item in progress:
        assert set(item) - {"previewDataURI"} == PROGRESS_KEYS
        assert (item["taskType"], item["status"], item["steps"]) == ("imageInference", "processing", task["steps"])


def decode_data_uri(uri: str) -> Image.Image:
    header, _, data = uri.partition(",")
    assert header == "data:image/jpeg;base64"
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


@pytest.mark.parametrize("model", [SD, SDXL])
def test_progress_items_come_before_the_image_with_steps_rising_to_steps(client, model):
    task = inference(model=model, steps=4, progress=True)
    items = run_over_websocket(client, task)
    check_progress(items, task)
    assert "imageUUID" in items[-1] and "step" not in items[-1] and "previewDataURI" not in str(items)


@pytest.mark.parametrize("model", [SD, SDXL])
def test_previews_are_small_images_of_the_latents(client, model):
    task = inference(model=model, steps=3, width=192, height=128, progress=True, progressPreviews=True)
    items = run_over_websocket(client, task)
    check_progress(items, task)
    previews = [decode_data_uri(item["previewDataURI"]) for item in items if "step" in item]
    assert all(preview.size == (24, 16) and preview.mode == "RGB" for preview in previews)  # 1/8


def test_without_the_field_a_task_gets_only_its_image_of_the_same_shape(client):
    plain, watched = inference(), inference(progress=True)
    [item] = run_over_websocket(client, plain)
    *progress, watched_item = run_over_websocket(client, watched)
    assert progress and set(item) == set(watched_item)
    assert item["imageBase64Data"] == watched_item["imageBase64Data"]  # steps reported, pixels kept


def test_rest_replies_do_not_change_with_progress(client):
    plain = post(client, [inference()]).json()
    watched = post(client, [inference(progress=True, progressPreviews=True)]).json()
    assert set(plain) == set(watched) == {"data"}
    [item], [watched_item] = plain["data"], watched["data"]
    assert set(item) == set(watched_item) and "step" not in watched_item
    assert item["imageBase64Data"] == watched_item["imageBase64Data"]


@contextlib.contextmanager
def worker_held(executor: InProcessExecutor) -> Iterator[None]:
    """The executor's worker busy with device work until the block ends: units queue up."""
    started, gate = threading.Event(), threading.Event()

    def hold(engine: Any) -> None:
        started.set()
        gate.wait(60)

    thread = threading.Thread(target=lambda: asyncio.run(executor.run(hold)))
    thread.start()
    try:
        assert started.wait(60)
        yield
    finally:
        gate.set()
        thread.join(60)


def test_tasks_batched_together_each_get_their_own_items(client, services):
    metrics = services.executor.metrics.registry
    batches = metrics.get_sample_value("kiln_batch_size_count") or 0
    pair, single = inference(steps=3, numberResults=2, progress=True), inference(steps=3, progress=True)
    with client.websocket_connect("/v1") as ws:
        auth(ws)
        with worker_held(services.executor):
            ws.send_text(json.dumps([pair, single]))
            deadline = time.monotonic() + 30
            while metrics.get_sample_value("kiln_executor_queue_depth") != 3:
                assert time.monotonic() < deadline, "the three images never queued"
                time.sleep(0.01)
        items = receive_items(ws, {pair["taskUUID"]: 2, single["taskUUID"]: 1})
    assert metrics.get_sample_value("kiln_batch_size_count") == batches + 1  # one call of 3
    check_progress(items, pair, image_index=0)
    check_progress(items, pair, image_index=1)
    check_progress(items, single)


def test_an_async_task_shows_its_latest_step_in_get_response(settings):
    with fake_kiln(settings) as (client, engine, _):
        watched = inference(positivePrompt="hold the line", steps=4, deliveryMethod="async", progress=True)
        assert post(client, [watched]).status_code == 200
        deadline = time.monotonic() + 30
        while "step" not in (latest := get_response(client, watched["taskUUID"])["data"][-1]):
            assert time.monotonic() < deadline, latest
            time.sleep(0.02)
        assert latest == {"taskType": "imageInference", "taskUUID": watched["taskUUID"],
                          "status": "processing", "step": 1, "steps": 4, "imageIndex": 0}
        plain = inference(steps=4, deliveryMethod="async")  # queued behind the held one
        assert post(client, [plain]).status_code == 200
        assert get_response(client, plain["taskUUID"])["data"] == [
            {"taskType": "imageInference", "taskUUID": plain["taskUUID"], "status": "processing"}]
        engine.gate.set()
        [done] = wait_finished(client, watched["taskUUID"])["data"]
        assert done["status"] == "success" and "step" not in done


def test_an_async_task_streams_no_progress_over_websocket(settings):
    with fake_kiln(settings) as (client, engine, _), client.websocket_connect("/v1") as ws:
        auth(ws)
        task = inference(steps=4, deliveryMethod="async", progress=True)
        ws.send_text(json.dumps([task]))
        assert ws.receive_json()["data"] == [
            {"taskType": "imageInference", "taskUUID": task["taskUUID"], "status": "processing"}]
        wait_finished(client, task["taskUUID"])
        ws.send_text(json.dumps([{"taskType": "ping", "ping": True}]))
        assert ws.receive_json() == {"data": [{"taskType": "ping", "pong": True}]}  # nothing between


@pytest.mark.parametrize(("changes", "code", "parameter"), [
    ({"progress": "yes"}, "invalidProgress", "progress"),
    ({"progress": 1}, "invalidProgress", "progress"),
    ({"progress": True, "progressPreviews": "true"}, "invalidProgressPreviews", "progressPreviews"),
])
def test_progress_fields_are_booleans(client, changes, code, parameter):
    response = post(client, [inference(**changes)])
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["code"], error["parameter"], error["type"]) == (code, parameter, "boolean")


def test_previews_come_with_progress_only(client):
    response = post(client, [inference(progressPreviews=True)])
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["code"], error["parameter"]) == ("missingProgress", "progress")
