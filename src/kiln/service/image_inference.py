"""The `imageInference` task: from a validated task to delivered result items."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import Histogram

from kiln.architectures import check_supported, fallback_defaults
from kiln.errors import InvalidRequestError
from kiln.generation import GenerationRequest
from kiln.keys import Principal
from kiln.media import OUTPUT_FORMATS, encode_image
from kiln.media.inputs import PixelBudget
from kiln.models import CatalogEntry
from kiln.progress import StepListener
from kiln.protocol.image_inference import ImageInferenceTask, parse_image_inference
from kiln.schedulers import DEFAULT_SCHEDULER, check_scheduler
from kiln.service.adapters import with_adapters
from kiln.service.editing import plan_edit
from kiln.service.outputs import output_fields
from kiln.service.pricing import image_cost
from kiln.service.services import Services


def random_seed() -> int:
    """A random 32-bit seed (JavaScript clients lose precision above 2**53)."""
    return secrets.randbelow(2**32 - 1) + 1


def build_generation_request(task: ImageInferenceTask, entry: CatalogEntry) -> GenerationRequest:
    """Apply the model's catalog defaults, then its architecture's fallbacks
    (`kiln.architectures.fallback_defaults`), to what the task left out."""
    defaults, fallback = entry.defaults, fallback_defaults(entry.architecture)
    seed = task.seed if task.seed is not None else random_seed()
    scheduler = task.scheduler or defaults.scheduler
    cfg = defaults.cfg if defaults.cfg is not None else fallback.cfg  # 0 is a default too (FLUX schnell)
    return GenerationRequest(
        model=entry.spec,
        positive_prompt=task.positivePrompt,
        negative_prompt=task.negativePrompt,
        width=task.width or defaults.width or fallback.size,
        height=task.height or defaults.height or fallback.size,
        steps=task.steps or defaults.steps or fallback.steps,
        cfg_scale=task.CFGScale if task.CFGScale is not None else cfg,
        clip_skip=task.clipSkip,
        scheduler=None if scheduler in (None, DEFAULT_SCHEDULER) else scheduler,
        seeds=tuple(seed + i for i in range(task.numberResults)),
    )


def check_architecture(task: ImageInferenceTask, entry: CatalogEntry) -> None:
    """Refuse, before anything runs, what the checkpoint's architecture cannot honour: the
    parameters of `kiln.architectures.refusals` (`unsupportedParameter`) and a scheduler of
    another family (`kiln.schedulers.check_scheduler`)."""
    mode = "text" if task.seedImage is None else "image" if task.maskImage is None and task.outpaint is None else "inpaint"
    weighting = "promptWeighting" if task.promptWeighting is not None else (
        "usePromptWeighting" if task.usePromptWeighting else None)
    check_supported(
        entry.architecture, negative_prompt=task.negativePrompt is not None, clip_skip=task.clipSkip,
        prompt_weighting=weighting, embeddings=bool(task.embeddings), refiner=task.refiner is not None,
        vae=task.vae is not None, ip_adapters=bool(task.ipAdapters),
        control_modes=tuple(item.controlMode for item in task.controlNet),
        mode=mode, inpainting_model=entry.architecture == "flux" and entry.type == "inpainting",
    )
    scheduler = task.scheduler or entry.defaults.scheduler
    check_scheduler(None if scheduler == DEFAULT_SCHEDULER else scheduler, entry.architecture, mode)


class ImageInferenceHandler:
    """Generates, encodes, stores and delivers the images of one `imageInference` task."""

    parse = staticmethod(parse_image_inference)

    def __init__(self, services: Services, encoding: Histogram) -> None:
        self._services = services
        self._encoding = encoding  # seconds from a generated image to its result item

    async def __call__(
        self, task: ImageInferenceTask, principal: Principal, progress: StepListener | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        entry = await asyncio.to_thread(self._services.catalog.get, task.model)
        if entry.category != "checkpoint":
            raise InvalidRequestError(
                f"'{task.model}' is a {entry.category}, not a checkpoint; pass it in the "
                f"matching list ('lora', 'controlNet') and a checkpoint as 'model'.",
                code="invalidModel",
                parameter="model",
            )
        check_architecture(task, entry)
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
