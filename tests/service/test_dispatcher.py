"""The dispatcher under faults: an engine failure fails only its task, and the next one runs."""

from __future__ import annotations

from tests.conftest import decode_image, inference, post
from tests.service.fakes import fake_kiln, get_response


def test_an_engine_exception_fails_that_task_and_the_next_runs(settings):
    with fake_kiln(settings) as (client, engine, _):
        doomed = inference(positivePrompt="explode please")
        response = post(client, [doomed])
        assert response.status_code == 500
        (error,) = response.json()["errors"]
        assert (error["code"], error["taskUUID"], error["taskType"]) == (
            "inferenceError", doomed["taskUUID"], "imageInference")
        assert "out of memory" in error["message"]
        assert get_response(client, doomed["taskUUID"])["errors"][0]["code"] == "inferenceError"

        after = post(client, [inference(numberResults=2)])
        assert after.status_code == 200
        assert [decode_image(i).size for i in after.json()["data"]] == [(128, 128), (128, 128)]
        assert engine.calls == 2


def test_a_failing_task_beside_a_good_one_in_one_request(settings):
    with fake_kiln(settings) as (client, _, _):
        good, bad = inference(), inference(positivePrompt="explode now")
        body = post(client, [bad, good]).json()
    assert [i["taskUUID"] for i in body["data"]] == [good["taskUUID"]]
    assert [e["taskUUID"] for e in body["errors"]] == [bad["taskUUID"]]


def test_getresponse_and_ping_are_not_recorded_as_tasks(client):
    (pong,) = post(client, [{"taskType": "ping", "ping": True}]).json()["data"]
    assert pong == {"taskType": "ping", "pong": True}
    task = inference()
    post(client, [task])
    # polling twice never turns the poll itself into a task or a conflict
    assert get_response(client, task["taskUUID"]) == get_response(client, task["taskUUID"])
