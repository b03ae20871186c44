"""The vocabulary of model-file detection: what a file is (`ModelKind`), the header it is told
from (`TensorHeader`, `read_header`), the families, and the error for what is not a model Kiln
knows. Shared by `kiln.models.checkpoints` and `kiln.models.adapter_files`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
FAMILY_BY_TEXT_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


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


def first_shape(shapes: Mapping[str, tuple[int, ...]], pattern: str) -> tuple[int, ...] | None:
    regex = re.compile(pattern)
    return next((shapes[key] for key in sorted(shapes) if regex.fullmatch(key)), None)
