"""The machinery every training stage shares: seeded generators per step, the learning-rate
schedule, the EMA, checkpoints that resume exactly, precision, timings and the fp16 save."""

from __future__ import annotations

import contextlib
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
from diffusers import (
    DiffusionPipeline,
)
from diffusers.utils import logging as diffusers_logging
from tqdm.auto import tqdm

from kiln.demo.recipe import STAGE_IDS, TrainConfig

# Called after every step with (stage, step just completed, loss); may raise to stop a run.
StepCallback = Callable[[str, int, float], None]



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


def optimizer(params: list[torch.nn.Parameter], lr: float, weight_decay: float
               ) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


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



def stage_config(cfg: TrainConfig, stage: str) -> dict[str, Any]:
    """The part of the recipe a stage's checkpoint depends on (a mismatch refuses to resume)."""
    everything = cfg.as_dict()
    own = {"vae": ("vae_",), "latents": ("vae_", "latents_"),
           "unet": ("vae_", "latents_", "unet_", "big_every", "weight_decay", "ema_decay",
                    "min_snr", "offset_noise", "empty_caption"),
           "inpaint": ("inpaint_",)}[stage]
    return {"seed": cfg.seed, "model": everything["model"],
            **{k: v for k, v in everything.items() if k.startswith(own)}}



class Timings:
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
