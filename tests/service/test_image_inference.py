"""Text-to-image through the public REST API, judged on the images that come back."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SDXL, decode_image, inference, post


def generate(client, **overrides):
    response = post(client, [inference(**overrides)])
    assert response.status_code == 200, response.json()
    return response.json()["data"]


def pixels(item) -> np.ndarray:
    return np.asarray(decode_image(item).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(("fmt", "pil_format"), [("PNG", "PNG"), ("JPG", "JPEG"), ("WEBP", "WEBP")])
def test_output_format_and_size(client, fmt, pil_format):
    (item,) = generate(client, outputFormat=fmt, width=192, height=128)
    image = decode_image(item)
    assert image.format == pil_format
    assert image.size == (192, 128)


def test_number_results_gives_consecutive_seeds_and_distinct_images(client):
    items = generate(client, numberResults=3, seed=77)
    assert [i["seed"] for i in items] == [77, 78, 79]
    assert len({i["imageUUID"] for i in items}) == 3
    assert not np.array_equal(pixels(items[0]), pixels(items[1]))


def test_same_seed_same_bytes_and_image_i_equals_seed_plus_i_alone(client):
    (a,) = generate(client, seed=5)
    (b,) = generate(client, seed=5)
    assert a["imageBase64Data"] == b["imageBase64Data"]
    second = generate(client, seed=4, numberResults=2)[1]
    assert second["seed"] == 5
    assert second["imageBase64Data"] == a["imageBase64Data"]


def test_random_seed_is_returned_and_reproduces_the_image(client):
    (a,) = generate(client, seed=None)
    assert 1 <= a["seed"] < 2**32
    (b,) = generate(client, seed=a["seed"])
    assert a["imageBase64Data"] == b["imageBase64Data"]


@pytest.mark.parametrize(
    "change",
    [
        {"steps": 3},
        {"CFGScale": 1.5},
        {"clipSkip": 1},
        {"clipSkip": 2},
        {"scheduler": "Euler a"},
        {"scheduler": "DPM++ 2M Karras"},
        {"negativePrompt": "a green square"},
        {"positivePrompt": "a yellow star on a black background"},
    ],
)
def test_each_parameter_changes_the_image(client, change):
    base = pixels(generate(client)[0])
    changed = pixels(generate(client, **change)[0])
    assert np.abs(base - changed).mean() > 0.1, f"{change} did not change the image"


def test_output_type_url_serves_the_image(client):
    (item,) = generate(client, outputType="URL", outputFormat="WEBP")
    assert item["imageURL"].endswith(f"/media/{item['imageUUID']}.webp")
    response = client.get(item["imageURL"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(response.content)).size == (128, 128)
    assert client.get(f"/media/{item['imageUUID']}.png").status_code == 404


def test_output_type_data_uri(client):
    (item,) = generate(client, outputType="dataURI", outputFormat="JPG")
    assert item["imageDataURI"].startswith("data:image/jpeg;base64,")
    assert decode_image(item).format == "JPEG"


def test_output_quality_changes_jpeg_bytes(client):
    (low,) = generate(client, outputFormat="JPG", outputQuality=20)
    (high,) = generate(client, outputFormat="JPG", outputQuality=99)
    assert len(base64.b64decode(low["imageBase64Data"])) < len(base64.b64decode(high["imageBase64Data"]))


def test_include_cost_follows_the_price_model(client, services):
    (small,) = generate(client, includeCost=True, width=128, height=128, steps=2)
    (large,) = generate(client, includeCost=True, width=256, height=128, steps=4)
    per_mp_step = services.settings.prices.per_megapixel_step
    assert small["cost"] == pytest.approx(per_mp_step * 128 * 128 / 1e6 * 2)
    assert large["cost"] == pytest.approx(small["cost"] * 4)
    (plain,) = generate(client)
    assert "cost" not in plain


def test_catalog_defaults_apply_when_size_and_steps_are_omitted(client):
    (item,) = generate(client, width=None, height=None, steps=None)
    assert decode_image(item).size == (128, 128)


def test_sdxl_architecture(client):
    (a,) = generate(client, model=SDXL, width=128, height=192)
    assert decode_image(a).size == (128, 192)
    (b,) = generate(client, model=SDXL, width=128, height=192, clipSkip=1)
    assert a["imageBase64Data"] != b["imageBase64Data"]


def test_success_items_never_carry_error_fields(client):
    (item,) = generate(client)
    assert not {"code", "error", "errorId"} & item.keys()


def test_an_invalid_value_is_echoed_cut_short(client):
    huge = "x" * 1_000_000
    for task in (inference(width=huge), inference(taskUUID=huge), inference(deliveryMethod=huge)):
        [error] = post(client, [task]).json()["errors"]
        assert error["code"].startswith("invalid") and len(error["message"]) < 400, error["code"]
        assert "1000002 characters" in error["message"]
