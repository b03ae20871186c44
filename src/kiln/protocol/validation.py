"""Turning pydantic validation failures into typed Kiln errors that name the parameter.

Each task model declares its limits once (`Limit`), used both as pydantic constraints and as the
`min`/`max`/`allowedValues` details of the error a client gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from kiln.errors import InvalidRequestError, UnsupportedError, echoed

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Limit:
    """What a parameter accepts, in words a client can act on."""

    type: str
    min: float | None = None
    max: float | None = None
    multiple_of: int | None = None
    allowed: tuple[str, ...] | None = None

    def describe(self) -> str:
        if self.type == "array":
            return f"an array of at most {_num(self.max or 0)} entries"
        parts = [f"a {self.type}" if self.type != "integer" else "an integer"]
        if self.multiple_of:
            parts.append(f"multiple of {self.multiple_of}")
        if self.type == "string" and self.min is not None and self.max is not None:
            parts.append(f"of {_num(self.min)} to {_num(self.max)} characters")
        elif self.min is not None and self.max is not None:
            parts.append(f"from {_num(self.min)} to {_num(self.max)}")
        elif self.min is not None:
            parts.append(f"of at least {_num(self.min)}")
        if self.allowed and len(self.allowed) <= 8:
            parts.append("one of " + ", ".join(self.allowed))
        elif self.allowed:
            parts.append("among the names listed in 'allowedValues'")
        return " ".join(parts)


class WireModel(BaseModel):
    """An object as clients send it: strict types, unknown keys ignored (the SDKs add several),
    and null values treated as absent (the Python SDK sends every field, unset ones as null)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _capitalised(name: str) -> str:
    return name[:1].upper() + name[1:]


def _parameter(loc: tuple[Any, ...]) -> str:
    """`("controlNet", 0, "weight")` → `controlNet[0].weight`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _check_array_lengths(task: dict[str, Any], limits: dict[str, Limit]) -> None:
    """Refuse a top-level list longer than its `array` limit, before any of its entries is
    validated or used: `invalid<Param>` with `max`."""
    for name, limit in limits.items():
        value = task.get(name)
        if limit.type == "array" and isinstance(value, list) and len(value) > (limit.max or 0):
            raise InvalidRequestError(
                f"Invalid value for '{name}': must be {limit.describe()}; got {len(value)}.",
                code=f"invalid{_capitalised(name)}", parameter=name, type="array", max=limit.max,
            )


def validate_task(model: type[Model], task: dict[str, Any], limits: dict[str, Limit]) -> Model:
    """Validate `task` against `model`; the first problem becomes an `InvalidRequestError`
    with code `missing<Param>` or `invalid<Param>` naming the top-level parameter. Lists over
    their `array` limit are refused first, whatever their entries hold."""
    _check_array_lengths(task, limits)
    try:
        return model.model_validate(task)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and "[" in p))
        top = str(loc[0]) if loc else "task"
        parameter = _parameter(loc) or top
        # list items share one limit: `controlNet[0].weight` → `controlNet[].weight`
        limit = limits.get(parameter) or limits.get(re.sub(r"\[\d+\]", "[]", parameter)) or limits.get(top)
        if first["type"] == "missing":
            raise InvalidRequestError(
                f"Missing required parameter '{parameter}'"
                + (f": {limit.describe()}." if limit else "."),
                code=f"missing{_capitalised(top)}",
                parameter=parameter,
                type=limit.type if limit else None,
            ) from None
        got = first.get("input")
        reason = limit.describe() if limit else first["msg"]
        raise InvalidRequestError(
            f"Invalid value for '{parameter}': must be {reason}; got {echoed(got)}."
            if limit
            else f"Invalid value for '{parameter}': {reason}.",
            code=f"invalid{_capitalised(top)}",
            parameter=parameter,
            type=limit.type if limit else None,
            min=limit.min if limit else None,
            max=limit.max if limit else None,
            multiplier=limit.multiple_of if limit else None,
            allowedValues=list(limit.allowed) if limit and limit.allowed else None,
        ) from None


def is_set(value: Any) -> bool:
    """Whether a client really asked for something: None, False and empty values are absent."""
    return value not in (None, False, "", [], {})


def reject_unsupported(task: dict[str, Any], unsupported: dict[str, str]) -> None:
    """Raise `unsupportedParameter` for the first key of `unsupported` that `task` sets."""
    for name, why in unsupported.items():
        if is_set(task.get(name)):
            raise UnsupportedError(
                f"'{name}' is not supported by this server: {why}",
                code="unsupportedParameter",
                parameter=name,
            )
