"""`lora[]` through the REST API: effects measured on the images that come back."""

from __future__ import annotations

import numpy as np

from tests.conftest import SDXL, decode_image, inference, post

LORA = "kiln:tiny-lora@1"
KOHYA = "kiln:tiny-lora-kohya@1"


def pixels(client, **overrides) -> np.ndarray:
    response = post(client, [inference(**overrides)])
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    image = decode_image(item)
    assert image.size == (128, 128)
    return np.asarray(image, dtype=np.int16)


def error_of(client, **overrides) -> dict:
    response = post(client, [inference(**overrides)])
    assert response.status_code >= 400, response.text
    return response.json()["errors"][0]


def test_a_lora_changes_the_image_and_leaves_later_requests_untouched(client):
    plain = pixels(client)
    with_lora = pixels(client, lora=[{"model": LORA, "weight": 1}])
    assert np.abs(with_lora - plain).mean() > 1
    assert np.array_equal(pixels(client, lora=[{"model": LORA, "weight": 1}]), with_lora)
    assert np.array_equal(pixels(client), plain)  # the adapter is off again, not unloaded by chance


def test_kohya_and_diffusers_formats_both_load_and_mix(client):
    plain = pixels(client)
    peft = pixels(client, lora=[{"model": LORA}])
    kohya = pixels(client, lora=[{"model": KOHYA, "weight": 1}])
    both = pixels(client, lora=[{"model": LORA, "weight": 1}, {"model": KOHYA, "weight": 1}])
    assert np.abs(kohya - plain).mean() > 1
    assert np.abs(kohya - peft).mean() > 1
    assert np.abs(both - peft).mean() > 0.5 and np.abs(both - kohya).mean() > 0.5


def test_weights_are_scaled_to_sum_one(client):
    # one LoRA at any non-zero weight is that LoRA at 1; 2:2 is the same mix as 1:1
    assert np.array_equal(pixels(client, lora=[{"model": LORA, "weight": 0.3}]),
                          pixels(client, lora=[{"model": LORA, "weight": 1}]))
    assert np.array_equal(
        pixels(client, lora=[{"model": LORA, "weight": 2}, {"model": KOHYA, "weight": 2}]),
        pixels(client, lora=[{"model": LORA, "weight": 1}, {"model": KOHYA, "weight": 1}]),
    )
    uneven = pixels(client, lora=[{"model": LORA, "weight": 3}, {"model": KOHYA, "weight": 1}])
    even = pixels(client, lora=[{"model": LORA, "weight": 1}, {"model": KOHYA, "weight": 1}])
    assert np.abs(uneven - even).mean() > 0.1


def test_a_lora_of_another_architecture_is_a_typed_error(client):
    error = error_of(client, model=SDXL, lora=[{"model": LORA, "weight": 1}])
    assert error["code"] == "invalidLora"
    assert error["parameter"] == "lora[0].model"
    assert "sd1x" in error["message"] and "sdxl" in error["message"]


def test_lora_model_errors_name_the_entry(client):
    unknown = error_of(client, lora=[{"model": LORA}, {"model": "kiln:nope@1"}])
    assert (unknown["code"], unknown["parameter"]) == ("unknownModel", "lora[1].model")
    checkpoint = error_of(client, lora=[{"model": "kiln:tiny-sd@1"}])
    assert (checkpoint["code"], checkpoint["parameter"]) == ("invalidLora", "lora[0].model")
    malformed = error_of(client, lora=[{"model": "not an air"}])
    assert malformed["parameter"] == "lora[0].model"
    weight = error_of(client, lora=[{"model": LORA, "weight": "heavy"}])
    assert (weight["code"], weight["parameter"]) == ("invalidLora", "lora[0].weight")
    missing = error_of(client, lora=[{"weight": 1}])
    assert (missing["code"], missing["parameter"]) == ("missingLora", "lora[0].model")
