"""The official `runware` Python SDK: ControlNet with a local guide file, LoRA, IP-Adapters,
modelSearch."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw
from runware import IControlNetCanny, IControlNetGeneral, IIpAdapter, ILora, IModelSearch

from kiln.storage import ImageIndex
from tests.conftest import SD
from tests.test_runware_sdk import _with_client, request, run


def decoded(result) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(result.imageBase64Data))), dtype=np.int16)


def uploads(services) -> int:
    return ImageIndex(services.db).count(origin="uploaded")


def test_controlnet_with_a_local_guide_file_and_a_lora(ws_url, services, tmp_path):
    guide = tmp_path / "guide.png"
    image = Image.new("RGB", (128, 128))
    ImageDraw.Draw(image).rectangle([24, 24, 100, 100], outline="white", width=3)
    image.save(guide)

    async def body(rw):
        plain = await rw.imageInference(requestImage=request(numberResults=1))
        controlled = await rw.imageInference(requestImage=request(
            numberResults=1,
            controlNet=[IControlNetGeneral(model="kiln:tiny-controlnet@1", guideImage=str(guide),
                                           weight=1.0, startStepPercentage=0, endStepPercentage=100,
                                           controlMode="balanced")],
        ))
        canny = await rw.imageInference(requestImage=request(
            numberResults=1, clipSkip=1, lora=[ILora(model="kiln:tiny-lora@1", weight=0.8)],
            controlNet=[IControlNetCanny(model="kiln:tiny-controlnet@1", guideImage=str(guide),
                                         weight=0.7, startStep=1, endStep=2)],
        ))
        return plain[0], controlled[0], canny[0]

    before = uploads(services)
    plain, controlled, canny = run(_with_client(ws_url, body))
    assert uploads(services) == before + 2  # the SDK sent the file with imageUpload first
    assert decoded(controlled).shape == (128, 128, 3)
    assert np.abs(decoded(controlled) - decoded(plain)).mean() > 0.5
    assert np.abs(decoded(canny) - decoded(controlled)).mean() > 0.5


def test_ip_adapters_with_local_guide_files(ws_url, tmp_path):
    guides = []
    for name, colour in (("red.png", "red"), ("blue.png", "blue")):
        image = Image.new("RGB", (96, 96), "white")
        ImageDraw.Draw(image).ellipse([16, 16, 80, 80], fill=colour)
        image.save(tmp_path / name)
        guides.append(str(tmp_path / name))

    async def body(rw):
        plain = await rw.imageInference(requestImage=request(numberResults=1))
        red = await rw.imageInference(requestImage=request(
            numberResults=1, ipAdapters=[IIpAdapter(model="kiln:tiny-ipadapter@1", guideImage=guides[0], weight=1.0)]))
        both = await rw.imageInference(requestImage=request(
            numberResults=1, ipAdapters=[IIpAdapter(model="kiln:tiny-ipadapter@1", guideImages=guides)]))
        return plain[0], red[0], both[0]

    plain, red, both = run(_with_client(ws_url, body))
    assert decoded(red).shape == (128, 128, 3)
    assert np.abs(decoded(red) - decoded(plain)).mean() > 0.5
    assert np.abs(decoded(both) - decoded(red)).mean() > 0.5


def test_model_search(ws_url):
    async def body(rw):
        everything = await rw.modelSearch(payload=IModelSearch())
        loras = await rw.modelSearch(payload=IModelSearch(category="lora", architecture="sd1x"))
        named = await rw.modelSearch(payload=IModelSearch(search="tiny-sd", limit=1))
        return everything, loras, named

    everything, loras, named = run(_with_client(ws_url, body))
    assert SD in {model.air for model in everything.results}
    assert everything.totalResults == len(everything.results)
    assert {model.air for model in loras.results} == {"kiln:tiny-lora@1", "kiln:tiny-lora-kohya@1"}
    assert all(model.tags == ["demo", "random-weights"] and model.private is False for model in loras.results)
    assert [model.air for model in named.results] == [SD] and named.totalResults >= 3
