"""`controlNet[]` through the REST API: effects measured on the images that come back."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import SDXL, decode_image, inference, post
from tests.service.test_lora import error_of, pixels

CONTROLNET = "kiln:tiny-controlnet@1"
CONTROLNET_XL = "kiln:tiny-controlnet-sdxl@1"


def guide_uri(shape: str = "square") -> str:
    """A canny-like guide: white outlines on black, as a PNG data URI."""
    image = Image.new("RGB", (128, 128))
    draw = ImageDraw.Draw(image)
    if shape == "square":
        draw.rectangle([24, 24, 100, 100], outline="white", width=3)
    else:
        draw.ellipse([16, 40, 112, 90], outline="white", width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def control(**fields) -> dict:
    return {"model": CONTROLNET, "guideImage": guide_uri(), **fields}


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).mean()) > 0.5


def test_weight_zero_equals_no_controlnet_and_weight_one_differs(client):
    plain = pixels(client)
    assert np.array_equal(pixels(client, controlNet=[control(weight=0)]), plain)
    full = pixels(client, controlNet=[control(weight=1)])
    assert differs(full, plain)
    half = pixels(client, controlNet=[control(weight=0.5)])
    assert differs(half, plain) and differs(half, full)


def test_the_guide_image_steers_the_result(client):
    square = pixels(client, controlNet=[control()])
    ellipse = pixels(client, controlNet=[control(guideImage=guide_uri("ellipse"))])
    assert differs(square, ellipse)


def test_start_and_end_change_the_result(client):
    full = pixels(client, steps=4, controlNet=[control()])
    late = pixels(client, steps=4, controlNet=[control(startStepPercentage=50)])
    early = pixels(client, steps=4, controlNet=[control(endStepPercentage=50)])
    assert differs(late, full) and differs(early, full) and differs(late, early)
    # the step form is the same window as the percentage form
    assert np.array_equal(pixels(client, steps=4, controlNet=[control(startStep=2)]), late)
    assert np.array_equal(pixels(client, steps=4, controlNet=[control(endStep=2)]), early)


def test_each_control_mode_differs(client):
    images = {mode: pixels(client, controlNet=[control(controlMode=mode)])
              for mode in ("balanced", "prompt", "controlnet")}
    assert differs(images["balanced"], images["prompt"])
    assert differs(images["balanced"], images["controlnet"])
    assert differs(images["prompt"], images["controlnet"])
    assert np.array_equal(pixels(client, controlNet=[control()]), images["balanced"])  # the default


def test_two_controlnets_at_once(client):
    one = pixels(client, controlNet=[control()])
    two = pixels(client, controlNet=[control(), control(guideImage=guide_uri("ellipse"), weight=0.7)])
    assert differs(one, two)


def test_python_sdk_nulls_and_extra_keys_are_accepted(client):
    sdk_style = control(weight=1, startStep=None, endStep=None, startStepPercentage=None,
                        endStepPercentage=None, controlMode=None, lowThresholdCanny=None,
                        highThresholdCanny=None, preprocessor="canny")
    assert np.array_equal(pixels(client, controlNet=[sdk_style]), pixels(client, controlNet=[control()]))


def test_sdxl_controlnet(client):
    def sdxl(**overrides) -> np.ndarray:
        response = post(client, [inference(model=SDXL, **overrides)])
        assert response.status_code == 200, response.text
        return np.asarray(decode_image(response.json()["data"][0]), dtype=np.int16)

    plain = sdxl()
    assert differs(sdxl(controlNet=[control(model=CONTROLNET_XL)]), plain)


def test_controlnet_with_image_to_image(client):
    seed = guide_uri("ellipse")
    edit = pixels(client, seedImage=seed, strength=0.9)
    controlled = pixels(client, seedImage=seed, strength=0.9, controlNet=[control()])
    assert differs(edit, controlled)


def test_controlnet_with_inpainting(client):
    mask = Image.new("L", (128, 128))
    ImageDraw.Draw(mask).rectangle([32, 32, 96, 96], fill=255)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    edit = dict(seedImage=guide_uri("ellipse"), maskImage=base64.b64encode(buffer.getvalue()).decode())
    inpainted = pixels(client, **edit)
    controlled = pixels(client, **edit, controlNet=[control()])
    assert differs(inpainted[32:96, 32:96], controlled[32:96, 32:96])
    assert np.abs(inpainted[:24] - controlled[:24]).max() <= 1  # outside the mask: kept


def png_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_inpainting_a_crop_uses_the_same_box_of_the_guide(client):
    """With maskMargin only the box around the mask is inpainted: the guide steers it with the
    part of the guide inside that box, not the whole guide squeezed into it."""
    mask = Image.new("L", (128, 128))
    ImageDraw.Draw(mask).rectangle([8, 8, 40, 40], fill=255)  # crop box: about (0, 0)-(72, 72)
    far, near, blank = (Image.new("RGB", (128, 128)) for _ in range(3))
    ImageDraw.Draw(far).rectangle([92, 92, 124, 124], outline="white", width=3)
    ImageDraw.Draw(near).rectangle([12, 12, 36, 36], outline="white", width=3)
    edit = dict(seedImage=guide_uri("ellipse"), maskImage=png_uri(mask), maskMargin=32)

    def inpainted(guide: Image.Image) -> np.ndarray:
        return pixels(client, **edit, controlNet=[control(guideImage=png_uri(guide))])

    assert np.array_equal(inpainted(far), inpainted(blank))  # outside the box: no effect
    assert differs(inpainted(near)[8:40, 8:40], inpainted(blank)[8:40, 8:40])


def test_clip_skip_lora_weighting_and_controlnet_combine(client):
    combined = dict(clipSkip=1, lora=[{"model": "kiln:tiny-lora@1", "weight": 1}],
                    promptWeighting="compel", positivePrompt="(small dog)1.3 robot",
                    controlNet=[control(controlMode="prompt")])
    everything = pixels(client, **combined)
    assert np.array_equal(pixels(client, **combined), everything)  # deterministic
    for left_out in ("clipSkip", "lora", "promptWeighting", "controlNet"):
        without = {k: v for k, v in combined.items() if k != left_out}
        assert differs(pixels(client, **without), everything), left_out


@pytest.mark.parametrize(("item", "code", "parameter"), [
    ({"model": CONTROLNET_XL}, "invalidControlNet", "controlNet[0].model"),
    ({"model": "kiln:tiny-lora@1"}, "invalidControlNet", "controlNet[0].model"),
    ({"model": "kiln:missing@1"}, "unknownModel", "controlNet[0].model"),
    ({"weight": 1.5}, "invalidControlNet", "controlNet[0].weight"),
    ({"controlMode": "both"}, "invalidControlNet", "controlNet[0].controlMode"),
    ({"startStep": 1, "startStepPercentage": 10}, "invalidControlNet", "controlNet[0].startStep"),
    ({"endStep": 1, "endStepPercentage": 10}, "invalidControlNet", "controlNet[0].endStep"),
    ({"startStepPercentage": 100}, "invalidControlNet", "controlNet[0].startStepPercentage"),
    ({"startStep": 3}, "invalidControlNet", "controlNet[0].startStep"),
    ({"startStep": 1, "endStep": 1}, "invalidControlNet", "controlNet[0].endStep"),
    ({"guideImage": "not an image"}, "invalidControlNet", "controlNet[0].guideImage"),
])
def test_bad_controlnets_are_typed_errors(client, item, code, parameter):
    error = error_of(client, steps=2, controlNet=[control(**item)])
    assert (error["code"], error["parameter"]) == (code, parameter)


def test_a_missing_guide_image_is_named(client):
    error = error_of(client, controlNet=[{"model": CONTROLNET}])
    assert (error["code"], error["parameter"]) == ("missingControlNet", "controlNet[0].guideImage")
