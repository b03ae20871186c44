"""Throughput under concurrency: Kiln serving N clients against diffusers called directly.

Both run the same model and settings, measured side by side in one run.

    .venv/bin/python bench/throughput.py [--models tiny sd15 sdxl] [--n 8 32]
        [--size 128] [--steps 10] [--threads 2] [--repeats 1] [--models-dir build/bench-models]
        [--device cpu|cuda]

For each model and each N it measures
  (a) N sequential direct diffusers calls, one image each (the serial queue);
  (b) one direct diffusers call with a batch of N (one seeded generator per image);
  (c) Kiln with N concurrent clients, each POSTing one 1-image imageInference task;
  (d) Kiln with one request asking for N images (numberResults; Runware caps a task at 20, so
      larger N is split into tasks of at most 20 in the same request);
  (e) Kiln with one request of one image, alone: single-image latency end to end (its ÷ (a)
      compares it with one direct call),
and prints img/s, p50/p99 latency and the ratios. Latency is the time from the moment the N
images are asked for to the moment each one is available, so in (a) the i-th image waits for
the i-1 before it. Kiln runs as a real server (`kiln serve`, a subprocess on a loopback port)
with KILN_MAX_BATCH = the largest N (or --max-batch) and the given KILN_BATCH_WINDOW_MS.

Models (`random_models.py`): `tiny` is kiln:tiny-sd@1; `sd15` and `sdxl` are the full-size SD
1.5 and SDXL architectures with random weights, built offline and deterministically once into
`--models-dir` (fp16 safetensors, ~2 GB and ~7 GB; on `--device`). Both sides run fp32 on a
CPU and fp16 on CUDA. `bench/device.sh` runs the GPU set (SD 1.5 at 512 px 25 steps, SDXL at
1024 px 30 steps) on a lent GPU machine. The goals of issue 12 (full-size SD 1.5, N = 8, 2 CPU cores): (c)/(b) >= 0.9 and
(c)/(a) >= 2.2, printed as PASS/FAIL. Run it on an otherwise idle machine: the load average
before and after is printed so that a busy machine shows.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import diffusers  # noqa: E402
import httpx  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import DiffusionPipeline  # noqa: E402
from random_models import MODELS, SEED, BenchModel  # noqa: E402

from kiln.settings import Settings  # noqa: E402

KEY = "bench-key"
CFG = 7.0
MAX_RESULTS_PER_TASK = 20  # Runware's (and Kiln's) cap on numberResults
PROMPTS = ("a red circle on a blue background", "a small green star in the top left corner",
           "a large yellow square on a white background", "a purple triangle in the centre")
GOALS = (("c", "b", 0.9), ("c", "a", 2.2))  # (c)/(b) >= 0.9 and (c)/(a) >= 2.2: sd15, N = 8
SCENARIOS = {
    "a": "N sequential direct calls",
    "b": "one direct call, batch of N",
    "c": "Kiln, N concurrent 1-image clients",
    "d": "Kiln, one request of N images",
    "e": "Kiln, one 1-image request alone",
}


# ---- measuring -----------------------------------------------------------------------------

@dataclass
class Measurement:
    """Images and wall time summed over repeats, and every image's latency."""

    images: int = 0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    batches: list[tuple[float, float]] = field(default_factory=list)  # (calls, images) a round

    def add(self, latencies: list[float], wall_s: float) -> None:
        self.images += len(latencies)
        self.wall_s += wall_s
        self.latencies += latencies

    @property
    def per_s(self) -> float:
        return self.images / self.wall_s

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile: with fewer than 100 images p99 is the slowest one."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    def batching(self) -> str:
        """Pipeline calls per round and images per call (Kiln's: as its /metrics counted them)."""
        if not self.batches:
            return ""
        calls, images = (sum(column) for column in zip(*self.batches, strict=True))
        return f"{calls / len(self.batches):g} calls, {images / calls:.1f} img/call" if calls else ""


