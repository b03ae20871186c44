"""Kiln's overhead: one text-to-image request through the REST API vs the diffusers pipeline
called directly on the same model, measured side by side in one run.

    .venv/bin/python bench/overhead.py [--size 256] [--steps 20] [--repeats 5] [--format PNG]

Prints the median wall time of each and the ratio Kiln / direct. Absolute times mean
something only on the target hardware; the ratio is the figure to compare.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402

from kiln.models import Catalog  # noqa: E402
from kiln.models.demo import init_demo_models  # noqa: E402
from kiln.server import create_app  # noqa: E402
from kiln.service import Services  # noqa: E402
from kiln.settings import Settings  # noqa: E402
from kiln.storage import Database  # noqa: E402

KEY = "bench-key"
PROMPT = "a red circle on a blue background"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path) -> tuple[uvicorn.Server, str]:
    port = free_port()
    settings = Settings(data_dir=data_dir, api_keys=(KEY,), port=port,
                        torch_threads=torch.get_num_threads())
    server = uvicorn.Server(uvicorn.Config(create_app(Services.open(settings)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}/v1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--format", default="PNG")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (both sides)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    entry = next(e for e in init_demo_models(Catalog(Database(data_dir / "kiln.sqlite3")),
                                             data_dir / "models", log=lambda _: None)
                 if e.air == "kiln:tiny-sd@1")
    server, url = start_server(data_dir)
    direct = StableDiffusionPipeline.from_pretrained(entry.path, local_files_only=True)
    direct.set_progress_bar_config(disable=True)

    def via_kiln(seed: int) -> None:
        response = httpx.post(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=600, json=[{
            "taskType": "imageInference", "taskUUID": str(uuid.uuid4()), "model": entry.air,
            "positivePrompt": PROMPT, "width": args.size, "height": args.size, "steps": args.steps,
            "seed": seed, "outputType": "base64Data", "outputFormat": args.format,
        }])
        response.raise_for_status()

    def via_diffusers(seed: int) -> None:
        image = direct(PROMPT, width=args.size, height=args.size, num_inference_steps=args.steps,
                       guidance_scale=7.0, generator=torch.Generator().manual_seed(seed)).images[0]
        image.save(open(os.devnull, "wb"), format=args.format if args.format != "JPG" else "JPEG")

    via_kiln(1)  # warm both: model load and first-call allocations are not what we measure
    via_diffusers(1)
    kiln_times, direct_times = [], []
    for i in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        for fn, times in ((via_kiln, kiln_times), (via_diffusers, direct_times)):
            started = time.perf_counter()
            fn(100 + i)
            times.append(time.perf_counter() - started)
    server.should_exit = True

    k, d = statistics.median(kiln_times), statistics.median(direct_times)
    print(f"{args.size}x{args.size}, {args.steps} steps, {args.format}, torch threads "
          f"{torch.get_num_threads()}, device cpu, {args.repeats} runs each (median)")
    print(f"  Kiln REST      {k * 1000:8.1f} ms")
    print(f"  diffusers      {d * 1000:8.1f} ms")
    print(f"  ratio Kiln / direct = {k / d:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
