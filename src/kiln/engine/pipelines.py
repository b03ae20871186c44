"""Loading diffusers pipelines from local files (the engine's residency keeps them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from kiln.errors import ModelLoadError
from kiln.generation import Architecture, ModelSpec

SHIPPED_CONFIGS = Path(__file__).parent / "configs"
"""Config folders (no weights) shipped per architecture, used for single files without one."""

_PIPELINE_CLASSES: dict[Architecture, type[DiffusionPipeline]] = {
    "sd1x": StableDiffusionPipeline,
    "sdxl": StableDiffusionXLPipeline,
}


def load_pipeline(model: ModelSpec, device: str, dtype: torch.dtype) -> DiffusionPipeline:
    """Load `model` from local files onto `device`; never touches the network.

    A folder loads with `from_pretrained`, a `.safetensors` file with `from_single_file` and a
    config folder (`model.config_path`, else the shipped one for the architecture). Every
    failure is raised as ModelLoadError naming the model.
    """
    pipeline_class = _PIPELINE_CLASSES.get(model.architecture)
    if pipeline_class is None:
        raise ModelLoadError(
            f"model {model.air}: unsupported architecture {model.architecture!r}",
            air=model.air,
        )
    path = Path(model.path)
    # Kiln screens images itself; SD 1.x folders that ship a safety checker must not load it.
    extra: dict[str, Any] = (
        {"safety_checker": None, "requires_safety_checker": False}
        if model.architecture == "sd1x"
        else {}
    )
    try:
        if path.is_dir():
            pipe = pipeline_class.from_pretrained(path, dtype=dtype, local_files_only=True, **extra)
        elif path.is_file() and path.suffix == ".safetensors":
            pipe = pipeline_class.from_single_file(
                str(path),
                config=str(_config_folder(model)),
                dtype=dtype,
                local_files_only=True,
                **extra,
            )
        else:
            raise ModelLoadError(
                f"model {model.air}: {path} is neither a diffusers folder nor a .safetensors file",
                air=model.air,
            )
        pipe.to(device)
    except ModelLoadError:
        raise
    except Exception as exc:  # any third-party failure: corrupt file, wrong layout, OOM...
        raise ModelLoadError(
            f"model {model.air} could not be loaded from {path}: {type(exc).__name__}: {exc}",
            air=model.air,
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _config_folder(model: ModelSpec) -> Path:
    if model.config_path is not None:
        return Path(model.config_path)
    shipped = SHIPPED_CONFIGS / model.architecture
    if (shipped / "model_index.json").is_file():
        return shipped
    raise ModelLoadError(
        f"model {model.air}: a single-file checkpoint needs a config folder (a diffusers folder "
        f"with the configs and tokenizers); set config_path, none is shipped for "
        f"{model.architecture!r}",
        air=model.air,
    )