class Direct:
    """The diffusers pipeline called directly, loaded from the same folder as Kiln's."""

    def __init__(self, folder: Path, device: str, dtype: torch.dtype, size: int) -> None:
        self.pipe = DiffusionPipeline.from_pretrained(folder, dtype=dtype,
                                                            local_files_only=True).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.size = size

    def call(self, seeds: list[int], steps: int) -> None:
        images = self.pipe(
            [PROMPTS[s % len(PROMPTS)] for s in seeds], width=self.size, height=self.size,
            num_inference_steps=steps, guidance_scale=CFG,
            generator=[torch.Generator().manual_seed(s) for s in seeds]).images
        assert len(images) == len(seeds)

    def sequential(self, seeds: list[int], steps: int) -> tuple[list[float], float]:
        started, done = time.perf_counter(), []
        for seed in seeds:
            self.call([seed], steps)
            done.append(time.perf_counter() - started)
        return done, done[-1]

    def batched(self, seeds: list[int], steps: int) -> tuple[list[float], float]:
        started = time.perf_counter()
        self.call(seeds, steps)
        wall = time.perf_counter() - started
        return [wall] * len(seeds), wall


def task(air: str, seed: int, size: int, steps: int, number: int = 1) -> dict[str, Any]:
    return {
        "taskType": "imageInference", "taskUUID": str(uuid.uuid4()), "model": air,
        "positivePrompt": PROMPTS[seed % len(PROMPTS)], "width": size, "height": size,
        "steps": steps, "CFGScale": CFG, "seed": seed, "numberResults": number,
        "outputType": "base64Data", "outputFormat": "PNG",
    }


def post(client: httpx.Client, url: str, tasks: list[dict[str, Any]]) -> None:
    response = client.post(url, json=tasks)
    body = response.json()
    expected = sum(t["numberResults"] for t in tasks)
    if response.status_code != 200 or body.get("errors") or len(body.get("data", [])) != expected:
        raise RuntimeError(f"Kiln answered {response.status_code}: {str(body)[:500]}")


class Kiln:
    """`kiln serve` in a subprocess on a loopback port, and N clients with a connection each."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + "/v1"
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "kiln.cli", "serve"], env=env,
                                            stdout=log, stderr=subprocess.STDOUT)
        self.clients: list[httpx.Client] = []

    def wait_ready(self, timeout_s: float = 1800) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kiln serve exited ({self.process.returncode}):\n"
                                   + self.log_path.read_text()[-3000:])
            try:
                if httpx.get(self.base + "/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"kiln serve was not ready after {timeout_s:.0f} s:\n"
                           + self.log_path.read_text()[-3000:])

    def _client(self, i: int) -> httpx.Client:
        while len(self.clients) <= i:
            self.clients.append(httpx.Client(
                timeout=None, headers={"Authorization": f"Bearer {KEY}"}))
        return self.clients[i]

    def concurrent(self, tasks: list[dict[str, Any]]) -> tuple[list[float], float]:
        """One client per task, all released at once; each one's time to its answer."""
        barrier = threading.Barrier(len(tasks) + 1)
        latencies = [0.0] * len(tasks)
        failures: list[BaseException] = []

        def client(i: int) -> None:
            barrier.wait()  # released once `started` is set
            try:
                post(self._client(i), self.url, [tasks[i]])
            except BaseException as exc:  # noqa: BLE001 - re-raised below, on the main thread
                failures.append(exc)
            latencies[i] = time.perf_counter() - started

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(tasks))]
        for thread in threads:
            thread.start()
        started = time.perf_counter()
        barrier.wait()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return latencies, max(latencies)

    def one_request(self, tasks: list[dict[str, Any]]) -> tuple[list[float], float]:
        started = time.perf_counter()
        post(self._client(0), self.url, tasks)
        wall = time.perf_counter() - started
        return [wall] * sum(t["numberResults"] for t in tasks), wall

    def batch_counts(self) -> tuple[float, float] | None:
        """(pipeline calls, images) so far, from the batch-size histogram on /metrics."""
        text = httpx.get(self.base + "/metrics", timeout=10).text
        found: dict[str, dict[str, float]] = {}
        for match in re.finditer(r"^(kiln_\w*batch\w*)_(count|sum)(?:\{[^}]*\})?\s+(\S+)$",
                                 text, re.MULTILINE):
            totals = found.setdefault(match[1], {})
            totals[match[2]] = totals.get(match[2], 0.0) + float(match[3])
        for name in sorted(found, key=lambda n: "size" not in n):
            if {"count", "sum"} <= found[name].keys():
                return found[name]["count"], found[name]["sum"]
        return None

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def kiln_server(model: BenchModel, folder: Path, data_dir: Path, env: dict[str, str]) -> Iterator[Kiln]:
    model.register(folder, data_dir)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kiln = Kiln({**env, "KILN_DATA_DIR": str(data_dir), "KILN_PORT": str(port),
                 "KILN_HOST": "127.0.0.1", "KILN_PRELOAD_MODELS": model.air},
                data_dir / "server.log", port)
    try:
        yield kiln
    finally:
        kiln.close()


