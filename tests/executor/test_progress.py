"""Step progress through the in-process executor: each image's reports reach its own request's
listener, numbered by its position in that request, before the image is yielded; a batch with
no listener runs without one; a failing listener never fails generation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image

from kiln.errors import KilnError
from kiln.executor import InProcessExecutor
from kiln.generation import GenerationRequest
from kiln.progress import StepListener, StepProgress

from .test_in_process import RecordingEngine, request


class SteppingEngine(RecordingEngine):
    """Reports every step of every image when given a listener; records whether it was."""

    def __init__(self) -> None:
        super().__init__()
        self.listened: list[bool] = []

    def generate_batch(
        self, requests: Sequence[GenerationRequest], on_step: StepListener | None = None
    ) -> list[Image.Image | KilnError]:
        self.listened.append(on_step is not None)
        steps = requests[0].steps
        for step in range(1, steps + 1):
            for index in range(len(requests)):
                if on_step is not None:
                    on_step(StepProgress(index, step, steps))
        return super().generate_batch(requests)


@pytest.fixture
def stepping() -> SteppingEngine:
    return SteppingEngine()


@pytest.fixture
def executor(stepping: SteppingEngine) -> Any:
    executor = InProcessExecutor(lambda: stepping, batch_window_s=0.2)
    yield executor
    executor.close()


async def consume(executor: InProcessExecutor, jobs: dict[str, tuple[GenerationRequest, StepListener | None]],
                  log: list[str]) -> None:
    """Generate every job at once (one owner each), logging each image as `name image seed`."""
    async def one(name: str, req: GenerationRequest, listener: StepListener | None) -> None:
        async for image in executor.generate(req, owner=name, on_step=listener):
            log.append(f"{name} image {image.getpixel((0, 0))[0]}")

    await asyncio.gather(*(one(name, req, listener) for name, (req, listener) in jobs.items()))


def test_each_request_hears_its_own_images_by_position_before_they_come(executor, stepping):
    log: list[str] = []
    heard: dict[str, list[tuple[int, int, int]]] = {"a": [], "b": []}

    def listener(name: str) -> StepListener:
        def listen(progress: StepProgress) -> None:
            heard[name].append((progress.index, progress.step, progress.steps))
            log.append(f"{name} step")
        return listen

    jobs = {"a": (request(seeds=(1, 2)), listener("a")), "b": (request(seeds=(3,)), listener("b"))}
    asyncio.run(consume(executor, jobs, log))
    assert stepping.batch_sizes == [3] and stepping.listened == [True]
    assert heard["a"] == [(index, step, 4) for step in (1, 2, 3, 4) for index in (0, 1)]
    assert heard["b"] == [(0, step, 4) for step in (1, 2, 3, 4)]
    assert log.index("a image 1") > max(i for i, entry in enumerate(log) if entry.endswith("step"))


def test_a_batch_without_listeners_runs_without_one(executor, stepping):
    heard: list[StepProgress] = []
    asyncio.run(consume(executor, {"a": (request(seeds=(1,)), None)}, []))
    asyncio.run(consume(executor, {"a": (request(seeds=(1,)), None), "b": (request(seeds=(2,)), heard.append)}, []))
    assert stepping.listened == [False, True] and stepping.batch_sizes == [1, 2]
    assert [(p.index, p.step) for p in heard] == [(0, step) for step in (1, 2, 3, 4)]


def test_a_failing_listener_is_dropped_and_generation_goes_on(executor, stepping, caplog):
    calls: list[StepProgress] = []

    def failing(progress: StepProgress) -> None:
        calls.append(progress)
        raise RuntimeError("listener bug")

    log: list[str] = []
    with caplog.at_level(logging.ERROR):
        asyncio.run(consume(executor, {"a": (request(seeds=(1, 2)), failing)}, log))
    assert log == ["a image 1", "a image 2"]
    assert [(p.index, p.step) for p in calls] == [(0, 1), (1, 1)]  # once per image
    assert "listener bug" in caplog.text
