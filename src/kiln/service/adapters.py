"""The adapters of an `imageInference` task: ControlNets, LoRAs and prompt weighting.

Each adapter model is looked up in the catalog and must match the checkpoint: its category
(a ControlNet in `controlNet[]`, a LoRA in `lora[]`) and its architecture. Guide images accept
every image input form.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from kiln.errors import InvalidRequestError
from kiln.generation import ControlNetInput, GenerationRequest, LoraInput, ModelSpec
from kiln.media.inputs import PixelBudget, resolve_image_input
from kiln.models import CatalogEntry
from kiln.protocol.adapters import control_window, lora_weights
from kiln.protocol.image_inference import ImageInferenceTask
from kiln.service.services import Services


async def with_adapters(
    services: Services, task: ImageInferenceTask, checkpoint: CatalogEntry,
    request: GenerationRequest, owner: str, budget: PixelBudget | None = None,
) -> GenerationRequest:
    """`request` with the task's ControlNets (guide images decoded to RGB, charged to `budget`),
    LoRAs (weights scaled to sum 1) and prompt weighting. Raises typed errors naming the entry
    at fault."""
    controlnets = []
    for index, item in enumerate(task.controlNet):
        parameter = f"controlNet[{index}]"
        model = _adapter(services, item.model, f"{parameter}.model", "controlnet", checkpoint)
        start, end = control_window(item, index, request.steps)
        guide = await resolve_image_input(
            services, item.guideImage, parameter=f"{parameter}.guideImage", owner=owner, budget=budget
        )
        controlnets.append(ControlNetInput(
            model=model,
            guide_image=await asyncio.to_thread(guide.image.convert, "RGB"),
            weight=item.weight,
            start=start,
            end=end,
            control_mode=item.controlMode,
        ))
    loras = tuple(
        LoraInput(_adapter(services, item.model, f"lora[{index}].model", "lora", checkpoint), weight)
        for index, (item, weight) in enumerate(zip(task.lora, lora_weights(tuple(task.lora)), strict=True))
    )
    return replace(
        request,
        controlnets=tuple(controlnets),
        loras=loras,
        prompt_weighting=task.prompt_weighting,  # type: ignore[arg-type]
    )


def _adapter(
    services: Services, air: str, parameter: str, category: str, checkpoint: CatalogEntry
) -> ModelSpec:
    entry = services.catalog.get(air, parameter)
    top = parameter.split("[", 1)[0]
    code = f"invalid{top[0].upper()}{top[1:]}"
    if entry.category != category:
        raise InvalidRequestError(
            f"'{parameter}' is '{air}', a {entry.category}; it must be a {category} "
            f"(`modelSearch` with category '{category}' lists them).",
            code=code, parameter=parameter,
        )
    if entry.architecture != checkpoint.architecture:
        raise InvalidRequestError(
            f"'{parameter}' is '{air}', a {category} for {entry.architecture} models, but the "
            f"checkpoint '{checkpoint.air}' is {checkpoint.architecture}; use a {category} made "
            f"for {checkpoint.architecture}.",
            code=code, parameter=parameter,
        )
    return entry.spec
