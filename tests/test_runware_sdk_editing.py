"""The official `runware` Python SDK: `uploadImage` of a local file, then image-to-image and
inpainting with it, against Kiln on a loopback port."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
from PIL import Image
from runware import IImageInference, IOutpaint, Runware

from tests.conftest import API_KEY, SD
from tests.images import gradient, pixels


def run(url, body):
    async def main():
        runware = Runware(api_key=API_KEY, url=url, timeout=60)
        await runware.connect()
        try:
            return await body(runware)
        finally:
            await runware.disconnect()

    return asyncio.run(main())


def request(**fields) -> IImageInference:
    return IImageInference(**{
        "model": SD, "positivePrompt": "a red circle on a blue background", "width": 128,
        "height": 128, "steps": 2, "numberResults": 1, "seed": 11, "outputType": "base64Data",
        "outputFormat": "PNG", **fields,
    })


def image_of(result) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(result.imageBase64Data)))


def test_sdk_uploads_a_file_and_edits_it(ws_url, tmp_path):
    seed_path, mask_path = tmp_path / "seed.png", tmp_path / "mask.png"
    gradient().save(seed_path)
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (32, 32, 96, 96))
    mask.save(mask_path)

    async def body(rw):
        uploaded = await rw.uploadImage(str(seed_path))
        same = await rw.imageInference(requestImage=request(seedImage=uploaded.imageUUID, strength=0))
        moved = await rw.imageInference(requestImage=request(seedImage=uploaded.imageUUID, strength=0.7))
        painted = await rw.imageInference(requestImage=request(
            seedImage=uploaded.imageUUID, maskImage=str(mask_path)))  # the SDK inlines the file
        grown = await rw.imageInference(requestImage=request(
            seedImage=uploaded.imageUUID, outpaint=IOutpaint(right=64), width=192))
        return uploaded, same[0], moved[0], painted[0], grown[0]

    uploaded, same, moved, painted, grown = run(ws_url, body)
    assert uploaded.imageUUID and uploaded.imageURL.endswith(f"{uploaded.imageUUID}.png")
    seed = pixels(gradient())
    assert np.array_equal(pixels(image_of(same)), seed)
    assert np.abs(pixels(image_of(moved)) - seed).mean() > 10
    diff = np.abs(pixels(image_of(painted)) - seed)
    keep = np.asarray(mask) == 0
    assert diff[keep].max() <= 1 and diff[40:88, 40:88].mean() > 10
    assert image_of(grown).size == (192, 128)
    assert np.abs(pixels(image_of(grown))[:, :128] - seed).max() <= 1