# ---- the run -------------------------------------------------------------------------------

def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "n/a"


def kiln_env(args: argparse.Namespace, dtype: str) -> dict[str, str]:
    """The server's environment: ours, with the bench's KILN_* settings on top."""
    settings = {
        "KILN_API_KEYS": KEY,
        "KILN_MAX_BATCH": str(args.max_batch or max(args.n)),
        "KILN_TORCH_THREADS": str(args.threads),
        "KILN_DEVICE": args.device,
        "KILN_DTYPE": dtype,
        "KILN_MAX_RESULTS_IN_FLIGHT_PER_KEY": str(max(40, 2 * max(args.n))),
    }
    if args.batch_window_ms is not None:
        settings["KILN_BATCH_WINDOW_MS"] = f"{args.batch_window_ms:g}"
    return {**os.environ, **settings}


def run_model(name: str, args: argparse.Namespace, work: Path,
              results: dict[tuple[str, int], dict[str, Measurement]]) -> None:
    model = MODELS[name]
    folder = model.ensure(args.models_dir, args.device)
    dtype = "fp32" if args.device == "cpu" else "fp16"
    env = kiln_env(args, dtype)
    print(f"\n== {name}: {model.air} ({folder}); load average {loadavg()}", flush=True)
    with kiln_server(model, folder, work / name, env) as kiln:
        direct = Direct(folder, args.device, torch.float32 if dtype == "fp32" else torch.float16,
                        args.size)
        kiln.wait_ready()
        effective = Settings.from_env(env)
        print(f"Kiln: max_batch {effective.max_batch}, batch_window_ms "
              f"{effective.batch_window_ms:g}, torch_threads {effective.torch_threads}, device "
              f"{args.device}, dtype {dtype}; log {kiln.log_path}", flush=True)
        for n in args.n:
            results[(name, n)] = measure(direct, kiln, model.air, n, args)
        del direct
        gc.collect()


def measure(direct: Direct, kiln: Kiln, air: str, n: int,
            args: argparse.Namespace) -> dict[str, Measurement]:
    """(a)-(d) for N = `n`, after a warm-up of each side at this batch size."""
    seeds = list(range(1000, 1000 + n))
    chunks = [min(MAX_RESULTS_PER_TASK, n - i) for i in range(0, n, MAX_RESULTS_PER_TASK)]
    warm = min(2, args.steps)
    direct.batched(seeds, warm)  # first-call allocations at this batch size, on both sides
    direct.call(seeds[:1], warm)
    kiln.concurrent([task(air, s, args.size, warm) for s in seeds])
    runs: dict[str, Callable[[], tuple[list[float], float]]] = {
        "a": partial(direct.sequential, seeds, args.steps),
        "b": partial(direct.batched, seeds, args.steps),
        "c": lambda: kiln.concurrent([task(air, s, args.size, args.steps) for s in seeds]),
        "d": lambda: kiln.one_request([task(air, seeds[0] + sum(chunks[:i]), args.size,
                                            args.steps, k) for i, k in enumerate(chunks)]),
        "e": lambda: kiln.one_request([task(air, seeds[0], args.size, args.steps)]),
    }
    measured = {key: Measurement() for key in runs}
    for _ in range(args.repeats):  # interleaved: drift in machine load hits all alike
        for key, fn in runs.items():
            before = kiln.batch_counts() if key in "cde" else None
            measured[key].add(*fn())
            after = kiln.batch_counts() if before is not None else None
            if before is not None and after is not None:
                measured[key].batches.append((after[0] - before[0], after[1] - before[1]))
            elif key in "ab":
                measured[key].batches.append((n, n) if key == "a" else (1, n))
            m = measured[key]
            print(f"  N={n:<3} ({key}) {SCENARIOS[key]:<36} {m.per_s:7.3f} img/s  "
                  f"p50 {m.percentile(50):7.2f} s  p99 {m.percentile(99):7.2f} s  "
                  f"{m.batching()}", flush=True)
    return measured


