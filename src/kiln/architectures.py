"""What each model architecture accepts: image sizes, default settings, and the parameters its
diffusers pipelines cannot honour, each with the reason a client is told.

Pure data (no torch): the service checks a task against it before queueing, the engine checks
each request against the same rules, so both refuse with the same typed error.
"""

from __future__ import annotations

from typing import NamedTuple

from kiln.errors import UnsupportedError

FLOW_ARCHITECTURES = frozenset({"flux", "sd3"})
"""Flow-matching transformer models (FLUX.1, Stable Diffusion 3.x)."""
DISPLAY_NAMES = {"sd1x": "SD 1.x", "sdxl": "SDXL", "flux": "FLUX", "sd3": "SD3"}


class Defaults(NamedTuple):
    """The settings a request gets for what it leaves out."""

    size: int
    steps: int
    cfg: float


FALLBACK_DEFAULTS = {
    # SD: what Kiln has always used for models registered without defaults
    "sd1x": Defaults(512, 20, 7.0),
    "sdxl": Defaults(512, 20, 7.0),
    # FLUX.1 dev and SD3's published settings; CFG is FLUX's distilled guidance
    "flux": Defaults(1024, 28, 3.5),
    "sd3": Defaults(1024, 28, 7.0),
}
FLUX_SCHNELL_DEFAULTS = Defaults(1024, 4, 0.0)
"""FLUX.1 schnell is timestep-distilled (1-4 steps) and has no guidance input."""
FLUX_FILL_DEFAULTS = Defaults(1024, 50, 30.0)
"""FLUX.1 Fill's published settings (its distilled guidance is trained high)."""


def fallback_defaults(architecture: str) -> Defaults:
    """The defaults of a model of `architecture` whose catalog entry sets none."""
    return FALLBACK_DEFAULTS.get(architecture, FALLBACK_DEFAULTS["sd1x"])


def model_defaults(architecture: str, model_type: str | None = None, timestep_distilled: bool = False) -> Defaults:
    """The defaults `kiln models add` records for a FLUX or SD3 checkpoint: FLUX.1 dev's, Fill's
    or schnell's, or SD3's."""
    if architecture == "flux" and model_type == "inpainting":
        return FLUX_FILL_DEFAULTS
    if architecture == "flux" and timestep_distilled:
        return FLUX_SCHNELL_DEFAULTS
    return fallback_defaults(architecture)


def size_multiple(architecture: str) -> int:
    """Width and height must be multiples of this: the VAE's 8, times the transformer's 2x2
    patches for flow models."""
    return 16 if architecture in FLOW_ARCHITECTURES else 8


_NO_WEIGHTING = ("prompt weighting (Compel, sdEmbeds) works with the CLIP text encoders of SD 1.x "
                 "and SDXL only; without it, weighting syntax is read as plain text")
_FLOW_REFUSALS = {
    "promptWeighting": _NO_WEIGHTING,
    "usePromptWeighting": _NO_WEIGHTING,
    "embeddings": "textual-inversion embeddings exist for SD 1.x and SDXL text encoders only",
    "refiner": "refiners finish SDXL models only",
    "vae": "a replacement VAE is served for SD 1.x and SDXL models only",
    "ipAdapters": "IP-Adapters are served for SD 1.x and SDXL models only",
}
_REFUSALS: dict[str, dict[str, str]] = {
    "flux": {
        **_FLOW_REFUSALS,
        "negativePrompt": "FLUX is guidance-distilled: it has no classifier-free guidance and so no "
                          "negative prompt (CFGScale sets its distilled guidance)",
        "clipSkip": "FLUX reads CLIP's pooled output only, which clip skip does not change",
    },
    "sd3": dict(_FLOW_REFUSALS),
}


def refusals(
    architecture: str,
    *,
    negative_prompt: bool = False,
    clip_skip: int = 0,
    prompt_weighting: str | None = None,
    embeddings: bool = False,
    refiner: bool = False,
    vae: bool = False,
    ip_adapters: bool = False,
    control_modes: tuple[str, ...] = (),
    mode: str = "text",
    inpainting_model: bool = False,
) -> list[tuple[str, str]]:
    """(parameter, reason) for each parameter given that `architecture` cannot honour, in
    parameter order; empty when all apply. `prompt_weighting` is the wire parameter that asked
    for weighting (`promptWeighting` or `usePromptWeighting`); `control_modes` the control mode
    of each ControlNet; `mode` text, image or inpaint."""
    table = _REFUSALS.get(architecture, {})
    given = {
        "negativePrompt": negative_prompt,
        "clipSkip": clip_skip > 0,
        "promptWeighting": prompt_weighting == "promptWeighting",
        "usePromptWeighting": prompt_weighting == "usePromptWeighting",
        "embeddings": embeddings,
        "refiner": refiner,
        "vae": vae,
        "ipAdapters": ip_adapters,
    }
    found = [(name, reason) for name, reason in table.items() if given.get(name)]
    if architecture in FLOW_ARCHITECTURES:
        found += _controlnet_refusals(architecture, control_modes, mode, inpainting_model)
    return found


def _controlnet_refusals(
    architecture: str, control_modes: tuple[str, ...], mode: str, inpainting_model: bool
) -> list[tuple[str, str]]:
    """What diffusers has no pipeline for: SD3 ControlNets beside a seed image, several FLUX
    ControlNets beside one, ControlNets with FLUX Fill, and control modes (all of these models'
    ControlNets add their residuals as they are, which is 'balanced')."""
    if not control_modes:
        return []
    name = DISPLAY_NAMES[architecture]
    if inpainting_model:
        return [("controlNet", "FLUX Fill models take no ControlNet; use a base FLUX model")]
    if architecture == "sd3" and mode != "text":
        return [("controlNet", "SD3 ControlNets run text-to-image only (diffusers has no SD3 "
                               "ControlNet image-to-image or inpainting pipeline)")]
    if architecture == "flux" and mode != "text" and len(control_modes) > 1:
        return [("controlNet", "FLUX image-to-image and inpainting take one ControlNet; several "
                               "run text-to-image only")]
    return [
        (f"controlNet[{index}].controlMode",
         f"{name} ControlNets add their guidance as it is: send 'balanced' or leave controlMode out")
        for index, control_mode in enumerate(control_modes) if control_mode != "balanced"
    ]


def check_supported(architecture: str, **given: object) -> None:
    """Raise `unsupportedParameter` (naming the parameter and the architecture) for the first
    parameter of `given` (see `refusals`) that `architecture` cannot honour."""
    found = refusals(architecture, **given)  # type: ignore[arg-type]
    if found:
        parameter, reason = found[0]
        raise UnsupportedError(
            f"'{parameter}' does not apply to {DISPLAY_NAMES.get(architecture, architecture)} "
            f"models: {reason}.",
            parameter=parameter, architecture=architecture,
        )
