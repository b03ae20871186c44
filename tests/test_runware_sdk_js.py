"""The official Runware JS SDK (`@runware/sdk-js` 1.3.2, Node) against Kiln on a loopback port,
unchanged: authentication, text-to-image, ControlNet preprocessing (the SDK sends it async and
polls getResponse), ControlNet with the guide's UUID, image-to-image and inpainting (the SDK
uploads their images with imageUpload first), modelSearch and a typed error."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import API_KEY, SD
from tests.service.test_preprocess import scene_png

SDK_FOLDER = Path(__file__).parent / "js"


def mask_uri() -> str:
    """Repaint the top half (white), keep the bottom half (black)."""
    mask = Image.new("L", (128, 128))
    mask.paste(255, (0, 0, 128, 64))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def decoded(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.format == "PNG"
    return image


@pytest.fixture(scope="module")
def report(ws_url) -> dict:
    """What each SDK call of `js/sdk_flow.mjs` returned, run once for the module."""
    node = shutil.which("node")
    assert node, "Node.js is needed for the JS SDK tests"
    assert (SDK_FOLDER / "node_modules" / "@runware" / "sdk-js").is_dir(), "run `make test` (npm ci)"
    guide_input = "data:image/png;base64," + base64.b64encode(scene_png()).decode()
    result = subprocess.run(
        [node, "sdk_flow.mjs", ws_url, API_KEY, SD, "kiln:tiny-controlnet@1", guide_input, mask_uri()],
        cwd=SDK_FOLDER, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_text_to_image_gives_two_seeded_images(report):
    images = report["images"]["ok"]
    assert [image["seed"] for image in images] == [4242, 4243]
    first, second = (decoded(image["imageBase64Data"]) for image in images)
    assert first.size == second.size == (128, 128)
    assert first.tobytes() != second.tobytes()


def test_preprocessing_is_acknowledged_then_polled_to_its_guide(report):
    guide = report["preprocess"]["ok"]
    assert guide["guideImageUUID"] and guide["inputImageUUID"]
    edges = np.asarray(decoded(guide["guideImageBase64Data"]).convert("L")) > 127
    ys, xs = np.nonzero(edges)
    on_border = (np.abs(xs - 32) <= 1) | (np.abs(xs - 95) <= 1) | (np.abs(ys - 40) <= 1) | (np.abs(ys - 87) <= 1)
    assert len(xs) > 150 and on_border.all()


def test_the_guide_uuid_steers_a_controlnet(report):
    (controlled,) = report["controlled"]["ok"]
    assert controlled["seed"] == 4242
    plain = decoded(report["images"]["ok"][0]["imageBase64Data"])
    assert decoded(controlled["imageBase64Data"]).tobytes() != plain.tobytes()


def test_image_to_image_and_inpainting_through_uploaded_images(report):
    scene = np.asarray(Image.open(io.BytesIO(scene_png())).convert("RGB"), dtype=np.int16)
    plain = np.asarray(decoded(report["images"]["ok"][0]["imageBase64Data"]), dtype=np.int16)
    (edited,) = report["edited"]["ok"]
    edited_pixels = np.asarray(decoded(edited["imageBase64Data"]).convert("RGB"), dtype=np.int16)
    assert edited_pixels.shape == (128, 128, 3) and not np.array_equal(edited_pixels, plain)
    (inpainted,) = report["inpainted"]["ok"]
    repainted = np.asarray(decoded(inpainted["imageBase64Data"]).convert("RGB"), dtype=np.int16)
    assert np.abs(repainted[72:] - scene[72:]).max() <= 2  # the kept half, away from the seam
    assert np.abs(repainted[:56] - scene[:56]).mean() > 10  # the masked half is repainted


def test_model_search(report):
    results = report["search"]["ok"]["results"]
    assert "kiln:tiny-controlnet@1" in [result["air"] for result in results]
    assert all(result["category"] == "controlnet" for result in results)


def test_a_bad_width_rejects_with_the_typed_error(report):
    error = report["invalid"]["error"]
    assert (error["code"], error["parameter"]) == ("invalidWidth", "width")
