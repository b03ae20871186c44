"""The in-process executor on a recording fake engine: batching window and limits, keys never
mixed, per-image and per-call failures, fairness between owners, device work between batches,
closing, metrics, and use from several event loops."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
from PIL import Image

from kiln.errors import InferenceError, KilnError, ModelLoadError
from kiln.executor import InProcessExecutor, batch_key
from kiln.generation import GenerationRequest, LoraInput, ModelSpec

MODEL = ModelSpec("kiln:tiny-sd@1", "sd1x", "/models/tiny-sd")
LORA = ModelSpec("kiln:tiny-lora@1", "sd1x", "/models/tiny-lora.safetensors")


def request(seeds: Sequence[int] = (1,), **changes: Any) -> GenerationRequest:
    base = GenerationRequest(
        model=MODEL, positive_prompt="a red circle", negative_prompt=None, width=64, height=64,
        steps=4, cfg_scale=7.0, clip_skip=0, scheduler=None, seeds=tuple(seeds),
    )
    return replace(base, **changes)


class RecordingEngine:
    """Images whose red channel is the seed. Records every call's requests and its interval;
    `gates[i]` holds call i until set; calls in `failing_calls` raise; seeds in `failing_seeds`
    fail their own request."""

    def __init__(self, limit: int = 64, delay_s: float = 0.0) -> None:
        self.limit, self.delay_s = limit, delay_s
        self.batches: list[list[GenerationRequest]] = []
        self.intervals: list[tuple[float, float]] = []
        self.gates: dict[int, threading.Event] = {}
        self.failing_calls: set[int] = set()
        self.failing_seeds: set[int] = set()
        self.loaded: list[str] = []
        self.resident_bytes, self.evictions = 1234, 2

    def load(self, model: ModelSpec) -> None:
        self.loaded.append(model.air)

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[Image.Image | KilnError]:
        start = time.monotonic()
        call = len(self.batches)
        self.batches.append(list(requests))
        if call in self.gates:
            assert self.gates[call].wait(timeout=10), "the test never opened the gate"
        time.sleep(self.delay_s)
        self.intervals.append((start, time.monotonic()))
        if call in self.failing_calls:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return [
            InferenceError(f"seed {r.seeds[0]} failed") if r.seeds[0] in self.failing_seeds
            else Image.new("RGB", (r.width, r.height), (r.seeds[0] % 256, 0, 0))
            for r in requests
        ]

    def max_batch(self, request: GenerationRequest) -> int:
        return self.limit

    def annotate(self, kind: str, path: str, image: Image.Image, options: Any) -> Image.Image:
        raise NotImplementedError

    def gate(self, call: int) -> threading.Event:
        self.gates[call] = threading.Event()
        return self.gates[call]

    @property
    def batch_sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]


@pytest.fixture
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
def make_executor(engine: RecordingEngine) -> Iterator[Callable[..., InProcessExecutor]]:
    made: list[InProcessExecutor] = []

    def make(**options: Any) -> InProcessExecutor:
        made.append(InProcessExecutor(lambda: engine, **{"batch_window_s": 0.2, **options}))
        return made[-1]

    yield make
    for executor in made:
        executor.close()
    for gate in engine.gates.values():
        gate.set()


async def seeds_of(executor: InProcessExecutor, req: GenerationRequest, owner: str = "") -> list[int]:
    """The seeds of the images `executor` yields for `req`, in the order yielded."""
    return [image.getpixel((0, 0))[0] async for image in executor.generate(req, owner)]


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


# --- the batching window and limits --------------------------------------------------------------

def test_a_lone_request_waits_the_window_and_no_longer(make_executor, engine):
    executor = make_executor(batch_window_s=0.3)
    start = time.monotonic()
    assert asyncio.run(seeds_of(executor, request())) == [1]
    assert 0.29 <= time.monotonic() - start < 0.8
    assert engine.batch_sizes == [1]


def test_a_burst_that_arrives_a_little_apart_meets_in_one_batch(make_executor, engine):
    executor = make_executor(batch_window_s=0.2)

    async def staggered(gap_s: float, count: int) -> list[list[int]]:
        async def client(s: int) -> list[int]:
            await asyncio.sleep(s * gap_s)
            return await seeds_of(executor, request((s,)), f"key-{s}")
        return await asyncio.gather(*(client(s) for s in range(count)))

    # 5 requests 0.1 s apart: 0.4 s from first to last, more than one window, each within one
    assert asyncio.run(staggered(0.1, 5)) == [[s] for s in range(5)]
    assert engine.batch_sizes == [5]


def test_a_steady_trickle_is_cut_after_the_gathering_limit(make_executor, engine):
    executor = make_executor(batch_window_s=0.05, max_batch=100)  # gathers for 0.5 s at most

    async def trickle() -> float:
        start = time.monotonic()
        clients = []
        for s in range(40):  # one every 0.03 s for 1.2 s: never a window's silence
            clients.append(asyncio.create_task(seeds_of(executor, request((s,)), f"key-{s}")))
            await asyncio.sleep(0.03)
        await asyncio.gather(*clients)
        return engine.intervals[0][0] - start

    assert 0.45 <= asyncio.run(trickle()) < 0.9
    assert len(engine.batch_sizes) >= 2 and sum(engine.batch_sizes) == 40


def test_a_full_batch_goes_at_once(make_executor, engine):
    executor = make_executor(max_batch=4, batch_window_s=30)
    start = time.monotonic()
    assert asyncio.run(seeds_of(executor, request(seeds=range(4)))) == [0, 1, 2, 3]
    assert time.monotonic() - start < 5 and engine.batch_sizes == [4]


def test_concurrent_requests_share_one_pipeline_call(make_executor, engine):
    executor = make_executor()

    async def eight_clients() -> list[list[int]]:
        return await asyncio.gather(*(seeds_of(executor, request((s,)), f"key-{s}") for s in range(8)))

    assert asyncio.run(eight_clients()) == [[s] for s in range(8)]
    assert engine.batch_sizes == [8]


def test_requests_of_different_size_or_lora_never_share_a_call(make_executor, engine):
    executor = make_executor()
    requests = [
        request((1, 2, 3)), request((4, 5), width=128),
        request((6, 7), loras=(LoraInput(LORA, 0.5),)), request((8,), loras=(LoraInput(LORA, 0.7),)),
    ]

    async def together() -> list[list[int]]:
        return await asyncio.gather(*(seeds_of(executor, r) for r in requests))

    assert asyncio.run(together()) == [[1, 2, 3], [4, 5], [6, 7], [8]]
    assert sorted(engine.batch_sizes) == [1, 2, 2, 3]
    assert all(len({batch_key(r) for r in batch}) == 1 for batch in engine.batches)


def test_images_come_back_in_seed_order_across_calls(make_executor, engine):
    executor = make_executor(max_batch=2)
    assert asyncio.run(seeds_of(executor, request((5, 3, 9, 1, 7)))) == [5, 3, 9, 1, 7]
    assert engine.batch_sizes == [2, 2, 1]


def test_the_engines_own_limit_lowers_the_batch(make_executor):
    engine = RecordingEngine(limit=3)
    executor = InProcessExecutor(lambda: engine, max_batch=8)
    try:
        assert asyncio.run(seeds_of(executor, request(range(7)))) == list(range(7))
    finally:
        executor.close()
    assert engine.batch_sizes == [3, 3, 1]


# --- failures ------------------------------------------------------------------------------------

def test_a_failing_image_fails_only_its_own_request(make_executor, engine):
    executor = make_executor()
    engine.failing_seeds = {2}

    async def two_requests() -> list[Any]:
        return await asyncio.gather(seeds_of(executor, request((1, 2, 3))), seeds_of(executor, request((4,))),
                                    return_exceptions=True)

    failed, fine = asyncio.run(two_requests())
    assert isinstance(failed, InferenceError) and failed.message == "seed 2 failed"
    assert fine == [4] and engine.batch_sizes == [4]


def test_the_images_before_a_failed_one_are_yielded_first(make_executor, engine):
    executor = make_executor(max_batch=1)
    engine.failing_seeds = {2}
    got: list[int] = []

    async def consume() -> None:
        async for image in executor.generate(request((1, 2, 3))):
            got.append(image.getpixel((0, 0))[0])

    with pytest.raises(InferenceError, match="seed 2 failed"):
        asyncio.run(consume())
    assert got == [1]


def test_a_failing_call_fails_each_of_its_images_and_the_next_call_runs(make_executor, engine):
    executor = make_executor()
    engine.failing_calls = {0}

    async def two_clients() -> list[Any]:
        return await asyncio.gather(seeds_of(executor, request((1,))), seeds_of(executor, request((2,))),
                                    return_exceptions=True)

    first, second = asyncio.run(two_clients())
    for error in (first, second):
        assert isinstance(error, InferenceError)
        assert error.message == "Generation failed: RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert first is not second
    assert asyncio.run(seeds_of(executor, request((3,)))) == [3]
    assert engine.batch_sizes == [2, 1]


# --- fairness ------------------------------------------------------------------------------------

def test_a_one_image_request_waits_at_most_one_batch_of_a_long_one(make_executor, engine):
    executor = make_executor(max_batch=4, batch_window_s=0.01)
    opened = engine.gate(0)

    async def scenario() -> tuple[list[int], list[int]]:
        long = asyncio.create_task(seeds_of(executor, request(range(20)), owner="a"))
        await until(lambda: len(engine.batches) == 1)  # a's first batch runs
        short = asyncio.create_task(seeds_of(executor, request((99,), width=128), owner="b"))
        await asyncio.sleep(0.05)
        opened.set()
        return await long, await short

    long, short = asyncio.run(scenario())
    assert long == list(range(20)) and short == [99]
    assert [batch[0].width for batch in engine.batches[:3]] == [64, 128, 64]


# --- device work ---------------------------------------------------------------------------------

def test_device_work_runs_on_the_engine_and_never_during_a_batch(make_executor):
    engine = RecordingEngine(delay_s=0.02)
    executor = InProcessExecutor(lambda: engine, max_batch=2, batch_window_s=0.001)
    intervals = engine.intervals

    def device_work(used: Any) -> str:
        start = time.monotonic()
        time.sleep(0.02)
        intervals.append((start, time.monotonic()))
        return "annotated" if used is engine else "wrong engine"

    async def mixed() -> list[Any]:
        images = [seeds_of(executor, request(range(3), width=64 * (i + 1)), f"key-{i}") for i in range(4)]
        return await asyncio.gather(*images, *(executor.run(device_work) for _ in range(4)))

    try:
        results = asyncio.run(mixed())
    finally:
        executor.close()
    assert results[4:] == ["annotated"] * 4
    assert len(intervals) == len(engine.batches) + 4
    ordered = sorted(intervals)
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(ordered))


def test_device_work_errors(make_executor):
    executor = make_executor()

    def refuse(engine: Any) -> None:
        raise ModelLoadError("no such weights", parameter="model")

    def crash(engine: Any) -> None:
        raise ValueError("bad annotator input")

    with pytest.raises(ModelLoadError, match="no such weights"):
        asyncio.run(executor.run(refuse))
    with pytest.raises(InferenceError, match="^Device work failed: ValueError: bad annotator input$"):
        asyncio.run(executor.run(crash))


def test_start_builds_the_engine_on_the_worker_and_warm_loads(engine):
    threads: list[str] = []

    def build() -> RecordingEngine:
        threads.append(threading.current_thread().name)
        return engine

    executor = InProcessExecutor(build)
    try:
        assert not executor.started
        asyncio.run(executor.start())
        assert executor.started and threads == ["kiln-engine"]
        asyncio.run(executor.warm(MODEL))
        assert engine.loaded == [MODEL.air] and threads == ["kiln-engine"]
    finally:
        executor.close()


def test_a_failing_factory_fails_start_and_generation_without_stopping_the_worker():
    def build() -> RecordingEngine:
        raise OSError("no device")

    executor = InProcessExecutor(build, batch_window_s=0.001)
    try:
        with pytest.raises(OSError, match="no device"):
            asyncio.run(executor.start())
        with pytest.raises(InferenceError, match="Generation failed: OSError: no device"):
            asyncio.run(seeds_of(executor, request()))
        assert not executor.started
    finally:
        executor.close()


# --- callers leaving, closing, event loops -----------------------------------------------------

def test_a_caller_that_stops_iterating_withdraws_its_images_not_yet_batched(make_executor, engine):
    executor = make_executor(max_batch=2, batch_window_s=0.001)
    second_call = engine.gate(1)

    async def leave_early() -> int:
        images = executor.generate(request(range(6)))
        first = await images.__anext__()
        await until(lambda: len(engine.batches) == 2)
        await images.aclose()  # seeds 2 and 3 are running; 4 and 5 are withdrawn
        second_call.set()
        return first.getpixel((0, 0))[0]

    assert asyncio.run(leave_early()) == 0
    assert asyncio.run(seeds_of(executor, request((7,)))) == [7]
    assert engine.batch_sizes == [2, 2, 1]
    assert executor.metrics.registry.get_sample_value("kiln_executor_queue_depth") == 0


def test_close_returns_at_once_and_fails_what_is_pending(make_executor, engine):
    executor = make_executor(batch_window_s=0.001)
    running_call = engine.gate(0)

    async def scenario() -> list[Any]:
        running = asyncio.create_task(seeds_of(executor, request((1,))))
        await until(lambda: len(engine.batches) == 1)
        pending = asyncio.create_task(seeds_of(executor, request((2,), width=128)))
        await asyncio.sleep(0.05)
        start = time.monotonic()
        executor.close()
        assert time.monotonic() - start < 0.5
        running_call.set()
        return await asyncio.gather(running, pending, return_exceptions=True)

    running, pending = asyncio.run(scenario())
    assert running == [1]  # what ran finishes
    assert isinstance(pending, InferenceError) and "shut down" in pending.message
    with pytest.raises(InferenceError, match="shutting down"):
        asyncio.run(seeds_of(executor, request()))


def test_event_loops_one_after_another_and_at_once(make_executor, engine):
    executor = make_executor(batch_window_s=0.3)
    assert asyncio.run(seeds_of(executor, request((1,)))) == [1]
    assert asyncio.run(seeds_of(executor, request((2,)))) == [2]
    results: dict[int, list[int]] = {}
    threads = [threading.Thread(target=lambda s=s: results.update({s: asyncio.run(
        seeds_of(executor, request((s,)), owner=f"key-{s}"))})) for s in (3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == {3: [3], 4: [4]}
    assert engine.batch_sizes == [1, 1, 2]  # the two loops' requests shared a call


# --- metrics -------------------------------------------------------------------------------------

def test_metrics_report_the_queue_batches_and_model_memory(make_executor, engine):
    executor = make_executor(max_batch=2, batch_window_s=0.001)
    first_call = engine.gate(0)
    sample = executor.metrics.registry.get_sample_value

    async def scenario() -> None:
        images = asyncio.create_task(seeds_of(executor, request(range(5))))
        await until(lambda: len(engine.batches) == 1)
        assert sample("kiln_executor_queue_depth") == 3
        first_call.set()
        await images

    asyncio.run(scenario())
    assert sample("kiln_executor_queue_depth") == 0
    assert sample("kiln_batch_size_count") == 3 and sample("kiln_batch_size_sum") == 5
    assert sample("kiln_batch_size_bucket", {"le": "1.0"}) == 1
    assert sample("kiln_unit_queued_seconds_count") == 5
    assert sample("kiln_unit_running_seconds_count") == 5
    assert sample("kiln_model_memory_bytes") == 1234
    assert sample("kiln_model_evictions_total") == 2
    assert b"kiln_batch_size_bucket" in executor.metrics.exposition()
