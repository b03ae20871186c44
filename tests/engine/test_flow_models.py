"""FLUX and SD3 in the engine, on tiny random-weight models: every mode, the parameters that
apply and those refused, ControlNets, LoRAs, a FLUX Fill model, a FLUX transformer file, the
flow-matching schedulers, batching, and the memory settings (CPU offload, dtype)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from kiln.engine import Engine
from kiln.engine.demo_flow_models import (
    build_tiny_flux,
    build_tiny_flux_controlnet,
    build_tiny_flux_fill,
    build_tiny_flux_lora,
    build_tiny_sd3,
    build_tiny_sd3_controlnet,
)
from kiln.engine.devices import DeviceOptions, place_pipeline
from kiln.engine.flow_pipelines import flow_activation_bytes, flux_config_overrides
from kiln.errors import InvalidRequestError, KilnError, UnsupportedError
from kiln.executor.engine import default_engine_factory
from kiln.generation import ControlNetInput, EmbeddingInput, GenerationRequest, LoraInput, ModelSpec
from kiln.schedulers import FLOW_SCHEDULER_NAMES
from kiln.settings import Settings
from tests.images import gradient, max_difference, pixels

from .helpers import make_request, text_encoder_passes


@dataclass(frozen=True)
class FlowModels:
    flux: ModelSpec
    sd3: ModelSpec
    fill: ModelSpec
    schnell: ModelSpec
    flux_file: ModelSpec  # the transformer alone, with the rest from the flux folder
    flux_controlnet: ModelSpec
    sd3_controlnet: ModelSpec
    flux_lora: ModelSpec


@pytest.fixture(scope="session")
def flow(tmp_path_factory: pytest.TempPathFactory) -> FlowModels:
    root = tmp_path_factory.mktemp("flow-models")
    flux = build_tiny_flux(root / "flux")
    transformer_file = root / "flux-transformer.safetensors"  # diffusers names, as HF repos ship it
    shutil.copy(flux / "transformer" / "diffusion_pytorch_model.safetensors", transformer_file)
    return FlowModels(
        flux=ModelSpec("test:flux@1", "flux", str(flux)),
        sd3=ModelSpec("test:sd3@1", "sd3", str(build_tiny_sd3(root / "sd3"))),
        fill=ModelSpec("test:flux-fill@1", "flux", str(build_tiny_flux_fill(root / "fill"))),
        schnell=ModelSpec("test:flux-schnell@1", "flux", str(build_tiny_flux(root / "schnell", schnell=True))),
        flux_file=ModelSpec("test:flux-file@1", "flux", str(transformer_file), config_path=str(flux)),
        flux_controlnet=ModelSpec("test:flux-cn@1", "flux", str(build_tiny_flux_controlnet(root / "flux-cn"))),
        sd3_controlnet=ModelSpec("test:sd3-cn@1", "sd3", str(build_tiny_sd3_controlnet(root / "sd3-cn"))),
        flux_lora=ModelSpec("test:flux-lora@1", "flux", str(build_tiny_flux_lora(root / "flux-lora"))),
    )


def request(model: ModelSpec, **changes: Any) -> GenerationRequest:
    """A 64 px, 2-step request at the family's usual guidance (FLUX 3.5, SD3 7)."""
    cfg = 3.5 if model.architecture == "flux" else 7.0
    return make_request(model, **{"cfg_scale": cfg, **changes})


def mask(width: int = 64, height: int = 64) -> Image.Image:
    image = Image.new("L", (width, height), 0)
    image.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return image


def edit(mode: str, width: int = 64, height: int = 64) -> dict[str, Any]:
    if mode == "text":
        return {}
    changes: dict[str, Any] = {"mode": mode, "init_image": gradient(width, height), "strength": 0.7}
    if mode == "inpaint":
        changes["mask_image"] = mask(width, height)
    return changes


def one(engine: Engine, req: GenerationRequest) -> Image.Image:
    [result] = engine.generate_batch([req])
    if isinstance(result, KilnError):
        raise result
    return result


def refused(engine: Engine, req: GenerationRequest) -> KilnError:
    [result] = engine.generate_batch([req])
    assert isinstance(result, KilnError), "expected an error"
    return result


