"""Adherence of the demo model `kiln:shapes@1`: does it draw what its prompt says?

    .venv/bin/python bench/adherence.py --model models/shapes [--count 96] [--update-card]

Registers the model folder in a temporary catalog, sends prompts built on the held-out pairs of
`kiln.demo.captions` (pairs no training stage ever rendered) through Kiln's REST API (in-process)
at 128 px, 20 steps, CFG 7, and judges each image with the pixel classifier `kiln.demo.classify`.
Prints the share of images whose background, shape colour, shape type, position and size match
the prompt, per held-out split, and how often larger sizes show a single shape (not a tiled
scene). `--update-card` writes the table into the model folder's README.md.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from kiln.demo.captions import BenchmarkCase, benchmark_cases  # noqa: E402
from kiln.demo.card import update_adherence  # noqa: E402
from kiln.demo.classify import classify, count_shapes  # noqa: E402
from kiln.models import Catalog, CatalogEntry, ModelDefaults  # noqa: E402
from kiln.server import create_app  # noqa: E402
from kiln.service import Services  # noqa: E402
from kiln.settings import Settings  # noqa: E402
from kiln.storage import Database  # noqa: E402

KEY = "bench-key"
AIR = "kiln:shapes@1"
ATTRIBUTES = ("background", "colour", "shape", "position", "size")
HEADERS = ("background", "shape colour", "shape type", "position", "size")


def generate(client: TestClient, cases: list[BenchmarkCase], *, size: int, steps: int,
             cfg: float, chunk: int = 8) -> list[Image.Image]:
    """One image per case, through POST /v1, in requests of `chunk` tasks."""
    images = []
    for start in range(0, len(cases), chunk):
        tasks = [{
            "taskType": "imageInference", "taskUUID": str(uuid.uuid4()), "model": AIR,
            "positivePrompt": case.prompt, "width": size, "height": size, "steps": steps,
            "CFGScale": cfg, "seed": case.seed, "outputType": "base64Data",
            "outputFormat": "PNG",
        } for case in cases[start:start + chunk]]
        response = client.post("/v1", json=tasks, headers={"Authorization": f"Bearer {KEY}"})
        response.raise_for_status()
        by_uuid = {item["taskUUID"]: item for item in response.json()["data"]}
        for task in tasks:
            data = base64.b64decode(by_uuid[task["taskUUID"]]["imageBase64Data"])
            images.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return images


def score(cases: list[BenchmarkCase], images: list[Image.Image]) -> dict[str, dict[str, float]]:
    """Per split (and "all"): the number of images and the share right for each attribute."""
    right: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    counts: dict[str, int] = defaultdict(int)
    for case, image in zip(cases, images, strict=True):
        seen = classify(image)
        for split in (case.split, "all"):
            counts[split] += 1
            for attribute in ATTRIBUTES:
                right[split][attribute] += getattr(seen, attribute) == getattr(case.scene,
                                                                               attribute)
    return {split: {"n": counts[split],
                    **{a: right[split][a] / counts[split] for a in ATTRIBUTES}}
            for split in sorted(counts, key=lambda s: s == "all")}


def markdown(table: dict[str, dict[str, float]], single: dict[int, tuple[float, int]],
             steps: int, cfg: float) -> str:
    lines = ["| held-out pair | images | " + " | ".join(HEADERS) + " |",
             "|---|---|" + "---|" * len(HEADERS)]
    for split, row in table.items():
        lines.append(f"| {split} | {row['n']} | "
                     + " | ".join(f"{row[a]:.0%}" for a in ATTRIBUTES) + " |")
    lines.append("")
    lines.append(f"128 px, {steps} steps, CFG {cfg:g}; position and size as said in the prompt.")
    for size, (share, n) in single.items():
        lines.append(f"At {size} px, {share:.0%} of {n} images show a single shape "
                     "(the rest a tiled scene).")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained diffusers folder")
    parser.add_argument("--count", type=int, default=96, help="images at 128 px (default 96)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--sizes", default="256,512",
                        help="larger sizes at which to count shapes (comma-separated, or '')")
    parser.add_argument("--size-count", type=int, default=16, help="images per larger size")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--update-card", action="store_true",
                        help="write the table into the model folder's README.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data_dir = Path(tempfile.mkdtemp(prefix="kiln-adherence-"))
    settings = Settings(data_dir=data_dir, api_keys=(KEY,), torch_threads=torch.get_num_threads())
    Catalog(Database(settings.database_path)).add(CatalogEntry(
        air=AIR, name="shapes", version="1", category="checkpoint", type="base",
        architecture="sd1x", path=str(args.model.resolve()),
        defaults=ModelDefaults(width=128, height=128, steps=20, cfg=7.0)))
    cases = benchmark_cases(args.count)
    started = time.perf_counter()
    with TestClient(create_app(Services.open(settings))) as client:
        images = generate(client, cases, size=128, steps=args.steps, cfg=args.cfg)
        single = {}
        for size in (int(s) for s in args.sizes.split(",") if s.strip()):
            subset = cases[:args.size_count]
            big = generate(client, subset, size=size, steps=args.steps, cfg=args.cfg, chunk=4)
            single[size] = (sum(count_shapes(i) == 1 for i in big) / len(big), len(big))
    table = score(cases, images)
    text = markdown(table, single, args.steps, args.cfg)
    print(f"{args.model}: {len(images)} images at 128 px in "
          f"{time.perf_counter() - started:.0f} s (torch threads {torch.get_num_threads()})\n")
    print(text)
    if args.update_card:
        update_adherence(args.model, text)
        print(f"\nwrote the table into {args.model / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
