"""The ControlNet preprocessing task, under both of its names (PROTOCOL.md 7.3)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from kiln.errors import InvalidRequestError
from kiln.protocol.image_inference import OUTPUT_FORMAT_NAMES, OUTPUT_TYPES, ImageInferenceTask
from kiln.protocol.validation import Limit, WireModel, validate_task

GROUPS = (
    "canny", "depth", "mlsd", "normalbae", "openpose", "tile", "seg", "lineart",
    "lineart_anime", "shuffle", "scribble", "softedge",
)
"""The `preProcessorType` values of the protocol (PROTOCOL.md 7.3)."""

ALIASES = {
    "depth_leres": "depth", "depth_midas": "depth", "depth_zoe": "depth",
    "inpaint_global_harmonious": "depth", "lineart_coarse": "lineart",
    "lineart_realistic": "lineart", "lineart_standard": "lineart", "normal_bae": "normalbae",
    "openpose_face": "openpose", "openpose_faceonly": "openpose", "openpose_full": "openpose",
    "openpose_hand": "openpose", "scribble_hed": "scribble", "scribble_pidinet": "scribble",
    "seg_ofade20k": "seg", "seg_ofcoco": "seg", "seg_ufade20k": "seg", "softedge_hed": "softedge",
    "softedge_hedsafe": "softedge", "softedge_pidinet": "softedge",
    "softedge_pidisafe": "softedge", "tile_gaussian": "tile",
}
"""The SDKs' fine-grained preprocessor names (`EPreProcessor`) → their protocol group."""


LIMITS: dict[str, Limit] = {
    "inputImage": Limit("string"),
    "preProcessorType": Limit("string", allowed=GROUPS),
    "width": Limit("integer", 64, 2048),
    "height": Limit("integer", 64, 2048),
    "lowThresholdCanny": Limit("integer", 0, 255),
    "highThresholdCanny": Limit("integer", 0, 255),
    "includeHandsAndFaceOpenPose": Limit("boolean"),
    "outputType": Limit("string", allowed=OUTPUT_TYPES),
    "outputFormat": Limit("string", allowed=OUTPUT_FORMAT_NAMES),
    "outputQuality": Limit("integer", 20, 99),
    "includeCost": Limit("boolean"),
    "deliveryMethod": Limit("string", allowed=("sync", "async")),
}

Side = Annotated[int, Field(ge=64, le=2048)]
Threshold = Annotated[int, Field(ge=0, le=255)]


class PreprocessTask(WireModel):
    """A validated preprocessing task. `preProcessorType` is normalised to its group."""


    taskType: Literal["imageControlNetPreProcess", "controlNetPreprocess"]
    taskUUID: str
    inputImage: str
    preProcessorType: str
    width: Side | None = None
    height: Side | None = None
    lowThresholdCanny: Threshold = 100
    highThresholdCanny: Threshold = 200
    includeHandsAndFaceOpenPose: bool = False
    outputType: str = "URL"
    outputFormat: str = "PNG"  # a guide is line art: JPG would smear its edges
    outputQuality: Annotated[int, Field(ge=20, le=99)] = 95
    includeCost: bool = False
    deliveryMethod: Literal["sync", "async"] = "sync"


    @field_validator("preProcessorType", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("not a string")
        name = ALIASES.get(value.lower(), value.lower())
        if name not in GROUPS:
            raise ValueError("unknown preprocessor")
        return name

    @field_validator("outputType", mode="before")
    @classmethod
    def _output_type(cls, value: Any) -> Any:  # the same forms as imageInference
        return ImageInferenceTask._output_type(value)

    @field_validator("outputFormat", mode="before")
    @classmethod
    def _output_format(cls, value: Any) -> Any:
        return ImageInferenceTask._output_format(value)


def parse_preprocess(task: dict[str, Any]) -> PreprocessTask:
    """Validate a preprocessing task or raise a typed error naming the parameter."""
    parsed = validate_task(PreprocessTask, task, LIMITS)
    if parsed.lowThresholdCanny >= parsed.highThresholdCanny:
        raise InvalidRequestError(
            f"'lowThresholdCanny' ({parsed.lowThresholdCanny}) must be below "
            f"'highThresholdCanny' ({parsed.highThresholdCanny}).",
            code="invalidLowThresholdCanny", parameter="lowThresholdCanny",
            type="integer", min=0, max=parsed.highThresholdCanny - 1,
        )
    return parsed
