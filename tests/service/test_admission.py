"""Admission limits: body size, tasks per request, results in flight per key, queue depth;
each refusal is a typed error (`rateLimitExceeded`, HTTP 429) and is released when work ends."""

from __future__ import annotations

import json
import time

from tests.conftest import API_KEY, OTHER_KEY, inference, post
from tests.service.fakes import fake_kiln, wait_finished


def _wait_for_engine(engine, calls=1):
    deadline = time.monotonic() + 10
    while engine.calls < calls:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_body_size_limit_is_413(settings):
    with fake_kiln(settings, max_body_bytes=2048) as (client, _, _):
        response = post(client, [inference(positivePrompt="x" * 1500), inference(positivePrompt="y" * 1500)])
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "payloadTooLarge"


def test_tasks_per_request_limit(settings):
    with fake_kiln(settings, max_tasks_per_request=3) as (client, engine, _):
        pings = [{"taskType": "ping", "ping": True}] * 4
        response = post(client, pings)
        assert response.status_code == 429
        (error,) = response.json()["errors"]
        assert error["code"] == "rateLimitExceeded" and "at most 3 tasks" in error["message"]
        assert engine.calls == 0
        with client.websocket_connect("/v1") as ws:
            ws.send_text(json.dumps([{"taskType": "authentication", "apiKey": API_KEY}]))
            ws.receive_json()
            ws.send_text(json.dumps([inference() for _ in range(4)]))
            assert ws.receive_json()["errors"][0]["code"] == "rateLimitExceeded"
            ws.send_text(json.dumps(pings[:3]))
            assert [ws.receive_json()["data"][0]["pong"] for _ in range(3)] == [True] * 3
        assert post(client, [inference(), inference()]).status_code == 200


def test_results_in_flight_per_key(settings):
    with fake_kiln(settings, max_results_in_flight_per_key=3) as (client, engine, _):
        held = inference(positivePrompt="hold the queue", numberResults=2, deliveryMethod="async")
        assert post(client, [held]).status_code == 200
        _wait_for_engine(engine)
        refused = inference(numberResults=2)
        response = post(client, [refused])
        assert response.status_code == 429
        (error,) = response.json()["errors"]
        assert (error["code"], error["parameter"], error["taskUUID"]) == (
            "rateLimitExceeded", "numberResults", refused["taskUUID"])
        # one more result still fits; another key is not affected
        assert post(client, [inference(numberResults=1, deliveryMethod="async")]).status_code == 200
        assert post(client, [inference(numberResults=3, deliveryMethod="async")], key=OTHER_KEY).status_code == 200
        engine.gate.set()
        wait_finished(client, held["taskUUID"])
        # the refused taskUUID was not recorded: it can be sent again once there is room
        assert post(client, [refused]).status_code == 200


def test_queue_depth(settings):
    with fake_kiln(settings, max_queued_tasks=2) as (client, engine, _):
        first = inference(positivePrompt="hold one", deliveryMethod="async")
        second = inference(positivePrompt="hold two", deliveryMethod="async")
        assert post(client, [first]).status_code == 200
        assert post(client, [second], key=OTHER_KEY).status_code == 200
        response = post(client, [inference()], key=OTHER_KEY)
        assert response.status_code == 429
        assert "queue is full" in response.json()["errors"][0]["message"]
        engine.gate.set()
        wait_finished(client, first["taskUUID"])
        wait_finished(client, second["taskUUID"], key=OTHER_KEY)
        assert post(client, [inference()]).status_code == 200


def test_the_limits_hold_across_fronts_on_one_database(settings):
    with fake_kiln(settings, max_queued_tasks=2) as (first, engine, _), \
            fake_kiln(settings, max_queued_tasks=2) as (second, other_engine, _):
        one = inference(positivePrompt="hold one", deliveryMethod="async")
        two = inference(positivePrompt="hold two", deliveryMethod="async")
        assert post(first, [one]).status_code == 200
        assert post(second, [two], key=OTHER_KEY).status_code == 200
        response = post(second, [inference()], key=OTHER_KEY)
        assert response.status_code == 429
        assert "queue is full" in response.json()["errors"][0]["message"]
        engine.gate.set()
        other_engine.gate.set()
        wait_finished(first, one["taskUUID"])
        wait_finished(second, two["taskUUID"], key=OTHER_KEY)
        assert post(second, [inference()]).status_code == 200
