"""No database call runs on the event loop's thread: each is awaited on a worker thread, so a
slow database slows the requests that need it, never the whole server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import event

from tests.conftest import SD, inference, new_uuid, post
from tests.images import data_uri, gradient
from tests.service.fakes import fake_kiln, receiver, wait_finished


def test_no_database_call_runs_on_the_event_loop(settings):
    on_loop: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a worker thread (or the heartbeat's): fine
            return
        on_loop.append(statement)

    with fake_kiln(settings) as (client, engine, services), receiver() as hook:
        key = services.keys.create("off-loop")  # a stored key: authenticating reads the database
        engine.gate.set()
        event.listen(services.db.engine, "before_cursor_execute", record)
        try:
            upload = {"taskType": "imageUpload", "taskUUID": new_uuid(), "image": data_uri(gradient(64, 64))}
            (uploaded,) = post(client, [upload], key=key).json()["data"]
            image = uploaded["imageUUID"]
            search = {"taskType": "modelSearch", "taskUUID": new_uuid(), "search": "tiny"}
            authenticated = client.post("/v1", json=[
                {"taskType": "authentication", "apiKey": key}, search])
            assert authenticated.status_code == 200, authenticated.text
            sync = inference(seedImage=image, strength=0.5, lora=[{"model": "kiln:tiny-lora@1", "weight": 1}],
                             webhookURL=hook.url, uploadEndpoint=hook.url + "/out.png")
            assert post(client, [sync], key=key).status_code == 200
            background = inference(deliveryMethod="async", model=SD)
            assert post(client, [background], key=key).status_code == 200
            assert wait_finished(client, background["taskUUID"], key=key)["data"][0]["status"] == "success"
            preprocess = {"taskType": "imageControlNetPreProcess", "taskUUID": new_uuid(),
                          "preProcessorType": "canny", "inputImage": image}
            assert post(client, [preprocess], key=key).status_code == 200
            assert post(client, [sync], key=key).json()["errors"][0]["code"] == "conflictTaskUUID"
            assert post(client, [inference(model="civitai:1@1")], key=key).status_code == 404
            assert client.get("/ready").json()["checks"]["database"] == "ok"
            with client.websocket_connect("/v1") as ws:
                ws.send_text(json.dumps([{"taskType": "authentication", "apiKey": key}]))
                assert ws.receive_json()["data"][0]["taskType"] == "authentication"
                ws.send_text(json.dumps([inference()]))
                assert ws.receive_json()["data"][0]["imageBase64Data"]
            hook.wait_for(2)  # the upload and the webhook of the sync task
        finally:
            event.remove(services.db.engine, "before_cursor_execute", record)
    assert on_loop == []