@pytest.mark.parametrize("architecture", ["flux", "sd3"])
@pytest.mark.parametrize("mode", ["text", "image", "inpaint"])
def test_every_mode_gives_images_of_the_asked_size_the_same_for_the_same_seed(
    engine: Engine, flow: FlowModels, architecture: str, mode: str
) -> None:
    model = getattr(flow, architecture)
    req = request(model, width=96, height=64, **edit(mode, 96, 64))
    first, again = one(engine, req), one(engine, req)
    assert first.size == (96, 64) and first.mode == "RGB"
    assert pixels(first).tobytes() == pixels(again).tobytes()
    assert pixels(first).tobytes() != pixels(one(engine, replace(req, seeds=(2,)))).tobytes()


def test_cfg_is_fluxs_distilled_guidance_and_changes_the_image(engine: Engine, flow: FlowModels) -> None:
    assert max_difference(one(engine, request(flow.flux, cfg_scale=1.0)), one(engine, request(flow.flux))) > 0


def test_sd3_applies_the_negative_prompt_and_clip_skip(engine: Engine, flow: FlowModels) -> None:
    plain = one(engine, request(flow.sd3))
    assert max_difference(plain, one(engine, request(flow.sd3, negative_prompt="a blurry photo"))) > 0
    assert max_difference(plain, one(engine, request(flow.sd3, clip_skip=1))) > 0
    error = refused(engine, request(flow.sd3, clip_skip=3))  # 4-layer text encoders: at most 2
    assert isinstance(error, InvalidRequestError) and error.parameter == "clipSkip"


@pytest.mark.parametrize(("architecture", "changes", "parameter"), [
    ("flux", {"negative_prompt": "a blurry photo"}, "negativePrompt"),
    ("flux", {"clip_skip": 1}, "clipSkip"),
    ("flux", {"prompt_weighting": "compel"}, "promptWeighting"),
    ("sd3", {"prompt_weighting": "sdEmbeds"}, "promptWeighting"),
    ("sd3", {"vae": ModelSpec("test:vae@1", "sd3", "/nowhere")}, "vae"),
])
def test_what_a_flow_model_cannot_honour_is_refused_naming_the_parameter(
    engine: Engine, flow: FlowModels, architecture: str, changes: dict[str, Any], parameter: str
) -> None:
    error = refused(engine, request(getattr(flow, architecture), **changes))
    assert isinstance(error, UnsupportedError) and error.code == "unsupportedParameter"
    assert error.parameter == parameter and architecture.upper() in error.message


def test_embeddings_are_refused(engine: Engine, flow: FlowModels) -> None:
    embedding = EmbeddingInput(ModelSpec("test:ti@1", "flux", "/nowhere"), "cat")
    assert refused(engine, request(flow.flux, embeddings=(embedding,))).parameter == "embeddings"


def test_sizes_are_multiples_of_16(engine: Engine, flow: FlowModels) -> None:
    error = refused(engine, request(flow.flux, width=72))
    assert isinstance(error, InvalidRequestError) and error.parameter == "width" and "16" in error.message


def test_every_flow_scheduler_runs_and_sd_names_are_refused(engine: Engine, flow: FlowModels) -> None:
    images = {name: one(engine, request(flow.flux, scheduler=name, steps=3)) for name in FLOW_SCHEDULER_NAMES}
    assert len({pixels(image).tobytes() for image in images.values()}) >= 4
    assert pixels(images["Default"]).tobytes() == pixels(images["Euler"]).tobytes()
    assert one(engine, request(flow.sd3, scheduler="DPM++ 2M", steps=3)).size == (64, 64)
    sd_name = refused(engine, request(flow.sd3, scheduler="DDIM"))
    assert sd_name.code == "invalidScheduler" and "Euler Karras" in sd_name.details["allowedValues"]
    text_only = refused(engine, request(flow.flux, scheduler="DPM++ 2M", **edit("image")))
    assert isinstance(text_only, UnsupportedError) and text_only.parameter == "scheduler"
    assert one(engine, request(flow.flux, scheduler="Euler Karras", **edit("image"))).size == (64, 64)


def test_a_batch_equals_its_images_run_alone(engine: Engine, flow: FlowModels) -> None:
    for model in (flow.flux, flow.sd3):
        batch = [request(model, seeds=(5,)), request(model, seeds=(6,), positive_prompt="a red circle")]
        calls = engine.pipeline_calls
        results = engine.generate_batch(batch)
        assert engine.pipeline_calls - calls == 1  # one call, a generator per image
        for result, alone in zip(results, batch, strict=True):
            assert max_difference(result, one(engine, alone)) <= 2


