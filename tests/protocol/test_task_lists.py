"""Lists in an imageInference task are bounded (`controlNet[]` at most 4, `lora[]` at most 8) and
the decoded pixels of all its image inputs count against one budget: each refusal is a typed
400 naming the parameter and carrying the limit as `max`, and the other tasks of the request run."""

from __future__ import annotations

import dataclasses
import time

import pytest
from starlette.testclient import TestClient

from kiln.protocol.adapters import MAX_CONTROLNETS, MAX_LORAS
from kiln.server import create_app
from tests.conftest import inference, post
from tests.images import data_uri, gradient

CONTROLNET = "kiln:tiny-controlnet@1"
LORA = "kiln:tiny-lora@1"


def controlnets(count: int, guide: str | None = None) -> list[dict[str, object]]:
    guide = guide or data_uri(gradient(64, 64))
    return [{"model": CONTROLNET, "guideImage": guide} for _ in range(count)]


def test_500_controlnets_are_refused_at_once_and_the_other_tasks_run(client):
    flood = inference(controlNet=controlnets(500))
    started = time.monotonic()
    response = post(client, [flood])
    assert time.monotonic() - started < 5
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert (error["code"], error["parameter"], error["type"], error["max"]) == (
        "invalidControlNet", "controlNet", "array", MAX_CONTROLNETS)
    assert error["taskUUID"] == flood["taskUUID"] and "at most 4" in error["message"]

    other = inference()
    response = post(client, [inference(controlNet=controlnets(500)), other])
    assert response.status_code == 200
    assert [item["taskUUID"] for item in response.json()["data"]] == [other["taskUUID"]]
    assert response.json()["errors"][0]["code"] == "invalidControlNet"


@pytest.mark.parametrize(("parameter", "entries", "limit"), [
    ("controlNet", controlnets(MAX_CONTROLNETS + 1), MAX_CONTROLNETS),
    ("lora", [{"model": LORA, "weight": 1}] * (MAX_LORAS + 1), MAX_LORAS),
    ("lora", [{"model": "not an AIR"}] * 1000, MAX_LORAS),  # entries are not even looked at
])
def test_a_list_over_its_limit_is_a_typed_error_with_max(client, parameter, entries, limit):
    response = post(client, [inference(**{parameter: entries})])
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    code = f"invalid{parameter[0].upper()}{parameter[1:]}"
    assert (error["code"], error["parameter"], error["max"]) == (code, parameter, limit)


def test_a_list_at_its_limit_is_validated_entry_by_entry(client):
    entries = [{"model": "civitai:1@1", "guideImage": data_uri(gradient(64, 64))}] * MAX_CONTROLNETS
    (error,) = post(client, [inference(controlNet=entries)]).json()["errors"]
    assert error["parameter"] == "controlNet[0].model"


def test_decoded_input_pixels_of_a_task_count_against_one_budget(services):
    budget = 2 * 128 * 128
    budgeted = dataclasses.replace(
        services, settings=dataclasses.replace(services.settings, max_input_pixels_per_task=budget)
    )
    client = TestClient(create_app(budgeted))  # no lifespan: the shared services stay open
    image = data_uri(gradient(128, 128))
    over = inference(controlNet=controlnets(2, image), seedImage=image)
    within = inference(seedImage=image)
    response = post(client, [over, within])
    assert response.status_code == 200
    (error,) = response.json()["errors"]
    assert (error["code"], error["parameter"], error["max"]) == ("invalidSeedImage", "seedImage", budget)
    assert error["taskUUID"] == over["taskUUID"] and str(budget) in error["message"]
    assert [item["taskUUID"] for item in response.json()["data"]] == [within["taskUUID"]]
