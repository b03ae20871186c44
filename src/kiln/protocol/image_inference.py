"""The `imageInference` task: its parameters, limits (PROTOCOL.md Part A) and validation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from kiln.errors import InvalidRequestError
from kiln.protocol.adapters import (
    ADAPTER_LIMITS,
    ControlNetItem,
    EmbeddingItem,
    IpAdapterItem,
    LoraItem,
    RefinerItem,
    prompt_weighting,
)
from kiln.protocol.validation import Limit, WireModel, reject_unsupported, validate_task
from kiln.schedulers import ALL_SCHEDULER_NAMES

OUTPUT_TYPES = ("URL", "base64Data", "dataURI")
OUTPUT_FORMAT_NAMES = ("PNG", "JPG", "WEBP")
MAX_SEED = 2**63 - 1
OUTPAINT_SIDES = ("top", "right", "bottom", "left")
SAFETY_MODES = ("none", "fast", "full")

LIMITS: dict[str, Limit] = {
    **ADAPTER_LIMITS,
    "positivePrompt": Limit("string", 4, 2000),
    "negativePrompt": Limit("string", 4, 2000),
    "width": Limit("integer", 128, 2048, multiple_of=64),
    "height": Limit("integer", 128, 2048, multiple_of=64),
    "steps": Limit("integer", 1, 100),
    "CFGScale": Limit("float", 0, 50),
    "clipSkip": Limit("integer", 0, 2),
    "numberResults": Limit("integer", 1, 20),
    "seed": Limit("integer", 1, MAX_SEED),
    "outputType": Limit("string", allowed=OUTPUT_TYPES),
    "outputFormat": Limit("string", allowed=OUTPUT_FORMAT_NAMES),
    "outputQuality": Limit("integer", 20, 99),
    "scheduler": Limit("string", allowed=ALL_SCHEDULER_NAMES),  # per model: check_scheduler
    "model": Limit("string"),
    "includeCost": Limit("boolean"),
    "deliveryMethod": Limit("string", allowed=("sync", "async")),
    "checkNSFW": Limit("boolean"),
    "safety.checkContent": Limit("boolean"),
    "safety.mode": Limit("string", allowed=SAFETY_MODES),
    "seedImage": Limit("string"),
    "maskImage": Limit("string"),
    "strength": Limit("float", 0, 1),
    "maskMargin": Limit("integer", 32, 128),
    **{f"outpaint.{side}": Limit("integer", 0, 2048, multiple_of=64) for side in OUTPAINT_SIDES},
    "outpaint.blur": Limit("integer", 0, 32),
    "progress": Limit("boolean"),
    "progressPreviews": Limit("boolean"),
}

# Parameters of the protocol that this server does not implement (yet). A request that sets one
# gets `unsupportedParameter` instead of an image that silently ignored it.
UNSUPPORTED: dict[str, str] = {
    "referenceImages": "reference images are not available on this server.",
    "lycoris": "LyCORIS adapters are not available on this server.",
    "acceleratorOptions": "accelerator caches are not available on this server.",
    "advancedFeatures": "advanced features are not available on this server.",
    "puLID": "PuLID is not available on this server.",
    "acePlusPlus": "ACE++ is not available on this server.",
    "instantID": "InstantID is not available on this server.",
    "photoMaker": "PhotoMaker is not available on this server.",
    "providerSettings": "third-party provider settings do not apply to a self-hosted server.",
}

Prompt = Annotated[str, Field(min_length=4, max_length=2000)]
Dimension = Annotated[int, Field(ge=128, le=2048, multiple_of=64)]


Extension = Annotated[int, Field(ge=0, le=2048, multiple_of=64)]


class Outpaint(WireModel):
    """Pixels added on each side of the seed image, and the width of the blended seam."""


    top: Extension = 0
    right: Extension = 0
    bottom: Extension = 0
    left: Extension = 0
    blur: Annotated[int, Field(ge=0, le=32)] = 0



class Safety(WireModel):
    """The newer form of the NSFW check; `mode` wins over `checkContent` when set."""


    checkContent: bool = False
    mode: Literal["none", "fast", "full"] | None = None
    checkInputs: bool = False



class ImageInferenceTask(WireModel):
    """A validated `imageInference` task. Unknown keys are ignored (the SDKs send several)."""


    taskType: Literal["imageInference"]
    taskUUID: str
    model: str
    positivePrompt: Prompt
    negativePrompt: Prompt | None = None
    width: Dimension | None = None
    height: Dimension | None = None
    steps: Annotated[int, Field(ge=1, le=100)] | None = None
    CFGScale: Annotated[float, Field(ge=0, le=50)] | None = None
    clipSkip: Annotated[int, Field(ge=0, le=2)] = 0
    scheduler: str | None = None
    seed: Annotated[int, Field(ge=1, le=MAX_SEED)] | None = None
    numberResults: Annotated[int, Field(ge=1, le=20)] = 1
    outputType: str = "URL"
    outputFormat: str = "JPG"
    outputQuality: Annotated[int, Field(ge=20, le=99)] = 95
    includeCost: bool = False
    deliveryMethod: Literal["sync", "async"] = "sync"
    uploadEndpoint: str | None = None
    webhookURL: str | None = None
    checkNSFW: bool = False
    safety: Safety | None = None
    seedImage: str | None = None
    maskImage: str | None = None
    strength: Annotated[float, Field(ge=0, le=1)] | None = None
    maskMargin: Annotated[int, Field(ge=32, le=128)] | None = None
    outpaint: Outpaint | None = None
    controlNet: list[ControlNetItem] = []
    lora: list[LoraItem] = []
    embeddings: list[EmbeddingItem] = []
    ipAdapters: list[IpAdapterItem] = []
    vae: str | None = None
    refiner: RefinerItem | None = None
    promptWeighting: str | None = None
    usePromptWeighting: bool = False
    # Kiln's extensions (the official SDKs never send them): step progress over WebSocket
    progress: bool = False
    progressPreviews: bool = False

    @property
    def prompt_weighting(self) -> str | None:
        """"compel", "sdEmbeds" or None, from `promptWeighting` or `usePromptWeighting`."""
        return prompt_weighting(self.promptWeighting, self.usePromptWeighting)

    @property
    def check_content(self) -> bool:
        """Whether each image gets the NSFW check (`checkNSFW`, or `safety`)."""
        if self.safety is not None and self.safety.mode is not None:
            return self.safety.mode != "none"
        return self.checkNSFW or (self.safety is not None and self.safety.checkContent)

    @field_validator("uploadEndpoint", "webhookURL")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="before")
    @classmethod
    def _legacy_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("model") is None and data.get("modelId") is not None:  # PY <= 0.4 and 2024 docs
            data["model"] = data["modelId"]
        if data.get("negativePrompt") == "":
            del data["negativePrompt"]
        if isinstance(data.get("positivePrompt"), str):
            data["positivePrompt"] = data["positivePrompt"].strip()
        return data

    @field_validator("outputType", mode="before")
    @classmethod
    def _output_type(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if value not in OUTPUT_TYPES:
            raise ValueError("unknown output type")
        return value

    @field_validator("outputFormat", mode="before")
    @classmethod
    def _output_format(cls, value: Any) -> Any:
        name = value.upper() if isinstance(value, str) else value
        name = "JPG" if name == "JPEG" else name
        if name not in OUTPUT_FORMAT_NAMES:
            raise ValueError("unknown output format")
        return name

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler(cls, value: Any) -> Any:
        if value not in ALL_SCHEDULER_NAMES:
            raise ValueError("unknown scheduler")
        return value


def parse_image_inference(task: dict[str, Any]) -> ImageInferenceTask:
    """Validate an `imageInference` task object or raise a typed error naming the parameter.

    An unknown scheduler is `invalidScheduler`; a parameter this server does not implement is
    `unsupportedParameter`.
    """
    reject_unsupported(task, UNSUPPORTED)
    safety = task.get("safety")
    if isinstance(safety, dict):
        reject_unsupported(
            {"safety.checkInputs": safety.get("checkInputs")},
            {"safety.checkInputs": "input images are not checked; only generated images are."},
        )
    if task.get("acceleration") not in (None, "none"):
        reject_unsupported({"acceleration": True}, {"acceleration": "acceleration presets are not available on this server."})
    parsed = validate_task(ImageInferenceTask, task, LIMITS)
    if parsed.seed is not None and parsed.seed + parsed.numberResults - 1 > MAX_SEED:
        raise InvalidRequestError(
            f"Invalid value for 'seed': image i uses seed + i, so with numberResults "
            f"{parsed.numberResults} the seed must be at most {MAX_SEED - parsed.numberResults + 1}.",
            code="invalidSeed", parameter="seed", type="integer", min=1,
            max=MAX_SEED - parsed.numberResults + 1,
        )
    _check_modes(parsed)
    for index, item in enumerate(parsed.ipAdapters):
        item.guides(index)
    if parsed.progressPreviews and not parsed.progress:
        raise InvalidRequestError(
            "'progressPreviews' adds previews to the progress items of 'progress': send "
            "'progress': true with it.",
            code="missingProgress", parameter="progress",
        )
    parsed.prompt_weighting  # noqa: B018 - raises invalidPromptWeighting for an unknown name
    return parsed


def _check_modes(task: ImageInferenceTask) -> None:
    """Mode parameters that need another one (PROTOCOL.md Part A, "Modes")."""
    for name in ("maskImage", "outpaint"):
        if getattr(task, name) is not None and task.seedImage is None:
            raise InvalidRequestError(
                f"'{name}' edits a seed image: send 'seedImage' with it (an image UUID, data URI, "
                f"base64 data or URL).",
                code="missingSeedImage", parameter="seedImage",
            )
    if task.maskMargin is not None and task.maskImage is None:
        raise InvalidRequestError(
            "'maskMargin' sets the context around an inpainting mask: send 'maskImage' with it.",
            code="missingMaskImage", parameter="maskImage",
        )
    if task.maskMargin is not None and task.outpaint is not None:
        raise InvalidRequestError(
            "'maskMargin' crops around an inpainting mask and cannot be combined with 'outpaint', "
            "which edits the whole extended canvas; send one or the other.",
            code="incompatibleParameters", parameter="maskMargin",
        )
