"""The adapters of an `imageInference` task: ControlNets, LoRAs, embeddings, IP-Adapters, a VAE,
a refiner and prompt weighting.

Each adapter model is looked up in the catalog and must match the checkpoint: its category
(a ControlNet in `controlNet[]`, a LoRA in `lora[]`, a VAE in `vae`, ...) and its architecture.
Guide images accept every image input form. An embedding's trigger word is its catalog name.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from kiln.errors import InvalidRequestError
from kiln.generation import (
    ControlNetInput,
    EmbeddingInput,
    GenerationRequest,
    IpAdapterInput,
    LoraInput,
    ModelSpec,
    RefinerInput,
    trigger_pattern,
)
from kiln.media.inputs import PixelBudget, resolve_image_input
from kiln.models import CatalogEntry
from kiln.protocol.adapters import control_window, lora_weights, refiner_start
from kiln.protocol.image_inference import ImageInferenceTask
from kiln.service.services import Services


async def with_adapters(
    services: Services, task: ImageInferenceTask, checkpoint: CatalogEntry,
    request: GenerationRequest, owner: str, budget: PixelBudget | None = None,
) -> GenerationRequest:
    """`request` with the task's ControlNets and IP-Adapters (guide images decoded to RGB,
    charged to `budget`), LoRAs (weights scaled to sum 1), embeddings, VAE, refiner and prompt
    weighting. Raises typed errors naming the entry at fault. Catalog lookups run on worker
    threads."""
    if checkpoint.type == "refiner":
        raise InvalidRequestError(
            f"'{checkpoint.air}' is an SDXL refiner, which finishes another model's images: send an "
            "SDXL base checkpoint as 'model' and this one as 'refiner.model'.",
            code="invalidModel", parameter="model",
        )
    controlnets = []
    for index, item in enumerate(task.controlNet):
        parameter = f"controlNet[{index}]"
        model = (await asyncio.to_thread(
            _adapter, services, item.model, f"{parameter}.model", "controlnet", checkpoint)).spec
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
    ip_adapters = []
    for index, ip_item in enumerate(task.ipAdapters):
        parameter = f"ipAdapters[{index}]"
        model = (await asyncio.to_thread(
            _adapter, services, ip_item.model, f"{parameter}.model", "ipadapter", checkpoint)).spec
        guides = []
        for number, source in enumerate(ip_item.guides(index)):
            name = f"{parameter}.guideImage" if ip_item.guideImage is not None else f"{parameter}.guideImages[{number}]"
            guide = await resolve_image_input(services, source, parameter=name, owner=owner, budget=budget)
            guides.append(await asyncio.to_thread(guide.image.convert, "RGB"))
        ip_adapters.append(IpAdapterInput(model=model, guide_images=tuple(guides), weight=ip_item.weight))
    loras, embeddings, vae, refiner = await asyncio.to_thread(
        _catalog_inputs, services, task, checkpoint, request.steps)
    return replace(
        request,
        controlnets=tuple(controlnets),
        loras=loras,
        embeddings=embeddings,
        vae=vae,
        refiner=refiner,
        ip_adapters=tuple(ip_adapters),
        prompt_weighting=task.prompt_weighting,  # type: ignore[arg-type]
    )


def _catalog_inputs(
    services: Services, task: ImageInferenceTask, checkpoint: CatalogEntry, steps: int
) -> tuple[tuple[LoraInput, ...], tuple[EmbeddingInput, ...], ModelSpec | None, RefinerInput | None]:
    """The task's LoRAs, embeddings, VAE and refiner, looked up in the catalog (blocking)."""
    loras = tuple(
        LoraInput(_adapter(services, item.model, f"lora[{index}].model", "lora", checkpoint).spec, weight)
        for index, (item, weight) in enumerate(zip(task.lora, lora_weights(tuple(task.lora)), strict=True))
    )
    vae = None if task.vae is None else _adapter(services, task.vae, "vae", "vae", checkpoint).spec
    return loras, _embeddings(services, task, checkpoint), vae, _refiner(services, task, checkpoint, steps)


def _embeddings(
    services: Services, task: ImageInferenceTask, checkpoint: CatalogEntry
) -> tuple[EmbeddingInput, ...]:
    """Each embedding of the task, its trigger word (its catalog name) written in a prompt."""
    prompts = [text for text in (task.positivePrompt, task.negativePrompt) if text]
    embeddings: list[EmbeddingInput] = []
    for index, item in enumerate(task.embeddings):
        parameter = f"embeddings[{index}].model"
        entry = _adapter(services, item.model, parameter, "embeddings", checkpoint)
        trigger = entry.name
        for earlier, other in enumerate(embeddings):
            if other.trigger.lower() == trigger.lower():
                raise InvalidRequestError(
                    f"'{parameter}' has the trigger word '{trigger}' of embeddings[{earlier}]: list "
                    "each embedding once.",
                    code="invalidEmbeddings", parameter=parameter,
                )
        if not any(trigger_pattern(trigger).search(text) for text in prompts):
            raise InvalidRequestError(
                f"'{parameter}' is '{item.model}', whose trigger word '{trigger}' is in neither "
                "prompt: write it in 'positivePrompt' or 'negativePrompt' where the embedding "
                "should act.",
                code="invalidEmbeddings", parameter=parameter,
            )
        embeddings.append(EmbeddingInput(entry.spec, trigger, item.weight))
    return tuple(embeddings)


def _refiner(
    services: Services, task: ImageInferenceTask, checkpoint: CatalogEntry, steps: int
) -> RefinerInput | None:
    """The task's SDXL refiner, which must be a refiner and follow an SDXL checkpoint; None when
    it would start after the last step (`startStep` = `steps` leaves it nothing to do)."""
    item = task.refiner
    if item is None:
        return None
    entry = services.catalog.get(item.model, "refiner.model")
    if entry.category != "checkpoint" or entry.type != "refiner":
        what = f"a {entry.type or 'base'} checkpoint" if entry.category == "checkpoint" else f"a {entry.category}"
        raise InvalidRequestError(
            f"'refiner.model' is '{item.model}', {what}; it must be an SDXL refiner (`modelSearch` "
            "with type 'refiner' lists them).",
            code="invalidRefiner", parameter="refiner.model",
        )
    if checkpoint.architecture != "sdxl":
        raise InvalidRequestError(
            f"'refiner.model' is '{item.model}', an SDXL refiner, but the checkpoint "
            f"'{checkpoint.air}' is {checkpoint.architecture}: refiners finish SDXL models only.",
            code="invalidRefiner", parameter="refiner.model",
        )
    start = refiner_start(item, steps)
    return RefinerInput(entry.spec, start) if start < 1 else None


def _adapter(
    services: Services, air: str, parameter: str, category: str, checkpoint: CatalogEntry
) -> CatalogEntry:
    entry = services.catalog.get(air, parameter)
    top = parameter.split("[", 1)[0]
    code = f"invalid{top[0].upper()}{top[1:]}"
    if entry.category != category:
        raise InvalidRequestError(
            f"'{parameter}' is '{air}', {_a(entry.category)}; it must be {_a(category)} "
            f"(`modelSearch` with category '{category}' lists them).",
            code=code, parameter=parameter,
        )
    if entry.architecture != checkpoint.architecture:
        raise InvalidRequestError(
            f"'{parameter}' is '{air}', {_a(category)} for {entry.architecture} models, but the "
            f"checkpoint '{checkpoint.air}' is {checkpoint.architecture}; use {_a(category)} made "
            f"for {checkpoint.architecture}.",
            code=code, parameter=parameter,
        )
    return entry


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
