"""Training of `kiln:shapes@1`: VAE, latent encoding, then UNet and text encoder together.

Every stage runs a fixed number of steps and draws its data and noise from generators seeded by
(seed, stage, step), so a rebuild is repeatable and a run resumed from a checkpoint continues as
if never interrupted. Checkpoints (weights, optimizer, EMA, step) go to a work folder every
`checkpoint_every` steps; running the same command again resumes from the last one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DiffusionPipeline,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import logging as diffusers_logging
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from kiln.demo import card
from kiln.demo.captions import describe, training_scene
from kiln.demo.scenes import Scene, render, to_array
from kiln.demo.tokenizer import MAX_LENGTH, build_tokenizer

# SD 1.5's noise schedule, for training and for the saved PNDM scheduler.
SD15_BETAS: dict[str, Any] = {"num_train_timesteps": 1000, "beta_start": 0.00085,
                              "beta_end": 0.012, "beta_schedule": "scaled_linear"}
STAGE_IDS = {"vae": 1, "latents": 2, "unet": 3, "inpaint": 4}

# Called after every step with (stage, step just completed, loss); may raise to stop a run.
StepCallback = Callable[[str, int, float], None]


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the three networks (the SD 1.x architecture, scaled down)."""

    vae_channels: tuple[int, ...] = (16, 32, 64, 64)
    vae_norm_groups: int = 8
    text_hidden: int = 128
    text_intermediate: int = 512
    text_layers: int = 4
    text_heads: int = 4
    unet_channels: tuple[int, ...] = (64, 128, 128)
    unet_norm_groups: int = 32
    unet_heads: int = 4
    # Cross-attention in every block, the 16x16 one included: the lead for learning position.
    unet_attention: tuple[bool, ...] = (True, True, True)


@dataclass(frozen=True)
class TrainConfig:
    """The recipe: data, steps, learning rates. `full()` is the shipped model's."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    seed: int = 0
    checkpoint_every: int = 250
    # VAE: random crops, and every 4th step whole 128 px scenes of the same pixel count
    vae_steps: int = 1500
    vae_batch: int = 24
    vae_crop: int = 64
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    # latents: scenes encoded once (mean and std kept, resampled at each use)
    latents_128: int = 20_000
    latents_256: int = 4_000
    encode_batch: int = 64
    # UNet + text encoder: every `big_every`-th step takes batch/4 scenes of 256 px
    unet_steps: int = 3000
    unet_batch: int = 64
    unet_lr: float = 5e-4
    unet_warmup: int = 200
    big_every: int = 4
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    min_snr: float = 5.0
    offset_noise: float = 0.1
    empty_caption: float = 0.1
    # inpainting fine-tune (kiln.demo.inpaint)
    inpaint_steps: int = 800
    inpaint_batch: int = 32
    inpaint_lr: float = 2e-4

    @classmethod
    def full(cls) -> TrainConfig:
        return cls()

    @classmethod
    def tiny(cls) -> TrainConfig:
        """Seconds on a CPU: for tests of the machinery, not for images."""
        return cls(
            model=ModelConfig(vae_channels=(8, 8, 8, 8), text_hidden=32, text_intermediate=64,
                              text_layers=2, unet_channels=(8, 16, 16), unet_norm_groups=8),
            checkpoint_every=5, vae_steps=12, vae_batch=4, vae_crop=32, vae_lr=5e-3,
            latents_128=16, latents_256=4, encode_batch=8, unet_steps=20, unet_batch=8,
            unet_lr=2e-3, unet_warmup=2, inpaint_steps=6, inpaint_batch=4, inpaint_lr=1e-3,
        )

    def scaled(self, factor: float) -> TrainConfig:
        """The same recipe with every stage's step count multiplied by `factor` (at least 1)."""
        return dataclasses.replace(self, **{
            name: max(1, round(getattr(self, name) * factor))
            for name in ("vae_steps", "unet_steps", "inpaint_steps")})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- the networks ---------------------------------------------------------------------------

def make_vae(config: ModelConfig) -> AutoencoderKL:
    blocks = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=config.vae_channels, norm_num_groups=config.vae_norm_groups,
        sample_size=128,
    )


def make_text_encoder(config: ModelConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_hidden,
        intermediate_size=config.text_intermediate, num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads, max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu", projection_dim=config.text_hidden,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))


def make_unet(config: ModelConfig, in_channels: int = 4) -> UNet2DConditionModel:
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.unet_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.unet_attention))
    return UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=config.unet_channels, down_block_types=down, up_block_types=up,
        norm_num_groups=config.unet_norm_groups, cross_attention_dim=config.text_hidden,
        attention_head_dim=config.unet_heads,
    )


def make_scheduler() -> PNDMScheduler:
    """SD 1.5's PNDM scheduler: PLMS steps, "leading" spacing, offset 1."""
    return PNDMScheduler(**SD15_BETAS, skip_prk_steps=True, set_alpha_to_one=False,
                         steps_offset=1, timestep_spacing="leading")


# ---- the loop shared by every stage ---------------------------------------------------------

def step_generators(seed: int, stage: str, step: int) -> np.random.Generator:
    """Seed torch's generators for this step of `stage` and return the data generator for it.
    Step -1 is the initialisation of the stage's networks."""
    entropy = [seed, STAGE_IDS[stage], step + 1]
    torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
    return np.random.default_rng(entropy)


