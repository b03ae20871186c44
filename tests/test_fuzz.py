"""Random task objects over REST: every one is answered with JSON, never a 500, never a hang.

The tasks mix the real parameter names with random JSON values (so most fail validation, some
run), random keys and random task types. Generation runs on a fake engine so that a random valid
task (up to 2048 px, 100 steps) costs milliseconds.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import SD, new_uuid, post
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