def test_requests_with_the_same_prompts_encode_them_once(engine: Engine, flow: FlowModels) -> None:
    for model in (flow.flux, flow.sd3):
        first, second = request(model), request(model, positive_prompt="a red circle")
        batch = [replace(first, seeds=(seed,)) for seed in (1, 2, 3)] + [replace(second, seeds=(4,))] * 2
        assert text_encoder_passes(engine, batch) == text_encoder_passes(engine, [first, second]) > 0


def test_distinct_prompts_of_a_batch_share_their_text_encoder_passes(engine: Engine, flow: FlowModels) -> None:
    prompts = ("a red circle", "a blue square", "a green star", "the cat")
    for model in (flow.flux, flow.sd3):
        negative = "blurry" if model.architecture == "sd3" else None  # FLUX has none
        batch = [request(model, seeds=(seed,), positive_prompt=prompt, negative_prompt=negative if seed % 2 else None)
                 for seed, prompt in enumerate(prompts)]
        assert text_encoder_passes(engine, batch) == text_encoder_passes(engine, batch[:2])


def test_a_fill_model_inpaints_and_does_nothing_else(engine: Engine, flow: FlowModels) -> None:
    assert one(engine, request(flow.fill, **{**edit("inpaint"), "strength": 1.0})).size == (64, 64)
    for mode in ("text", "image"):
        error = refused(engine, request(flow.fill, **edit(mode)))
        assert isinstance(error, InvalidRequestError) and error.parameter == "model"


def test_schnell_has_no_guidance_to_set(engine: Engine, flow: FlowModels) -> None:
    assert one(engine, request(flow.schnell, cfg_scale=0.0)).size == (64, 64)
    error = refused(engine, request(flow.schnell, cfg_scale=3.5))
    assert isinstance(error, UnsupportedError) and error.parameter == "CFGScale"


def test_a_transformer_file_runs_with_its_base_folders_parts(engine: Engine, flow: FlowModels) -> None:
    assert pixels(one(engine, request(flow.flux_file))).tobytes() == pixels(one(engine, request(flow.flux))).tobytes()


def test_flux_config_overrides_read_bfl_names() -> None:
    shapes = {
        "model.diffusion_model.img_in.weight": (3072, 384),
        "model.diffusion_model.final_layer.linear.weight": (64, 3072),
        **{f"model.diffusion_model.double_blocks.{i}.img_attn.qkv.weight": (9216, 3072) for i in range(19)},
        **{f"model.diffusion_model.single_blocks.{i}.linear1.weight": (21504, 3072) for i in range(38)},
    }
    assert flux_config_overrides(shapes) == {
        "in_channels": 384, "out_channels": 64, "num_layers": 19, "num_single_layers": 38, "guidance_embeds": False}


def test_a_lora_changes_the_image_and_leaves_no_trace(engine: Engine, flow: FlowModels) -> None:
    bare = one(engine, request(flow.flux))
    adapted = one(engine, request(flow.flux, loras=(LoraInput(flow.flux_lora, 1.0),)))
    assert max_difference(bare, adapted) > 0
    assert pixels(one(engine, request(flow.flux))).tobytes() == pixels(bare).tobytes()


def _control(model: ModelSpec, weight: float = 1.0, control_mode: str = "balanced") -> ControlNetInput:
    return ControlNetInput(model, gradient(64, 64).transpose(Image.Transpose.ROTATE_90), weight,
                           control_mode=control_mode)  # type: ignore[arg-type]


@pytest.mark.parametrize(("architecture", "mode"), [("flux", "text"), ("flux", "image"), ("flux", "inpaint"),
                                                    ("sd3", "text")])
def test_a_controlnet_steers_each_mode_diffusers_has_a_pipeline_for(
    engine: Engine, flow: FlowModels, architecture: str, mode: str
) -> None:
    model, net = getattr(flow, architecture), getattr(flow, f"{architecture}_controlnet")
    off = one(engine, request(model, controlnets=(_control(net, 0.0),), **edit(mode)))
    on = one(engine, request(model, controlnets=(_control(net),), **edit(mode)))
    assert on.size == (64, 64) and max_difference(off, on) > 0


def test_several_flux_controlnets_run_text_to_image_and_batch(engine: Engine, flow: FlowModels) -> None:
    nets = (_control(flow.flux_controlnet), _control(flow.flux_controlnet, 0.5))
    batch = [request(flow.flux, controlnets=nets, seeds=(seed,)) for seed in (1, 2)]
    results = engine.generate_batch(batch)
    assert all(max_difference(result, one(engine, alone)) <= 2 for result, alone in zip(results, batch, strict=True))


