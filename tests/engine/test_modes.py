"""The engine's editing modes: image-to-image and inpainting on the cached pipelines."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kiln.engine.demo_models import build_tiny_sd_inpaint
from kiln.errors import InvalidRequestError
from kiln.generation import ModelSpec

from .helpers import make_request


def gradient() -> Image.Image:
    x = np.linspace(0, 255, 64).astype(np.uint8)
    return Image.fromarray(np.stack([np.tile(x, (64, 1)), np.tile(x[:, None], (1, 64)), 255 - np.tile(x, (64, 1))], -1))


def center_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def run(engine, request) -> list[np.ndarray]:
    return [np.asarray(image, dtype=np.float64) for image in engine.generate(request)]


def test_strength_0_yields_the_seed_image_for_each_seed(engine, tiny):
    request = make_request(tiny.sd, mode="image", init_image=gradient(), strength=0.0, seeds=(1, 2))
    outputs = run(engine, request)
    assert len(outputs) == 2
    assert all(np.array_equal(out, np.asarray(gradient(), dtype=np.float64)) for out in outputs)


@pytest.mark.parametrize("model", ["sd", "sdxl"])
def test_img2img_and_inpaint_run_from_the_cached_text_pipeline(engine, tiny, model):
    spec = getattr(tiny, model)
    text = run(engine, make_request(spec))[0]
    image = run(engine, make_request(spec, mode="image", init_image=gradient(), strength=0.6))[0]
    inpaint = run(engine, make_request(
        spec, mode="inpaint", init_image=gradient(), mask_image=center_mask(), strength=1.0))[0]
    assert image.shape == inpaint.shape == (64, 64, 3)
    assert np.abs(image - text).mean() > 1 and np.abs(inpaint - image).mean() > 1
    assert np.array_equal(text, run(engine, make_request(spec))[0])  # the cached pipeline is intact


def test_steps_times_strength_below_1_still_denoises_once(engine, tiny):
    def at(steps: int) -> np.ndarray:
        return run(engine, make_request(
            tiny.sd, mode="image", init_image=gradient(), strength=0.1, steps=steps))[0]

    # diffusers alone would run int(2 * 0.1) = 0 steps with 2 steps; Kiln schedules 10, as a
    # 10-step request does, so that one step runs at the noise level of strength 0.1.
    assert np.array_equal(at(2), at(10))
    assert not np.array_equal(at(10), at(20))


def test_nine_channel_inpainting_model_runs_inpainting_only(engine, tmp_path):
    spec = ModelSpec("test:inpaint@1", "sd1x", str(build_tiny_sd_inpaint(tmp_path / "inpaint")))
    out = run(engine, make_request(spec, mode="inpaint", init_image=gradient(), mask_image=center_mask()))
    assert out[0].shape == (64, 64, 3)
    with pytest.raises(InvalidRequestError) as caught:
        engine.generate(make_request(spec))
    assert caught.value.parameter == "model"


def test_mode_images_must_match_the_request_size(engine, tiny):
    with pytest.raises(InvalidRequestError) as caught:
        engine.generate(make_request(tiny.sd, mode="inpaint", init_image=gradient(),
                                     mask_image=Image.new("L", (32, 32))))
    assert caught.value.parameter == "maskImage"
