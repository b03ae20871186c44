"""Per-request schedulers built from a model's own scheduler config and a Runware name."""

from __future__ import annotations

import diffusers
from diffusers import SchedulerMixin

from kiln.errors import InvalidRequestError
from kiln.schedulers import SCHEDULER_NAMES, scheduler_config


def build_scheduler(base: SchedulerMixin, name: str | None) -> SchedulerMixin:
    """A fresh scheduler for one request; `base` (the model's own) is never modified.

    `name` is a Runware scheduler name; None and "Default" give a new instance of the model's
    own scheduler class. The model's config (betas, timestep spacing, prediction type) is kept
    and the name's options override it. Raises InvalidRequestError for an unknown name.
    """
    try:
        config = scheduler_config(name) if name is not None else None
    except KeyError:
        raise InvalidRequestError(
            f"unknown scheduler {name!r}; expected one of: {', '.join(SCHEDULER_NAMES)}",
            parameter="scheduler",
        ) from None
    if config is None:
        return type(base).from_config(base.config)
    scheduler_class = getattr(diffusers, config.class_name)
    return scheduler_class.from_config(base.config, **config.options)
