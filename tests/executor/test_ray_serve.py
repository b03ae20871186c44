"""The Ray Serve executor on a local Ray (2 CPUs) with 2 CPU replicas of the tiny models: the
same images as the in-process executor, in seed order, with progress; typed errors; device work
sent to a replica; batching inside a replica; replicas killed mid-load and mid-generation; the
REST API over it. Also, without Ray: errors survive pickling, the replicas' metrics merge, the
CLI flags, and nothing of Ray is imported unless asked for."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import kiln.errors
from kiln.cli import _settings, build_parser
from kiln.errors import InferenceError, InvalidRequestError, KilnError, ModelLoadError
from kiln.executor import Executor, open_executor
from kiln.executor.cluster_metrics import ClusterMetrics
from kiln.generation import GenerationRequest, ModelSpec
from kiln.models import Catalog
from kiln.progress import StepProgress
from kiln.server import create_app
from kiln.service import Services
from kiln.settings import Settings
from kiln.storage import Database
from tests.conftest import API_KEY, SD, SDXL, decode_image, inference, post
from tests.engine.helpers import make_request

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")

# --- without Ray ---------------------------------------------------------------------------------

KILN_ERRORS = [cls for cls in vars(kiln.errors).values()
               if isinstance(cls, type) and issubclass(cls, KilnError)]


@pytest.mark.parametrize("cls", KILN_ERRORS, ids=lambda cls: cls.__name__)
def test_every_kiln_error_survives_pickling_with_its_code_and_parameter(cls):
    error = cls("width must be a multiple of 8", parameter="width", air="kiln:x@1")
    coded = cls("no such model", code="invalidModel", parameter="model", status=404)
    for original in (error, coded):
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is cls
        assert (copy.message, copy.code, copy.parameter, copy.status, copy.details) == (
            original.message, original.code, original.parameter, original.status, original.details)
        assert str(copy) == str(original)


def test_ray_is_imported_only_for_the_ray_executor():
    script = (
        "import sys\n"
        "import kiln.server, kiln.service\n"
        "from kiln.executor import InProcessExecutor, open_executor\n"
        "from kiln.settings import Settings\n"
        "assert isinstance(open_executor(Settings()), InProcessExecutor)\n"
        "assert 'ray' not in sys.modules, 'the in-process executor imported Ray'\n"
        "executor = open_executor(Settings(executor='ray', replicas=2))\n"
        "import ray\n"
        "assert type(executor).__name__ == 'RayServeExecutor' and not ray.is_initialized()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_serve_command_takes_the_executor_flags():
    args = build_parser().parse_args(
        ["serve", "--executor", "ray", "--ray-address", "head:6379", "--replicas", "3"])
    settings = _settings(args)
    assert (settings.executor, settings.ray_address, settings.replicas) == ("ray", "head:6379", 3)
    assert _settings(build_parser().parse_args(["serve"])).executor == "in-process"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--replicas", "0"])


def test_replica_reports_merge_into_one_family_per_metric_labelled_by_replica():
    from prometheus_client.parser import text_string_to_metric_families

    from kiln.executor import ExecutorMetrics

    metrics = ClusterMetrics()
    for replica, batch in (("a", 1), ("b", 4)):
        replica_metrics = ExecutorMetrics()
        replica_metrics.batch_ran([0.01] * batch, 0.5)
        metrics.reported(replica, replica_metrics.exposition())
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    counts = {s.labels["replica"]: s.value for s in families["kiln_batch_size"].samples
              if s.name == "kiln_batch_size_sum"}
    assert counts == {"a": 1, "b": 4}
    metrics.lost("a")
    assert 'replica="a"' not in metrics.exposition().decode()


# --- on a local Ray -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="Ray Serve is not installed (pip install 'kiln[cluster]')")
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def cluster_settings(data_dir: Path) -> Settings:
    """Ray settings on the session's SQLite data directory. Not the parametrised `settings`:
    the storage backend does not matter here, and one Ray per module is slow enough."""
    return Settings(
        data_dir=data_dir, api_keys=(API_KEY,), public_url="http://testserver", torch_threads=1,
        # a wide batching window: requests sent together surely meet in one replica's batch
        executor="ray", replicas=2, batch_window_ms=100,
    )


@pytest.fixture(scope="module")
def executor(ray_cluster: Any, cluster_settings: Settings) -> Iterator[Any]:
    executor = open_executor(cluster_settings)
    asyncio.run(executor.start())
    yield executor
    executor.close()


@pytest.fixture(scope="module")
def in_process(cluster_settings: Settings) -> Iterator[Executor]:
    """The reference: the in-process executor of the same settings."""
    executor = open_executor(replace(cluster_settings, executor="in-process"))
    yield executor
    executor.close()


@pytest.fixture(scope="module")
def specs(data_dir: Path) -> dict[str, ModelSpec]:
    catalog = Catalog(Database(data_dir / "kiln.sqlite3"))
    return {air: catalog.get(air).spec for air in (SD, SDXL)}


def metric(executor: Any, sample: str) -> float:
    """The sum of `sample` over its labels (every replica's) in `executor`'s metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    families = text_string_to_metric_families(executor.metrics.exposition().decode())
    return sum(s.value for family in families for s in family.samples if s.name == sample)


async def collect(executor: Any, request: GenerationRequest, owner: str = "",
                  on_step: Callable[[StepProgress], None] | None = None) -> list[Any]:
    """The images of `request`, or the `KilnError` that ended it after those."""
    results: list[Any] = []
    try:
        async for image in executor.generate(request, owner, on_step):
            results.append(image)
    except KilnError as exc:
        results.append(exc)
    return results


def test_images_equal_the_in_process_executors_byte_for_byte_in_seed_order(executor, in_process, specs):
    request = make_request(specs[SD], seeds=(3, 1, 2))
    through_ray = asyncio.run(collect(executor, request))
    reference = asyncio.run(collect(in_process, request))
    assert [image.tobytes() for image in through_ray] == [image.tobytes() for image in reference]
    assert len({image.tobytes() for image in through_ray}) == 3  # three seeds, three images


def test_a_replica_killed_mid_generation_is_retried_on_another(executor, ray_cluster, in_process, specs):
    # early in the module: Serve replaces the killed replica while the next tests run
    request = make_request(specs[SD], seeds=(1, 2), steps=4)
    killed: list[str] = []

    def on_step(progress: StepProgress) -> None:
        if not killed:  # the first step of the first image: kill the replica running it
            [replica] = executor.serving
            ray_cluster.kill(ray_cluster.get_actor(replica, namespace="serve"), no_restart=True)
            killed.append(replica)

    retries = metric(executor, "kiln_replica_retries_total")
    images = asyncio.run(asyncio.wait_for(collect(executor, request, "a", on_step), 300))
    assert killed and metric(executor, "kiln_replica_retries_total") == retries + 1
    # both images again, from the other replica, as the in-process executor makes them
    reference = asyncio.run(collect(in_process, request))
    assert [image.tobytes() for image in images] == [image.tobytes() for image in reference]


def test_each_images_step_progress_arrives_before_it(executor, specs):
    log: list[Any] = []

    def on_step(progress: StepProgress) -> None:
        log.append((progress.index, progress.step, progress.steps, progress.preview().size))

    async def run() -> None:
        async for image in executor.generate(make_request(specs[SD], seeds=(5, 6), steps=3), "me", on_step):
            log.append(("image", image.size))

    asyncio.run(run())
    images = [i for i, entry in enumerate(log) if entry[0] == "image"]
    assert len(images) == 2
    for index, position in enumerate(images):
        before = {entry[1] for entry in log[:position] if entry[0] == index}
        assert before == {1, 2, 3}, log
    assert all(entry[2:] == (3, (8, 8)) for entry in log if entry[0] != "image")  # 64 px -> 8 px latents


def test_a_bad_request_fails_with_its_typed_error(executor, specs):
    [error] = asyncio.run(collect(executor, make_request(specs[SD], width=60)))
    assert isinstance(error, InvalidRequestError)
    assert (error.code, error.parameter) == ("invalidRequest", "width")
    missing = ModelSpec("kiln:missing@1", "sd1x", "/nowhere/missing")
    [error] = asyncio.run(collect(executor, make_request(missing)))
    assert isinstance(error, ModelLoadError) and error.code == "modelUnavailable"
    with pytest.raises(ModelLoadError):
        asyncio.run(executor.warm(missing))


def test_run_sends_a_function_to_a_replica(executor):
    def fails(engine: Any) -> None:
        raise InvalidRequestError("no such annotator", parameter="preProcessorType")

    assert asyncio.run(executor.run(lambda engine: type(engine).__name__)) == "Engine"
    with pytest.raises(InvalidRequestError) as raised:
        asyncio.run(executor.run(fails))
    assert raised.value.parameter == "preProcessorType"
    with pytest.raises(InferenceError, match="ZeroDivisionError"):
        asyncio.run(executor.run(lambda engine: 1 / 0))


def test_concurrent_requests_for_one_model_share_pipeline_calls_in_a_replica(executor, specs):
    asyncio.run(executor.warm(specs[SD]))
    before = metric(executor, "kiln_batch_size_count")

    async def together() -> list[list[Any]]:
        return await asyncio.gather(*(collect(executor, make_request(specs[SD], seeds=(seed,)), f"key{seed}")
                                      for seed in range(8)))

    results = asyncio.run(together())
    assert all(len(images) == 1 and not isinstance(images[0], KilnError) for images in results)
    assert metric(executor, "kiln_batch_size_count") - before < 8


def test_the_rest_api_over_ray_serves_the_in_process_image(executor, cluster_settings):
    from kiln.executor.ray_serve import RayServeExecutor

    def image_and_metrics(front: Services, task: dict[str, Any]) -> tuple[bytes, str]:
        with TestClient(create_app(front)) as client:
            deadline = time.monotonic() + 120
            while (ready := client.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, ready.json()
                time.sleep(0.2)
            reply = post(client, [task])
            assert reply.status_code == 200, reply.text
            [item] = reply.json()["data"]
            return decode_image(item).tobytes(), client.get("/metrics").text

    # a second front on the same cluster: it joins the running deployment
    ray_front = Services.open(cluster_settings, executor=RayServeExecutor(cluster_settings))  # type: ignore[arg-type]
    through_ray, metrics = image_and_metrics(ray_front, inference(seed=77))
    reference, _ = image_and_metrics(Services.open(replace(cluster_settings, executor="in-process")),
                                     inference(seed=77))
    assert through_ray == reference
    assert 'kiln_batch_size_bucket{le="1.0",replica="SERVE_REPLICA::kiln#engine#' in metrics


def kill_when_served(executor: Any, ray: Any, times: int) -> threading.Thread:
    """A thread that kills, `times` times, the replica that starts serving `executor` (the
    next one each time), as soon as it does: mid-load of a model not loaded there yet."""
    def kill() -> None:
        killed: set[str] = set()
        deadline = time.monotonic() + 300
        while len(killed) < times and time.monotonic() < deadline:
            for replica in set(executor.serving) - killed:
                killed.add(replica)
                try:
                    ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=True)
                except ValueError:  # gone already
                    pass
            time.sleep(0.005)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def test_a_request_whose_replicas_die_twice_gets_a_typed_error(executor, ray_cluster, specs):
    failures = metric(executor, "kiln_replica_failures_total")
    killer = kill_when_served(executor, ray_cluster, times=2)
    [error] = asyncio.run(asyncio.wait_for(collect(executor, make_request(specs[SDXL])), 300))
    killer.join(timeout=5)
    assert metric(executor, "kiln_replica_failures_total") == failures + 2
    assert isinstance(error, InferenceError) and error.code == "inferenceError"
    assert "failed twice" in error.message and "ActorDiedError" in error.message
