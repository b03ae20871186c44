"""Per-request schedulers built from a model's own scheduler config and a Runware name."""

from __future__ import annotations

import diffusers
from diffusers import SchedulerMixin

from kiln.schedulers import check_scheduler, scheduler_config


def build_scheduler(
    base: SchedulerMixin, name: str | None, architecture: str = "sd1x", mode: str = "text"
) -> SchedulerMixin:
    """A fresh scheduler for one request; `base` (the model's own) is never modified.

    `name` is a Runware scheduler name of `architecture`'s family; None and "Default" give a
    new instance of the model's own scheduler class. The model's config (betas, timestep
    spacing, prediction type, flow shift) is kept and the name's options override it. Raises
    the typed error of `kiln.schedulers.check_scheduler` for a name that does not apply.
    """
    check_scheduler(name, architecture, mode)
    config = scheduler_config(name, architecture) if name is not None else None
    if config is None:
        return type(base).from_config(base.config)
    options = dict(config.options)
    if options.get("use_flow_sigmas") and "shift" in base.config:
        # a DPM solver on flow sigmas: the model's static shift (SD3); FLUX's dynamic shift
        # (`use_dynamic_shifting`) comes with the config and is set per image size
        options.setdefault("flow_shift", base.config.shift)
    scheduler_class = getattr(diffusers, config.class_name)
    return scheduler_class.from_config(base.config, **options)
