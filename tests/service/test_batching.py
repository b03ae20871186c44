"""Dynamic batching through the public API (README: Throughput), on the real engine and the tiny
SD 1.x model: concurrent tasks share pipeline calls, seen in `/metrics`; what may not share a
call does not; batched images stay within 2 grey levels of the same task run alone; and
`KILN_MAX_BATCH=1` gives the bytes of each task sent alone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from kiln.server import create_app
from kiln.service import Services
from kiln.settings import Settings
from tests.conftest import decode_image, inference, new_uuid, post
from tests.images import max_difference

PROMPTS = ("a red circle", "a blue square on white", "a green star", "a yellow triangle on black")


@contextlib.contextmanager
def kiln(settings: Settings, **overrides: Any) -> Iterator[TestClient]:
    """A Kiln of its own (own executor and engine, same data directory) with `overrides`.

    A wide batching window: the tasks of one request reach the executor within milliseconds,
    but a busy CI machine must not split them by chance."""
    services = Services.open(replace(settings, **{"batch_window_ms": 500, **overrides}))
    with TestClient(create_app(services)) as client:
        yield client


def batch_sizes(client: TestClient) -> tuple[int, int]:
    """(pipeline calls, images in them) so far, from `kiln_batch_size` in `/metrics`."""
    samples = {sample.name: sample.value
               for family in text_string_to_metric_families(client.get("/metrics").text)
               if family.name == "kiln_batch_size" for sample in family.samples}
    return int(samples["kiln_batch_size_count"]), int(samples["kiln_batch_size_sum"])


def generate(client: TestClient, tasks: list[dict[str, Any]]) -> list[Any]:
    """The images of `tasks`, sent in one request (so they run concurrently), in task order."""
    response = post(client, tasks)
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    by_uuid = {item["taskUUID"]: item for item in body["data"]}
    return [decode_image(by_uuid[task["taskUUID"]]) for task in tasks]


def tasks_of(**common: Any) -> list[dict[str, Any]]:
    return [inference(positivePrompt=prompt, seed=7 + i, **common) for i, prompt in enumerate(PROMPTS)]


def test_concurrent_tasks_share_one_call_and_match_each_task_alone(settings):
    tasks = tasks_of()
    with kiln(settings) as client:
        before = batch_sizes(client)
        batched = generate(client, tasks)
        after = batch_sizes(client)
    assert (after[0] - before[0], after[1] - before[1]) == (1, len(tasks))  # one call of 4
    with kiln(settings, max_batch=1) as client:
        alone = [generate(client, [{**task, "taskUUID": new_uuid()}])[0] for task in tasks]
    for image, solo in zip(batched, alone, strict=True):
        assert image.size == (128, 128)
        assert max_difference(image, solo) <= 2
    # each image is its own prompt and seed's, not a copy of another's
    assert len({image.tobytes() for image in batched}) == len(tasks)


def test_a_task_of_several_images_runs_them_in_one_call_and_the_same_batch_repeats_exactly(settings):
    task = inference(numberResults=4, seed=40)
    with kiln(settings) as client:
        before = batch_sizes(client)
        first = post(client, [task]).json()["data"]
        again = post(client, [{**task, "taskUUID": new_uuid()}]).json()["data"]
        after = batch_sizes(client)
    assert (after[0] - before[0], after[1] - before[1]) == (2, 8)
    assert [item["seed"] for item in first] == [40, 41, 42, 43]
    assert [decode_image(item).tobytes() for item in first] == [decode_image(item).tobytes() for item in again]


def test_max_batch_1_gives_the_bytes_of_each_task_sent_alone(settings):
    tasks = tasks_of()
    with kiln(settings, max_batch=1) as client:
        before = batch_sizes(client)
        together = generate(client, tasks)
        after = batch_sizes(client)
        alone = [generate(client, [{**task, "taskUUID": new_uuid()}])[0] for task in tasks]
    assert (after[0] - before[0], after[1] - before[1]) == (4, 4)
    assert [image.tobytes() for image in together] == [image.tobytes() for image in alone]


def test_tasks_that_differ_in_size_or_loras_run_in_separate_calls(settings):
    lora = {"lora": [{"model": "kiln:tiny-lora@1", "weight": 1.0}]}
    other_lora = {"lora": [{"model": "kiln:tiny-lora-kohya@1", "weight": 1.0}]}
    tasks = [inference(seed=1), inference(seed=2), inference(seed=3, width=192),
             inference(seed=4, **lora), inference(seed=5, **other_lora)]
    with kiln(settings) as client:
        before = batch_sizes(client)
        images = generate(client, tasks)
        after = batch_sizes(client)
    # 128 px bare (2 images), 192 px, one LoRA, another LoRA: four calls of 5 images
    assert (after[0] - before[0], after[1] - before[1]) == (4, 5)
    assert [image.size for image in images] == [(128, 128)] * 2 + [(192, 128)] + [(128, 128)] * 2


def test_a_task_that_fails_in_a_batch_fails_alone(settings):
    good = inference(positivePrompt="a red (circle)1.3", promptWeighting="compel", seed=3)
    bad = inference(positivePrompt='("a red circle", "a blue square").blend(1', promptWeighting="compel", seed=4)
    with kiln(settings) as client:
        before = batch_sizes(client)
        body = post(client, [good, bad]).json()
        after = batch_sizes(client)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 2)  # the two were one batch
    assert [item["taskUUID"] for item in body["data"]] == [good["taskUUID"]]
    assert decode_image(body["data"][0]).size == (128, 128)
    assert [(error["taskUUID"], error["parameter"]) for error in body["errors"]] == [
        (bad["taskUUID"], "positivePrompt")]
