"""The cost and the gain of the Ray Serve executor, measured side by side in one run.

    .venv/bin/python bench/cluster.py [--model sd15|tiny] [--size 512] [--steps 10]
        [--repeats 10] [--clients 32] [--cluster-size 128] [--cluster-steps 10] [--threads 2]

1. One image at `--size` px through `kiln serve --executor ray --replicas 1` against
   `kiln serve` (in-process), both warmed, requests alternating between the two servers, median
   end-to-end latency of each (REST call to the image). Goal (issue 13): ray / in-process
   <= 1.10.
2. `--clients` concurrent 1-image REST clients against 1 front + 1 replica (torch threads =
   `--threads`), then against 2 fronts + 2 replicas (torch threads = `--threads` / 2 each, the
   clients split between the fronts), on the same cores: img/s of each and their ratio.

Each configuration has a Ray head of its own (`ray start --head --num-cpus THREADS`), stopped
after it; the fronts join it with `--ray-address`. Models as in bench/throughput.py (`sd15`: the
full-size SD 1.5 architecture with random weights, built once into `--models-dir`). Run it on an
otherwise idle machine: the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import KEY, MODELS, Kiln, loadavg, task  # noqa: E402

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def ray_head(cpus: int) -> Iterator[str]:
    """A Ray head of `cpus` CPUs on a free port; its address. Stopped on exit. Ray (2.59 and
    later) starts it with token authentication: the fronts join with RAY_AUTH_MODE=token and
    the token `ray start` keeps in ~/.ray/auth_token."""
    port = free_port()
    subprocess.run([str(RAY), "start", "--head", f"--port={port}", f"--num-cpus={cpus}",
                    "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=300)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=300)


@contextmanager
def fronts(data_dir: Path, air: str, count: int, threads: int,
           extra: dict[str, str]) -> Iterator[list[Kiln]]:
    """`count` `kiln serve` processes on one data directory (SQLite shared between them), each
    with `extra` in its environment; ready, with `air` preloaded."""
    with ExitStack() as stack:
        started = []
        for i in range(count):
            port = free_port()
            env = {**os.environ, "KILN_API_KEYS": KEY, "KILN_DATA_DIR": str(data_dir),
                   "KILN_PORT": str(port), "KILN_HOST": "127.0.0.1", "KILN_DTYPE": "fp32",
                   "KILN_TORCH_THREADS": str(threads), "KILN_PRELOAD_MODELS": air,
                   "KILN_MAX_RESULTS_IN_FLIGHT_PER_KEY": "1000", **extra}
            kiln = Kiln(env, data_dir / f"front-{i}-{extra.get('KILN_EXECUTOR', 'in-process')}.log",
                        port)
            stack.callback(kiln.close)
            kiln.wait_ready()  # one after another: the first front deploys the Serve app
            started.append(kiln)
        yield started


def one_image(kiln: Kiln, air: str, args: argparse.Namespace, seed: int) -> float:
    return kiln.one_request([task(air, seed, args.size, args.steps)])[1]


def latency_ratio(air: str, data_dir: Path, args: argparse.Namespace) -> None:
    print(f"\n1. one image, {args.size} px, {args.steps} steps: ray (1 replica) vs in-process",
          flush=True)
    with ray_head(args.threads) as address, \
            fronts(data_dir, air, 1, args.threads, {}) as [local], \
            fronts(data_dir, air, 1, args.threads,
                   {"KILN_EXECUTOR": "ray", "KILN_RAY_ADDRESS": address, "RAY_AUTH_MODE": "token",
                    "KILN_REPLICAS": "1"}) as [ray]:
        for kiln in (local, ray):
            one_image(kiln, air, args, 1)  # warm: first-call allocations, routing
        times: dict[str, list[float]] = {"in-process": [], "ray": []}
        for i in range(args.repeats):  # alternating: drift in load hits both alike
            times["in-process"].append(one_image(local, air, args, i + 2))
            times["ray"].append(one_image(ray, air, args, i + 2))
            print(f"  run {i + 1}: in-process {times['in-process'][-1]:.2f} s, "
                  f"ray {times['ray'][-1]:.2f} s", flush=True)
    local_s, ray_s = (statistics.median(times[k]) for k in ("in-process", "ray"))
    ratio = ray_s / local_s
    print(f"  median: in-process {local_s:.2f} s, ray {ray_s:.2f} s; ray / in-process = "
          f"{ratio:.3f} ({'PASS' if ratio <= 1.10 else 'FAIL'}: goal <= 1.10)", flush=True)


def concurrent(kilns: list[Kiln], air: str, args: argparse.Namespace) -> float:
    """img/s of `args.clients` concurrent clients spread over `kilns` (after a warm round)."""
    def round_() -> float:
        tasks = [task(air, 2000 + i, args.cluster_size, args.cluster_steps)
                 for i in range(args.clients)]  # new taskUUIDs each round
        spread = [tasks[i::len(kilns)] for i in range(len(kilns))]
        failures: list[BaseException] = []

        def run(kiln: Kiln, share: list) -> None:
            try:
                kiln.concurrent(share)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, on the main thread
                failures.append(exc)

        started = time.perf_counter()
        threads = [threading.Thread(target=run, args=(k, s)) for k, s in zip(kilns, spread, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return args.clients / (time.perf_counter() - started)

    round_()  # warm
    return round_()


def scale_out(air: str, data_dir: Path, args: argparse.Namespace) -> None:
    print(f"\n2. {args.clients} concurrent clients, {args.cluster_size} px, "
          f"{args.cluster_steps} steps, on {args.threads} CPUs", flush=True)
    rates = {}
    for count in (1, 2):
        threads = max(1, args.threads // count)
        with ray_head(args.threads) as address, \
                fronts(data_dir, air, count, threads,
                       {"KILN_EXECUTOR": "ray", "KILN_RAY_ADDRESS": address, "RAY_AUTH_MODE": "token",
                        "KILN_REPLICAS": str(count)}) as kilns:
            rates[count] = concurrent(kilns, air, args)
        print(f"  {count} front(s) + {count} replica(s) of {threads} torch thread(s): "
              f"{rates[count]:.3f} img/s", flush=True)
    print(f"  2 + 2 / 1 + 1 = {rates[2] / rates[1]:.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="sd15")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--cluster-size", type=int, default=128, help="at least 128 (the protocol's minimum)")
    parser.add_argument("--cluster-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="CPUs of the whole setup")
    parser.add_argument("--models-dir", type=Path, default=Path("build/bench-models"))
    parser.add_argument("--only", choices=["latency", "scale"], default=None)
    args = parser.parse_args()

    model = MODELS[args.model]
    folder = model.ensure(args.models_dir)
    work = Path(tempfile.mkdtemp(prefix="kiln-cluster-"))
    data_dir = work / "data"
    model.register(folder, data_dir)
    load_before = loadavg()
    print(f"cluster bench: {model.air}; {os.cpu_count()} CPUs; load average before: {load_before}",
          flush=True)
    if args.only in (None, "latency"):
        latency_ratio(model.air, data_dir, args)
    if args.only in (None, "scale"):
        scale_out(model.air, data_dir, args)
    print(f"\nload average before: {load_before}\nload average after:  {loadavg()}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