def cosine_lr(base: float, step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Ema:
    """Exponential moving average of parameters, with the usual warm-up of the decay."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1 - decay)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for param, shadow in zip(self.params, self.shadow, strict=True):
            param.copy_(shadow)


@dataclass
class Loop:
    """A stage's training state: what a checkpoint holds, and how to resume it."""

    stage: str
    path: Path
    config: dict[str, Any]
    modules: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    ema: Ema | None = None
    step: int = 0

    def load(self, device: torch.device) -> None:
        """Continue from the checkpoint at `path`, if there is one."""
        if not self.path.exists():
            return
        state = torch.load(self.path, map_location=device, weights_only=True)
        if state["config"] != json.loads(json.dumps(self.config)):
            raise RuntimeError(
                f"{self.path} was written by a run with another recipe; run with the same "
                "options, or delete the work folder to start over")
        for name, module in self.modules.items():
            module.load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.shadow = [t.to(device) for t in state["ema"]]
        self.step = state["step"]

    def save(self) -> None:
        state = {name: module.state_dict() for name, module in self.modules.items()}
        state.update(config=json.loads(json.dumps(self.config)), step=self.step,
                     optimizer=self.optimizer.state_dict())
        if self.ema is not None:
            state["ema"] = self.ema.shadow
        temporary = self.path.with_suffix(".tmp")
        torch.save(state, temporary)
        os.replace(temporary, self.path)  # atomic: an interruption leaves the last checkpoint

    def optimise(self, loss: torch.Tensor, params: Any, step: int) -> float:
        """One optimiser step on `loss` (gradients clipped to norm 1, then the EMA, if any,
        follows); returns the loss value."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(step)
        return loss.item()

    def run(self, total: int, every: int, train_step: Callable[[int], float], *,
            progress: bool, callback: StepCallback | None) -> None:
        """Run `train_step` from the current step to `total`, checkpointing every `every`."""
        bar = tqdm(total=total, initial=self.step, desc=self.stage, unit="step",
                   disable=not progress, dynamic_ncols=True)
        with bar:
            while self.step < total:
                loss = train_step(self.step)
                self.step += 1
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                bar.update()
                if self.step % every == 0 or self.step == total:
                    self.save()
                if callback is not None:
                    callback(self.stage, self.step, loss)


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """"bf16" or "fp32". "auto" picks bf16 autocast only where it is fast: CUDA with bf16, or a
    CPU with native bf16 (AVX512-BF16 or AMX). On an AVX2-only CPU, bf16 autocast made UNet
    steps 10x slower; on one with native bf16 it made them 1.17x faster (DEMO-MODEL.md)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', not {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and _cpu_has_native_bf16() else "fp32"


@functools.cache
def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast where `resolve_precision` says bf16; nothing for fp32."""
    enabled = resolve_precision(device, precision) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _optimizer(params: list[torch.nn.Parameter], lr: float, weight_decay: float
               ) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


# ---- stage 1: the VAE -----------------------------------------------------------------------

def train_vae(cfg: TrainConfig, work: Path, device: torch.device, *, precision: str = "auto",
              progress: bool = True, callback: StepCallback | None = None) -> AutoencoderKL:
    """Train the autoencoder on L1 + MSE + KL, on crops and whole scenes of 128 and 256 px."""
    step_generators(cfg.seed, "vae", -1)
    vae = make_vae(cfg.model).to(device)
    loop = Loop("vae", work / "vae.pt", _stage_config(cfg, "vae"), {"vae": vae},
                _optimizer(list(vae.parameters()), cfg.vae_lr, 0.0))
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
    config = _stage_config(cfg, "latents")
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
    loop = Loop("unet", work / "unet.pt", _stage_config(cfg, "unet"),
                {"unet": unet, "text_encoder": text_encoder},
                _optimizer(params, cfg.unet_lr, cfg.weight_decay), Ema(params, cfg.ema_decay))
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
    timings = _Timings(work / "timings.json")
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


def save_fp16(pipe: DiffusionPipeline, out: Path) -> None:
    """Save `pipe` with fp16 safetensors weights that load as fp32 by default, and configs free
    of local paths."""
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # warnings about fp16 on CPU: we only save here
    try:
        pipe.to("cpu", torch.float16)
        pipe.save_pretrained(out, safe_serialization=True)
        pipe.to(torch.float32)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    for config_file in Path(out).glob("*/config.json"):
        config = json.loads(config_file.read_text("utf-8"))
        config["_name_or_path"] = ""  # diffusers writes the training folder's path here
        if "dtype" in config:  # transformers would load the text encoder as fp16 by default
            config["dtype"] = "float32"
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", "utf-8")


def _stage_config(cfg: TrainConfig, stage: str) -> dict[str, Any]:
    """The part of the recipe a stage's checkpoint depends on (a mismatch refuses to resume)."""
    everything = cfg.as_dict()
    own = {"vae": ("vae_",), "latents": ("vae_", "latents_"),
           "unet": ("vae_", "latents_", "unet_", "big_every", "weight_decay", "ema_decay",
                    "min_snr", "offset_noise", "empty_caption"),
           "inpaint": ("inpaint_",)}[stage]
    return {"seed": cfg.seed, "model": everything["model"],
            **{k: v for k, v in everything.items() if k.startswith(own)}}


class _Timings:
    """Wall seconds per stage, summed over resumed runs, kept in the work folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, float]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    @contextlib.contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            timings = self.load()
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started
            self.path.write_text(json.dumps(timings, indent=2))
