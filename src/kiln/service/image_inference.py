"""The `imageInference` task: from a validated task to delivered result items."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import Histogram

from kiln.errors import InvalidRequestError
from kiln.generation import GenerationRequest
from kiln.keys import Principal
from kiln.media import OUTPUT_FORMATS, encode_image
from kiln.media.inputs import PixelBudget
from kiln.models import CatalogEntry
from kiln.progress import StepListener
from kiln.protocol.image_inference import ImageInferenceTask, parse_image_inference
from kiln.schedulers import DEFAULT_SCHEDULER
from kiln.service.adapters import with_adapters
from kiln.service.editing import plan_edit
from kiln.service.outputs import output_fields
from kiln.service.pricing import image_cost
from kiln.service.services import Services

FALLBACK_SIZE = 512
FALLBACK_STEPS = 20
FALLBACK_CFG = 7.0


def random_seed() -> int:
    """A random 32-bit seed (JavaScript clients lose precision above 2**53)."""
    return secrets.randbelow(2**32 - 1) + 1


def build_generation_request(task: ImageInferenceTask, entry: CatalogEntry) -> GenerationRequest:
    """Apply the model's catalog defaults, then the fallbacks, to what the task left out."""
    defaults = entry.defaults
    seed = task.seed if task.seed is not None else random_seed()
    scheduler = task.scheduler or defaults.scheduler
    return GenerationRequest(
        model=entry.spec,
        positive_prompt=task.positivePrompt,
        negative_prompt=task.negativePrompt,
        width=task.width or defaults.width or FALLBACK_SIZE,
        height=task.height or defaults.height or FALLBACK_SIZE,
        steps=task.steps or defaults.steps or FALLBACK_STEPS,
        cfg_scale=task.CFGScale if task.CFGScale is not None else (defaults.cfg or FALLBACK_CFG),
        clip_skip=task.clipSkip,
        scheduler=None if scheduler in (None, DEFAULT_SCHEDULER) else scheduler,
        seeds=tuple(seed + i for i in range(task.numberResults)),
    )


class ImageInferenceHandler:
    """Generates, encodes, stores and delivers the images of one `imageInference` task."""

    validate = staticmethod(parse_image_inference)  # the dispatcher validates before admission

    def __init__(self, services: Services, encoding: Histogram) -> None:
        self._services = services
        self._encoding = encoding  # seconds from a generated image to its result item

    async def __call__(
        self, raw: dict[str, Any], principal: Principal, progress: StepListener | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        task = parse_image_inference(raw)
        entry = self._services.catalog.get(task.model)
        if entry.category != "checkpoint":
            raise InvalidRequestError(
                f"'{task.model}' is a {entry.category}, not a checkpoint; pass it in the "
                f"matching list ('lora', 'controlNet') and a checkpoint as 'model'.",
                code="invalidModel",
                parameter="model",
            )
        budget = PixelBudget(self._services.settings.max_input_pixels_per_task)
        request = await with_adapters(
            self._services, task, entry, build_generation_request(task, entry), principal.key_id, budget
        )
        plan = await plan_edit(self._services, task, entry, request, principal.key_id, budget)
        request = plan.request
        images = self._services.executor.generate(request, owner=principal.key_id, on_step=progress)
        index = 0
        async for image in images:
            seed = request.seeds[index]
            index += 1
            with self._encoding.time():
                image = await asyncio.to_thread(plan.finish, image)
                item = await asyncio.to_thread(self._deliver, image, seed, task, request, principal)
            yield item

    def _deliver(
        self,
        image: Any,
        seed: int,
        task: ImageInferenceTask,
        request: GenerationRequest,
        principal: Principal,
    ) -> dict[str, Any]:
        """Check (NSFW, when asked), encode and store one image; record its cost for the key;
        return its result item. Runs off the event loop."""
        fmt = OUTPUT_FORMATS[task.outputFormat]
        data = encode_image(image, task.outputFormat, task.outputQuality)
        stored = self._services.images.put(
            data,
            owner=principal.key_id,
            extension=fmt.extension,
            width=image.width,
            height=image.height,
            origin="generated",
        )
        item: dict[str, Any] = {
            "imageUUID": stored.image_uuid,
            **output_fields("image", task.outputType, self._services.settings.base_url, stored, data),
        }
        item["seed"] = seed
        if task.check_content:
            item["NSFWContent"] = self._services.nsfw.check(image)
        cost = image_cost(
            self._services.settings.prices,
            width=request.width,
            height=request.height,
            steps=request.steps,
            nsfw_check=task.check_content,
            prompt_weighting=request.prompt_weighting is not None,
        )
        self._services.keys.record_usage(principal.key_id, images=1, cost=cost)
        if task.includeCost:
            item["cost"] = cost
        return item
