"""The WebSocket transport: auth first, pings at once, many tasks in flight, streamed results."""

from __future__ import annotations

import json

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.conftest import API_KEY, inference
from tests.server.hostile import HOSTILE_BODIES


def auth(ws, key=API_KEY):
    ws.send_text(json.dumps([{"taskType": "authentication", "apiKey": key}]))
    return ws.receive_json()


def test_authentication_reply_has_session_and_no_task_uuid(client):
    with client.websocket_connect("/v1") as ws:
        reply = auth(ws)
    (item,) = reply["data"]
    assert item["taskType"] == "authentication" and item["connectionSessionUUID"]
    assert "taskUUID" not in item


def test_wrong_key_is_invalid_api_key_for_authentication(client):
    with client.websocket_connect("/v1") as ws:
        reply = auth(ws, "wrong")
    (error,) = reply["errors"]
    assert error["code"] == "invalidApiKey"
    assert error["taskType"] == "authentication"
    assert "taskUUID" not in error


def test_any_path_and_query_string(client):
    with client.websocket_connect("/?sdk=js&version=1.3.2") as ws:
        assert "data" in auth(ws)


def test_tasks_before_authentication_get_missing_api_key(client):
    with client.websocket_connect("/v1") as ws:
        task = inference()
        ws.send_text(json.dumps([task]))
        (error,) = ws.receive_json()["errors"]
    assert (error["code"], error["taskUUID"]) == ("missingApiKey", task["taskUUID"])


def test_ping_pong_exact_shape(client):
    with client.websocket_connect("/v1") as ws:
        auth(ws)
        ws.send_text(json.dumps([{"taskType": "ping", "ping": True}]))
        assert ws.receive_json() == {"data": [{"taskType": "ping", "pong": True}]}


def test_malformed_frame_gets_an_error_and_the_session_survives(client):
    with client.websocket_connect("/v1") as ws:
        auth(ws)
        ws.send_text("{oops")
        assert ws.receive_json()["errors"][0]["code"] == "invalidJSON"
        ws.send_text(json.dumps([{"taskType": "ping", "ping": True}]))
        assert ws.receive_json()["data"][0]["pong"] is True


def test_results_stream_one_message_per_image(client):
    task = inference(numberResults=3)
    with client.websocket_connect("/v1") as ws:
        auth(ws)
        ws.send_text(json.dumps([task]))
        messages = [ws.receive_json() for _ in range(3)]
    items = [item for m in messages for item in m["data"]]
    assert all(len(m["data"]) == 1 for m in messages)
    assert [i["seed"] for i in items] == [1234, 1235, 1236]
    assert {i["taskUUID"] for i in items} == {task["taskUUID"]}


def test_many_tasks_in_flight_and_errors_one_per_message(client):
    tasks = [inference(), inference(width=100), inference(steps=0)]
    with client.websocket_connect("/v1") as ws:
        auth(ws)
        for task in tasks:
            ws.send_text(json.dumps([task]))
        messages = [ws.receive_json() for _ in range(3)]
    errors = [m["errors"] for m in messages if "errors" in m]
    assert sorted(e[0]["code"] for e in errors) == ["invalidSteps", "invalidWidth"]
    assert all(len(e) == 1 for e in errors)
    (data,) = [m["data"] for m in messages if "data" in m]
    assert data[0]["taskUUID"] == tasks[0]["taskUUID"]


def test_a_ping_during_a_generation_is_answered_before_it_ends(client):
    slow = inference(width=512, height=512, steps=20, numberResults=3)
    with client.websocket_connect("/v1") as ws:
        auth(ws)
        ws.send_text(json.dumps([slow]))
        first_image = ws.receive_json()  # the generation is now running: two images to go
        ws.send_text(json.dumps([{"taskType": "ping", "ping": True}]))
        after_ping = [ws.receive_json() for _ in range(3)]
    assert first_image["data"][0]["taskUUID"] == slow["taskUUID"]
    assert after_ping[0] == {"data": [{"taskType": "ping", "pong": True}]}
    assert all(m["data"][0]["taskUUID"] == slow["taskUUID"] for m in after_ping[1:])


def test_a_large_frame_before_authentication_is_refused_and_the_socket_closed(client):
    with client.websocket_connect("/v1") as ws:
        ws.send_text(json.dumps([inference(positivePrompt="x" * (128 * 1024))]))
        (error,) = ws.receive_json()["errors"]
        ws.send_text(json.dumps([{"taskType": "ping", "ping": True}]))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert (error["code"], error["taskType"]) == ("payloadTooLarge", "authentication")
    assert closed.value.code == 1009


def test_large_frames_are_taken_once_authenticated(client):
    with client.websocket_connect("/v1") as ws:
        auth(ws)
        ws.send_text(json.dumps([{"taskType": "ping", "ping": True, "padding": "x" * (1024 * 1024)}]))
        assert ws.receive_json() == {"data": [{"taskType": "ping", "pong": True}]}


@pytest.mark.parametrize("name", HOSTILE_BODIES)
def test_hostile_frames_get_a_typed_error_and_the_session_survives(client, name):
    with client.websocket_connect("/v1") as ws:
        auth(ws)
        ws.send_text(HOSTILE_BODIES[name])
        (error,) = ws.receive_json()["errors"]
        ws.send_text(json.dumps([{"taskType": "ping", "ping": True}]))
        assert ws.receive_json()["data"][0]["pong"] is True
    assert error["code"] in {"invalidJSON", "invalidRequestBody"} and error["message"]
