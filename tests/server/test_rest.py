"""The REST transport: envelope rules, authentication and status codes."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from PIL import Image

from tests.conftest import API_KEY, inference, new_uuid, post
from tests.server.hostile import HOSTILE_BODIES, PAIRED_SURROGATES


def test_malformed_json_is_a_typed_400(client):
    response = client.post("/v1", content=b"[{not json", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["code"] == "invalidJSON"


def test_a_body_that_is_not_an_array_is_refused(client):
    response = post(client, {"hello": "world"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "invalidRequestBody"


def test_a_task_without_task_type(client):
    task_uuid = new_uuid()
    (error,) = post(client, [{"taskUUID": task_uuid}]).json()["errors"]
    assert error["code"] == "missingTaskType"
    assert error["taskUUID"] == task_uuid


def test_a_task_without_task_uuid(client):
    (error,) = post(client, [{"taskType": "imageInference"}]).json()["errors"]
    assert error["code"] == "missingTaskUUID"
    assert error["taskType"] == "imageInference"


def test_a_task_uuid_that_is_not_a_uuid(client):
    (error,) = post(client, [inference(taskUUID="abc")]).json()["errors"]
    assert (error["code"], error["parameter"]) == ("invalidTaskUUID", "taskUUID")


def test_unknown_task_type_is_unsupported_with_its_uuid(client):
    task_uuid = new_uuid()
    response = post(client, [{"taskType": "videoInference", "taskUUID": task_uuid}])
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["code"] == "unsupportedTaskType"
    assert (error["taskType"], error["taskUUID"]) == ("videoInference", task_uuid)


def test_a_reused_task_uuid_conflicts(client):
    task = inference()
    assert post(client, [task]).status_code == 200
    response = post(client, [task])
    assert response.status_code == 409
    (error,) = response.json()["errors"]
    assert (error["code"], error["taskUUID"]) == ("conflictTaskUUID", task["taskUUID"])


def test_a_bad_task_does_not_stop_the_good_one_beside_it(client):
    good, bad = inference(), inference(width=100)
    response = post(client, [bad, "not a task", good])
    assert response.status_code == 200
    body = response.json()
    assert [item["taskUUID"] for item in body["data"]] == [good["taskUUID"]]
    codes = {(e.get("taskUUID"), e["code"]) for e in body["errors"]}
    assert codes == {(bad["taskUUID"], "invalidWidth"), (None, "invalidTask")}


def test_ping(client):
    response = post(client, [{"taskType": "ping", "ping": True}])
    assert response.json() == {"data": [{"taskType": "ping", "pong": True}]}


def test_missing_key_is_401(client):
    response = post(client, [inference()], key=None)
    assert response.status_code == 401
    (error,) = response.json()["errors"]
    assert (error["code"], error["taskType"]) == ("missingApiKey", "authentication")


def test_wrong_bearer_key_is_401_invalid_api_key(client):
    response = post(client, [inference()], key="wrong")
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "invalidApiKey"
    assert "taskUUID" not in response.json()["errors"][0]


def test_authentication_task_first_instead_of_a_header(client):
    task = inference()
    response = post(client, [{"taskType": "authentication", "apiKey": API_KEY}, task], key=None)
    assert response.status_code == 200
    auth, result = response.json()["data"]
    assert auth["taskType"] == "authentication" and auth["connectionSessionUUID"]
    assert "taskUUID" not in auth
    assert result["taskUUID"] == task["taskUUID"]


def test_authentication_task_alone_validates_a_key(client):
    ok = post(client, [{"taskType": "authentication", "apiKey": API_KEY}], key=None)
    assert ok.status_code == 200 and "errors" not in ok.json()
    bad = post(client, [{"taskType": "authentication", "apiKey": "nope"}], key=None)
    assert bad.status_code == 401
    assert bad.json()["errors"][0]["code"] == "invalidApiKey"


def test_an_oversized_body_is_413(client, services, monkeypatch):
    limit = services.settings.max_body_bytes
    response = client.post(
        "/v1", content=b"[" + b" " * (limit + 1) + b"]",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "payloadTooLarge"


def test_health(client):
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("name", HOSTILE_BODIES)
def test_hostile_bodies_get_a_typed_400(client, name):
    response = client.post("/v1", content=HOSTILE_BODIES[name].encode(),
                           headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 400, response.text[:500]
    (error,) = response.json()["errors"]
    assert error["code"] in {"invalidJSON", "invalidRequestBody"} and error["message"]
    assert len(response.content) < 2000


def test_escaped_surrogate_pairs_are_valid_unicode(client):
    response = client.post("/v1", content=PAIRED_SURROGATES.encode(),
                           headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.json()["errors"][0]["code"] == "taskNotFound"


def test_an_authentication_task_first_carries_a_large_body(client):
    # without a header the key is read from the first task; the rest of the body may be large
    noise = Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    upload = {"taskType": "imageUpload", "taskUUID": new_uuid(),
              "image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}
    body = [{"taskType": "authentication", "apiKey": API_KEY}, upload]
    assert len(json.dumps(body)) > 128 * 1024
    response = post(client, body, key=None)
    assert response.status_code == 200, response.text
    auth, uploaded = response.json()["data"]
    assert auth["taskType"] == "authentication" and uploaded["taskUUID"] == upload["taskUUID"]


def test_without_a_header_a_large_body_must_start_with_authentication(client):
    body = [inference(), {"taskType": "authentication", "apiKey": API_KEY}, "x" * (128 * 1024)]
    response = post(client, body, key=None)
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "missingApiKey"


def test_a_wrong_key_is_refused_before_the_body_is_parsed(client):
    response = client.post("/v1", content=b"[" * 100_000, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "invalidApiKey"
