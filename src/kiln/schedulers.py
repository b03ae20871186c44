"""Runware scheduler names mapped to diffusers scheduler classes and constructor options.

Pure data: the protocol layer validates names against it, the engine builds schedulers from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class SchedulerConfig:
    """A diffusers scheduler class name and the options that override the model's config."""

    class_name: str
    options: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _cfg(class_name: str, **options: Any) -> SchedulerConfig:
    return SchedulerConfig(class_name, MappingProxyType(options))


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

DEFAULT_SCHEDULER = "Default"
"""The name that means "the model's own scheduler"."""

SCHEDULER_NAMES: tuple[str, ...] = (DEFAULT_SCHEDULER, *_TABLE)
"""Every accepted SD-family scheduler name, in documentation order."""


def scheduler_config(name: str) -> SchedulerConfig | None:
    """The diffusers configuration for `name`; None for `Default`. KeyError if unknown."""
    if name == DEFAULT_SCHEDULER:
        return None
    return _TABLE[name]
