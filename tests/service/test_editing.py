"""Image-to-image, inpainting and outpainting through REST `POST /v1`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from kiln.server import create_app
from tests.conftest import OTHER_KEY, SD, SDXL, decode_image, inference, new_uuid, post
from tests.images import b64, data_uri, encode, gradient, pixels, serving

INPAINT = "kiln:tiny-sd-inpaint@1"


def generate(client, key=None, **task):
    response = post(client, [inference(**task)], **({"key": key} if key else {}))
    body = response.json()
    assert response.status_code == 200, body
    return decode_image(body["data"][0])


def error(client, key=None, **task):
    response = post(client, [inference(**task)], **({"key": key} if key else {}))
    assert response.status_code >= 400, response.text
    [err] = response.json()["errors"]
    assert err["taskType"] == "imageInference"
    return err


def square_mask(size=128, box=(32, 32, 96, 96)) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, box)
    return mask


def mean_abs(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


# --- image inputs, every form --------------------------------------------------------------

def test_seed_image_in_every_form_with_strength_0_returns_that_image(client):
    seed = gradient()
    [uploaded] = post(client, [{"taskType": "imageUpload", "taskUUID": new_uuid(), "image": b64(seed)}]).json()["data"]
    with serving({"/seed.png": encode(seed)}) as base:
        for value in (uploaded["imageUUID"], data_uri(seed), b64(seed), f"{base}/seed.png"):
            out = generate(client, seedImage=value, strength=0)
            assert np.array_equal(pixels(out), pixels(seed)), value[:60]


def test_seed_image_can_be_a_previous_generation(client):
    first = post(client, [inference(outputType="URL")]).json()["data"][0]
    previous = generate(client)  # the same task inline: the same pixels
    again = generate(client, seedImage=first["imageUUID"], strength=0)
    assert np.array_equal(pixels(again), pixels(previous))
    assert mean_abs(generate(client, seedImage=first["imageUUID"], strength=0.6, steps=4), previous) > 1


def test_unknown_and_other_keys_uuids_are_answered_alike(client):
    [uploaded] = post(client, [{"taskType": "imageUpload", "taskUUID": new_uuid(), "image": b64(gradient())}]).json()["data"]
    other = error(client, key=OTHER_KEY, seedImage=uploaded["imageUUID"])
    unknown = error(client, key=OTHER_KEY, seedImage=new_uuid())
    assert other["code"] == unknown["code"] == "invalidSeedImage"
    assert other["parameter"] == unknown["parameter"] == "seedImage"


@pytest.mark.parametrize(("value", "code"), [
    (b64(Image.new("L", (5000, 5000))), "invalidSeedImage"),
    ("aGVsbG8gd29ybGQ=", "invalidSeedImage"),
])
def test_bomb_and_undecodable_seed_images_are_refused(client, value, code):
    err = error(client, seedImage=value)
    assert (err["code"], err["parameter"]) == (code, "seedImage")


def test_oversize_mask_body_is_refused_with_413(client):
    response = post(client, [inference(seedImage=b64(gradient()), maskImage="A" * (28 * 1024 * 1024))])
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "invalidMaskImage"


def test_loopback_url_is_refused_when_private_urls_are_off(services):
    guarded = dataclasses.replace(
        services, settings=dataclasses.replace(services.settings, allow_private_urls=False)
    )
    client = TestClient(create_app(guarded))  # no lifespan: the shared services stay open
    with serving({"/seed.png": encode(gradient())}) as base:
        err = error(client, seedImage=f"{base}/seed.png")
    assert (err["code"], err["parameter"]) == ("invalidSeedImage", "seedImage")
    assert "127.0.0.1" in err["message"]


# --- image-to-image ---------------------------------------------------------------------------

def test_img2img_is_deterministic_by_seed_and_works_on_sdxl(client):
    for model in (SD, SDXL):
        first = generate(client, model=model, seedImage=b64(gradient()), seed=7)
        assert np.array_equal(pixels(first), pixels(generate(client, model=model, seedImage=b64(gradient()), seed=7)))
        assert mean_abs(first, generate(client, model=model, seedImage=b64(gradient()), seed=8)) > 1


def test_tiny_strength_with_few_steps_still_runs_one_step(client):
    seed = b64(gradient())
    # int(2 × 0.05) = 0 denoising steps in diffusers; Kiln schedules 20 so that one runs.
    low = generate(client, seedImage=seed, strength=0.05, steps=2)
    assert np.array_equal(pixels(low), pixels(generate(client, seedImage=seed, strength=0.05, steps=20)))
    assert not np.array_equal(pixels(low), pixels(generate(client, seedImage=seed, strength=0.1, steps=20)))


def test_size_defaults_to_the_seed_rounded_down_and_given_sizes_resize_it(client):
    seed = b64(gradient(200, 150))
    assert generate(client, seedImage=seed, width=None, height=None, strength=0).size == (192, 128)
    out = generate(client, seedImage=seed, width=256, height=128, strength=0)
    assert out.size == (256, 128)
    assert mean_abs(out, gradient(200, 150).resize((256, 128), Image.Resampling.LANCZOS)) < 1


# --- inpainting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [SD, SDXL, INPAINT])
def test_inpainting_keeps_pixels_outside_the_mask_and_changes_inside(client, model):
    seed, mask = gradient(), square_mask()
    out = generate(client, model=model, seedImage=b64(seed), maskImage=b64(mask))
    keep = np.asarray(mask) == 0
    diff = np.abs(pixels(out) - pixels(seed))
    assert diff[keep].max() <= 1
    assert diff[40:88, 40:88].mean() > 10


def test_mask_of_another_size_and_rgba_mask_are_resized(client):
    seed = gradient()
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.paste((255, 255, 255, 255), (16, 16, 48, 48))
    out = generate(client, seedImage=b64(seed), maskImage=data_uri(rgba))
    diff = np.abs(pixels(out) - pixels(seed))
    assert diff[:30].max() <= 1 and diff[100:].max() <= 1
    assert diff[40:88, 40:88].mean() > 10


def test_mask_margin_inpaints_the_crop_and_pastes_it_back(client):
    seed, mask = gradient(256, 256), square_mask(256, (100, 100, 140, 140))
    out = generate(client, seedImage=b64(seed), maskImage=b64(mask), maskMargin=32, width=None, height=None)
    assert out.size == (256, 256)
    keep = np.asarray(mask) == 0
    diff = np.abs(pixels(out) - pixels(seed))
    assert diff[keep].max() <= 1
    assert diff[106:134, 106:134].mean() > 10
    whole = generate(client, seedImage=b64(seed), maskImage=b64(mask), width=None, height=None)
    assert mean_abs(out, whole) > 0.1  # the crop was worked on separately


def test_inpainting_model_refuses_text_to_image_and_img2img(client):
    for task in ({}, {"seedImage": b64(gradient())}):
        err = error(client, model=INPAINT, **task)
        assert (err["code"], err["parameter"]) == ("invalidModel", "model")


# --- outpainting --------------------------------------------------------------------------------

def test_outpainting_keeps_the_original_at_its_offset_and_fills_the_borders(client):
    seed = gradient()
    out = generate(client, seedImage=b64(seed), outpaint={"top": 64, "left": 64, "right": 0, "bottom": 0},
                   width=192, height=192)
    assert out.size == (192, 192)
    result = pixels(out)
    assert np.abs(result[64:, 64:] - pixels(seed)).max() <= 1
    edge_padding = np.pad(pixels(seed), ((64, 0), (64, 0), (0, 0)), mode="edge")
    assert np.abs(result[:64] - edge_padding[:64]).mean() > 10
    assert np.abs(result[:, :64] - edge_padding[:, :64]).mean() > 10


def test_outpaint_blur_feathers_only_the_seam(client):
    seed = gradient()
    out = pixels(generate(client, seedImage=b64(seed), outpaint={"right": 64, "blur": 16},
                          width=192, height=None))
    assert np.abs(out[:, :112] - pixels(seed)[:, :112]).max() <= 1  # before the seam band
    assert np.abs(out[:, 116:128] - pixels(seed)[:, 116:128]).mean() > 1  # in it


# --- validation across modes --------------------------------------------------------------------

@pytest.mark.parametrize(("task", "code", "parameter"), [
    ({"maskImage": b64(square_mask())}, "missingSeedImage", "seedImage"),
    ({"outpaint": {"top": 64}}, "missingSeedImage", "seedImage"),
    ({"seedImage": b64(gradient()), "strength": 1.5}, "invalidStrength", "strength"),
    ({"seedImage": b64(gradient()), "strength": -0.1}, "invalidStrength", "strength"),
    ({"seedImage": b64(gradient()), "maskImage": b64(Image.new("L", (64, 128)))}, "invalidMaskImage", "maskImage"),
    ({"seedImage": b64(gradient()), "maskImage": b64(square_mask()), "maskMargin": 10}, "invalidMaskMargin", "maskMargin"),
    ({"seedImage": b64(gradient()), "maskMargin": 64}, "missingMaskImage", "maskImage"),
    ({"seedImage": b64(gradient()), "maskImage": b64(square_mask()), "maskMargin": 64,
      "outpaint": {"top": 64}}, "incompatibleParameters", "maskMargin"),
    ({"seedImage": b64(gradient()), "outpaint": {"top": 50}}, "invalidOutpaint", "outpaint.top"),
    ({"seedImage": b64(gradient()), "outpaint": {"top": 64, "blur": 40}}, "invalidOutpaint", "outpaint.blur"),
    ({"seedImage": b64(gradient(100, 100)), "outpaint": {"top": 64}, "width": None, "height": None},
     "invalidOutpaint", "outpaint"),
])
def test_invalid_mode_parameters_are_typed_errors(client, task, code, parameter):
    err = error(client, **task)
    assert (err["code"], err["parameter"]) == (code, parameter)


def test_outpaint_size_mismatch_states_the_expected_size(client):
    err = error(client, seedImage=b64(gradient()), outpaint={"top": 64, "bottom": 64}, width=128, height=128)
    assert (err["code"], err["parameter"]) == ("invalidHeight", "height")
    assert "256" in err["message"]
