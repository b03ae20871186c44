"""Command line of the demo model: train it, fine-tune its inpainting variant, draw a grid.

    python -m kiln.demo train --out models/shapes [--device cpu|cuda] [--steps-scale F]
    python -m kiln.demo train-inpaint --base models/shapes --out models/shapes-inpaint
    python -m kiln.demo grid --model models/shapes --out shapes-grid.png
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

GRID_PROMPTS = (
    "a red circle on a blue background",
    "a yellow star on black",
    "a small green square in the top left corner",
    "a large white triangle on a red background",
    "a blue circle in the bottom right, yellow background",
    "an orange box at the top right on purple",
    "a tiny black star in the bottom left corner",
    "a violet triangle on green",
    "a huge yellow circle on a black background",
    "a red square in the middle",
    "a white star at the top left on blue",
    "a purple circle on yellow",  # a held-out colour+shape pair
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kiln demo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def training_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--out", type=Path, required=True, help="diffusers folder to write")
        command.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        command.add_argument("--steps-scale", type=float, default=1.0,
                             help="multiply every stage's step count (default 1)")
        command.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                             help="bf16 autocast; auto: where the hardware has native bf16")
        command.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        command.add_argument("--work", type=Path, default=None,
                             help="checkpoints and latents (default: <out>.work)")
        command.add_argument("--recipe", choices=("full", "tiny"), default="full",
                             help="tiny: seconds, for trying the commands (draws nothing)")
        command.add_argument("--quiet", action="store_true", help="no progress bars")

    train = commands.add_parser("train", help="train kiln:shapes@1 (resumes if interrupted)")
    training_options(train)
    inpaint = commands.add_parser("train-inpaint",
                                  help="fine-tune kiln:shapes-inpaint@1 from a trained model")
    training_options(inpaint)
    inpaint.add_argument("--base", type=Path, required=True, help="the trained kiln:shapes@1")
    grid = commands.add_parser("grid", help="render a sample grid PNG from a trained model")
    grid.add_argument("--model", type=Path, required=True)
    grid.add_argument("--out", type=Path, required=True)
    grid.add_argument("--size", type=int, default=128)
    grid.add_argument("--steps", type=int, default=20)
    grid.add_argument("--cfg", type=float, default=7.0)
    grid.add_argument("--seed", type=int, default=0)
    grid.add_argument("--columns", type=int, default=4)
    grid.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.command == "grid":
        image = sample_grid(args.model, size=args.size, steps=args.steps, cfg=args.cfg,
                            seed=args.seed, columns=args.columns)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        image.save(args.out)
        print(f"wrote {args.out}")
        return 0

    from kiln.demo.recipe import TrainConfig

    recipe = TrainConfig.full() if args.recipe == "full" else TrainConfig.tiny()
    recipe = recipe.scaled(args.steps_scale)
    options = {"device": args.device, "precision": args.precision, "work": args.work,
               "progress": not args.quiet}
    if args.command == "train":
        from kiln.demo.train import train as run_training

        out = run_training(args.out, recipe, **options)
    else:
        from kiln.demo.inpaint import train_inpaint

        out = train_inpaint(args.base, args.out, recipe, **options)
    print(f"wrote {out} (model card: {out / 'README.md'})")
    return 0


def sample_grid(model: Path, *, size: int = 128, steps: int = 20, cfg: float = 7.0,
                seed: int = 0, columns: int = 4, prompts: tuple[str, ...] = GRID_PROMPTS):
    """A PNG-ready grid of the model's images for `prompts`, each captioned with its prompt."""
    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image, ImageDraw, ImageFont

    pipe = StableDiffusionPipeline.from_pretrained(model, local_files_only=True,
                                                   dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(list(prompts), height=size, width=size, num_inference_steps=steps,
                  guidance_scale=cfg,
                  generator=[torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
                  ).images
    font = ImageFont.load_default()
    cell, band = max(size, 160), 34
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * cell, rows * (cell + band)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (prompt, image) in enumerate(zip(prompts, images, strict=True)):
        x, y = (i % columns) * cell, (i // columns) * (cell + band)
        grid.paste(image, (x + (cell - size) // 2, y))
        label = "\n".join(textwrap.wrap(prompt, width=cell // 6)[:2])
        draw.multiline_text((x + 3, y + size + 2), label, fill="black", font=font, spacing=1)
    return grid


if __name__ == "__main__":
    sys.exit(main())
