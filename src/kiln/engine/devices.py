"""The device paths: which device and dtype the engine runs in, where a loaded pipeline's
weights live (on the device, or offloaded to the CPU between uses), how a loaded model is
prepared for it (SDPA attention, channels-last, `torch.compile`, VAE slicing and tiling), how
much memory there is, and how many images of a request fit in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from kiln.architectures import FLOW_ARCHITECTURES

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
CPU_OFFLOADS = ("none", "model", "sequential")

CUDA_BUDGET_SHARE = 0.7
"""Default model budget on a GPU: this share of its memory; the rest is for activations."""
CPU_BUDGET_SHARE = 0.5
"""Default model budget on a CPU: this share of the machine's RAM."""

# Per-image activation estimate of `max_batch` (see `activation_bytes`). Peak memory of one
# UNet evaluation is dominated by the full-resolution feature maps: skip connections kept for
# the up blocks, the attention block's projections and its GEGLU feed-forward (8x channels);
# counting 48 latent-sized maps of the first block's width covers them with SDPA attention.
UNET_MAPS = 48
CONTROLNET_SHARE = 0.5  # a ControlNet is the down half of a UNet
VAE_MAPS = 8  # full-resolution maps alive while the VAE decodes one image


@dataclass(frozen=True)
class DeviceOptions:
    """How models are placed and run: resolved by `DeviceOptions.resolve` from the settings."""

    device: str
    dtype: torch.dtype
    channels_last: bool
    compile: bool
    vae_tiling_pixels: int
    flow_dtype: torch.dtype = torch.float32  # FLUX and SD3 pipelines'
    cpu_offload: str = "none"  # FLUX and SD3 pipelines': none, model or sequential

    @classmethod
    def resolve(
        cls,
        device: str | None = None,
        dtype: str = "auto",
        channels_last: bool | None = None,
        compile: bool = False,
        vae_tiling_pixels: int = 1536 * 1536,
        cpu_offload: str = "none",
    ) -> DeviceOptions:
        """`device` None picks "cuda" when available, else "cpu". `dtype` "auto" is fp16 on
        CUDA and fp32 on a CPU, except for FLUX and SD3, which get bf16 on a CUDA device that
        has it (their T5 and transformer activations overflow fp16); bf16 works on both, fp16
        needs CUDA. `channels_last` None means on CUDA only. `cpu_offload` (FLUX and SD3 only)
        keeps their weights in CPU memory and moves each model ("model") or each layer
        ("sequential": least memory, slowest) to the device when it runs; it needs an
        accelerator. Raises ValueError for an unknown dtype or offload, fp16 on a CPU, or
        offload on a CPU."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        cuda = device.startswith("cuda")
        flow_dtype = dtype
        if dtype == "auto":
            dtype = "fp16" if cuda else "fp32"
            flow_dtype = "bf16" if cuda and torch.cuda.is_bf16_supported() else dtype
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be auto, fp16, bf16 or fp32, got {dtype!r}")
        if dtype == "fp16" and not cuda:
            raise ValueError(f"fp16 needs a CUDA device; on {device!r} use bf16 or fp32")
        if cpu_offload not in CPU_OFFLOADS:
            raise ValueError(f"CPU offload must be none, model or sequential, got {cpu_offload!r}")
        if cpu_offload != "none" and device == "cpu":
            raise ValueError("CPU offload moves models between the CPU and an accelerator; on a CPU "
                             "device the weights are already in CPU memory: use none")
        return cls(
            device=device,
            dtype=DTYPES[dtype],
            channels_last=cuda if channels_last is None else channels_last,
            compile=compile,
            vae_tiling_pixels=vae_tiling_pixels,
            flow_dtype=DTYPES[flow_dtype],
            cpu_offload=cpu_offload,
        )

    @property
    def element_bytes(self) -> int:
        return torch.finfo(self.dtype).bits // 8

    def dtype_for(self, architecture: str) -> torch.dtype:
        """The dtype a pipeline of `architecture` is loaded in."""
        return self.flow_dtype if architecture in FLOW_ARCHITECTURES else self.dtype

    def offload_for(self, architecture: str) -> str:
        """The CPU offload of a pipeline of `architecture` (none for SD 1.x and SDXL)."""
        return self.cpu_offload if architecture in FLOW_ARCHITECTURES else "none"


def place_pipeline(pipe: Any, device: str, offload: str = "none") -> None:
    """Put a freshly loaded pipeline's weights where it runs: on `device`, or (offload "model")
    in CPU memory with each model moved to `device` while it runs and back after, or
    ("sequential") in CPU memory layer by layer. diffusers' offload hooks pick the execution
    device, and the pipeline must not be moved with `.to()` afterwards."""
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)


def denoiser(pipe: Any) -> torch.nn.Module:
    """The pipeline's UNet, or its transformer (FLUX, SD3)."""
    unet = pipe.components.get("unet")
    return unet if unet is not None else pipe.transformer


