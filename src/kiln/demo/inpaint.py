"""Fine-tuning of `kiln:shapes-inpaint@1` from a trained `kiln:shapes@1` folder.

The UNet takes 9 input channels, as SD's inpainting checkpoints do: the noisy latents, the mask
(1 = repaint) and the latents of the masked image. It starts as a copy of the trained UNet with
zero weights on the 5 new channels, and learns on scenes with masks over the shape, over a
random box, over the borders (outpainting) or over everything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    DDPMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)

from kiln.demo import card
from kiln.demo.captions import training_scene
from kiln.demo.loop import Ema, Loop, StepCallback, autocast, cosine_lr, save_fp16, step_generators
from kiln.demo.recipe import SD15_BETAS, TrainConfig, make_scheduler
from kiln.demo.scenes import EXTENT, Scene, render, to_array
from kiln.demo.train import captions_for, diffusion_loss, encode_prompts, noised

MASK_KINDS = ("shape", "box", "border", "full")
MASK_WEIGHTS = (0.4, 0.25, 0.2, 0.15)


def inpainting_unet(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A 9-channel copy of `unet` that starts out ignoring the mask and masked image."""
    inpaint = UNet2DConditionModel.from_config({**unet.config, "in_channels": 9})
    state = unet.state_dict()
    weight = state["conv_in.weight"]
    extra = torch.zeros(weight.shape[0], 5, *weight.shape[2:], dtype=weight.dtype)
    state["conv_in.weight"] = torch.cat([weight, extra], dim=1)
    inpaint.load_state_dict(state)
    return inpaint


def random_mask(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) float mask, 1 where the image is to be repainted."""
    mask = np.zeros((size, size), dtype=np.float32)
    kind = MASK_KINDS[rng.choice(len(MASK_KINDS), p=MASK_WEIGHTS)]
    if kind == "full":
        mask[:] = 1
    elif kind == "shape":  # a box around the shape, with a random margin
        cx, cy = scene.centre
        half = EXTENT * scene.radius + rng.uniform(0.02, 0.12)
        x0, x1 = (int(np.clip(v * size, 0, size)) for v in (cx - half, cx + half))
        y0, y1 = (int(np.clip(v * size, 0, size)) for v in (cy - half, cy + half))
        mask[y0:y1, x0:x1] = 1
    elif kind == "box":
        w, h = (int(v) for v in rng.uniform(0.15, 0.7, size=2) * size)
        x, y = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
        mask[y:y + h, x:x + w] = 1
    else:  # the borders around a kept rectangle, as when outpainting
        mask[:] = 1
        left, top, right, bottom = (int(v) for v in rng.uniform(0.05, 0.3, size=4) * size)
        mask[top:size - bottom, left:size - right] = 0
    return mask


def train_inpaint(base: Path, out: Path, cfg: TrainConfig | None = None, *,
                  device: str = "cpu", precision: str = "auto", work: Path | None = None,
                  progress: bool = True, callback: StepCallback | None = None) -> Path:
    """Fine-tune the inpainting UNet from the model in `base`; write it to `out` (fp16).

    The VAE, tokenizer and text encoder are `base`'s, unchanged. Resumable like `train.train`,
    with checkpoints in `work` (default `<out>.work`).
    """
    cfg = cfg or TrainConfig.full()
    out = Path(out)
    work = Path(work) if work else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    torch_device = torch.device(device)
    base_pipe = StableDiffusionPipeline.from_pretrained(base, local_files_only=True,
                                                        dtype=torch.float32)
    vae = base_pipe.vae.to(torch_device).requires_grad_(False)
    text_encoder = base_pipe.text_encoder.to(torch_device).requires_grad_(False)
    tokenizer = base_pipe.tokenizer
    scaling = vae.config.scaling_factor
    step_generators(cfg.seed, "inpaint", -1)
    unet = inpainting_unet(base_pipe.unet).to(torch_device)
    params = list(unet.parameters())
    loop = Loop("inpaint", work / "inpaint.pt",
                {"seed": cfg.seed, "steps": cfg.inpaint_steps, "batch": cfg.inpaint_batch,
                 "lr": cfg.inpaint_lr, "base": unet.config["block_out_channels"]},
                {"unet": unet},
                torch.optim.AdamW(params, lr=cfg.inpaint_lr, weight_decay=cfg.weight_decay),
                Ema(params, cfg.ema_decay))
    loop.load(torch_device)
    noise_schedule = DDPMScheduler(**SD15_BETAS)
    alphas_cumprod = noise_schedule.alphas_cumprod.to(torch_device)

    def train_step(step: int) -> float:
        rng = step_generators(cfg.seed, "inpaint", step)
        big = cfg.big_every and step % cfg.big_every == cfg.big_every - 1
        size, batch = (256, max(1, cfg.inpaint_batch // 4)) if big else (128, cfg.inpaint_batch)
        scenes = [training_scene(rng) for _ in range(batch)]
        pixels = torch.from_numpy(to_array([render(s, size) for s in scenes])).to(torch_device)
        masks = torch.from_numpy(np.stack([random_mask(s, size, rng) for s in scenes]))
        masks = masks[:, None].to(torch_device)
        prompts = captions_for(torch.tensor([s.codes for s in scenes]), rng, cfg.empty_caption)
        with torch.no_grad(), autocast(torch_device, precision):
            latents = vae.encode(pixels).latent_dist.sample().float() * scaling
            masked = vae.encode(pixels * (masks < 0.5)).latent_dist.sample().float() * scaling
            embeddings = encode_prompts(tokenizer, text_encoder, prompts, torch_device)
        small_masks = F.interpolate(masks, size=latents.shape[-2:])  # as the pipeline does
        noisy, noise, timesteps = noised(latents, cfg.offset_noise, noise_schedule)
        for group in loop.optimizer.param_groups:
            group["lr"] = cosine_lr(cfg.inpaint_lr, step, cfg.inpaint_steps, warmup=50)
        with autocast(torch_device, precision):
            prediction = unet(torch.cat([noisy, small_masks, masked], dim=1), timesteps,
                              embeddings).sample
        loss = diffusion_loss(prediction, noise, timesteps, alphas_cumprod, cfg.min_snr)
        return loop.optimise(loss, params, step)

    unet.train()
    loop.run(cfg.inpaint_steps, cfg.checkpoint_every, train_step, progress=progress,
             callback=callback)
    loop.ema.copy_to_params()  # type: ignore[union-attr]
    pipe = StableDiffusionInpaintPipeline(
        vae=vae.cpu(), text_encoder=text_encoder.cpu(), tokenizer=tokenizer,
        unet=unet.eval().cpu(), scheduler=make_scheduler(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    save_fp16(pipe, out)
    card.write_card(out, cfg, {}, device=device, title="kiln:shapes-inpaint@1", extra=(
        "\nIt is the inpainting variant: a 9-channel UNet (noisy latents, mask, masked-image "
        "latents, the layout of SD's inpainting checkpoints) fine-tuned from `kiln:shapes@1` "
        f"for {cfg.inpaint_steps} steps of batch {cfg.inpaint_batch}, AdamW lr "
        f"{cfg.inpaint_lr:g}, on scenes masked over the shape (40 %), a random box (25 %), the "
        "borders (20 %, outpainting) or everything (15 %). The VAE, tokenizer and text encoder "
        "are `kiln:shapes@1`'s.\n"))
    return out
