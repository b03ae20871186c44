"""The `imageUpload` task: one image, in any of the image input forms."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from kiln.protocol.validation import Limit, validate_task

LIMITS: dict[str, Limit] = {"image": Limit("string")}


class ImageUploadTask(BaseModel):
    """A validated `imageUpload` task. Unknown keys are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    taskType: Literal["imageUpload"]
    taskUUID: str
    image: str


def parse_image_upload(task: dict[str, Any]) -> ImageUploadTask:
    """Validate an `imageUpload` task or raise `missingImage` / `invalidImage`."""
    return validate_task(ImageUploadTask, task, LIMITS)
