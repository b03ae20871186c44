"""FLUX and SD3 through REST `POST /v1`, on the demo models `kiln:tiny-flux@1` and
`kiln:tiny-sd3@1` (and, registered for this module only, a FLUX Fill model, FLUX and SD3
ControlNets and a FLUX LoRA): every mode, the parameters Runware documents for them, and the
typed errors for those that do not apply."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kiln.engine.demo_flow_models import (
    build_tiny_flux_controlnet,
    build_tiny_flux_fill,
    build_tiny_flux_lora,
    build_tiny_sd3_controlnet,
)
from kiln.models import CatalogEntry, ModelDefaults
from kiln.service import Services
from tests.conftest import decode_image, inference, new_uuid, post
from tests.images import b64, gradient, pixels

FLUX = "kiln:tiny-flux@1"
SD3 = "kiln:tiny-sd3@1"
FILL = "test:tiny-flux-fill@1"
FLUX_CONTROLNET = "test:tiny-flux-controlnet@1"
SD3_CONTROLNET = "test:tiny-sd3-controlnet@1"
FLUX_LORA = "test:tiny-flux-lora@1"


@pytest.fixture(scope="module", autouse=True)
def flow_adapters(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The Fill model and the adapters, in the session's catalog while this module runs."""
    root = tmp_path_factory.mktemp("flow-adapters")
    entries = [
        CatalogEntry(FILL, "tiny-flux-fill", "1", "checkpoint", "flux", str(build_tiny_flux_fill(root / "fill")),
                     type="inpainting", defaults=ModelDefaults(128, 128, 2, 30.0)),
        CatalogEntry(FLUX_CONTROLNET, "tiny-flux-controlnet", "1", "controlnet", "flux",
                     str(build_tiny_flux_controlnet(root / "flux-cn")), conditioning="canny"),
        CatalogEntry(SD3_CONTROLNET, "tiny-sd3-controlnet", "1", "controlnet", "sd3",
                     str(build_tiny_sd3_controlnet(root / "sd3-cn")), conditioning="canny"),
        CatalogEntry(FLUX_LORA, "tiny-flux-lora", "1", "lora", "flux", str(build_tiny_flux_lora(root / "lora"))),
    ]
    for entry in entries:
        services.catalog.add(entry)
    yield
    for entry in entries:
        services.catalog.remove(entry.air)


def task(model: str = FLUX, **fields) -> dict:
    return inference(**{"model": model, "steps": 2, **fields})


def generate(client, **fields) -> Image.Image:
    response = post(client, [task(**fields)])
    assert response.status_code == 200, response.text
    return decode_image(response.json()["data"][0])


def error(client, **fields) -> dict:
    response = post(client, [task(**fields)])
    assert response.status_code == 400, response.text
    [err] = response.json()["errors"]
    return err


def mask_b64(size: int = 128) -> str:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (32, 32, 96, 96))
    return b64(mask)


MODES = {
    "text": {},
    "image": {"seedImage": b64(gradient()), "strength": 0.7},
    "inpaint": {"seedImage": b64(gradient()), "maskImage": mask_b64()},
    "outpaint": {"seedImage": b64(gradient()), "outpaint": {"right": 64}, "width": 192, "height": 128},
}


@pytest.mark.parametrize("model", [FLUX, SD3])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_returns_the_asked_size_and_the_same_bytes_for_the_same_seed(client, model, mode):
    fields = {"width": 128, "height": 128, **MODES[mode]}
    first = generate(client, model=model, **fields)
    assert first.size == (fields["width"], fields["height"])
    assert pixels(first).tobytes() == pixels(generate(client, model=model, **fields)).tobytes()


def test_seed_and_cfg_change_the_image(client):
    image = pixels(generate(client))
    assert not np.array_equal(image, pixels(generate(client, seed=99)))
    assert not np.array_equal(image, pixels(generate(client, CFGScale=1.0)))  # FLUX's distilled guidance


def test_sd3_takes_a_negative_prompt_and_clip_skip(client):
    image = pixels(generate(client, model=SD3))
    assert not np.array_equal(image, pixels(generate(client, model=SD3, negativePrompt="a blurry photo")))
    assert not np.array_equal(image, pixels(generate(client, model=SD3, clipSkip=1)))


def test_number_results_batch_through_the_executor_each_with_its_seed(client):
    response = post(client, [task(numberResults=3, seed=50)])
    items = response.json()["data"]
    assert sorted(item["seed"] for item in items) == [50, 51, 52]
    alone = pixels(generate(client, seed=51))
    batched = {item["seed"]: pixels(decode_image(item)) for item in items}
    assert np.abs(batched[51] - alone).max() <= 2


def test_weighting_syntax_without_weighting_is_plain_text(client):
    assert generate(client, positivePrompt="a (red:1.4) circle++ on blue").size == (128, 128)


