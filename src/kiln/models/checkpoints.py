"""What a model file is, told from its tensors' names and shapes alone.

`inspect_model` reads a `.safetensors` file's header, never its tensor data, so a multi-GB
checkpoint is recognised in milliseconds. It knows the original (LDM) single-file checkpoints of
SD 1.x, SD 2.x and SDXL (base, refiner, inpainting), their LoRAs and LyCORIS adapters, ControlNets,
VAEs and textual-inversion embeddings, FLUX.1 transformer files (BFL/ComfyUI or diffusers layout)
and FLUX LoRAs, and diffusers folders of all of these and of SD3; anything else raises
`UnrecognisedModelError` saying what was found.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from kiln.models.clip_tokenizer import VOCAB_SIZE
from kiln.models.ip_adapters import ip_adapter_kind

UNET = "model.diffusion_model."
VAE = "first_stage_model."
# Text encoder prefixes of LDM checkpoints: OpenAI CLIP in transformers' layout, OpenCLIP's own.
SD1_CLIP = "cond_stage_model.transformer.text_model."
SD2_OPEN_CLIP = "cond_stage_model.model."
SDXL_CLIP = "conditioner.embedders.0.transformer.text_model."
SDXL_OPEN_CLIP = "conditioner.embedders.1.model."
REFINER_OPEN_CLIP = "conditioner.embedders.0.model."

FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "flux": "FLUX", "sd3": "SD3"}
FAMILY_ARCHITECTURE = {"sd1": "sd1x", "sd2": "sd1x", "sdxl": "sdxl", "flux": "flux", "sd3": "sd3"}
"""The catalog's architecture per family: SD 2.x runs on the SD 1.x pipelines."""
_FAMILY_BY_TEXT_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_CONDITIONINGS = (
    "canny", "depth", "openpose", "lineart_anime", "lineart", "softedge", "scribble", "seg",
    "normalbae", "mlsd", "shuffle", "tile", "inpaint", "ip2p", "qrcode",
)
_CONDITIONING_ALIASES = {"pose": "openpose", "hed": "softedge", "pidi": "softedge", "normal": "normalbae"}
_PICKLE_READ_LIMIT = 16 * 2**20  # .pt/.bin embeddings are read whole; anything larger is refused


class UnrecognisedModelError(ValueError):
    """A file or folder that is not a model Kiln knows; the message says what was found."""


@dataclass(frozen=True)
class TensorHeader:
    """Tensor names and shapes of a model file, with the file's string metadata."""

    shapes: Mapping[str, tuple[int, ...]]
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class ModelKind:
    """What a model file is, as far as its tensors tell.

    `architecture` is the catalog's (`sd1x` also for SD 2.x, whose pipelines are SD 1.x's), None
    where the file does not tell it. `notes` are assumptions the operator may want to override.
    """

    category: str  # checkpoint, lora, lycoris, controlnet, vae, embeddings, ipadapter
    family: str | None  # sd1, sd2, sdxl, flux, sd3
    description: str
    type: str | None = None  # checkpoints: base, inpainting or refiner
    prediction: str | None = None  # checkpoints: epsilon or v_prediction
    zero_snr: bool = False  # checkpoints trained with zero terminal SNR
    timestep_distilled: bool = False  # FLUX schnell: a few steps, no guidance input
    conditioning: str | None = None  # ControlNets: guessed from the file name
    notes: tuple[str, ...] = ()

    @property
    def architecture(self) -> str | None:
        return FAMILY_ARCHITECTURE.get(self.family or "")

    @property
    def variant(self) -> str:
        """A name for the checkpoint's configuration, e.g. `sd2-v` or `sdxl-refiner`."""
        parts = [self.family or "unknown"]
        if self.type not in (None, "base"):
            parts.append(str(self.type))
        if self.prediction == "v_prediction":
            parts.append("v")
        return "-".join(parts)


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
        header = _pickled_embedding_header(path)
    elif suffix in (".ckpt", ".pt", ".pth", ".bin"):
        raise UnrecognisedModelError(
            f"{path.name} is a pickle file: Kiln reads checkpoints, LoRAs, ControlNets and VAEs "
            "from .safetensors files only (pickles can run code when loaded); convert it to "
            ".safetensors"
        )
    else:
        raise UnrecognisedModelError(f"{path.name} is not a model file (.safetensors, or .pt for embeddings)")
    return classify(header, path.name), header


