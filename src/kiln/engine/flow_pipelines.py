"""FLUX.1 and Stable Diffusion 3 in the engine: their pipeline classes, a FLUX transformer file
beside a FLUX folder, prompt embeddings, ControlNets, and the checks their pipelines need.

Both are flow-matching transformers with a T5 text encoder beside CLIP. FLUX (dev) has no
classifier-free guidance: `CFGScale` is its distilled guidance, an input of the transformer;
FLUX schnell has neither. FLUX Fill checkpoints (a 384-channel transformer input: latents,
masked image and mask) run inpainting only, through `FluxFillPipeline`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import (
    DiffusionPipeline,
    FluxControlNetModel,
    FluxMultiControlNetModel,
    FluxTransformer2DModel,
    SD3ControlNetModel,
    SD3MultiControlNetModel,
)

from kiln.architectures import check_supported
from kiln.errors import InvalidRequestError, ModelLoadError, UnsupportedError
from kiln.generation import GenerationRequest, ModelSpec

_CLASS_NAMES: dict[tuple[str, str, bool], str] = {
    ("flux", "text", False): "FluxPipeline",
    ("flux", "image", False): "FluxImg2ImgPipeline",
    ("flux", "inpaint", False): "FluxInpaintPipeline",
    ("flux", "text", True): "FluxControlNetPipeline",
    ("flux", "image", True): "FluxControlNetImg2ImgPipeline",
    ("flux", "inpaint", True): "FluxControlNetInpaintPipeline",
    ("flux-fill", "inpaint", False): "FluxFillPipeline",
    ("sd3", "text", False): "StableDiffusion3Pipeline",
    ("sd3", "image", False): "StableDiffusion3Img2ImgPipeline",
    ("sd3", "inpaint", False): "StableDiffusion3InpaintPipeline",
    ("sd3", "text", True): "StableDiffusion3ControlNetPipeline",
}
FLUX_TOKENS = 512  # T5 tokens FLUX was trained with (dev; schnell 256, and accepts 512)
SD3_TOKENS = 256
FLOW_MAPS = 24
"""Token-by-width maps alive per image in one transformer step (residual stream, attention
projections, a 4x-wide feed-forward), for `activation_bytes`."""
VAE_MAPS = 8


def flow_pipeline_class(pipe: DiffusionPipeline, request: GenerationRequest) -> type[DiffusionPipeline]:
    """The pipeline class of `request`'s mode on the resident `pipe` (a FLUX Fill transformer
    runs `FluxFillPipeline`); UnsupportedError where diffusers has none."""
    kind = "flux-fill" if is_fill(pipe) else request.model.architecture
    name = _CLASS_NAMES.get((kind, request.mode, bool(request.controlnets)))
    if name is None:  # the service refuses these first (kiln.architectures)
        raise UnsupportedError(f"{request.model.air} has no {request.mode} pipeline with these inputs",
                               parameter="controlNet" if request.controlnets else "model")
    return getattr(diffusers, name)


def is_fill(pipe: DiffusionPipeline) -> bool:
    """Whether `pipe` holds a FLUX Fill transformer (its input also takes the mask and the masked
    image: 6x the latent channels)."""
    config = pipe.transformer.config
    return bool(config.in_channels == 6 * (config.out_channels or config.in_channels))


def check_flow_request(pipe: DiffusionPipeline, request: GenerationRequest) -> None:
    """Refuse what this model's pipelines cannot honour, naming the parameter (the rules of
    `kiln.architectures`, a Fill model outside inpainting, guidance on FLUX schnell, a clip skip
    beyond the text encoders)."""
    architecture = request.model.architecture
    fill = architecture == "flux" and is_fill(pipe)
    check_supported(
        architecture, negative_prompt=request.negative_prompt is not None, clip_skip=request.clip_skip,
        prompt_weighting="promptWeighting" if request.prompt_weighting else None,
        embeddings=bool(request.embeddings), refiner=request.refiner is not None, vae=request.vae is not None,
        ip_adapters=bool(request.ip_adapters),
        control_modes=tuple(control.control_mode for control in request.controlnets), mode=request.mode,
        inpainting_model=fill,
    )
    config = pipe.transformer.config
    if architecture == "flux" and not fill and config.in_channels != (config.out_channels or config.in_channels):
        raise UnsupportedError(
            f"{request.model.air} is a FLUX Canny/Depth control checkpoint ({config.in_channels}-channel "
            "input), which this server does not run; use FLUX ControlNets with a base model",
            parameter="model")
    if fill and request.mode != "inpaint":
        raise InvalidRequestError(
            f"{request.model.air} is a FLUX Fill (inpainting) model: send a seedImage with a maskImage "
            "(or outpaint), or use a base FLUX model", parameter="model")
    if architecture == "flux" and not config.guidance_embeds and request.cfg_scale > 1:
        raise UnsupportedError(
            f"{request.model.air} is a FLUX schnell-type model without guidance: CFGScale does not apply "
            "to it; leave it out", parameter="CFGScale", architecture="flux")
    if architecture == "sd3":
        depth = min(encoder.config.num_hidden_layers for encoder in (pipe.text_encoder, pipe.text_encoder_2))
        if request.clip_skip >= depth - 1:
            raise InvalidRequestError(
                f"clipSkip must be between 0 and {depth - 2} for this model, got {request.clip_skip}",
                parameter="clipSkip")


@torch.no_grad()
def flow_prompt_kwargs(
    pipe: DiffusionPipeline, architecture: str, pairs: Sequence[tuple[str, str | None]], clip_skip: int,
    *, guidance: bool,
) -> list[dict[str, Any]]:
    """The prompt embeddings of each (positive, negative) pair of `pairs` as pipeline arguments,
    all encoded in one call of the pipeline's `encode_prompt`: FLUX's T5 sequence and CLIP
    pooled vector; SD3's, with the negative prompt's (None is the empty prompt) when `guidance`
    and `clip_skip` applied to its CLIP encoders. Prompts beyond the T5 window (512 tokens FLUX,
    256 SD3) are cut there. A single pair is encoded exactly as alone; several equal their own
    within float rounding."""
    device = pipe._execution_device
    positives = [positive for positive, _ in pairs]
    if architecture == "flux":
        embeds, pooled, _ = pipe.encode_prompt(
            prompt=positives, prompt_2=None, device=device, num_images_per_prompt=1,
            max_sequence_length=_window(pipe.tokenizer_2, FLUX_TOKENS),
        )
        return [{"prompt_embeds": embeds[i][None], "pooled_prompt_embeds": pooled[i][None]}
                for i in range(len(pairs))]
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=positives, prompt_2=None, prompt_3=None, device=device,
        num_images_per_prompt=1, do_classifier_free_guidance=guidance,
        negative_prompt=[negative or "" for _, negative in pairs], clip_skip=clip_skip or None,
        max_sequence_length=_window(pipe.tokenizer_3, SD3_TOKENS),
    )
    return [{
        "prompt_embeds": embeds[i][None], "pooled_prompt_embeds": pooled[i][None],
        "negative_prompt_embeds": None if negative is None else negative[i][None],
        "negative_pooled_prompt_embeds": None if negative_pooled is None else negative_pooled[i][None],
    } for i in range(len(pairs))]


def _window(tokenizer: Any, trained: int) -> int:
    """T5 tokens to encode: what the model was trained with, or less if its tokenizer says so."""
    return trained if tokenizer is None else min(trained, tokenizer.model_max_length)


def flow_control_kwargs(request: GenerationRequest, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` plus the guide images, weights and windows of `request`'s ControlNets: per
    ControlNet lists, or plain values for FLUX's image-to-image and inpainting pipelines, which
    take exactly one ControlNet."""
    controls = request.controlnets
    if not controls:
        return kwargs
    values: dict[str, Any] = {
        "control_image": [control.guide_image for control in controls],
        "controlnet_conditioning_scale": [control.weight for control in controls],
        "control_guidance_start": [control.start for control in controls],
        "control_guidance_end": [control.end for control in controls],
    }
    if _single_controlnet(request):
        values = {name: value[0] for name, value in values.items()}
    return {**kwargs, **values}


