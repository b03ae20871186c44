"""`modelSearch` through the REST API, over the demo catalog."""

from __future__ import annotations

import pytest

from tests.conftest import new_uuid, post

DEMO = {"kiln:tiny-sd@1", "kiln:tiny-sdxl@1", "kiln:tiny-sd-inpaint@1", "kiln:tiny-controlnet@1",
        "kiln:tiny-controlnet-sdxl@1", "kiln:tiny-lora@1", "kiln:tiny-lora-kohya@1"}


def search(client, **filters) -> dict:
    response = post(client, [{"taskType": "modelSearch", "taskUUID": new_uuid(), **filters}])
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert item["taskType"] == "modelSearch"
    return item


def airs(item: dict) -> set[str]:
    return {result["air"] for result in item["results"]}


def test_everything_with_every_field(client):
    item = search(client)
    assert airs(item) >= DEMO and item["totalResults"] == len(item["results"])
    by_air = {r["air"]: r for r in item["results"]}
    for result in item["results"]:
        assert isinstance(result["tags"], list) and result["private"] is False
        for field in ("name", "version", "category", "architecture", "heroImage", "comment"):
            assert isinstance(result[field], str)
    sd = by_air["kiln:tiny-sd@1"]
    assert (sd["category"], sd["architecture"], sd["type"]) == ("checkpoint", "sd1x", "base")
    assert (sd["defaultWidth"], sd["defaultHeight"], sd["defaultSteps"], sd["defaultCFG"]) == (128, 128, 4, 7.0)
    assert sd["defaultScheduler"] == "Default" and "conditioning" not in sd
    assert by_air["kiln:tiny-sd-inpaint@1"]["defaultStrength"] == 0.8
    controlnet = by_air["kiln:tiny-controlnet@1"]
    assert controlnet["conditioning"] == "canny" and "defaultWidth" not in controlnet
    assert "positiveTriggerWords" in by_air["kiln:tiny-lora@1"]


@pytest.mark.parametrize(("filters", "expected"), [
    ({"category": "lora"}, {"kiln:tiny-lora@1", "kiln:tiny-lora-kohya@1"}),
    ({"category": "controlnet", "architecture": "sdxl"}, {"kiln:tiny-controlnet-sdxl@1"}),
    ({"conditioning": "canny"}, {"kiln:tiny-controlnet@1", "kiln:tiny-controlnet-sdxl@1"}),
    ({"type": "inpainting"}, {"kiln:tiny-sd-inpaint@1", "kiln:shapes-inpaint@1"}),
    ({"tags": "trained"}, {"kiln:shapes@1", "kiln:shapes-inpaint@1"}),
    ({"search": "KOHYA"}, {"kiln:tiny-lora-kohya@1"}),
    ({"search": "tiny-sdxl@1"}, {"kiln:tiny-sdxl@1"}),
    ({"search": "no such model"}, set()),
    ({"tags": ["demo", "random-weights"], "category": "checkpoint", "architecture": "sd1x"},
     {"kiln:tiny-sd@1", "kiln:tiny-sd-inpaint@1"}),
    ({"tags": "nothing-tagged-so"}, set()),
    ({"visibility": "private"}, set()),
    ({"visibility": "public", "category": "lora"}, {"kiln:tiny-lora@1", "kiln:tiny-lora-kohya@1"}),
])
def test_filters(client, filters, expected):
    item = search(client, **filters)
    assert airs(item) == expected and item["totalResults"] == len(expected)


def test_exact_name_ranks_first(client):
    item = search(client, search="tiny-sd")
    assert item["results"][0]["air"] == "kiln:tiny-sd@1" and len(item["results"]) >= 3


def test_paging(client):
    everything = search(client, limit=100)["results"]
    page = search(client, limit=2, offset=1)
    assert page["results"] == everything[1:3]
    assert page["totalResults"] == len(everything)


def test_python_sdk_extras_and_nulls_are_tolerated(client):
    item = search(client, search="tiny-lora", limit=20, offset=0, customTaskUUID="x", retry=2, tags=None)
    assert airs(item) == {"kiln:tiny-lora@1", "kiln:tiny-lora-kohya@1"}


@pytest.mark.parametrize(("filters", "code", "parameter"), [
    ({"limit": 0}, "invalidLimit", "limit"),
    ({"limit": 101}, "invalidLimit", "limit"),
    ({"offset": -1}, "invalidOffset", "offset"),
    ({"category": "sampler"}, "invalidCategory", "category"),
    ({"visibility": "secret"}, "invalidVisibility", "visibility"),
    ({"tags": [1, 2]}, "invalidTags", "tags"),
])
def test_bad_filters_are_typed_errors(client, filters, code, parameter):
    response = post(client, [{"taskType": "modelSearch", "taskUUID": new_uuid(), **filters}])
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert (error["code"], error["parameter"], error["taskType"]) == (code, parameter, "modelSearch")
