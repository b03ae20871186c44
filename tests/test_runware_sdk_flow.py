"""The official `runware` Python SDK generating with the tiny FLUX demo model, unchanged."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from runware import IImageInference, RunwareAPIError

from tests.test_runware_sdk import _with_client, run

FLUX = "kiln:tiny-flux@1"


def flux_request(**overrides) -> IImageInference:
    fields = dict(model=FLUX, positivePrompt="a red circle on a blue background", width=128, height=192,
                  steps=2, CFGScale=3.5, numberResults=2, seed=7, outputType="base64Data", outputFormat="PNG")
    fields.update(overrides)
    return IImageInference(**fields)


def test_the_sdk_generates_with_a_flux_model(ws_url):
    results = run(_with_client(ws_url, lambda rw: rw.imageInference(requestImage=flux_request())))
    assert sorted(result.seed for result in results) == [7, 8]
    for result in results:
        image = Image.open(io.BytesIO(base64.b64decode(result.imageBase64Data)))
        assert image.size == (128, 192)


def test_the_sdk_gets_the_typed_error_of_a_negative_prompt_on_flux(ws_url):
    with pytest.raises(RunwareAPIError) as caught:
        run(_with_client(ws_url, lambda rw: rw.imageInference(
            requestImage=flux_request(negativePrompt="a blurry photo", numberResults=1))))
    assert caught.value.code == "unsupportedParameter"
    assert caught.value.error_data["parameter"] == "negativePrompt"
