"""What a model file is, told from its tensors' names and shapes alone.

`inspect_model` reads a `.safetensors` file's header, never its tensor data, so a multi-GB
checkpoint is recognised in milliseconds. It knows the original (LDM) single-file checkpoints of
SD 1.x, SD 2.x and SDXL (base, refiner, inpainting), FLUX.1 transformer files (BFL/ComfyUI or
diffusers layout), the adapter files of `kiln.models.adapter_files` (LoRAs and LyCORIS, ControlNets,
VAEs, textual-inversion embeddings, IP-Adapters), and diffusers folders of all of these and of
SD3; anything else raises `UnrecognisedModelError` saying what was found.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from kiln.models.adapter_files import (
    detect_controlnet,
    detect_embeddings,
    detect_ip_adapter,
    detect_lora,
    detect_vae,
    guess_conditioning,
    pickled_embedding_header,
)
from kiln.models.clip_tokenizer import VOCAB_SIZE
from kiln.models.kinds import (
    FAMILY_ARCHITECTURE,
    FAMILY_BY_TEXT_WIDTH,
    FAMILY_NAMES,
    REFINER_OPEN_CLIP,
    SD1_CLIP,
    SD2_OPEN_CLIP,
    SDXL_CLIP,
    SDXL_OPEN_CLIP,
    UNET,
    VAE,
    ModelKind,
    TensorHeader,
    UnrecognisedModelError,
    first_shape,
    read_header,
)

__all__ = [  # the kinds' vocabulary is re-exported: callers import it from here
    "FAMILY_ARCHITECTURE", "FAMILY_NAMES", "ModelKind", "TensorHeader", "UnrecognisedModelError",
    "classify", "describe_unknown", "guess_conditioning", "inspect_folder", "inspect_model", "read_header",
]

_PICKLE_READ_LIMIT = 16 * 2**20  # .pt/.bin embeddings are read whole; anything larger is refused


def inspect_model(path: Path) -> tuple[ModelKind, TensorHeader | None]:
    """What the file or diffusers folder at `path` is, and the tensor header it was told from
    (None for a folder). Reads only headers and configs; raises UnrecognisedModelError."""
    path = Path(path)
    if path.is_dir():
        return inspect_folder(path), None
    if not path.is_file():
        raise FileNotFoundError(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        header = read_header(path)
    elif suffix in (".pt", ".bin") and path.stat().st_size <= _PICKLE_READ_LIMIT:
        header = pickled_embedding_header(path)
    elif suffix in (".ckpt", ".pt", ".pth", ".bin"):
        raise UnrecognisedModelError(
            f"{path.name} is a pickle file: Kiln reads checkpoints, LoRAs, ControlNets and VAEs "
            "from .safetensors files only (pickles can run code when loaded); convert it to "
            ".safetensors"
        )
    else:
        raise UnrecognisedModelError(f"{path.name} is not a model file (.safetensors, or .pt for embeddings)")
    return classify(header, path.name), header


def classify(header: TensorHeader, name: str = "") -> ModelKind:
    """What a file of these tensors is; `name` (the file name) only breaks ties the shapes leave
    open (SD and SDXL VAEs, a ControlNet's conditioning)."""
    shapes = header.shapes
    if not shapes:
        raise UnrecognisedModelError(f"{name or 'the file'} holds no tensors")
    for detector in (_flux_transformer, _checkpoint, detect_lora, detect_controlnet, detect_vae, detect_embeddings,
                     detect_ip_adapter):
        kind = detector(header, name)
        if kind is not None:
            return kind
    raise UnrecognisedModelError(f"{name or 'the file'} is {describe_unknown(shapes)}")


def inspect_folder(folder: Path) -> ModelKind:
    """What a diffusers folder is, from its `model_index.json` or `config.json`."""
    index, config = folder / "model_index.json", folder / "config.json"
    if index.is_file():
        data = json.loads(index.read_text("utf-8"))
        pipeline = str(data.get("_class_name", ""))
        if pipeline.startswith(("Flux", "StableDiffusion3")):
            return _flow_folder(folder, pipeline)
        family = "sdxl" if "XL" in pipeline else "sd1" if pipeline.startswith("StableDiffusion") else None
        if family is None:
            raise UnrecognisedModelError(f"{folder} is a diffusers {pipeline or 'pipeline'} folder; "
                                         "Kiln runs Stable Diffusion 1.x, 2.x and SDXL pipelines")
        kind = "refiner" if family == "sdxl" and data.get("text_encoder", [None])[0] is None else (
            "inpainting" if "Inpaint" in pipeline else "base")
        return ModelKind("checkpoint", family, f"a diffusers {pipeline} folder", type=kind)
    if config.is_file():
        data = json.loads(config.read_text("utf-8"))
        model = str(data.get("_class_name", ""))
        if model == "ControlNetModel":
            family = "sdxl" if data.get("addition_embed_type") == "text_time" else (
                FAMILY_BY_TEXT_WIDTH.get(int(data.get("cross_attention_dim") or 0)))
            return ModelKind("controlnet", family, "a diffusers ControlNet folder",
                             conditioning=guess_conditioning(folder.name.lower()))
        if model in ("FluxControlNetModel", "SD3ControlNetModel"):
            family = "flux" if model.startswith("Flux") else "sd3"
            return ModelKind("controlnet", family, f"a diffusers {FAMILY_NAMES[family]} ControlNet folder",
                             conditioning=guess_conditioning(folder.name.lower()))
        if model == "AutoencoderKL":
            family = "sdxl" if "xl" in folder.name.lower() else "sd1"
            return ModelKind("vae", family, "a diffusers VAE folder")
        raise UnrecognisedModelError(f"{folder} is a diffusers {model or 'model'} folder, not a "
                                     "pipeline, ControlNet or VAE")
    raise UnrecognisedModelError(f"{folder} is a folder without model_index.json or config.json "
                                 "(not a diffusers model)")


def _flow_folder(folder: Path, pipeline: str) -> ModelKind:
    """A FLUX.1 (base or Fill) or SD3 diffusers folder; FLUX schnell told by its transformer
    having no guidance input."""
    if pipeline in ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline"):
        return ModelKind("checkpoint", "sd3", f"a diffusers {pipeline} folder", type="base")
    if pipeline not in ("FluxPipeline", "FluxImg2ImgPipeline", "FluxFillPipeline"):
        raise UnrecognisedModelError(f"{folder} is a diffusers {pipeline} folder; Kiln runs FLUX.1 base "
                                     "and Fill and SD3 pipelines")
    transformer = folder / "transformer" / "config.json"
    config = json.loads(transformer.read_text("utf-8")) if transformer.is_file() else {}
    schnell = config.get("guidance_embeds") is False
    fill = pipeline == "FluxFillPipeline"
    what = "FLUX.1 Fill" if fill else "FLUX.1 schnell" if schnell else "FLUX.1"
    return ModelKind("checkpoint", "flux", f"a diffusers {what} folder", type="inpainting" if fill else "base",
                     timestep_distilled=schnell)


def _flux_transformer(header: TensorHeader, name: str) -> ModelKind | None:
    """A FLUX.1 transformer on its own (ComfyUI's `diffusion_models/` download): BFL names
    (`double_blocks.*`, possibly under `model.diffusion_model.`) or diffusers names."""
    keys = {key.removeprefix(UNET): shape for key, shape in header.shapes.items()}
    embedder = keys.get("img_in.weight") or keys.get("x_embedder.weight")
    if embedder is None or not any(key.startswith(("double_blocks.", "single_transformer_blocks.")) for key in keys):
        return None
    if any(key.startswith(("text_encoders.", "vae.", "first_stage_model.", "cond_stage_model.")) for key in header.shapes):
        raise UnrecognisedModelError(f"{name} is a FLUX checkpoint with its text encoders or VAE inside; "
                                     "Kiln reads FLUX transformer files (with --base) and diffusers folders")
    channels = embedder[1]
    if channels not in (64, 384):
        raise UnrecognisedModelError(f"{name} is a FLUX transformer with {channels} input channels (a Canny "
                                     "or Depth control model, which Kiln does not run)")
    schnell = not any(key.startswith(("guidance_in.", "time_text_embed.guidance_embedder.")) for key in keys)
    fill = channels == 384
    what = "FLUX.1 Fill" if fill else "FLUX.1 schnell" if schnell else "FLUX.1"
    return ModelKind("checkpoint", "flux", f"a {what} transformer file", type="inpainting" if fill else "base",
                     timestep_distilled=schnell)


def describe_unknown(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """What a file Kiln does not run looks like: a known kind where one is recognised, else its
    top-level name prefixes."""
    keys = [key.removeprefix(UNET) for key in shapes]
    known = (
        (("double_blocks.",), "a Flux model (double_blocks.* tensors)"),
        (("joint_blocks.",), "an SD3 model (joint_blocks.* tensors)"),
        (("motion_modules.",), "an AnimateDiff motion module (motion_modules.* tensors)"),
        (("lora_controlnet",), "a Control-LoRA (lora_controlnet tensor)"),
        (("adapter.body.", "body.0.resnets."), "a T2I-Adapter (body.* tensors)"),
        (("encoder.block.0.layer.",), "a T5 text encoder (encoder.block.* tensors)"),
        (("vision_model.",), "a CLIP vision encoder (vision_model.* tensors)"),
        (("text_model.encoder.", "encoder.layers.0.self_attn."), "a CLIP text encoder on its own"),
        (("conv_first.", "model.1.sub."), "an upscaler (ESRGAN-like: conv_first/model.1.sub tensors)"),
        (("encoder.layers.", "decoder.layers."), "a TAESD tiny autoencoder (encoder.layers.* tensors)"),
    )
    for prefixes, what in known:
        if any(key.startswith(prefixes) or f".{prefixes[0]}" in key for key in keys):
            return what
    counts = Counter(_top_prefix(key) for key in shapes)
    listed = ", ".join(f"{prefix} ({n})" for prefix, n in counts.most_common(5))
    more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
    return f"unknown: {len(shapes)} tensors, top-level prefixes {listed}{more}"


def _top_prefix(key: str) -> str:
    parts = key.split(".")
    depth = 2 if parts[0] in ("model", "conditioner", "cond_stage_model", "control_model") else 1
    return ".".join(parts[:depth]) + ("." if len(parts) > depth else "")


# ---- checkpoints ------------------------------------------------------------------------------


def _checkpoint(header: TensorHeader, name: str) -> ModelKind | None:
    shapes = header.shapes
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        return None
    for marker, what in (("edm_mean", "Playground v2.5 (EDM)"), ("edm_vpred.sigma_max", "an EDM v-prediction")):
        if marker in shapes:
            raise UnrecognisedModelError(f"{name} is {what} checkpoint ({marker} tensor), which Kiln does not run")
    try:
        family, widths = _checkpoint_text_encoders(shapes)
    except UnrecognisedModelError as exc:
        raise UnrecognisedModelError(f"{name} is {exc}") from None
    context = first_shape(shapes, re.escape(UNET) + r".*\.attn2\.to_k\.weight")
    if context is None:
        raise UnrecognisedModelError(f"{name} has a UNet (model.diffusion_model.*) without cross-attention")
    if context[1] != sum(widths):
        raise UnrecognisedModelError(
            f"{name}: its UNet attends to {context[1]}-wide text features but its text encoder(s) "
            f"give {' + '.join(map(str, widths))}"
        )
    if not any(key.startswith(VAE) for key in shapes):
        raise UnrecognisedModelError(f"{name} has a UNet and text encoder but no VAE "
                                     "(first_stage_model.* tensors); Kiln loads complete checkpoints")
    refiner = family == "sdxl" and len(widths) == 1
    channels = conv_in[1]
    if channels == 4:
        kind = "refiner" if refiner else "base"
    elif channels == 9 and not refiner:
        kind = "inpainting"
    else:
        what = {8: "an InstructPix2Pix (image editing)", 5: "a depth-to-image", 7: "an upscaling"}.get(
            channels, "an unknown")
        raise UnrecognisedModelError(f"{name} is {what} checkpoint ({channels} UNet input channels), "
                                     "which Kiln does not run")
    prediction, notes = _prediction(header, family, kind)
    label = {"base": "", "inpainting": " inpainting", "refiner": " refiner"}[kind]
    if prediction == "v_prediction":
        label += " v-prediction"
    return ModelKind(
        "checkpoint", family, f"an {FAMILY_NAMES[family]}{label} checkpoint", type=kind,
        prediction=prediction, zero_snr="ztsnr" in shapes, notes=notes,
    )


def _checkpoint_text_encoders(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, tuple[int, ...]]:
    """The family a checkpoint's text encoder layout says, and the encoders' widths."""
    layouts = (
        ("sdxl", (SDXL_CLIP + "embeddings.token_embedding.weight", SDXL_OPEN_CLIP + "token_embedding.weight")),
        ("sdxl", (REFINER_OPEN_CLIP + "token_embedding.weight",)),
        ("sd2", (SD2_OPEN_CLIP + "token_embedding.weight",)),
        ("sd1", (SD1_CLIP + "embeddings.token_embedding.weight",)),
    )
    for family, keys in layouts:
        if all(key in shapes for key in keys):
            for key in keys:
                if shapes[key][0] != VOCAB_SIZE:
                    raise UnrecognisedModelError(
                        f"a checkpoint whose text encoder has a {shapes[key][0]}-token vocabulary; "
                        f"Kiln's CLIP tokenizer has {VOCAB_SIZE}"
                    )
            return family, tuple(shapes[key][1] for key in keys)
    prefixes = sorted({_top_prefix(k) for k in shapes if not k.startswith((UNET, VAE))})
    raise UnrecognisedModelError(
        "a UNet (model.diffusion_model.*) without a text encoder Kiln knows "
        f"(other tensors: {', '.join(prefixes[:6]) or 'none'})"
    )


def _prediction(header: TensorHeader, family: str, kind: str) -> tuple[str, tuple[str, ...]]:
    """What the UNet predicts: `v_prediction` or `epsilon`, and a note where it is assumed.

    The weights' shapes do not tell; the file may: a `v_pred` marker tensor (ComfyUI's
    convention) or Stability's model-spec metadata.
    """
    if "v_pred" in header.shapes:
        return "v_prediction", ()
    spec = header.metadata.get("modelspec.prediction_type", "").lower()
    if spec in ("v", "v_prediction", "v-prediction"):
        return "v_prediction", ()
    if spec == "epsilon":
        return "epsilon", ()
    architecture = header.metadata.get("modelspec.architecture", "")  # e.g. stable-diffusion-v2-768-v
    if architecture:
        return ("v_prediction" if architecture.endswith("-v") else "epsilon"), ()
    if family == "sd2" and kind == "base":
        return "v_prediction", (
            "SD 2.x 768 checkpoints predict v and 512-base ones predict noise; this file does not "
            "say which: assumed v-prediction (768). Pass --prediction epsilon for a 512-base model.",
        )
    return "epsilon", ()


# ---- adapters, VAEs, embeddings ---------------------------------------------------------------
