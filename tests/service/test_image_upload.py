"""`imageUpload` through REST: every input form, storage with its owner, the size cap."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import API_KEY, OTHER_KEY, new_uuid, post
from tests.images import b64, data_uri, encode, gradient, pixels, serving


def upload(client, image, key=API_KEY):
    return post(client, [{"taskType": "imageUpload", "taskUUID": new_uuid(), "image": image}], key=key)


def fetch(client, item) -> Image.Image:
    response = client.get("/media/" + item["imageURL"].split("/media/", 1)[1])
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


@pytest.mark.parametrize("form", ["dataURI", "base64", "URL"])
def test_upload_answers_uuid_and_url_of_the_same_pixels(client, form):
    image = gradient(96, 64)
    with serving({"/up.png": encode(image)}) as base:
        value = {"dataURI": data_uri(image), "base64": b64(image), "URL": f"{base}/up.png"}[form]
        response = upload(client, value)
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    assert item["taskType"] == "imageUpload"
    assert item["imageURL"].endswith(f"/media/{item['imageUUID']}.png")
    stored = fetch(client, item)
    assert stored.format == "PNG"
    assert np.array_equal(pixels(stored), pixels(image))


def test_jpeg_upload_is_stored_as_jpg_and_a_long_side_over_2048_is_scaled_down(client):
    [item] = upload(client, b64(gradient(3000, 1000), "JPEG")).json()["data"]
    assert item["imageURL"].endswith(".jpg")
    stored = fetch(client, item)
    assert stored.format == "JPEG"
    assert stored.size == (2048, 683)


def test_own_uuid_is_answered_with_itself_and_another_keys_as_unknown(client):
    [item] = upload(client, b64(gradient(64, 64))).json()["data"]
    [again] = upload(client, item["imageUUID"]).json()["data"]
    assert again == {**item, "taskUUID": again["taskUUID"]}
    other = upload(client, item["imageUUID"], key=OTHER_KEY).json()["errors"][0]
    unknown = upload(client, new_uuid(), key=OTHER_KEY).json()["errors"][0]
    assert other["code"] == unknown["code"] == "invalidImage"
    assert other["parameter"] == unknown["parameter"] == "image"


@pytest.mark.parametrize(("task", "code"), [
    ({}, "missingImage"),
    ({"image": "bm90IGFuIGltYWdl"}, "invalidImage"),
    ({"image": b64(Image.new("L", (5000, 5000)))}, "invalidImage"),
])
def test_bad_uploads_are_typed_errors(client, task, code):
    response = post(client, [{"taskType": "imageUpload", "taskUUID": new_uuid(), **task}])
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["code"] == code
    assert error["parameter"] == "image"
    assert error["taskType"] == "imageUpload"