def read_header(path: Path) -> TensorHeader:
    """Names, shapes and metadata of a `.safetensors` file; no tensor data is read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as file:
            shapes = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
            metadata = dict(file.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnrecognisedModelError(f"{Path(path).name} is not a readable .safetensors file: {exc}") from exc
    return TensorHeader(shapes, metadata)


def classify(header: TensorHeader, name: str = "") -> ModelKind:
    """What a file of these tensors is; `name` (the file name) only breaks ties the shapes leave
    open (SD and SDXL VAEs, a ControlNet's conditioning)."""
    shapes = header.shapes
    if not shapes:
        raise UnrecognisedModelError(f"{name or 'the file'} holds no tensors")
    for detector in (_flux_transformer, _checkpoint, _lora, _controlnet, _vae, _embeddings, _ip_adapter):
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
                _FAMILY_BY_TEXT_WIDTH.get(int(data.get("cross_attention_dim") or 0)))
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


def guess_conditioning(name: str) -> str | None:
    """A ControlNet's conditioning as its file name says it (`control_v11p_sd15_canny` → canny)."""
    words = re.split(r"[^a-z0-9]+", name.lower())
    for word in words:
        if word in _CONDITIONING_ALIASES:
            return _CONDITIONING_ALIASES[word]
    joined = "_".join(words)
    return next((c for c in _CONDITIONINGS if c in joined), None)


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
    context = _first_shape(shapes, re.escape(UNET) + r".*\.attn2\.to_k\.weight")
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

_LORA_DOWN = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", "_lora.down.weight",
              "lora_linear_layer.down.weight")
_LYCORIS = (".hada_w1_a", ".lokr_w1", ".lokr_w1_a", ".lokr_w2", ".oft_blocks", ".oft_diag", ".diff_b")


def _lora(header: TensorHeader, name: str) -> ModelKind | None:
    keys = list(header.shapes)
    lycoris = any(key.endswith(_LYCORIS) for key in keys)
    if not lycoris and not any(key.endswith(_LORA_DOWN) for key in keys):
        return None
    kohya = any(key.startswith(("lora_unet_", "lora_te")) for key in keys)
    layout = "lora_unet_*/lora_te* keys" if kohya else "diffusers/PEFT *.lora_A/B keys"
    if any(key.startswith(("lora_transformer_", "transformer.", "lora_unet_double_blocks", "lora_unet_single_blocks",
                           "lora_unet_joint_blocks"))
           for key in keys):
        return _transformer_lora(keys, layout, category="lycoris" if lycoris else "lora")
    family = _lora_family(header.shapes)
    category = "lycoris" if lycoris else "lora"
    noun = "LyCORIS adapter" if lycoris else "LoRA"
    if family is None:
        return ModelKind(category, None, f"a {noun} ({layout}) for an unknown base model",
                         notes=("its shapes do not say its base model: pass --architecture",))
    return ModelKind(category, family, f"an {FAMILY_NAMES[family]} {noun} ({layout})")


def _transformer_lora(keys: list[str], layout: str, category: str) -> ModelKind:
    """A LoRA of a FLUX or SD3 transformer: FLUX where it adapts single-stream blocks (which SD3
    has not) or names FLUX's double blocks, SD3 where it names SD3's joint blocks."""
    if any(marker in key for key in keys for marker in ("single_transformer_blocks", "single_blocks", "double_blocks")):
        family: str | None = "flux"
    elif any("joint_blocks" in key for key in keys):
        family = "sd3"
    else:
        family = None
    noun = "LyCORIS adapter" if category == "lycoris" else "LoRA"
    if family is None:
        return ModelKind(category, None, f"a {noun} ({layout}) for a FLUX or SD3 transformer",
                         notes=("its keys do not say which: pass --architecture flux or sd3",))
    return ModelKind(category, family, f"a {FAMILY_NAMES[family]} {noun} ({layout})")


