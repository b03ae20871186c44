"""The `modelSearch` task: the models of this server's catalog, filtered and paged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from kiln.architectures import fallback_defaults
from kiln.keys import Principal
from kiln.models import CatalogEntry
from kiln.progress import StepListener
from kiln.protocol.model_search import ModelSearchTask, parse_model_search
from kiln.schedulers import DEFAULT_SCHEDULER
from kiln.service.services import Services

DEFAULT_STRENGTH = 0.8  # PROTOCOL.md Part A


def describe(entry: CatalogEntry) -> dict[str, Any]:
    """One search result with every field of PROTOCOL.md 7.4.

    The defaults of a checkpoint are the ones `imageInference` really applies (the catalog's,
    else its architecture's fallbacks: `kiln.architectures.fallback_defaults`). Operator-registered models are visible to every key, so
    `private` is always false.
    """
    result: dict[str, Any] = {
        "air": entry.air,
        "name": entry.name,
        "version": entry.version,
        "category": entry.category,
        "architecture": entry.architecture,
        "tags": list(entry.tags),
        "heroImage": "",
        "private": False,
        "comment": entry.comment,
    }
    if entry.category == "checkpoint":
        defaults, fallback = entry.defaults, fallback_defaults(entry.architecture)
        result.update(
            type=entry.type or "base",
            defaultWidth=defaults.width or fallback.size,
            defaultHeight=defaults.height or fallback.size,
            defaultSteps=defaults.steps or fallback.steps,
            defaultScheduler=defaults.scheduler or DEFAULT_SCHEDULER,
            defaultCFG=defaults.cfg if defaults.cfg is not None else fallback.cfg,
        )
        if entry.type == "inpainting":
            result["defaultStrength"] = DEFAULT_STRENGTH
    if entry.category in ("controlnet", "annotator"):
        result["conditioning"] = entry.conditioning or ""
    if entry.category in ("lora", "lycoris", "embeddings"):
        # an embedding acts where its catalog name is written (kiln.service.adapters)
        result["positiveTriggerWords"] = entry.name if entry.category == "embeddings" else ""
    return result


class ModelSearchHandler:
    """Answers `modelSearch` with one item: `results` (one page) and `totalResults`."""

    def __init__(self, services: Services) -> None:
        self._services = services

    parse = staticmethod(parse_model_search)

    async def __call__(
        self, task: ModelSearchTask, principal: Principal, progress: StepListener | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        if task.visibility == "private":
            matches: list[CatalogEntry] = []  # no key owns a private model on this server
        else:
            matches = await asyncio.to_thread(
                self._services.catalog.search,
                task.search,
                tags=task.tags,
                category=task.category,
                type=task.type,
                architecture=task.architecture,
                conditioning=task.conditioning,
            )
        page = matches[task.offset : task.offset + task.limit]
        yield {"results": [describe(entry) for entry in page], "totalResults": len(matches)}
