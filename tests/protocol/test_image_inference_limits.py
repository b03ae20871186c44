"""Every Part A limit of imageInference, just outside its range, answered by a typed error."""

from __future__ import annotations

import pytest

from tests.conftest import inference, post

OUT_OF_RANGE = [
    ("positivePrompt", "abc", "invalidPositivePrompt"),
    ("positivePrompt", "x" * 2001, "invalidPositivePrompt"),
    ("positivePrompt", 42, "invalidPositivePrompt"),
    ("negativePrompt", "abc", "invalidNegativePrompt"),
    ("negativePrompt", "x" * 2001, "invalidNegativePrompt"),
    ("width", 64, "invalidWidth"),
    ("width", 2112, "invalidWidth"),
    ("width", 200, "invalidWidth"),
    ("width", "512", "invalidWidth"),
    ("height", 64, "invalidHeight"),
    ("height", 2112, "invalidHeight"),
    ("height", 130, "invalidHeight"),
    ("steps", 0, "invalidSteps"),
    ("steps", 101, "invalidSteps"),
    ("steps", 2.5, "invalidSteps"),
    ("CFGScale", -0.5, "invalidCFGScale"),
    ("CFGScale", 50.5, "invalidCFGScale"),
    ("clipSkip", -1, "invalidClipSkip"),
    ("clipSkip", 3, "invalidClipSkip"),
    ("numberResults", 0, "invalidNumberResults"),
    ("numberResults", 21, "invalidNumberResults"),
    ("numberResults", -1, "invalidNumberResults"),
    ("seed", 0, "invalidSeed"),
    ("seed", 2**63, "invalidSeed"),
    ("outputQuality", 19, "invalidOutputQuality"),
    ("outputQuality", 100, "invalidOutputQuality"),
    ("outputType", "png", "invalidOutputType"),
    ("outputType", ["URL", "dataURI"], "invalidOutputType"),
    ("outputFormat", "GIF", "invalidOutputFormat"),
    ("scheduler", "NotAScheduler", "invalidScheduler"),
    ("includeCost", "yes", "invalidIncludeCost"),
    ("model", "not-an-air", "invalidModel"),
    ("model", "civitai:999@1", "unknownModel"),
]


@pytest.mark.parametrize(("parameter", "value", "code"), OUT_OF_RANGE)
def test_out_of_range_is_a_typed_error_naming_the_parameter(client, parameter, value, code):
    task = inference(**{parameter: value})
    response = post(client, [task])
    assert response.status_code in (400, 404)
    (error,) = response.json()["errors"]
    assert error["code"] == code
    assert error["parameter"] == parameter
    assert error["taskType"] == "imageInference"
    assert error["taskUUID"] == task["taskUUID"]
    assert parameter in error["message"]


@pytest.mark.parametrize(
    ("parameter", "code"),
    [("positivePrompt", "missingPositivePrompt"), ("model", "missingModel")],
)
def test_missing_required_parameter(client, parameter, code):
    task = inference(**{parameter: None})
    (error,) = post(client, [task]).json()["errors"]
    assert (error["code"], error["parameter"]) == (code, parameter)


def test_range_errors_carry_min_max_and_type(client):
    (error,) = post(client, [inference(width=100)]).json()["errors"]
    assert error["min"] == 128 and error["max"] == 2048 and error["type"] == "integer"
    assert error["multiplier"] == 64
    (error,) = post(client, [inference(outputFormat="BMP")]).json()["errors"]
    assert error["allowedValues"] == ["PNG", "JPG", "WEBP"]


@pytest.mark.parametrize(
    "parameter",
    ["referenceImages", "lycoris"],  # controlNet, lora, embeddings, ipAdapters, vae, refiner: tests/service
)
def test_unimplemented_parameters_are_refused_not_ignored(client, parameter):
    value = [{"model": "civitai:1@1"}]
    (error,) = post(client, [inference(**{parameter: value})]).json()["errors"]
    assert error["code"] == "unsupportedParameter"
    assert error["parameter"] == parameter


def test_extra_keys_the_sdks_send_are_tolerated(client):
    task = inference(
        deliveryMethod="sync", customTaskUUID="x", retry=2, controlNet=[], lora=[],
        embeddings=[], ipAdapters=[], refiner=None, checkNSFW=False, includeCost=False,
        outputType=["base64Data"], outputFormat="png", extraUnknownKey={"a": 1},
    )
    response = post(client, [task])
    assert response.status_code == 200, response.json()
    (item,) = response.json()["data"]
    assert item["taskUUID"] == task["taskUUID"]
