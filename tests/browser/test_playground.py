"""The playground at `GET /` in a real browser: headless chromium driving `kiln serve`.

Everything goes through the page's accessible names (issue 14, item 3), as a user would.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kiln.demo.classify import nearest_colours
from kiln.demo.scenes import COLOURS
from kiln.errors import InvalidRequestError
from kiln.protocol.image_inference import parse_image_inference
from tests.browser.harness import connect
from tests.conftest import API_KEY

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips these tests (fails them in CI), saying why
    expect = None

SHAPES = "kiln:shapes@1"
SHAPES_INPAINT = "kiln:shapes-inpaint@1"
PROMPT = "a yellow circle on a blue background"
GENERATION_MS = 120_000

# every value aria-valuenow takes and every preview shown, from before the click on
RECORD_PROGRESS = """() => {
  window.progressValues = [];
  window.previews = [];
  const bar = document.querySelector('[role="progressbar"]');
  new MutationObserver(() => window.progressValues.push(Number(bar.getAttribute('aria-valuenow'))))
    .observe(bar, {attributes: true, attributeFilter: ['aria-valuenow']});
  const preview = document.getElementById('preview');
  new MutationObserver(() => window.previews.push(preview.src))
    .observe(preview, {attributes: true, attributeFilter: ['src']});
}"""


def shown_image(locator: Any) -> Image.Image:
    """The picture an `<img>` shows (the page asks for data URIs)."""
    src = locator.get_attribute("src")
    assert src.startswith("data:image/png;base64,"), src[:40]
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")


def colour_shares(pixels: np.ndarray) -> dict[str, float]:
    """The share of the pixels nearest to each palette colour of the demo model's scenes."""
    labels = nearest_colours(pixels.astype(np.float32)).ravel()
    names = list(COLOURS)
    return {names[i]: count / labels.size for i, count in zip(*np.unique(labels, return_counts=True), strict=True)}


def generate(page: Any, prompt: str, **fields: str) -> Any:
    """Type `prompt` (and fill the fields named by label), press Generate, wait for the image."""
    page.get_by_label("Prompt", exact=True).fill(prompt)
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Generate", exact=True).click()
    image = page.get_by_role("img", name=prompt, exact=True).first
    expect(image).to_be_visible(timeout=GENERATION_MS)
    return image


def test_generate_moves_the_progress_bar_and_draws_the_asked_colours(page):
    connect(page, API_KEY, SHAPES)
    page.evaluate(RECORD_PROGRESS)
    image = generate(page, PROMPT, Steps="50", Seed="3")

    progress = page.evaluate("window.progressValues")
    assert progress[0] == 0 and progress[-1] == 100, progress
    assert progress == sorted(progress), progress
    assert any(0 < value < 100 for value in progress), progress  # step items came before the image
    previews = page.evaluate("window.previews")
    assert previews and all(src.startswith("data:image/") for src in previews), previews[:1]
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(page.get_by_role("alert")).to_be_empty()

    picture = np.asarray(shown_image(image))
    assert picture.shape == (128, 128, 3)
    border = np.concatenate([picture[:8].reshape(-1, 3), picture[-8:].reshape(-1, 3),
                             picture[:, :8].reshape(-1, 3), picture[:, -8:].reshape(-1, 3)])
    assert colour_shares(border[None]).get("blue", 0) > 0.6, colour_shares(border[None])
    yellow = nearest_colours(picture.astype(np.float32)) == list(COLOURS).index("yellow")
    assert yellow.mean() > 0.01, colour_shares(picture)
    rows, cols = np.nonzero(yellow)  # a prompt that says no position means the centre
    assert 32 < rows.mean() < 96 and 32 < cols.mean() < 96, (rows.mean(), cols.mean())


def test_a_refused_width_shows_the_servers_error(page):
    connect(page, API_KEY, SHAPES)
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    page.get_by_label("Width", exact=True).fill("100")
    page.get_by_label("Height", exact=True).fill("128")
    page.get_by_role("button", name="Generate", exact=True).click()

    with pytest.raises(InvalidRequestError) as refused:
        parse_image_inference({"taskType": "imageInference", "taskUUID": "x", "model": SHAPES,
                               "positivePrompt": PROMPT, "width": 100})
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(refused.value.message, timeout=GENERATION_MS)
    expect(alert).to_contain_text("invalidWidth")
    expect(page.get_by_role("img", name=PROMPT, exact=True)).to_have_count(0)


def test_inpainting_a_painted_mask_keeps_the_unpainted_pixels(page):
    connect(page, API_KEY, SHAPES)
    seed = shown_image(generate(page, PROMPT, Seed="3"))

    page.get_by_role("button", name="Use as seed image").first.click()
    page.get_by_label("Model", exact=True).select_option(SHAPES_INPAINT)
    page.get_by_label("Brush size").fill("64")
    box = page.get_by_label("Inpainting mask").bounding_box()
    for y in (0.4, 0.5, 0.6):  # three strokes across the middle
        page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.7 * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()
    inpainted = shown_image(generate(page, "a red circle on a blue background"))

    before, after = np.asarray(seed, dtype=np.int16), np.asarray(inpainted, dtype=np.int16)
    assert after.shape == before.shape
    for rows, cols in ((slice(0, 16), slice(0, 16)), (slice(0, 16), slice(-16, None)),
                       (slice(-16, None), slice(0, 16)), (slice(-16, None), slice(-16, None))):
        assert np.abs(after[rows, cols] - before[rows, cols]).mean() < 4, (rows, cols)
    assert np.abs(after[56:72, 56:72] - before[56:72, 56:72]).mean() > 4  # the middle was repainted


def test_keyboard_alone_connects_generates_and_paints(page):
    page.get_by_label("API key").focus()
    page.keyboard.type(API_KEY)
    page.keyboard.press("Enter")  # connects
    expect(page.get_by_role("status")).to_have_text("Connected", timeout=GENERATION_MS)
    page.get_by_label("Prompt", exact=True).focus()
    page.keyboard.type(PROMPT)
    page.keyboard.press("Control+Enter")
    image = page.get_by_role("img", name=PROMPT, exact=True)
    expect(image).to_be_visible(timeout=GENERATION_MS)

    page.get_by_role("button", name="Use as seed image").focus()
    page.keyboard.press("Enter")
    mask = page.get_by_label("Inpainting mask")
    expect(mask).to_be_focused()
    for key in ("Space", "ArrowRight", "Space"):
        page.keyboard.press(key)
    painted = mask.evaluate("canvas => canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height)"
                            ".data.filter((value, i) => i % 4 === 3 && value > 0).length")
    assert painted > 0


def test_a_preprocessed_controlnet_guide_is_used(page):
    connect(page, API_KEY, "kiln:tiny-sd@1")
    generate(page, "a guide source picture")
    page.get_by_role("button", name="Use as ControlNet source").click()
    page.get_by_label("Preprocessor").select_option("canny")
    page.get_by_role("button", name="Preprocess").click()
    guide = page.get_by_role("img", name="ControlNet guide")
    expect(guide).to_be_visible(timeout=GENERATION_MS)
    assert shown_image(guide).size == (128, 128)
    page.get_by_label("ControlNet model").select_option("kiln:tiny-controlnet@1")
    generate(page, "a guided picture")
    expect(page.get_by_role("alert")).to_be_empty()
