"""Runware scheduler names mapped to diffusers scheduler classes and constructor options, per
architecture family: SD 1.x / SDXL (noise-prediction samplers) and FLUX / SD3 (flow matching).

Pure data: the protocol layer validates names against it, the engine builds schedulers from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kiln.architectures import DISPLAY_NAMES, FLOW_ARCHITECTURES
from kiln.errors import InvalidRequestError, UnsupportedError


@dataclass(frozen=True)
class SchedulerConfig:
    """A diffusers scheduler class name and the options that override the model's config."""

    class_name: str
    options: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    text_only: bool = False  # no image-to-image or inpainting (the sampler cannot noise an image)


def _cfg(class_name: str, text_only: bool = False, **options: Any) -> SchedulerConfig:
    return SchedulerConfig(class_name, MappingProxyType(options), text_only)


_KARRAS = {"use_karras_sigmas": True}

_TABLE: dict[str, SchedulerConfig] = {
    "DDIM": _cfg("DDIMScheduler"),
    "DDIMScheduler": _cfg("DDIMScheduler"),
    "DDPMScheduler": _cfg("DDPMScheduler"),
    "DEISMultistepScheduler": _cfg("DEISMultistepScheduler"),
    "DPMSolverSinglestepScheduler": _cfg("DPMSolverSinglestepScheduler"),
    "DPMSolverMultistepScheduler": _cfg("DPMSolverMultistepScheduler"),
    "DPM++ 2M": _cfg("DPMSolverMultistepScheduler"),
    "DPMSolverMultistepInverse": _cfg("DPMSolverMultistepInverseScheduler"),
    "DPM++": _cfg("DPMSolverMultistepScheduler", solver_order=1),
    "DPM++ Karras": _cfg("DPMSolverMultistepScheduler", **_KARRAS),
    "DPM++ 2M Karras": _cfg("DPMSolverMultistepScheduler", **_KARRAS),
    "DPM++ 2M SDE": _cfg("DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++"),
    "DPM++ 2M SDE Karras": _cfg(
        "DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++", **_KARRAS
    ),
    "DPM++ 3M": _cfg("DPMSolverMultistepScheduler", solver_order=3),
    "DPM++ 3M Karras": _cfg("DPMSolverMultistepScheduler", solver_order=3, **_KARRAS),
    "DPM++ SDE": _cfg("DPMSolverSDEScheduler"),
    "DPM++ SDE Karras": _cfg("DPMSolverSDEScheduler", **_KARRAS),
    "EDMEulerScheduler": _cfg("EDMEulerScheduler"),
    "EDMDPMSolverMultistepScheduler": _cfg("EDMDPMSolverMultistepScheduler"),
    "Euler": _cfg("EulerDiscreteScheduler"),
    "EulerDiscreteScheduler": _cfg("EulerDiscreteScheduler"),
    "Euler Karras": _cfg("EulerDiscreteScheduler", **_KARRAS),
    "Euler a": _cfg("EulerAncestralDiscreteScheduler"),
    "EulerAncestralDiscreteScheduler": _cfg("EulerAncestralDiscreteScheduler"),
    "Heun": _cfg("HeunDiscreteScheduler"),
    "HeunDiscreteScheduler": _cfg("HeunDiscreteScheduler"),
    "Heun Karras": _cfg("HeunDiscreteScheduler", **_KARRAS),
    "IPNDMScheduler": _cfg("IPNDMScheduler"),
    "KDPM2DiscreteScheduler": _cfg("KDPM2DiscreteScheduler"),
    "KDPM2AncestralDiscreteScheduler": _cfg("KDPM2AncestralDiscreteScheduler"),
    "LCM": _cfg("LCMScheduler"),
    "LCMScheduler": _cfg("LCMScheduler"),
    "LMS": _cfg("LMSDiscreteScheduler"),
    "LMSDiscreteScheduler": _cfg("LMSDiscreteScheduler"),
    "LMS Karras": _cfg("LMSDiscreteScheduler", **_KARRAS),
    "PNDMScheduler": _cfg("PNDMScheduler"),
    "TCDScheduler": _cfg("TCDScheduler"),
    "UniPC": _cfg("UniPCMultistepScheduler"),
    "UniPCMultistepScheduler": _cfg("UniPCMultistepScheduler"),
    "UniPC Karras": _cfg("UniPCMultistepScheduler", **_KARRAS),
    "UniPC 2M": _cfg("UniPCMultistepScheduler", solver_order=2),
    "UniPC 2M Karras": _cfg("UniPCMultistepScheduler", solver_order=2, **_KARRAS),
    "UniPC 3M": _cfg("UniPCMultistepScheduler", solver_order=3),
    "UniPC 3M Karras": _cfg("UniPCMultistepScheduler", solver_order=3, **_KARRAS),
}

