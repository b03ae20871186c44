"""Adapter files told from their tensors: LoRAs and LyCORIS (SD and FLUX), ControlNets, VAEs,
textual-inversion embeddings and IP-Adapters. Each detector returns the `ModelKind` of a header it
recognises, None otherwise; `kiln.models.checkpoints.classify` tries them in turn."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from kiln.models.ip_adapters import ip_adapter_kind
from kiln.models.kinds import (
    FAMILY_BY_TEXT_WIDTH,
    FAMILY_NAMES,
    VAE,
    ModelKind,
    TensorHeader,
    UnrecognisedModelError,
    first_shape,
)

_CONDITIONINGS = (
    "canny", "depth", "openpose", "lineart_anime", "lineart", "softedge", "scribble", "seg",
    "normalbae", "mlsd", "shuffle", "tile", "inpaint", "ip2p", "qrcode",
)
_CONDITIONING_ALIASES = {"pose": "openpose", "hed": "softedge", "pidi": "softedge", "normal": "normalbae"}


def guess_conditioning(name: str) -> str | None:
    """A ControlNet's conditioning as its file name says it (`control_v11p_sd15_canny` → canny)."""
    words = re.split(r"[^a-z0-9]+", name.lower())
    for word in words:
        if word in _CONDITIONING_ALIASES:
            return _CONDITIONING_ALIASES[word]
    joined = "_".join(words)
    return next((c for c in _CONDITIONINGS if c in joined), None)


_LORA_DOWN = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", "_lora.down.weight",
              "lora_linear_layer.down.weight")
_LYCORIS = (".hada_w1_a", ".lokr_w1", ".lokr_w1_a", ".lokr_w2", ".oft_blocks", ".oft_diag", ".diff_b")


def detect_lora(header: TensorHeader, name: str) -> ModelKind | None:
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
            return FAMILY_BY_TEXT_WIDTH.get(shapes[key][-1])
    for key in sorted(shapes):  # text-encoder-only LoRAs: the width of a self-attention input
        if re.search(r"(lora_te_|text_encoder\.).*q_proj", key) and key.endswith(_LORA_DOWN):
            return {768: "sd1", 1024: "sd2"}.get(shapes[key][-1])
    return None


def detect_controlnet(header: TensorHeader, name: str) -> ModelKind | None:
    shapes = header.shapes
    if "control_model.input_hint_block.0.weight" in shapes:
        layout, xl = "control_model.* keys", "control_model.label_emb.0.0.weight" in shapes
    elif "controlnet_cond_embedding.conv_in.weight" in shapes:
        layout, xl = "diffusers keys", "add_embedding.linear_1.weight" in shapes
    else:
        return None
    context = first_shape(shapes, r"(control_model\.)?.*attn2\.to_k\.weight")
    family = "sdxl" if xl else FAMILY_BY_TEXT_WIDTH.get(context[1]) if context else None
    conditioning = guess_conditioning(name)
    notes = () if conditioning else ("its file name does not say what its guide images show: pass --conditioning",)
    if family is None:
        return ModelKind("controlnet", None, f"a ControlNet ({layout}) for an unknown base model",
                         conditioning=conditioning, notes=(*notes, "pass --architecture"))
    return ModelKind("controlnet", family, f"an {FAMILY_NAMES[family]} ControlNet ({layout})",
                     conditioning=conditioning, notes=notes)


def detect_vae(header: TensorHeader, name: str) -> ModelKind | None:
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


def detect_embeddings(header: TensorHeader, name: str) -> ModelKind | None:
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


def detect_ip_adapter(header: TensorHeader, name: str) -> ModelKind | None:
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


def pickled_embedding_header(path: Path) -> TensorHeader:
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
