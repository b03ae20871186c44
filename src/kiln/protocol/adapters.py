"""The adapter parameters of `imageInference`: `controlNet[]`, `lora[]`, `embeddings[]`,
`ipAdapters[]`, `vae`, `refiner` and prompt weighting.

Limits follow PROTOCOL.md Part A. The SDKs send every dataclass field of a ControlNet, unset
ones as null, plus keys of their own (`preprocessor`, `lowThresholdCanny`, ...): nulls count as
absent and unknown keys are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kiln.errors import InvalidRequestError, UnsupportedError, echoed
from kiln.protocol.validation import Limit, WireModel

CONTROL_MODES = ("balanced", "prompt", "controlnet")
MAX_CONTROLNETS = 4
"""Entries of `controlNet[]`: each adds a network and a decoded guide image to the task
(A1111's Multi-ControlNet defaults to 3 units; hosted APIs take a handful)."""
MAX_LORAS = 8
"""Entries of `lora[]`: the LoRAs kept loaded per model (`kiln.engine.loras`), so one request's
set never evicts itself."""
MAX_EMBEDDINGS = 8
"""Entries of `embeddings[]` (A1111 users rarely combine more than a few)."""
MAX_IP_ADAPTERS = 4
"""Entries of `ipAdapters[]`: each adds an image encoder pass and attention to every
cross-attention layer."""
MAX_IP_ADAPTER_GUIDES = 4
"""Guide images of one IP-Adapter (`guideImages`); their image tokens stand side by side."""
IP_ADAPTER_OPTIONS = ("combineMethod", "weightType", "embedScaling", "weightComposition")
"""The Python SDK's finer IP-Adapter controls, which Kiln does not implement: refused when set."""
DEFAULT_REFINER_START = 80
"""Percentage of the steps after which the refiner takes over when `refiner` gives no start
(AUTOMATIC1111's "Switch at 0.8", and diffusers' ensemble-of-experts example)."""
PROMPT_WEIGHTINGS = {"compel": "compel", "sdembeds": "sdEmbeds"}
"""Lower-cased wire value (the Python SDK sends "sdembeds") → Kiln's name."""

ADAPTER_LIMITS: dict[str, Limit] = {
    "controlNet": Limit("array", max=MAX_CONTROLNETS),
    "lora": Limit("array", max=MAX_LORAS),
    "controlNet[].model": Limit("string"),
    "controlNet[].guideImage": Limit("string"),
    "controlNet[].weight": Limit("float", 0, 1),
    "controlNet[].startStep": Limit("integer", 0, 100),
    "controlNet[].endStep": Limit("integer", 1, 100),
    "controlNet[].startStepPercentage": Limit("float", 0, 99),
    "controlNet[].endStepPercentage": Limit("float", 1, 100),
    "controlNet[].controlMode": Limit("string", allowed=CONTROL_MODES),
    "lora[].model": Limit("string"),
    "lora[].weight": Limit("float"),
    "embeddings": Limit("array", max=MAX_EMBEDDINGS),
    "embeddings[].model": Limit("string"),
    "embeddings[].weight": Limit("float", -4, 4),
    "ipAdapters": Limit("array", max=MAX_IP_ADAPTERS),
    "ipAdapters[].model": Limit("string"),
    "ipAdapters[].guideImage": Limit("string"),
    "ipAdapters[].guideImages": Limit("array", max=MAX_IP_ADAPTER_GUIDES),
    "ipAdapters[].weight": Limit("float", 0, 1),
    "vae": Limit("string"),
    "refiner.model": Limit("string"),
    "refiner.startStep": Limit("integer", 2, 100),
    "refiner.startStepPercentage": Limit("float", 1, 99),
    "promptWeighting": Limit("string", allowed=("compel", "sdEmbeds")),
    "usePromptWeighting": Limit("boolean"),
}




class ControlNetItem(WireModel):
    """One entry of `controlNet[]`."""


    model: str
    guideImage: str
    weight: Annotated[float, Field(ge=0, le=1)] = 1.0
    startStep: Annotated[int, Field(ge=0, le=100)] | None = None
    endStep: Annotated[int, Field(ge=1, le=100)] | None = None
    startStepPercentage: Annotated[float, Field(ge=0, le=99)] | None = None
    endStepPercentage: Annotated[float, Field(ge=1, le=100)] | None = None
    controlMode: Literal["balanced", "prompt", "controlnet"] = "balanced"



class LoraItem(WireModel):
    """One entry of `lora[]`; its weight is relative to the others (see `lora_weights`)."""


    model: str
    weight: float = 1.0



class EmbeddingItem(WireModel):
    """One entry of `embeddings[]`: a textual-inversion embedding and the scale of its vectors."""

    model: str
    weight: Annotated[float, Field(ge=-4, le=4)] = 1.0


class IpAdapterItem(WireModel):
    """One entry of `ipAdapters[]`: an IP-Adapter, its guide image (or `guideImages`, as the
    Python SDK may send) and its weight."""

    model: str
    guideImage: str | None = None
    guideImages: Annotated[list[str], Field(min_length=1, max_length=MAX_IP_ADAPTER_GUIDES)] | None = None
    weight: Annotated[float, Field(ge=0, le=1)] = 1.0
    combineMethod: Any = None
    weightType: Any = None
    embedScaling: Any = None
    weightComposition: Any = None

    def guides(self, index: int) -> tuple[str, ...]:
        """The guide images, in order. Raises for neither or both of `guideImage` and
        `guideImages`, and `unsupportedParameter` for an option of `IP_ADAPTER_OPTIONS`."""
        where = f"ipAdapters[{index}]"
        for option in IP_ADAPTER_OPTIONS:
            if getattr(self, option) is not None:
                raise UnsupportedError(
                    f"'{where}.{option}' is not supported by this server: the guide images' tokens "
                    "are combined side by side at the entry's 'weight'; leave it out.",
                    code="unsupportedParameter", parameter=f"{where}.{option}",
                )
        if (self.guideImage is None) == (self.guideImages is None):
            raise InvalidRequestError(
                f"'{where}' needs its image prompt: send 'guideImage' (an image UUID, data URI, base64 "
                "data or URL) or 'guideImages' (a list of them), not "
                + ("both." if self.guideImage is not None else "neither."),
                code="missingIpAdapters" if self.guideImage is None else "invalidIpAdapters",
                parameter=f"{where}.guideImage",
            )
        return (self.guideImage,) if self.guideImage is not None else tuple(self.guideImages or ())


class RefinerItem(WireModel):
    """`refiner`: an SDXL refiner and the step (or percentage of the steps) where it takes over."""

    model: str
    startStep: Annotated[int, Field(ge=2, le=100)] | None = None
    startStepPercentage: Annotated[float, Field(ge=1, le=99)] | None = None


def refiner_start(item: RefinerItem, steps: int) -> float:
    """The fraction (0-1) of the denoising after which the refiner takes over.

    Raises InvalidRequestError when both forms are given or `startStep` is beyond `steps`.
    """
    if item.startStep is not None and item.startStepPercentage is not None:
        raise InvalidRequestError(
            "'refiner' sets both 'startStep' and 'startStepPercentage'; send only one.",
            code="invalidRefiner", parameter="refiner.startStep",
        )
    if item.startStep is not None:
        if item.startStep > steps:
            raise InvalidRequestError(
                f"'refiner.startStep' is {item.startStep}, beyond the request's {steps} steps.",
                code="invalidRefiner", parameter="refiner.startStep", type="integer", min=2, max=steps,
            )
        return item.startStep / steps
    percentage = item.startStepPercentage if item.startStepPercentage is not None else DEFAULT_REFINER_START
    return percentage / 100


def control_window(item: ControlNetItem, index: int, steps: int) -> tuple[float, float]:
    """The part of the denoising (start, end as fractions 0-1) where ControlNet `index` acts.

    Raises InvalidRequestError when both forms of a bound are given, when a step is beyond
    `steps`, or when the window is empty.
    """
    where = f"controlNet[{index}]"
    for name in ("start", "end"):
        if getattr(item, f"{name}Step") is not None and getattr(item, f"{name}StepPercentage") is not None:
            raise InvalidRequestError(
                f"'{where}' sets both '{name}Step' and '{name}StepPercentage'; send only one.",
                code="invalidControlNet", parameter=f"{where}.{name}Step",
            )
    start = item.startStep / steps if item.startStep is not None else (item.startStepPercentage or 0) / 100
    if item.endStep is not None:
        end = item.endStep / steps
    else:
        end = (item.endStepPercentage if item.endStepPercentage is not None else 100) / 100
    for name, step in (("startStep", item.startStep), ("endStep", item.endStep)):
        if step is not None and step > steps:
            raise InvalidRequestError(
                f"'{where}.{name}' is {step}, beyond the request's {steps} steps.",
                code="invalidControlNet", parameter=f"{where}.{name}", type="integer", min=0, max=steps,
            )
    if end <= start:
        bound = "endStep" if item.endStep is not None else "endStepPercentage"
        raise InvalidRequestError(
            f"'{where}' ends before it starts: '{bound}' must be after the start.",
            code="invalidControlNet", parameter=f"{where}.{bound}",
        )
    return start, end


def lora_weights(items: tuple[LoraItem, ...]) -> tuple[float, ...]:
    """The weights scaled proportionally so that they sum to 1 (PROTOCOL.md Part A).

    When they sum to 0 (e.g. one LoRA at weight 0) no scaling exists and they are kept as sent.
    """
    total = sum(item.weight for item in items)
    return tuple(item.weight / total if total else item.weight for item in items)


def prompt_weighting(value: Any, legacy: Any) -> str | None:
    """Kiln's weighting syntax from `promptWeighting` (any case) or the legacy
    `usePromptWeighting: true` (Compel); None when neither asks for weighting."""
    if value is not None:
        name = PROMPT_WEIGHTINGS.get(value.lower()) if isinstance(value, str) else None
        if name is None:
            raise InvalidRequestError(
                f"Invalid value for 'promptWeighting': must be one of compel, sdEmbeds; got {echoed(value)}.",
                code="invalidPromptWeighting", parameter="promptWeighting", type="string",
                allowedValues=["compel", "sdEmbeds"],
            )
        return name
    if legacy not in (None, True, False):
        raise InvalidRequestError(
            f"Invalid value for 'usePromptWeighting': must be a boolean; got {echoed(legacy)}.",
            code="invalidUsePromptWeighting", parameter="usePromptWeighting", type="boolean",
        )
    return "compel" if legacy else None