def prepare_pipeline(pipe: Any, options: DeviceOptions) -> None:
    """Set up a freshly loaded pipeline for `options`: SDPA attention in the UNet (or
    transformer) and VAE, channels-last UNet and VAE when enabled, the UNet or transformer
    compiled in place when enabled, and a VAE that encodes and decodes a batch one image at a
    time (the activation memory of a batch then grows with the UNet's, not the VAE's, and every
    image is decoded as it is alone)."""
    for module in (denoiser(pipe), pipe.vae):
        prepare_module(module, options)
    pipe.vae.enable_slicing()
    if options.compile:
        # In place (`Module.compile`), so the pipeline's views and LoRA loading see the same
        # module class; the first call at each size compiles.
        denoiser(pipe).compile()


def prepare_module(module: torch.nn.Module, options: DeviceOptions) -> None:
    """SDPA attention processors, and channels-last weights when enabled."""
    use_sdpa(module)
    if options.channels_last:
        module.to(memory_format=torch.channels_last)


def use_sdpa(module: Any) -> None:
    """Replace classic attention processors with PyTorch's scaled-dot-product attention
    (diffusers' default where torch has it; this makes sure of it)."""
    processors = getattr(module, "attn_processors", None)
    if not processors or all(isinstance(p, AttnProcessor2_0) for p in processors.values()):
        return
    module.set_attn_processor(
        {name: AttnProcessor2_0() if type(p) is AttnProcessor else p for name, p in processors.items()}
    )


def set_vae_tiling(vae: Any, width: int, height: int, threshold: int) -> None:
    """Tile the VAE for images of more than `threshold` pixels (bounded memory at any size),
    decode whole otherwise (exact, and faster where it fits)."""
    if width * height > threshold:
        vae.enable_tiling()
    else:
        vae.disable_tiling()


def total_memory(device: str) -> int:
    """Bytes of memory the device has: the GPU's, or the machine's RAM."""
    if device.startswith("cuda"):
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_memory(device: str) -> int:
    """Bytes the device can still allocate: on CUDA what the driver reports free plus what
    torch has cached but not allocated; on a CPU the kernel's MemAvailable."""
    if device.startswith("cuda"):
        index = torch.device(device)
        free, _ = torch.cuda.mem_get_info(index)
        return int(free + torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def default_memory_budget(device: str) -> int:
    """The model budget when none is set: a share of the device's memory."""
    share = CUDA_BUDGET_SHARE if device.startswith("cuda") else CPU_BUDGET_SHARE
    return int(total_memory(device) * share)


def activation_bytes(
    *,
    width: int,
    height: int,
    unet_channels: int,
    vae_channels: int,
    element_bytes: int,
    guidance: bool,
    controlnets: int,
) -> tuple[int, int]:
    """(bytes per image, bytes per call) of activations for one pipeline call, an estimate:

        per image = UNET_MAPS × (width/8 × height/8) × unet_channels × element_bytes
                    × (2 with classifier-free guidance, else 1)
                    × (1 + CONTROLNET_SHARE × controlnets)
        per call  = VAE_MAPS × width × height × vae_channels × element_bytes

    `unet_channels` is the UNet's first block width (320 for SD 1.5 and SDXL) and
    `vae_channels` the VAE's (128). The VAE term is per call since the VAE works one image at
    a time. For SD 1.5 in fp16 at 512 px this is 252 MB per image and 537 MB per call; for SDXL
    at 1024 px, 1.0 GB per image and 2.1 GB per call.
    """
    latent = (width // 8) * (height // 8)
    per_image = UNET_MAPS * latent * unet_channels * element_bytes
    per_image = int(per_image * (2 if guidance else 1) * (1 + CONTROLNET_SHARE * controlnets))
    per_call = VAE_MAPS * width * height * vae_channels * element_bytes
    return per_image, per_call