def flow_controlnet(nets: list[torch.nn.Module], request: GenerationRequest) -> torch.nn.Module:
    """The `controlnet` component of the request's pipeline."""
    if _single_controlnet(request):
        return nets[0]
    if request.model.architecture == "flux":
        return FluxMultiControlNetModel(nets)
    return SD3MultiControlNetModel(nets)


def _single_controlnet(request: GenerationRequest) -> bool:
    return request.model.architecture == "flux" and request.mode != "text"


def load_flow_controlnet(model: ModelSpec, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """A FLUX or SD3 ControlNet from a diffusers folder (or, for SD3, a single file); raises
    ModelLoadError (parameter `controlNet`) naming the model."""
    cls = FluxControlNetModel if model.architecture == "flux" else SD3ControlNetModel
    path = Path(model.path)
    try:
        if path.is_dir():
            net = cls.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        elif cls is SD3ControlNetModel:
            net = cls.from_single_file(str(path), torch_dtype=dtype, local_files_only=True)
        else:
            raise ModelLoadError(f"ControlNet {model.air}: FLUX ControlNets load from a diffusers folder",
                                 parameter="controlNet", air=model.air)
        return net.to(device)
    except ModelLoadError:
        raise
    except Exception as exc:  # unreadable file, missing config, wrong layout
        raise ModelLoadError(
            f"ControlNet {model.air} could not be loaded from {path}: {type(exc).__name__}: {exc}",
            parameter="controlNet", air=model.air,
        ) from exc


def load_flux_transformer_file(model: ModelSpec, dtype: torch.dtype) -> FluxTransformer2DModel:
    """The FLUX transformer of the single `.safetensors` file `model.path`, in BFL/ComfyUI
    (`double_blocks.*`, optionally under `model.diffusion_model.`) or diffusers layout, configured
    from the FLUX folder `model.config_path` with what the file's shapes say overriding it (input
    channels, guidance input, depth), so a dev or Fill file runs with a schnell folder's parts."""
    from safetensors.torch import load_file

    if model.config_path is None:
        raise ModelLoadError(
            f"model {model.air}: a FLUX transformer file needs the FLUX folder whose text encoders, "
            "tokenizers and VAE it runs with (`kiln models add FILE --base AIR`)", air=model.air)
    state = load_file(model.path)
    return FluxTransformer2DModel.from_single_file(
        state, config=str(model.config_path), subfolder="transformer", torch_dtype=dtype,
        local_files_only=True, **flux_config_overrides({name: tuple(t.shape) for name, t in state.items()}),
    )


def flux_config_overrides(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The FLUX transformer config the tensor shapes of a file show (BFL or diffusers names)."""
    names = {name.removeprefix("model.diffusion_model."): shape for name, shape in shapes.items()}
    embedder = names.get("img_in.weight") or names.get("x_embedder.weight")
    output = names.get("final_layer.linear.weight") or names.get("proj_out.weight")
    if embedder is None or output is None:
        raise ModelLoadError("not a FLUX transformer file: no img_in/x_embedder or final projection tensors")

    def count(*prefixes: str) -> int:
        pattern = re.compile(rf"^(?:{'|'.join(map(re.escape, prefixes))})\.(\d+)\.")
        return len({match.group(1) for name in names if (match := pattern.match(name))})

    return {
        "in_channels": embedder[1],
        "out_channels": output[0],
        "num_layers": count("double_blocks", "transformer_blocks"),
        "num_single_layers": count("single_blocks", "single_transformer_blocks"),
        "guidance_embeds": any(name.startswith(("guidance_in.", "time_text_embed.guidance_embedder."))
                               for name in names),
    }


def flow_activation_bytes(
    pipe: DiffusionPipeline | None, request: GenerationRequest, element_bytes: int
) -> tuple[int, int]:
    """(bytes per image, bytes per call) of activations, an estimate:

        per image = FLOW_MAPS × tokens × width × element_bytes × (2 with SD3's CFG)
        per call  = VAE_MAPS × width × height × VAE width × element_bytes

    tokens = the image's 2x2 latent patches plus the T5 window; width = the transformer's (FLUX
    3072, SD3 medium 1536), VAE width its first block's (128); both from `pipe` when loaded,
    else FLUX.1's. FLUX at 1024 px in bf16: 0.7 GB per image, 2.1 GB per call.
    """
    flux = request.model.architecture == "flux"
    if pipe is not None:
        config = pipe.transformer.config
        width = config.num_attention_heads * config.attention_head_dim
        vae = pipe.vae.config.block_out_channels[0]
    else:
        width, vae = 3072, 128
    tokens = (request.width // 16) * (request.height // 16) + (FLUX_TOKENS if flux else SD3_TOKENS + 77)
    guidance = 2 if not flux and request.cfg_scale > 1 else 1
    per_image = FLOW_MAPS * tokens * width * element_bytes * guidance
    return per_image, VAE_MAPS * request.width * request.height * vae * element_bytes