# FLUX and SD3 (PROTOCOL.md section 8, FLUX family): Euler is their own flow-matching Euler, its
# sigma variants are options of it; DPM++ runs on flow sigmas (diffusers' DPM solver noises no
# seed image, so it is text-to-image only).
_FLOW_EULER = "FlowMatchEulerDiscreteScheduler"
_FLOW_DPM = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
_FLOW_TABLE: dict[str, SchedulerConfig] = {
    "FlowMatchEulerDiscreteScheduler": _cfg(_FLOW_EULER),
    "Euler": _cfg(_FLOW_EULER),
    "Euler Beta": _cfg(_FLOW_EULER, use_beta_sigmas=True),
    "Euler Exponential": _cfg(_FLOW_EULER, use_exponential_sigmas=True),
    "Euler Karras": _cfg(_FLOW_EULER, **_KARRAS),
    "DPM++": _cfg("DPMSolverMultistepScheduler", True, solver_order=1, **_FLOW_DPM),
    "DPM++ 2M": _cfg("DPMSolverMultistepScheduler", True, **_FLOW_DPM),
    "DPM++ 2M SDE": _cfg("DPMSolverMultistepScheduler", True, algorithm_type="sde-dpmsolver++", **_FLOW_DPM),
    "DPM++ 3M": _cfg("DPMSolverMultistepScheduler", True, solver_order=3, **_FLOW_DPM),
}
_FLOW_UNSERVED = tuple(
    f"{base}{variant}"
    for base in ("DPM++", "DPM++ SDE", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ 3M")
    for variant in ("", " Beta", " Exponential", " Karras")
    if f"{base}{variant}" not in _FLOW_TABLE
)
"""Runware's other FLUX names: DPM++ SDE, and DPM++ on Beta/Exponential/Karras sigmas, which
diffusers' solvers do not combine with flow sigmas."""

DEFAULT_SCHEDULER = "Default"
"""The name that means "the model's own scheduler"."""

SCHEDULER_NAMES: tuple[str, ...] = (DEFAULT_SCHEDULER, *_TABLE)
"""Every accepted SD-family scheduler name, in documentation order."""
FLOW_SCHEDULER_NAMES: tuple[str, ...] = (DEFAULT_SCHEDULER, *_FLOW_TABLE)
"""Every accepted FLUX / SD3 scheduler name."""
ALL_SCHEDULER_NAMES: tuple[str, ...] = tuple(dict.fromkeys(
    (*SCHEDULER_NAMES, *FLOW_SCHEDULER_NAMES, *_FLOW_UNSERVED)))
"""Every name a task may send; which apply depends on the model (`check_scheduler`)."""


def scheduler_names(architecture: str) -> tuple[str, ...]:
    """The scheduler names models of `architecture` accept."""
    return FLOW_SCHEDULER_NAMES if architecture in FLOW_ARCHITECTURES else SCHEDULER_NAMES


def scheduler_config(name: str, architecture: str = "sd1x") -> SchedulerConfig | None:
    """The diffusers configuration for `name` on `architecture`; None for `Default`. KeyError
    if the architecture has no such scheduler."""
    if name == DEFAULT_SCHEDULER:
        return None
    return (_FLOW_TABLE if architecture in FLOW_ARCHITECTURES else _TABLE)[name]


def check_scheduler(name: str | None, architecture: str, mode: str = "text") -> None:
    """Raise a typed error naming `scheduler` unless `name` (None: the model's own) runs on
    `architecture` in `mode`: `invalidScheduler` with the accepted names for a name of
    another family, `unsupportedParameter` for a FLUX name Kiln does not serve or a
    text-to-image-only sampler with a seed image."""
    if name is None:
        return
    names = scheduler_names(architecture)
    family = DISPLAY_NAMES.get(architecture, architecture)
    if name not in names:
        if architecture in FLOW_ARCHITECTURES and name in _FLOW_UNSERVED:
            raise UnsupportedError(
                f"The scheduler '{name}' is not available for {family} models on this server; "
                f"use one of: {', '.join(names)}.", parameter="scheduler")
        raise InvalidRequestError(
            f"Invalid value for 'scheduler': '{name}' is not a scheduler of {family} models; "
            f"use one of: {', '.join(names)}.",
            code="invalidScheduler", parameter="scheduler", type="string", allowedValues=list(names),
        )
    config = scheduler_config(name, architecture)
    if mode != "text" and config is not None and config.text_only:
        raise UnsupportedError(
            f"The scheduler '{name}' runs text-to-image only on {family} models; with a "
            "'seedImage' use Euler or one of its variants.", parameter="scheduler")
