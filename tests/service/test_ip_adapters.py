"""`ipAdapters[]` through the REST API: effects measured on the images that come back, batching
of tasks with their own guide images, and the errors of what cannot run."""

from __future__ import annotations

import numpy as np

from tests.conftest import SDXL, decode_image, inference, new_uuid, post
from tests.engine.test_ip_adapters import guide
from tests.images import data_uri, max_difference
from tests.service.test_batching import batch_sizes, generate, kiln
from tests.service.test_lora import error_of, pixels

IP = "kiln:tiny-ipadapter@1"
IP_PLUS = "kiln:tiny-ipadapter-plus@1"
IP_XL = "kiln:tiny-ipadapter-sdxl@1"


def guide_uri(shape: str = "square", colour: str = "red") -> str:
    return data_uri(guide(shape, colour))


def adapter(**fields) -> dict:
    return {"model": IP, "guideImage": guide_uri(), **fields}


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).mean()) > 0.5


def test_an_image_prompt_changes_the_result_and_weight_zero_leaves_it_as_without(client):
    plain = pixels(client)
    steered = pixels(client, ipAdapters=[adapter()])
    assert differs(steered, plain)
    assert np.array_equal(pixels(client, ipAdapters=[adapter(weight=0)]), plain)
    assert np.array_equal(pixels(client, ipAdapters=[adapter()]), steered)  # same seed, same bytes
    assert np.array_equal(pixels(client), plain)  # and the model is bare again after it
    half = pixels(client, ipAdapters=[adapter(weight=0.5)])
    assert differs(half, plain) and differs(half, steered)


def test_the_guide_images_steer_the_result(client):
    square = pixels(client, ipAdapters=[adapter()])
    circle = pixels(client, ipAdapters=[adapter(guideImage=guide_uri("circle", "blue"))])
    assert differs(square, circle)
    # the Python SDK's `guideImages`: one image is `guideImage`; two stand side by side
    assert np.array_equal(pixels(client, ipAdapters=[{"model": IP, "guideImages": [guide_uri()]}]), square)
    both = pixels(client, ipAdapters=[{"model": IP, "guideImages": [guide_uri(), guide_uri("circle", "blue")]}])
    assert differs(both, square) and differs(both, circle)


def test_several_adapters_at_once_plain_and_plus_on_sd_and_sdxl(client):
    one = pixels(client, ipAdapters=[adapter()])
    two = pixels(client, ipAdapters=[adapter(), adapter(model=IP_PLUS, guideImage=guide_uri("circle", "blue"), weight=0.7)])
    assert differs(one, two)
    assert differs(pixels(client, model=SDXL, ipAdapters=[{**adapter(), "model": IP_XL}]), pixels(client, model=SDXL))


def test_image_to_image_with_an_image_prompt(client):
    seed = guide_uri("circle", "orange")
    assert differs(pixels(client, seedImage=seed, strength=0.7, ipAdapters=[adapter()]),
                   pixels(client, seedImage=seed, strength=0.7))


def test_tasks_with_their_own_guides_share_a_call_and_match_each_task_alone(settings):
    tasks = [inference(positivePrompt=f"shape number {i}", seed=11 + i,
                       ipAdapters=[adapter(guideImage=guide_uri(shape, colour))])
             for i, (shape, colour) in enumerate((("square", "red"), ("circle", "blue"), ("square", "green")))]
    with kiln(settings) as client:
        before = batch_sizes(client)
        batched = generate(client, tasks)
        after = batch_sizes(client)
    assert (after[0] - before[0], after[1] - before[1]) == (1, len(tasks))
    with kiln(settings, max_batch=1) as client:
        alone = [generate(client, [{**task, "taskUUID": new_uuid()}])[0] for task in tasks]
    for image, solo in zip(batched, alone, strict=True):
        assert max_difference(image, solo) <= 2
    assert len({image.tobytes() for image in batched}) == len(tasks)


def test_bad_entries_get_errors_naming_them(client):
    missing = error_of(client, ipAdapters=[{"model": IP}])
    assert (missing["code"], missing["parameter"]) == ("missingIpAdapters", "ipAdapters[0].guideImage")
    both = error_of(client, ipAdapters=[adapter(guideImages=[guide_uri()])])
    assert (both["code"], both["parameter"]) == ("invalidIpAdapters", "ipAdapters[0].guideImage")
    wrong = error_of(client, ipAdapters=[adapter(model="kiln:tiny-lora@1")])
    assert (wrong["code"], wrong["parameter"]) == ("invalidIpAdapters", "ipAdapters[0].model")
    assert "a lora" in wrong["message"]
    other = error_of(client, ipAdapters=[adapter(model=IP_XL)])
    assert (other["code"], other["parameter"]) == ("invalidIpAdapters", "ipAdapters[0].model")
    assert "sdxl" in other["message"]
    heavy = error_of(client, ipAdapters=[adapter(weight=1.5)])
    assert (heavy["code"], heavy["parameter"], heavy["max"]) == ("invalidIpAdapters", "ipAdapters[0].weight", 1)
    many = error_of(client, ipAdapters=[adapter()] * 5)
    assert (many["code"], many["parameter"]) == ("invalidIpAdapters", "ipAdapters")
    option = error_of(client, ipAdapters=[adapter(combineMethod="concat")])
    assert (option["code"], option["parameter"]) == ("unsupportedParameter", "ipAdapters[0].combineMethod")
    unreadable = error_of(client, ipAdapters=[adapter(guideImage="data:image/png;base64,AAAA")])
    assert unreadable["parameter"] == "ipAdapters[0].guideImage"
    flux = error_of(client, model="kiln:tiny-flux@1", ipAdapters=[adapter()])
    assert (flux["code"], flux["parameter"]) == ("unsupportedParameter", "ipAdapters")
    assert "FLUX" in flux["message"]


def test_an_error_fails_its_own_task_only(client):
    good = inference(ipAdapters=[adapter()])
    bad = inference(ipAdapters=[adapter(model="kiln:nothing@1")])
    body = post(client, [good, bad]).json()
    assert [item["taskUUID"] for item in body["data"]] == [good["taskUUID"]]
    assert decode_image(body["data"][0]).size == (128, 128)
    [error] = body["errors"]
    assert (error["taskUUID"], error["code"], error["parameter"]) == (
        bad["taskUUID"], "unknownModel", "ipAdapters[0].model")


def test_model_search_lists_the_ip_adapters_by_architecture(client):
    task = {"taskType": "modelSearch", "taskUUID": new_uuid(), "category": "ipadapter", "architecture": "sd1x"}
    [reply] = post(client, [task]).json()["data"]
    assert sorted(item["air"] for item in reply["results"]) == sorted([IP, IP_PLUS])
    assert all(item["category"] == "ipadapter" for item in reply["results"])
