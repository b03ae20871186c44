"""The official `runware` Python SDK against Kiln on a loopback port, unchanged."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import httpx
import pytest
from PIL import Image
from runware import IImageInference, Runware, RunwareAPIError

from tests.conftest import API_KEY, SD, http_base


def run(coroutine):
    return asyncio.run(coroutine)


async def _with_client(url: str, body, key: str = API_KEY):
    runware = Runware(api_key=key, url=url, timeout=60)
    await runware.connect()
    try:
        return await body(runware)
    finally:
        await runware.disconnect()


def request(**overrides) -> IImageInference:
    fields = dict(
        model=SD, positivePrompt="a red circle on a blue background", width=128, height=128,
        steps=2, numberResults=2, seed=4242, outputType="base64Data", outputFormat="PNG",
    )
    fields.update(overrides)
    return IImageInference(**fields)


def image_of(result, output_type: str, ws_url: str) -> Image.Image:
    if output_type == "URL":
        # imageURL's base is the settings' public URL; fetch the same path from this server
        path = "/media/" + result.imageURL.split("/media/", 1)[1]
        data = httpx.get(http_base(ws_url) + path).content
    elif output_type == "base64Data":
        data = base64.b64decode(result.imageBase64Data)
    else:
        data = base64.b64decode(result.imageDataURI.split(",", 1)[1])
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("output_type", ["URL", "base64Data", "dataURI"])
@pytest.mark.parametrize(("output_format", "pil_format"), [("PNG", "PNG"), ("JPG", "JPEG"), ("WEBP", "WEBP")])
def test_image_inference_every_output_type_and_format(ws_url, output_type, output_format, pil_format):
    results = run(_with_client(ws_url, lambda rw: rw.imageInference(
        requestImage=request(outputType=output_type, outputFormat=output_format, width=192))))
    assert len(results) == 2
    assert sorted(r.seed for r in results) == [4242, 4243]
    for result in results:
        assert result.imageUUID
        image = image_of(result, output_type, ws_url)
        assert image.format == pil_format
        assert image.size == (192, 128)


def test_same_seed_gives_the_same_bytes(ws_url):
    async def body(rw):
        first = await rw.imageInference(requestImage=request(numberResults=1, seed=99))
        second = await rw.imageInference(requestImage=request(numberResults=1, seed=99))
        return first[0], second[0]

    first, second = run(_with_client(ws_url, body))
    assert first.imageBase64Data == second.imageBase64Data


def test_invalid_width_raises_runware_api_error(ws_url):
    with pytest.raises(RunwareAPIError) as caught:
        run(_with_client(ws_url, lambda rw: rw.imageInference(requestImage=request(width=100))))
    assert caught.value.code == "invalidWidth"
    assert caught.value.error_data["parameter"] == "width"


def test_wrong_key_gives_the_sdk_authentication_error(ws_url):
    async def body(rw):
        return await rw.imageInference(requestImage=request())

    started = time.monotonic()
    with pytest.raises(ConnectionError) as caught:
        run(_with_client(ws_url, body, key="not-a-key"))
    assert "Invalid API key" in str(caught.value)
    assert time.monotonic() - started < 60