def report(results: dict[tuple[str, int], dict[str, Measurement]], args: argparse.Namespace) -> None:
    """Print the ratios, the goals and a Markdown table."""
    print("\nRatios of img/s:")
    for (name, n), measured in results.items():
        ratios = ", ".join(f"({x})/({y}) = {measured[x].per_s / measured[y].per_s:.2f}"
                           for x, y in (("c", "a"), ("c", "b"), ("d", "b"), ("b", "a")))
        print(f"  {name} N={n}: {ratios}")
    print("\nGoals (issue 12, full-size SD 1.5, N = 8):")
    sd15 = results.get(("sd15", 8))
    if sd15 is None:
        print("  not measured: run with --models sd15 --n 8")
    else:
        for x, y, goal in GOALS:
            ratio = sd15[x].per_s / sd15[y].per_s
            print(f"  {'PASS' if ratio >= goal else 'FAIL'}: ({x})/({y}) = {ratio:.2f} "
                  f"(goal >= {goal:g})")
    print(f"\nMarkdown ({args.size} px, {args.steps} steps, CFG {CFG:g}, torch threads "
          f"{args.threads}, device {args.device}, {args.repeats} repeat(s); latency: from asking "
          "for the N images to each image's arrival):\n")
    print("| model | N | scenario | img/s | p50 latency (s) | p99 latency (s) | ÷ (a) | ÷ (b) "
          "| pipeline calls per round |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, n), measured in results.items():
        for key, m in measured.items():
            print(f"| {name} | {n} | ({key}) {SCENARIOS[key]} | {m.per_s:.3f} "
                  f"| {m.percentile(50):.2f} | {m.percentile(99):.2f} "
                  f"| {m.per_s / measured['a'].per_s:.2f} | {m.per_s / measured['b'].per_s:.2f} "
                  f"| {m.batching() or 'n/a'} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "sd15"])
    parser.add_argument("--n", nargs="+", type=int, default=[8, 32], help="images per round")
    parser.add_argument("--size", type=int, default=128, help="width and height in px")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of (a)-(d) per N")
    parser.add_argument("--models-dir", type=Path, default=Path("build/bench-models"),
                        help="where the random-weight models are built once")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (both sides)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="KILN_MAX_BATCH (default: the largest --n)")
    parser.add_argument("--batch-window-ms", type=float, default=None,
                        help="KILN_BATCH_WINDOW_MS (default: Kiln's)")
    parser.add_argument("--build-only", action="store_true",
                        help="build the models' folders, check each draws a 64 px image, exit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    if args.build_only:
        for name in args.models:
            folder = MODELS[name].ensure(args.models_dir, args.device)
            started = time.perf_counter()
            direct = Direct(folder, args.device, torch.float32, 64)
            image = direct.pipe(PROMPTS[0], width=64, height=64, num_inference_steps=2,
                                generator=torch.Generator().manual_seed(SEED)).images[0]
            pixels = image.getextrema()
            print(f"{name}: {folder} loads and draws {image.size} in "
                  f"{time.perf_counter() - started:.1f} s (load included); extrema {pixels}")
            del direct
            gc.collect()
        return 0

    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    print(f"throughput: {args.size} px, {args.steps} steps, CFG {CFG:g}, N {args.n}, "
          f"{args.repeats} repeat(s); torch {torch.__version__} threads {args.threads}; "
          f"device {args.device}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, affinity {affinity}")
    load_before = loadavg()
    print(f"load average before: {load_before}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="kiln-throughput-"))
    results: dict[tuple[str, int], dict[str, Measurement]] = {}
    started = time.perf_counter()
    for name in args.models:
        run_model(name, args, work, results)  # on failure `work` keeps the server's log
    shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    print(f"\nload average before: {load_before}\nload average after:  {loadavg()}\n"
          f"(a load above the cores the bench uses means something else ran beside it)\n"
          f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
