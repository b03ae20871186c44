"""The model card (README.md) written into a trained model's folder.

The adherence section is a placeholder between markers until `bench/adherence.py --update-card`
replaces it with the measured table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

from kiln.demo.captions import HELD_OUT_COLOUR_SHAPE, HELD_OUT_SHAPE_POSITION
from kiln.demo.scenes import COLOURS, SHAPES

if TYPE_CHECKING:
    from kiln.demo.recipe import TrainConfig

ADHERENCE_START = "<!-- adherence:start -->"
ADHERENCE_END = "<!-- adherence:end -->"
PLACEHOLDER = ("Not measured yet: run `.venv/bin/python bench/adherence.py --model <this folder> "
               "--update-card`.")


def weight_stats(folder: Path) -> dict[str, tuple[int, int]]:
    """(parameters, bytes) of each component's safetensors file in a diffusers folder."""
    stats = {}
    for file in sorted(Path(folder).glob("*/*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            count = 0
            for key in weights.keys():  # noqa: SIM118 (safe_open is not a dict)
                numel = 1
                for dim in weights.get_slice(key).get_shape():
                    numel *= dim
                count += numel
        stats[file.parent.name] = (count, file.stat().st_size)
    return stats


def write_card(folder: Path, cfg: TrainConfig, timings: dict[str, float], *, device: str,
               title: str = "kiln:shapes@1", extra: str = "") -> Path:
    """Write `folder/README.md` describing the model trained there with `cfg`."""
    stats = weight_stats(folder)
    rows = "\n".join(f"| {name} | {count / 1e6:.2f} M | {size / 1e6:.1f} MB |"
                     for name, (count, size) in stats.items())
    total_count = sum(c for c, _ in stats.values())
    total_size = sum(s for _, s in stats.values())
    m = cfg.model
    held_cs = ", ".join(f"{c} {s}" for c, s in HELD_OUT_COLOUR_SHAPE)
    held_sp = ", ".join(f"{s} {p}" for s, p in HELD_OUT_SHAPE_POSITION)
    minutes = ", ".join(f"{stage} {seconds / 60:.1f} min" for stage, seconds in timings.items())
    text = f"""---
license: apache-2.0
library_name: diffusers
pipeline_tag: text-to-image
---

# {title}

A tiny text-to-image model in the Stable Diffusion 1.x architecture, trained from scratch by the
Kiln project on scenes it renders itself. It draws one shape in a colour on a plain background,
as its prompt says. No third-party weights or data were involved.
{extra}
## What it was trained on
Scenes rendered with Pillow (`kiln.demo.scenes`), at 128 and 256 px, 2x supersampled: one
{", ".join(SHAPES[:-1])} or {SHAPES[-1]} (the square has the circle's area) in one of
{len(COLOURS)} colours ({", ".join(COLOURS)}), never the background's; small, medium (unsaid) or
large; in the centre or a corner (jittered); on a plain background of one of those colours.
Captions (`kiln.demo.captions`) are redrawn at each use with synonyms ("disc", "box", "tiny",
"huge", "in the upper left corner", "..., blue background", "on blue"). Whatever a caption leaves
unsaid has one meaning: white background, centre, medium size. 10 % of captions are empty, for
classifier-free guidance.

Never rendered in any stage, to measure generalisation: the colour+shape pairs {held_cs}; the
shape+position pairs {held_sp}.

## Recipe
- Tokenizer: CLIP format, merges learned by `tokenizers.BpeTrainer` on the caption words (each
  word is one token), `model_max_length` 77, pad `<|endoftext|>`.
- VAE: `AutoencoderKL`, channels {list(m.vae_channels)}, 4 latent channels, L1 + MSE +
  {cfg.vae_kl_weight:g} KL, {cfg.vae_steps} steps of {cfg.vae_batch} crops of {cfg.vae_crop} px
  (whole 128 px scenes every 4th step), AdamW lr {cfg.vae_lr:g}, cosine.
- Latents: {cfg.latents_128} scenes at 128 px and {cfg.latents_256} at 256 px encoded once;
  the scaling factor is 1 / std of the latents.
- Text encoder: `CLIPTextModel`, hidden {m.text_hidden}, {m.text_layers} layers, {m.text_heads}
  heads, quick_gelu, trained jointly with the UNet.
- UNet: `UNet2DConditionModel`, channels {list(m.unet_channels)}, cross-attention in blocks
  {[i for i, a in enumerate(m.unet_attention) if a]} (block 0 works at 16x16 latents).
- Training: {cfg.unet_steps} steps of batch {cfg.unet_batch} (every {cfg.big_every}th step
  {cfg.unet_batch // 4} scenes of 256 px), epsilon prediction on SD 1.5's noise schedule,
  Min-SNR-{cfg.min_snr:g} weights, offset noise {cfg.offset_noise:g}, AdamW lr {cfg.unet_lr:g},
  weight decay {cfg.weight_decay:g}, {cfg.unet_warmup} warm-up steps then cosine, gradient
  clipping 1.0, EMA {cfg.ema_decay:g} (the EMA weights are saved), seed {cfg.seed}.
- Scheduler saved: PNDM with SD 1.5's betas (`skip_prk_steps`, `steps_offset` 1).
- Trained on {device}{f" ({minutes})" if minutes else ""}, with `kiln.demo`
  (`python -m kiln.demo train`).

## Size
{total_count / 1e6:.2f} M parameters, {total_size / 1e6:.1f} MB of fp16 safetensors (load as fp32
on CPU).

| component | parameters | fp16 size |
|---|---|---|
{rows}

## Adherence
Measured by `bench/adherence.py` through Kiln's REST API at 128 px, 20 steps, CFG 7, with the
pixel classifier `kiln.demo.classify`, on prompts built on the held-out pairs.

{ADHERENCE_START}
{PLACEHOLDER}
{ADHERENCE_END}

## Limits
It knows only the words of its captions, draws one shape per image, and was trained at 128 and
256 px; above that (512 px) its latents are 4x larger than any it saw, so expect repeated or
misplaced shapes (see the adherence section for the measured shape count per size).

## Licence
Apache-2.0, the Kiln project's own licence: weights trained by the project on data it generates.
"""
    path = Path(folder) / "README.md"
    path.write_text(text, "utf-8")
    return path


def update_adherence(folder: Path, markdown: str) -> None:
    """Replace the adherence section of `folder/README.md` with `markdown`."""
    path = Path(folder) / "README.md"
    text = path.read_text("utf-8")
    pattern = re.compile(re.escape(ADHERENCE_START) + ".*?" + re.escape(ADHERENCE_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no adherence section between {ADHERENCE_START} markers")
    replacement = f"{ADHERENCE_START}\n{markdown.strip()}\n{ADHERENCE_END}"
    path.write_text(pattern.sub(lambda _: replacement, text), "utf-8")