@pytest.mark.parametrize(("model", "fields", "parameter"), [
    (FLUX, {"negativePrompt": "a blurry photo"}, "negativePrompt"),
    (FLUX, {"clipSkip": 1}, "clipSkip"),
    (FLUX, {"promptWeighting": "compel"}, "promptWeighting"),
    (SD3, {"usePromptWeighting": True}, "usePromptWeighting"),
    (SD3, {"embeddings": [{"model": "kiln:tiny-lora@1"}]}, "embeddings"),
    (FLUX, {"refiner": {"model": "kiln:tiny-sdxl@1"}}, "refiner"),
    (SD3, {"vae": "kiln:tiny-sd@1"}, "vae"),
    (FLUX, {"controlNet": [{"model": FLUX_CONTROLNET, "guideImage": b64(gradient()), "controlMode": "controlnet"}]},
     "controlNet[0].controlMode"),
    (SD3, {"controlNet": [{"model": SD3_CONTROLNET, "guideImage": b64(gradient())}], **MODES["image"]},
     "controlNet"),
    (FLUX, {"scheduler": "DPM++ 2M", **MODES["image"]}, "scheduler"),
    (FLUX, {"scheduler": "DPM++ SDE Karras"}, "scheduler"),
])
def test_parameters_that_do_not_apply_are_unsupported_naming_them(client, model, fields, parameter):
    err = error(client, model=model, **fields)
    assert (err["code"], err["parameter"]) == ("unsupportedParameter", parameter)


def test_sd_scheduler_names_are_invalid_for_flow_models_and_the_other_way_round(client):
    err = error(client, model=SD3, scheduler="DDIM")
    assert (err["code"], err["parameter"]) == ("invalidScheduler", "scheduler")
    assert "FlowMatchEulerDiscreteScheduler" in err["allowedValues"] and "DDIM" not in err["allowedValues"]
    err = error(client, model="kiln:tiny-sd@1", scheduler="Euler Beta")
    assert err["code"] == "invalidScheduler" and "Euler Beta" not in err["allowedValues"]
    assert generate(client, model=SD3, scheduler="FlowMatchEulerDiscreteScheduler").size == (128, 128)
    assert generate(client, scheduler="DPM++ 2M SDE").size == (128, 128)


def test_model_search_reports_the_architecture_and_defaults(client):
    response = post(client, [{"taskType": "modelSearch", "taskUUID": new_uuid(), "architecture": "flux",
                              "category": "checkpoint", "tags": ["demo"]}])
    [result] = response.json()["data"][0]["results"]
    assert (result["air"], result["architecture"], result["type"]) == (FLUX, "flux", "base")
    assert (result["defaultWidth"], result["defaultHeight"], result["defaultSteps"], result["defaultCFG"]) == (
        128, 128, 4, 3.5)
    response = post(client, [{"taskType": "modelSearch", "taskUUID": new_uuid(), "search": "tiny-sd3"}])
    sd3 = response.json()["data"][0]["results"][0]
    assert (sd3["architecture"], sd3["defaultCFG"], sd3["defaultScheduler"]) == ("sd3", 7.0, "Default")


def test_defaults_fill_what_a_task_leaves_out(client):
    assert generate(client, width=None, height=None, steps=None).size == (128, 128)


def test_a_flux_fill_model_inpaints_and_outpaints_only(client):
    assert generate(client, model=FILL, **MODES["inpaint"]).size == (128, 128)
    assert generate(client, model=FILL, **MODES["outpaint"]).size == (192, 128)
    assert error(client, model=FILL)["parameter"] == "model"
    err = error(client, model=FILL, controlNet=[{"model": FLUX_CONTROLNET, "guideImage": b64(gradient())}],
                **MODES["inpaint"])
    assert (err["code"], err["parameter"]) == ("unsupportedParameter", "controlNet")


def test_a_flux_lora_changes_the_image_and_an_sd_lora_is_refused(client):
    assert not np.array_equal(pixels(generate(client)), pixels(generate(client, lora=[{"model": FLUX_LORA}])))
    err = error(client, lora=[{"model": "kiln:tiny-lora@1"}])
    assert (err["code"], err["parameter"]) == ("invalidLora", "lora[0].model")


@pytest.mark.parametrize(("model", "controlnet", "mode"), [
    (FLUX, FLUX_CONTROLNET, "text"), (FLUX, FLUX_CONTROLNET, "image"), (FLUX, FLUX_CONTROLNET, "inpaint"),
    (SD3, SD3_CONTROLNET, "text"),
])
def test_controlnets_steer_flux_and_sd3(client, model, controlnet, mode):
    guide = b64(gradient().transpose(Image.Transpose.ROTATE_90))
    off = generate(client, model=model, controlNet=[{"model": controlnet, "guideImage": guide, "weight": 0}],
                   **MODES[mode])
    on = generate(client, model=model, controlNet=[{"model": controlnet, "guideImage": guide}], **MODES[mode])
    assert on.size == (128, 128) and not np.array_equal(pixels(off), pixels(on))


def test_the_demo_models_are_built_offline_and_small(services: Services):
    for air in (FLUX, SD3):
        folder = Path(services.catalog.get(air).path)
        assert (folder / "tokenizer_2" / "tokenizer.json").is_file() or (folder / "tokenizer_3").is_dir()
        assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 3 * 2**20