def _lora_family(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    if any(key.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for key in shapes):
        return "sdxl"
    for key in sorted(shapes):  # the input width of a cross-attention key projection
        if re.search(r"attn2[._](processor[._])?to_k", key) and key.endswith((*_LORA_DOWN, ".hada_w1_b", ".hada_w2_b")):
            return _FAMILY_BY_TEXT_WIDTH.get(shapes[key][-1])
    for key in sorted(shapes):  # text-encoder-only LoRAs: the width of a self-attention input
        if re.search(r"(lora_te_|text_encoder\.).*q_proj", key) and key.endswith(_LORA_DOWN):
            return {768: "sd1", 1024: "sd2"}.get(shapes[key][-1])
    return None


def _controlnet(header: TensorHeader, name: str) -> ModelKind | None:
    shapes = header.shapes
    if "control_model.input_hint_block.0.weight" in shapes:
        layout, xl = "control_model.* keys", "control_model.label_emb.0.0.weight" in shapes
    elif "controlnet_cond_embedding.conv_in.weight" in shapes:
        layout, xl = "diffusers keys", "add_embedding.linear_1.weight" in shapes
    else:
        return None
    context = _first_shape(shapes, r"(control_model\.)?.*attn2\.to_k\.weight")
    family = "sdxl" if xl else _FAMILY_BY_TEXT_WIDTH.get(context[1]) if context else None
    conditioning = guess_conditioning(name)
    notes = () if conditioning else ("its file name does not say what its guide images show: pass --conditioning",)
    if family is None:
        return ModelKind("controlnet", None, f"a ControlNet ({layout}) for an unknown base model",
                         conditioning=conditioning, notes=(*notes, "pass --architecture"))
    return ModelKind("controlnet", family, f"an {FAMILY_NAMES[family]} ControlNet ({layout})",
                     conditioning=conditioning, notes=notes)


def _vae(header: TensorHeader, name: str) -> ModelKind | None:
    shapes = header.shapes
    prefix = VAE if VAE + "decoder.conv_in.weight" in shapes else ""
    latent = shapes.get(prefix + "decoder.conv_in.weight")
    if latent is None or prefix + "encoder.conv_in.weight" not in shapes:
        return None
    if latent[1] != 4:
        raise UnrecognisedModelError(f"{name} is a VAE with {latent[1]} latent channels (SD3 and Flux "
                                     "use 16); Kiln's models use 4")
    spec = header.metadata.get("modelspec.architecture", "").lower()
    if "xl" in spec or "xl" in name.lower():
        return ModelKind("vae", "sdxl", "an SDXL VAE")
    return ModelKind("vae", "sd1", "an SD 1.x/2.x VAE", notes=(
        "SD 1.x/2.x and SDXL VAEs have the same shapes and its name does not say SDXL: registered "
        "for sd1x (pass --architecture sdxl for an SDXL VAE)",))


def _embeddings(header: TensorHeader, name: str) -> ModelKind | None:
    shapes = header.shapes
    if shapes.get("clip_l", (0,))[-1] == 768 and shapes.get("clip_g", (0,))[-1] == 1280:
        return ModelKind("embeddings", "sdxl", "SDXL textual-inversion embeddings (clip_l, clip_g)")
    vectors = [shape for key, shape in shapes.items() if key == "emb_params" or key.startswith("string_to_param.")]
    if not vectors and len(shapes) <= 4 and all(len(s) in (1, 2) for s in shapes.values()):
        vectors = list(shapes.values())  # diffusers' learned_embeds: {token: vector(s)}
    widths = {shape[-1] for shape in vectors}
    if len(widths) != 1:
        return None
    family = {768: "sd1", 1024: "sd2"}.get(widths.pop())
    if family is None:
        return None
    return ModelKind("embeddings", family, f"{FAMILY_NAMES[family]} textual-inversion embeddings")


def _ip_adapter(header: TensorHeader, name: str) -> ModelKind | None:
    try:
        found = ip_adapter_kind(header.shapes)
    except ValueError as exc:
        raise UnrecognisedModelError(f"{name}: {exc}") from None
    if found is None:
        return None
    family, variant = found
    what = f"{FAMILY_NAMES[family]} " if family else ""
    kind = ModelKind("ipadapter", family, f"an {what}IP-Adapter{'' if variant == 'plain' else ' ' + variant}")
    if family is None:
        return replace(kind, notes=("its text width is not SD 1.x's, SD 2.x's or SDXL's: say which with --architecture",))
    return kind


def _pickled_embedding_header(path: Path) -> TensorHeader:
    """The tensors of a small `.pt`/`.bin` textual-inversion file (A1111's `string_to_param` or
    diffusers' `{token: vector}`), unpickled with torch's weights-only loader."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure: the file is not what we read
        raise UnrecognisedModelError(f"{path.name} could not be read as a weights-only pickle: {exc}") from exc
    shapes: dict[str, tuple[int, ...]] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, torch.Tensor):
            shapes[prefix.removesuffix(".")] = tuple(value.shape)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}{key}.", item)

    walk("", data)
    if not shapes:
        raise UnrecognisedModelError(f"{path.name} holds no tensors")
    return TensorHeader(shapes, {})


def _first_shape(shapes: Mapping[str, tuple[int, ...]], pattern: str) -> tuple[int, ...] | None:
    regex = re.compile(pattern)
    return next((shapes[key] for key in sorted(shapes) if regex.fullmatch(key)), None)
