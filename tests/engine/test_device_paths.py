"""Device paths, checked on a CPU: dtype, SDPA attention, channels-last, VAE slicing and
tiling, torch.compile, and how many images `max_batch` lets into one call."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

import kiln.engine.engine
from kiln.engine import Engine
from kiln.engine.devices import DeviceOptions, activation_bytes, use_sdpa

from .helpers import TinyModels, make_request


@pytest.mark.parametrize(
    ("device", "dtype", "expected", "channels_last"),
    [
        ("cpu", "auto", torch.float32, False),
        ("cpu", "bf16", torch.bfloat16, False),
        ("cuda", "auto", torch.float16, True),
        ("cuda:1", "bf16", torch.bfloat16, True),
        ("cuda", "fp32", torch.float32, True),
    ],
)
def test_dtype_and_channels_last_follow_the_device(
    device: str, dtype: str, expected: torch.dtype, channels_last: bool
) -> None:
    options = DeviceOptions.resolve(device, dtype)
    assert (options.device, options.dtype, options.channels_last) == (device, expected, channels_last)
    assert DeviceOptions.resolve(device, dtype, channels_last=not channels_last).channels_last is not channels_last


@pytest.mark.parametrize(("dtype", "message"), [("fp16", "needs a CUDA device"), ("int8", "must be")])
def test_a_dtype_the_device_cannot_run_is_refused(dtype: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Engine(device="cpu", dtype=dtype)


def test_bf16_runs_on_a_cpu(tiny: TinyModels) -> None:
    engine = Engine(device="cpu", dtype="bf16")
    [image] = engine.generate(make_request(tiny.sd))
    assert image.size == (64, 64)
    assert engine.pipeline(tiny.sd).unet.dtype == torch.bfloat16


def test_loaded_models_attend_with_sdpa_and_decode_one_image_at_a_time(
    engine: Engine, tiny: TinyModels
) -> None:
    for model in (tiny.sd, tiny.sdxl):
        pipe = engine.pipeline(model)
        for module in (pipe.unet, pipe.vae):
            processors = module.attn_processors.values()
            assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)
        assert pipe.vae.use_slicing


def test_classic_attention_is_replaced_by_sdpa(tiny: TinyModels) -> None:
    vae = AutoencoderKL.from_pretrained(tiny.sd.path, subfolder="vae", local_files_only=True)
    vae.set_attn_processor(AttnProcessor())
    use_sdpa(vae)
    assert all(isinstance(p, AttnProcessor2_0) for p in vae.attn_processors.values())


def test_channels_last_stores_the_unet_and_vae_channels_last(tiny: TinyModels) -> None:
    engine = Engine(device="cpu", channels_last=True)
    [image] = engine.generate(make_request(tiny.sd))
    pipe = engine.pipeline(tiny.sd)
    for weight in (pipe.unet.conv_in.weight, pipe.vae.decoder.conv_in.weight):
        assert weight.is_contiguous(memory_format=torch.channels_last)
        assert not weight.is_contiguous()
    assert image.size == (64, 64)


def test_the_vae_tiles_only_images_larger_than_the_threshold(
    tiny: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(device="cpu", vae_tiling_pixels=96 * 96)
    tiled: list[bool] = []
    decode = AutoencoderKL.decode

    def spy(self: AutoencoderKL, *args: object, **kwargs: object) -> object:
        tiled.append(self.use_tiling)
        return decode(self, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "decode", spy)
    for width, height in ((128, 128), (64, 64), (160, 96)):
        [image] = engine.generate(make_request(tiny.sd, width=width, height=height))
        assert image.size == (width, height)
    assert tiled == [True, False, True]


def test_compile_wraps_the_unet_without_running_it(tiny: TinyModels) -> None:
    engine = Engine(device="cpu", compile=True)
    unet = engine.pipeline(tiny.sd).unet
    assert getattr(unet, "_compiled_call_impl", None) is not None
    assert Engine(device="cpu").pipeline(tiny.sd).unet._compiled_call_impl is None


def test_activation_estimate_of_sd15_at_512_px() -> None:
    per_image, per_call = activation_bytes(width=512, height=512, unet_channels=320,
                                           vae_channels=128, element_bytes=2, guidance=True,
                                           controlnets=0)
    assert (per_image, per_call) == (48 * 64 * 64 * 320 * 2 * 2, 8 * 512 * 512 * 128 * 2)
    with_controlnet, _ = activation_bytes(width=512, height=512, unet_channels=320,
                                          vae_channels=128, element_bytes=2, guidance=True,
                                          controlnets=2)
    assert with_controlnet == 2 * per_image


def test_max_batch_is_what_fits_in_free_memory_and_at_least_1(
    tiny: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = make_request(tiny.sdxl, width=1024, height=1024)  # not loaded: SDXL's widths
    per_image, per_call = activation_bytes(width=1024, height=1024, unet_channels=320,
                                           vae_channels=128, element_bytes=4, guidance=True,
                                           controlnets=0)
    engine = Engine(device="cpu")
    monkeypatch.setattr(kiln.engine.engine, "free_memory", lambda device: per_call + 5 * per_image + 1)
    assert engine.max_batch(request) == 5
    monkeypatch.setattr(kiln.engine.engine, "free_memory", lambda device: 1000)
    assert engine.max_batch(request) == 1


def test_max_batch_reads_the_loaded_model_and_keeps_within_a_given_budget(
    tiny: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kiln.engine.engine, "free_memory", lambda device: 10**12)
    request = make_request(tiny.sd, width=512, height=512)
    per_image, per_call = activation_bytes(width=512, height=512, unet_channels=8,
                                           vae_channels=8, element_bytes=4, guidance=True,
                                           controlnets=0)
    engine = Engine(device="cpu", memory_budget=10**8)
    engine.load(tiny.sd)  # the tiny model's widths: 8 and 8
    assert engine.max_batch(request) == (10**8 - engine.resident_bytes - per_call) // per_image
    assert Engine(device="cpu").max_batch(request) > 1000  # no budget given: free memory only
