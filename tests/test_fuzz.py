"""Random task objects over REST and WebSocket: every one is answered with JSON, never a 500,
never a hang.

The tasks mix the real parameter names with random JSON values (so most fail validation, some
run), random keys and random task types; hostile ones put deep nesting, lone UTF-16 surrogates,
huge strings and huge arrays in any field. Generation runs on a fake engine so that a random
valid task (up to 2048 px, 100 steps) costs milliseconds.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from kiln.protocol.envelope import MAX_DEPTH
from tests.conftest import API_KEY, SD, new_uuid, post
from tests.server.hostile import HOSTILE_BODIES
from tests.service.fakes import fake_kiln

TASK_TYPES = ["imageInference", "imageUpload", "modelSearch", "getResponse", "ping",
              "imageControlNetPreProcess", "controlNetPreprocess", "authentication", "videoInference"]
PARAMETERS = ["model", "positivePrompt", "negativePrompt", "width", "height", "steps", "CFGScale",
              "clipSkip", "scheduler", "seed", "numberResults", "outputType", "outputFormat",
              "outputQuality", "includeCost", "deliveryMethod", "checkNSFW", "safety", "seedImage",
              "maskImage", "strength", "outpaint", "controlNet", "lora", "promptWeighting",
              "usePromptWeighting", "image", "search", "limit", "offset", "preProcessorType",
              "inputImage", "uploadEndpoint", "webhookURL"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12), st.sampled_from([SD, "URL", "PNG", "async", "sync", "a cat in a hat", "fast"]),
    st.sampled_from([64, 128, 1, 20, 0, -1, 2048]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(PARAMETERS + ["x"]), inner, max_size=3),
    max_leaves=6,
)
tasks = st.fixed_dictionaries(
    {"taskType": st.one_of(st.sampled_from(TASK_TYPES), values), "taskUUID": st.one_of(st.builds(new_uuid), values)},
    optional=dict.fromkeys(PARAMETERS, values) | {"steps": st.integers(1, 4), "model": st.just(SD)},
)
bodies = st.one_of(st.lists(st.one_of(tasks, values), min_size=0, max_size=4), values)


def test_random_tasks_never_crash_or_hang(settings):
    with fake_kiln(settings, delivery_attempts=1, delivery_timeout_s=1.0) as (client, _, _):

        @hypothesis_settings(max_examples=300, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(HealthCheck))
        @given(body=bodies)
        @example(body=[{"taskType": "authentication", "apiKey": "x"}, {"taskType": "authentication"}])
        @example(body=[{"taskType": "imageControlNetPreProcess", "taskUUID": new_uuid(), "preProcessorType": []}])
        @example(body=[{"taskType": "imageInference", "taskUUID": new_uuid(), "model": SD,
                        "positivePrompt": {"a": 1}, "numberResults": [2], "safety": "yes"}])
        def check(body):
            started = time.monotonic()
            response = post(client, body)
            assert time.monotonic() - started < 10, body
            assert response.status_code != 500 or "inferenceError" in response.text, (body, response.text)
            reply = response.json()
            assert isinstance(reply, dict) and set(reply) <= {"data", "errors"} and reply, (body, reply)
            for error in reply.get("errors", []):
                assert error["code"] and error["message"], error

        check()


# raw JSON text, ASCII: what a hostile client can put where a value goes
lone_surrogates = st.builds(
    lambda before, code, after: json.dumps(before)[:-1] + f"\\u{code:04x}" + json.dumps(after)[1:],
    st.text(max_size=4), st.integers(0xD800, 0xDFFF), st.text(max_size=4),
)
deep_nesting = st.builds(
    lambda depth, kind: "[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth,
    st.integers(MAX_DEPTH, 20_000), st.sampled_from(["array", "object"]),
)
huge_values = st.builds(
    lambda size, kind: "[" + ",".join(["0"] * size) + "]" if kind == "array" else '"' + "a" * size * 8 + '"',
    st.integers(10_000, 200_000), st.sampled_from(["array", "string"]),
)
hostile_values = st.one_of(lone_surrogates, deep_nesting, huge_values)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> str:
    """A task whose field (any of them, the routing ones included) or key holds hostile JSON."""
    task = draw(tasks)
    if draw(st.booleans()):
        key = draw(lone_surrogates)
        return "[" + json.dumps(task)[:-1] + ", " + key + ": 1}]"
    field = draw(st.sampled_from(["taskType", "taskUUID", *PARAMETERS]))
    task[field] = "PLACEHOLDER"
    return "[" + json.dumps(task).replace('"PLACEHOLDER"', draw(hostile_values), 1) + "]"


def check_reply(reply, body):
    assert isinstance(reply, dict) and set(reply) <= {"data", "errors"} and reply, (body[:200], reply)
    for error in reply.get("errors", []):
        assert error["code"] and error["message"], error
        assert error["code"] != "internalError", (body[:200], error)


def test_hostile_bodies_get_typed_errors_over_rest(settings):
    with fake_kiln(settings, delivery_attempts=1, delivery_timeout_s=1.0) as (client, _, _):

        @hypothesis_settings(max_examples=60, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(HealthCheck))
        @given(body=hostile_bodies())
        def check(body):
            response = client.post("/v1", content=body.encode(), headers={"Authorization": f"Bearer {API_KEY}"})
            assert response.status_code != 500 or "inferenceError" in response.text, (body[:200], response.text)
            check_reply(response.json(), body)

        check()


def test_random_and_hostile_frames_get_typed_errors_over_websocket(settings):
    ping = json.dumps([{"taskType": "ping", "ping": True}])
    with fake_kiln(settings, delivery_attempts=1, delivery_timeout_s=1.0) as (client, _, _):

        @hypothesis_settings(max_examples=60, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(HealthCheck))
        @given(body=st.one_of(hostile_bodies(), bodies.map(json.dumps)))
        def check(body):
            with client.websocket_connect("/v1") as ws:
                ws.send_text(json.dumps([{"taskType": "authentication", "apiKey": API_KEY}]))
                assert "data" in ws.receive_json()
                ws.send_text(body)
                ws.send_text(ping)  # every reply to the body comes first, or the task runs on
                while (reply := ws.receive_json()) != {"data": [{"taskType": "ping", "pong": True}]}:
                    check_reply(reply, body)

        check()


def test_concurrent_senders_of_hostile_bodies_each_get_a_typed_error(settings):
    bodies = [body for name, body in HOSTILE_BODIES.items() if "MB" not in name] * 4
    with fake_kiln(settings) as (client, _, _), ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(
            lambda body: client.post("/v1", content=body.encode(), headers={"Authorization": f"Bearer {API_KEY}"}),
            bodies,
        ))
    assert [r.status_code for r in responses] == [400] * len(bodies)
    for response, body in zip(responses, bodies, strict=True):
        check_reply(response.json(), body)
