"""ControlNet preprocessing through the REST API, under both task names."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import new_uuid, post
from tests.preprocess.test_builtin import near_the_outline, outlined
from tests.service.test_lora import pixels


def scene_png(size: tuple[int, int] = (128, 128)) -> bytes:
    image = Image.new("RGB", size, (10, 10, 10))
    ImageDraw.Draw(image).rectangle([32, 40, 95, 87], fill=(240, 240, 240))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def preprocess(**fields) -> dict:
    return {
        "taskType": "imageControlNetPreProcess", "taskUUID": new_uuid(),
        "inputImage": base64.b64encode(scene_png()).decode(), "preProcessorType": "canny",
        "outputType": "base64Data", **fields,
    }


def guide_of(item: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item["guideImageBase64Data"]))).convert("L"))


def run(client, **fields) -> dict:
    response = post(client, [preprocess(**fields)])
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    return item


@pytest.mark.parametrize("task_type", ["imageControlNetPreProcess", "controlNetPreprocess"])
def test_canny_edges_sit_on_the_input_edges(client, task_type):
    item = run(client, taskType=task_type)
    assert item["taskType"] == task_type
    edges = guide_of(item) > 127
    ys, xs = np.nonzero(edges)
    assert len(xs) > 150  # the rectangle's outline: about 2 x (64 + 48) pixels
    # every edge pixel lies on the rectangle's border, within a pixel
    on_vertical = (np.abs(xs - 32) <= 1) | (np.abs(xs - 95) <= 1)
    on_horizontal = (np.abs(ys - 40) <= 1) | (np.abs(ys - 87) <= 1)
    assert (on_vertical | on_horizontal).all()
    assert not edges[45:83, 37:91].any() and not edges[:35].any()


def test_reply_fields_and_stored_images(client):
    item = run(client, outputType="URL")
    assert item["guideImageURL"].endswith(f"/media/{item['guideImageUUID']}.png")
    assert item["inputImageUUID"] != item["guideImageUUID"]
    media = client.get("/media/" + item["guideImageURL"].split("/media/", 1)[1])
    assert media.status_code == 200 and media.content.startswith(b"\x89PNG")
    # an input given as a UUID is not stored again
    again = run(client, inputImage=item["inputImageUUID"], outputType="dataURI", outputFormat="JPG")
    assert again["inputImageUUID"] == item["inputImageUUID"]
    assert again["guideImageDataURI"].startswith("data:image/jpeg;base64,")


def test_the_guide_uuid_is_usable_as_guide_image(client):
    item = run(client)
    control = {"model": "kiln:tiny-controlnet@1"}
    by_uuid = pixels(client, controlNet=[{**control, "guideImage": item["guideImageUUID"]}])
    by_data = pixels(client, controlNet=[{**control, "guideImage": item["guideImageBase64Data"]}])
    assert np.array_equal(by_uuid, by_data)


def test_width_and_height_downscale_keeping_the_aspect(client):
    wide = base64.b64encode(scene_png((256, 128))).decode()
    assert guide_of(run(client, inputImage=wide, width=64)).shape == (32, 64)
    assert guide_of(run(client, inputImage=wide, height=64)).shape == (64, 128)
    assert guide_of(run(client, inputImage=wide, width=96, height=64)).shape == (48, 96)
    assert guide_of(run(client, inputImage=wide, width=1024)).shape == (128, 256)  # never upscaled


@pytest.mark.parametrize("kind", [
    "tile", "shuffle", "tile_gaussian", "lineart", "lineart_standard", "scribble", "mlsd",
])
def test_other_built_ins(client, kind):
    guide = guide_of(run(client, preProcessorType=kind))
    assert guide.shape == (128, 128)


@pytest.mark.parametrize("kind", ["lineart", "scribble", "mlsd"])
def test_line_built_ins_draw_the_outline_of_a_drawing(client, kind):
    buffer = io.BytesIO()
    outlined().save(buffer, format="PNG")
    lines = guide_of(run(client, preProcessorType=kind, inputImage=base64.b64encode(buffer.getvalue()).decode())) > 60
    ys, xs = np.nonzero(lines)
    assert len(xs) > 100
    assert near_the_outline(ys, xs, tolerance=3).all()


@pytest.mark.parametrize(("fields", "code", "parameter"), [
    ({"preProcessorType": "xray"}, "invalidPreProcessorType", "preProcessorType"),
    ({"lowThresholdCanny": 200, "highThresholdCanny": 100}, "invalidLowThresholdCanny", "lowThresholdCanny"),
    ({"highThresholdCanny": 300}, "invalidHighThresholdCanny", "highThresholdCanny"),
    ({"inputImage": "nope"}, "invalidInputImage", "inputImage"),
    ({"inputImage": None}, "missingInputImage", "inputImage"),
    ({"width": 10}, "invalidWidth", "width"),
])
def test_bad_requests_are_typed_errors(client, fields, code, parameter):
    response = post(client, [preprocess(**fields)])
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert (error["code"], error["parameter"]) == (code, parameter)


def test_async_delivery_then_get_response_polling(client):
    """What the JS SDK does: an async preprocess task, then getResponse until it succeeds."""
    task = preprocess(deliveryMethod="async")
    ack = post(client, [task])
    assert ack.status_code == 200, ack.text
    assert ack.json()["data"][0]["taskUUID"] == task["taskUUID"]
    deadline = time.monotonic() + 20
    while True:
        polled = post(client, [{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]).json()
        assert not polled.get("errors"), polled
        done = [i for i in polled.get("data", []) if i.get("status") == "success"]
        if done:
            break
        assert time.monotonic() < deadline, polled
        time.sleep(0.2)
    assert done[0]["taskType"] == "imageControlNetPreProcess"
    assert done[0]["guideImageUUID"] and guide_of(done[0]).shape == (128, 128)
