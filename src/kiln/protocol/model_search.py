"""The `modelSearch` task: its filters and their limits (PROTOCOL.md 7.4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from kiln.categories import CATEGORIES
from kiln.protocol.validation import Limit, WireModel, validate_task

VISIBILITIES = ("public", "private", "all")

LIMITS: dict[str, Limit] = {
    "search": Limit("string"),
    "tags": Limit("array of strings"),
    "category": Limit("string", allowed=CATEGORIES),
    "type": Limit("string"),
    "architecture": Limit("string"),
    "conditioning": Limit("string"),
    "visibility": Limit("string", allowed=VISIBILITIES),
    "limit": Limit("integer", 1, 100),
    "offset": Limit("integer", 0),
}


class ModelSearchTask(WireModel):
    """A validated `modelSearch` task. Unknown keys (`customTaskUUID`, `retry`) are ignored."""


    taskType: Literal["modelSearch"]
    taskUUID: str
    search: str | None = None
    tags: tuple[str, ...] = ()
    category: str | None = None
    type: str | None = None
    architecture: str | None = None
    conditioning: str | None = None
    visibility: Literal["public", "private", "all"] = "all"
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    offset: Annotated[int, Field(ge=0)] = 0


    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        # The docs' own example passes one tag as a plain string.
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
            return tuple(value)
        raise ValueError("tags must be a string or a list of strings")

    @field_validator("category", mode="before")
    @classmethod
    def _category(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in CATEGORIES:
            return value.lower()
        raise ValueError("unknown category")


def parse_model_search(task: dict[str, Any]) -> ModelSearchTask:
    """Validate a `modelSearch` task or raise `invalid<Param>` naming the filter."""
    return validate_task(ModelSearchTask, task, LIMITS)