@pytest.mark.parametrize(("architecture", "changes", "parameter"), [
    ("flux", {"control_mode": "prompt"}, "controlNet[0].controlMode"),
    ("flux", {"several": True, **edit("image")}, "controlNet"),
    ("sd3", edit("inpaint"), "controlNet"),
])
def test_controlnet_uses_without_a_pipeline_are_refused(
    engine: Engine, flow: FlowModels, architecture: str, changes: dict[str, Any], parameter: str
) -> None:
    changes = dict(changes)
    net = getattr(flow, f"{architecture}_controlnet")
    controls = [_control(net, control_mode=changes.pop("control_mode", "balanced"))]
    if changes.pop("several", False):
        controls.append(_control(net))
    error = refused(engine, request(getattr(flow, architecture), controlnets=tuple(controls), **changes))
    assert isinstance(error, UnsupportedError) and error.parameter == parameter


def test_step_progress_is_reported_without_previews(engine: Engine, flow: FlowModels) -> None:
    reported = []
    engine.generate_batch([request(flow.flux, steps=3)], on_step=lambda progress: reported.append(
        (progress.step, progress.steps, progress.preview())))
    assert reported == [(1, 3, None), (2, 3, None), (3, 3, None)]


def test_max_batch_estimates_flow_activations(engine: Engine, flow: FlowModels) -> None:
    per_image, per_call = flow_activation_bytes(None, request(flow.flux, width=1024, height=1024), 2)
    assert (round(per_image / 1e9, 1), round(per_call / 1e9, 1)) == (0.7, 2.1)
    assert engine.max_batch(request(flow.flux, width=1024, height=1024)) >= 1


# ---- memory settings: offload and dtype (configuration only: offload needs an accelerator) ----


def test_offload_and_dtype_apply_to_flow_models_only() -> None:
    options = DeviceOptions.resolve("cuda", "bf16", cpu_offload="model")
    assert (options.offload_for("flux"), options.offload_for("sd3"), options.offload_for("sdxl")) == (
        "model", "model", "none")
    assert options.dtype_for("flux") is torch.bfloat16
    cpu = DeviceOptions.resolve("cpu")
    assert cpu.dtype_for("flux") is torch.float32 and cpu.offload_for("flux") == "none"
    if not torch.cuda.is_available():  # "auto": fp16 for SD, bf16 for FLUX and SD3 where the GPU has it
        return
    auto = DeviceOptions.resolve("cuda")
    assert auto.dtype_for("sd1x") is torch.float16
    assert auto.dtype_for("flux") is (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


@pytest.mark.parametrize(("offload", "message"), [("model", "accelerator"), ("lots", "none, model or sequential")])
def test_offload_needs_an_accelerator_and_a_known_name(offload: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeviceOptions.resolve("cpu", cpu_offload=offload)


class RecordingPipeline:
    """Stands in for a diffusers pipeline: records how its weights were placed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def to(self, device: str) -> None:
        self.calls.append(("to", device))

    def enable_model_cpu_offload(self, device: str) -> None:
        self.calls.append(("model", device))

    def enable_sequential_cpu_offload(self, device: str) -> None:
        self.calls.append(("sequential", device))


@pytest.mark.parametrize(("offload", "call"), [("none", "to"), ("model", "model"), ("sequential", "sequential")])
def test_a_pipeline_is_placed_as_the_offload_setting_says(offload: str, call: str) -> None:
    pipe = RecordingPipeline()
    place_pipeline(pipe, "cuda:1", offload)
    assert pipe.calls == [(call, "cuda:1")]


def test_kiln_cpu_offload_reaches_the_engine() -> None:
    assert Settings.from_env({"KILN_CPU_OFFLOAD": "Sequential"}).cpu_offload == "sequential"
    with pytest.raises(ValueError, match="KILN_CPU_OFFLOAD"):
        Settings.from_env({"KILN_CPU_OFFLOAD": "all"})
    with pytest.raises(ValueError, match="accelerator"):  # the engine the executor builds has it
        default_engine_factory(Settings(device="cpu", cpu_offload="model"))()


def test_the_tiny_models_are_small_and_fast(engine: Engine, flow: FlowModels) -> None:
    for model in (flow.flux, flow.sd3):
        size = sum(f.stat().st_size for f in Path(model.path).rglob("*") if f.is_file())
        assert size < 3 * 2**20, (model.air, size)
    assert np.asarray(one(engine, request(flow.flux))).shape == (64, 64, 3)
