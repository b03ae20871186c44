"""Training of `kiln:shapes@1`: VAE, latent encoding, then UNet and text encoder together.

Every stage runs a fixed number of steps and draws its data and noise from generators seeded by
(seed, stage, step), so a rebuild is repeatable and a run resumed from a checkpoint continues as
if never interrupted. Checkpoints (weights, optimizer, EMA, step) go to a work folder every
`checkpoint_every` steps; running the same command again resumes from the last one. The recipe
is `kiln.demo.recipe`, the machinery every stage shares `kiln.demo.loop`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from kiln.demo import card
from kiln.demo.captions import describe, training_scene
from kiln.demo.loop import (
    Ema,
    Loop,
    StepCallback,
    Timings,
    autocast,
    cosine_lr,
    optimizer,
    save_fp16,
    stage_config,
    step_generators,
)
from kiln.demo.recipe import (
    SD15_BETAS,
    STAGE_IDS,
    TrainConfig,
    make_scheduler,
    make_text_encoder,
    make_unet,
    make_vae,
)
from kiln.demo.scenes import Scene, render, to_array
from kiln.demo.tokenizer import build_tokenizer

__all__ = ["TrainConfig", "train"]


# ---- stage 1: the VAE -----------------------------------------------------------------------

def train_vae(cfg: TrainConfig, work: Path, device: torch.device, *, precision: str = "auto",
              progress: bool = True, callback: StepCallback | None = None) -> AutoencoderKL:
    """Train the autoencoder on L1 + MSE + KL, on crops and whole scenes of 128 and 256 px."""
    step_generators(cfg.seed, "vae", -1)
    vae = make_vae(cfg.model).to(device)
    loop = Loop("vae", work / "vae.pt", stage_config(cfg, "vae"), {"vae": vae},
                optimizer(list(vae.parameters()), cfg.vae_lr, 0.0))
    loop.load(device)

    def train_step(step: int) -> float:
        rng = step_generators(cfg.seed, "vae", step)
        if step % 4 == 3:  # whole 128 px scenes, as many pixels as a batch of crops
            count = max(1, cfg.vae_batch * cfg.vae_crop**2 // 128**2)
            images = [render(training_scene(rng), 128) for _ in range(count)]
        else:
            images = []
            for _ in range(cfg.vae_batch):
                size = 256 if rng.random() < 0.3 else 128
                x, y = rng.integers(0, size - cfg.vae_crop + 1, size=2)
                image = render(training_scene(rng), size)
                images.append(image.crop((x, y, x + cfg.vae_crop, y + cfg.vae_crop)))
        pixels = torch.from_numpy(to_array(images)).to(device)
        for group in loop.optimizer.param_groups:
            group["lr"] = cosine_lr(cfg.vae_lr, step, cfg.vae_steps, warmup=50)
        with autocast(device, precision):
            posterior = vae.encode(pixels).latent_dist
            decoded = vae.decode(posterior.sample()).sample.float()
        loss = (F.l1_loss(decoded, pixels) + F.mse_loss(decoded, pixels)
                + cfg.vae_kl_weight * posterior.kl().float().mean())
        return loop.optimise(loss, vae.parameters(), step)

    vae.train()
    loop.run(cfg.vae_steps, cfg.checkpoint_every, train_step, progress=progress,
             callback=callback)
    return vae.eval().requires_grad_(False)


# ---- stage 2: latents -----------------------------------------------------------------------

@dataclass
class LatentPool:
    """Encoded scenes of one size: the posterior's mean and std, and the scenes' codes."""

    mean: torch.Tensor  # (N, 4, h, w), float16
    std: torch.Tensor
    codes: torch.Tensor  # (N, 5), int8: Scene.codes

    def sample(self, index: np.ndarray, scaling: float, device: torch.device) -> torch.Tensor:
        mean = self.mean[index].to(device).float()
        std = self.std[index].to(device).float()
        return (mean + std * torch.randn(mean.shape, device=device)) * scaling


@torch.no_grad()
def encode_latents(cfg: TrainConfig, vae: AutoencoderKL, work: Path, device: torch.device, *,
                   progress: bool = True) -> tuple[dict[int, LatentPool], float]:
    """Encode `latents_128` + `latents_256` training scenes once; return the pools by size
    and the VAE's scaling factor (1 / std of the latents). Cached in the work folder."""
    path = work / "latents.pt"
    config = stage_config(cfg, "latents")
    if path.exists():
        saved = torch.load(path, weights_only=True)
        if saved["config"] == json.loads(json.dumps(config)):
            pools = {int(size): LatentPool(**pool) for size, pool in saved["pools"].items()}
            return pools, saved["scaling"]
    rng = np.random.default_rng([cfg.seed, STAGE_IDS["latents"]])
    pools: dict[int, LatentPool] = {}
    total = cfg.latents_128 + cfg.latents_256
    with tqdm(total=total, desc="latents", unit="scene", disable=not progress,
              dynamic_ncols=True) as bar:
        for size, count in ((128, cfg.latents_128), (256, cfg.latents_256)):
            batch = max(1, cfg.encode_batch * 128**2 // size**2)
            means, stds, codes = [], [], []
            for start in range(0, count, batch):
                scenes = [training_scene(rng) for _ in range(min(batch, count - start))]
                pixels = torch.from_numpy(to_array([render(s, size) for s in scenes]))
                posterior = vae.encode(pixels.to(device)).latent_dist
                means.append(posterior.mean.half().cpu())
                stds.append(posterior.std.half().cpu())
                codes.append(torch.tensor([s.codes for s in scenes], dtype=torch.int8))
                bar.update(len(scenes))
            if count:
                pools[size] = LatentPool(torch.cat(means), torch.cat(stds), torch.cat(codes))
    step_generators(cfg.seed, "latents", -1)  # seeds the sample that sets the scaling factor
    sample = torch.cat([(p.mean.float() + p.std.float() * torch.randn(p.mean.shape)).flatten()
                        for p in pools.values()])
    scaling = float(1 / sample.std())
    torch.save({"config": config, "scaling": scaling,
                "pools": {str(s): dataclasses.asdict(p) for s, p in pools.items()}}, path)
    return pools, scaling


# ---- stage 3: UNet and text encoder ---------------------------------------------------------

def diffusion_loss(prediction: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                   alphas_cumprod: torch.Tensor, min_snr: float) -> torch.Tensor:
    """Epsilon-prediction MSE with Min-SNR-gamma weights."""
    snr = alphas_cumprod[timesteps] / (1 - alphas_cumprod[timesteps])
    weights = torch.clamp(snr, max=min_snr) / snr
    per_sample = F.mse_loss(prediction.float(), noise, reduction="none").mean(dim=(1, 2, 3))
    return (weights * per_sample).mean()


def noised(latents: torch.Tensor, offset_noise: float, noise_schedule: DDPMScheduler
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy latents, the noise, timesteps): uniform timesteps, offset noise."""
    batch, channels = latents.shape[:2]
    noise = torch.randn(latents.shape, device=latents.device)
    noise += offset_noise * torch.randn((batch, channels, 1, 1), device=latents.device)
    timesteps = torch.randint(0, noise_schedule.config.num_train_timesteps, (batch,),
                              device=latents.device)
    return noise_schedule.add_noise(latents, noise, timesteps), noise, timesteps


def captions_for(codes: torch.Tensor, rng: np.random.Generator, empty: float) -> list[str]:
    """A fresh caption for each scene, or "" with probability `empty` (for CFG)."""
    return ["" if rng.random() < empty else describe(Scene.from_codes(c.tolist()), rng)
            for c in codes]


def encode_prompts(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str],
                   device: torch.device) -> torch.Tensor:
    """Prompt embeddings exactly as StableDiffusionPipeline makes them (padded, no mask)."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(device))[0]


def train_unet(cfg: TrainConfig, pools: dict[int, LatentPool], scaling: float,
               tokenizer: CLIPTokenizer, work: Path, device: torch.device, *,
               precision: str = "auto", progress: bool = True,
               callback: StepCallback | None = None
               ) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """Train the UNet and the text encoder jointly; returns both holding the EMA weights."""
    step_generators(cfg.seed, "unet", -1)
    unet = make_unet(cfg.model).to(device)
    text_encoder = make_text_encoder(cfg.model, tokenizer).to(device)
    params = [*unet.parameters(), *text_encoder.parameters()]
    loop = Loop("unet", work / "unet.pt", stage_config(cfg, "unet"),
                {"unet": unet, "text_encoder": text_encoder},
                optimizer(params, cfg.unet_lr, cfg.weight_decay), Ema(params, cfg.ema_decay))
    loop.load(device)
    noise_schedule = DDPMScheduler(**SD15_BETAS)
    alphas_cumprod = noise_schedule.alphas_cumprod.to(device)

    def train_step(step: int) -> float:
        rng = step_generators(cfg.seed, "unet", step)
        big = 256 in pools and cfg.big_every and step % cfg.big_every == cfg.big_every - 1
        pool = pools[256] if big else pools[128]
        batch = max(1, cfg.unet_batch // 4) if big else cfg.unet_batch
        index = rng.integers(len(pool.codes), size=batch)
        latents = pool.sample(index, scaling, device)
        prompts = captions_for(pool.codes[index], rng, cfg.empty_caption)
        noisy, noise, timesteps = noised(latents, cfg.offset_noise, noise_schedule)
        for group in loop.optimizer.param_groups:
            group["lr"] = cosine_lr(cfg.unet_lr, step, cfg.unet_steps, cfg.unet_warmup)
        with autocast(device, precision):
            embeddings = encode_prompts(tokenizer, text_encoder, prompts, device)
            prediction = unet(noisy, timesteps, embeddings).sample
        loss = diffusion_loss(prediction, noise, timesteps, alphas_cumprod, cfg.min_snr)
        return loop.optimise(loss, params, step)

    unet.train()
    text_encoder.train()
    loop.run(cfg.unet_steps, cfg.checkpoint_every, train_step, progress=progress,
             callback=callback)
    loop.ema.copy_to_params()  # type: ignore[union-attr]
    return unet.eval().requires_grad_(False), text_encoder.eval().requires_grad_(False)


# ---- the whole run --------------------------------------------------------------------------

def train(out: Path, cfg: TrainConfig | None = None, *, device: str = "cpu",
          precision: str = "auto", work: Path | None = None, progress: bool = True,
          callback: StepCallback | None = None) -> Path:
    """Train `kiln:shapes@1` and write it to `out` as a diffusers folder with fp16 weights.

    `work` (default: `<out>.work` beside it) keeps checkpoints and latents; calling again with
    the same arguments resumes where an interrupted run stopped. Returns `out`.
    """
    cfg = cfg or TrainConfig.full()
    out = Path(out)
    work = Path(work) if work else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    timings = Timings(work / "timings.json")
    tokenizer = build_tokenizer()
    with timings.measure("vae"):
        vae = train_vae(cfg, work, torch_device, precision=precision, progress=progress,
                        callback=callback)
    with timings.measure("latents"):
        pools, scaling = encode_latents(cfg, vae, work, torch_device, progress=progress)
    vae.register_to_config(scaling_factor=scaling)
    with timings.measure("unet"):
        unet, text_encoder = train_unet(cfg, pools, scaling, tokenizer, work, torch_device,
                                        precision=precision, progress=progress,
                                        callback=callback)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=make_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    save_fp16(pipe, out)
    card.write_card(out, cfg, timings.load(), device=device)
    return out


