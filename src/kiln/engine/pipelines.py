"""Loading diffusers pipelines, SDXL refiners and VAEs from local files (the engine's residency
keeps them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    FluxPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)

from kiln.errors import ModelLoadError
from kiln.generation import Architecture, ModelSpec

from .devices import place_pipeline
from .flow_pipelines import load_flux_transformer_file

SHIPPED_CONFIGS = Path(__file__).parent / "configs"
"""Config folders (no weights) shipped per architecture, used for single files without one."""

_PIPELINE_CLASSES: dict[Architecture, type[DiffusionPipeline]] = {
    "sd1x": StableDiffusionPipeline,
    "sdxl": StableDiffusionXLPipeline,
    # a FLUX Fill or SD3 folder loads as the text-to-image class; views switch class (from_pipe)
    "flux": FluxPipeline,
    "sd3": StableDiffusion3Pipeline,
}


def load_pipeline(
    model: ModelSpec, device: str, dtype: torch.dtype, offload: str = "none"
) -> DiffusionPipeline:
    """Load `model` from local files onto `device` (or with its weights offloaded to the CPU:
    `kiln.engine.devices.place_pipeline`); never touches the network.

    A folder loads with `from_pretrained`, a `.safetensors` file with `from_single_file` and a
    config folder (`model.config_path`, else the shipped one for the architecture); a FLUX
    transformer file runs with the rest of the FLUX folder `model.config_path`. Every failure
    is raised as ModelLoadError naming the model.
    """
    pipeline_class = _PIPELINE_CLASSES.get(model.architecture)
    if pipeline_class is None:
        raise ModelLoadError(
            f"model {model.air}: unsupported architecture {model.architecture!r}",
            air=model.air,
        )
    return _load(model, pipeline_class, device, dtype, offload)


def load_refiner(model: ModelSpec, device: str, dtype: torch.dtype) -> StableDiffusionXLImg2ImgPipeline:
    """Load the SDXL refiner `model` (one text encoder, aesthetic-score conditioning) as the
    image-to-image pipeline that finishes a base model's latents; as `load_pipeline` otherwise,
    its errors naming the parameter `refiner`."""
    try:
        return _load(model, StableDiffusionXLImg2ImgPipeline, device, dtype)
    except ModelLoadError as error:
        error.parameter = "refiner"
        raise


def load_vae(model: ModelSpec, device: str, dtype: torch.dtype) -> AutoencoderKL:
    """Load the VAE `model`: a diffusers folder, or a single file (LDM or diffusers layout) with
    the folder of its `config.json` (`model.config_path`, which `kiln models add` and `import`
    write). Raises ModelLoadError (parameter `vae`) naming the model."""
    path = Path(model.path)
    try:
        if path.is_dir():
            vae = AutoencoderKL.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        elif model.config_path is None:
            raise ModelLoadError(
                f"VAE {model.air}: a single-file VAE needs the folder of its config.json; register it "
                f"with `kiln models add`, which writes one", parameter="vae", air=model.air,
            )
        else:
            vae = AutoencoderKL.from_single_file(
                str(path), config=model.config_path, torch_dtype=dtype, local_files_only=True
            )
        return vae.to(device)
    except ModelLoadError:
        raise
    except Exception as exc:  # unreadable file, wrong layout
        raise ModelLoadError(
            f"VAE {model.air} could not be loaded from {path}: {type(exc).__name__}: {exc}",
            parameter="vae", air=model.air,
        ) from exc


def _load(
    model: ModelSpec, pipeline_class: type[DiffusionPipeline], device: str, dtype: torch.dtype,
    offload: str = "none",
) -> DiffusionPipeline:
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
        elif path.is_file() and path.suffix == ".safetensors" and model.architecture == "flux":
            transformer = load_flux_transformer_file(model, dtype)
            pipe = pipeline_class.from_pretrained(
                model.config_path, transformer=transformer, dtype=dtype, local_files_only=True)
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
        place_pipeline(pipe, device, offload)
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
