"""ControlNet preprocessing (`imageControlNetPreProcess` / `controlNetPreprocess`): an input
image in, a stored guide image out, usable as `guideImage` by the same key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from PIL import Image

from kiln.errors import UnsupportedError
from kiln.keys import Principal
from kiln.media import OUTPUT_FORMATS, StoredImage, encode_image
from kiln.media.inputs import ResolvedImage, resolve_image_input
from kiln.models import CatalogEntry
from kiln.preprocess import ANNOTATED, BUILT_IN, CannyThresholds, run_preprocessor
from kiln.progress import StepListener
from kiln.protocol.preprocess import PreprocessTask, parse_preprocess
from kiln.service.outputs import output_fields
from kiln.service.services import Services

PREPROCESS_COST = 0.0
"""Preprocessing runs no diffusion steps, so the price model charges nothing for it."""


def target_size(size: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
    """The input's size after downscaling to fit `width` x `height` (either may be None, which
    leaves that side free); the aspect ratio is kept and nothing is upscaled."""
    scale = min(
        1.0,
        width / size[0] if width else 1.0,
        height / size[1] if height else 1.0,
    )
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _fitted(image: Image.Image, width: int | None, height: int | None) -> Image.Image:
    """`image` in RGB, downscaled to fit `width` x `height` (see `target_size`)."""
    image = image.convert("RGB")
    size = target_size(image.size, width, height)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def register_command(kind: str) -> str:
    """The command an operator runs to serve preprocessor `kind` (one of ANNOTATED)."""
    return (
        f"kiln models add PATH --category annotator --conditioning {kind} --architecture sd1x "
        f"--air kiln:{kind}-annotator@1"
    )


class PreprocessHandler:
    """Runs a preprocessor (built in, or a registered annotator model) off the event loop and
    stores the guide image.

    The reply carries `guideImageUUID`, the guide in the requested `outputType`, and
    `inputImageUUID` (the input is stored first when it was not already an image UUID).
    """

    def __init__(self, services: Services) -> None:
        self._services = services

    def parse(self, raw: dict[str, Any]) -> PreprocessTask:
        """The parsed task, or its typed error: `unsupportedPreProcessorType` when no annotator
        serves it (looks up the catalog)."""
        task = parse_preprocess(raw)
        if task.preProcessorType not in BUILT_IN:
            self._annotator(task.preProcessorType)
        return task

    def _annotator(self, kind: str) -> CatalogEntry:
        """The registered annotator model serving `kind`, or `unsupportedPreProcessorType`
        saying what to register."""
        entries = self._services.catalog.search(category="annotator", conditioning=kind)
        if entries:
            return entries[0]
        raise UnsupportedError(
            f"The '{kind}' preprocessor needs an annotator model, and none is registered on this "
            f"server. Built in (no weights needed): {', '.join(BUILT_IN)}. An operator serves "
            f"'{kind}' by registering {ANNOTATED[kind]}: `{register_command(kind)}`.",
            code="unsupportedPreProcessorType",
            parameter="preProcessorType",
        )

    async def __call__(
        self, task: PreprocessTask, principal: Principal, progress: StepListener | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        owner = principal.key_id
        resolved = await resolve_image_input(self._services, task.inputImage, parameter="inputImage", owner=owner)
        image = await asyncio.to_thread(_fitted, resolved.image, task.width, task.height)
        guide = await self._guide(task, image)
        yield await asyncio.to_thread(self._reply, task, resolved, guide, owner)

    async def _guide(self, task: PreprocessTask, image: Image.Image) -> Image.Image:
        """The guide image: a built-in preprocessor off the event loop, or an annotator model on
        the executor's worker (it owns the device; a generation never runs beside it)."""
        kind = task.preProcessorType
        if kind in BUILT_IN:
            thresholds = CannyThresholds(task.lowThresholdCanny, task.highThresholdCanny)
            return await asyncio.to_thread(run_preprocessor, kind, image, thresholds)
        # looked up again: it may have been removed since validation
        path = (await asyncio.to_thread(self._annotator, kind)).path
        from kiln.engine.annotators import AnnotatorOptions  # imports torch: first use only

        options = AnnotatorOptions(hands_and_face=task.includeHandsAndFaceOpenPose)
        return await self._services.executor.run(
            lambda engine: engine.annotate(kind, path, image, options))

    def _reply(self, task: PreprocessTask, resolved: ResolvedImage, guide: Image.Image,
               owner: str) -> dict[str, Any]:
        """Store the input (unless it was an image UUID) and the guide; the result item."""
        input_uuid = resolved.image_uuid or self._store(resolved.image, owner, "PNG", 95, "uploaded")[0].image_uuid
        stored, data = self._store(guide, owner, task.outputFormat, task.outputQuality, "guide")
        item: dict[str, Any] = {
            "guideImageUUID": stored.image_uuid,
            "inputImageUUID": input_uuid,
            **output_fields("guideImage", task.outputType, self._services.settings.base_url, stored, data),
        }
        if task.includeCost:
            item["cost"] = PREPROCESS_COST
        return item

    def _store(
        self, image: Image.Image, owner: str, output_format: str, quality: int, origin: str
    ) -> tuple[StoredImage, bytes]:
        if image.mode not in ("RGB", "RGBA", "L"):
            image = image.convert("RGBA")
        data = encode_image(image, output_format, quality)
        stored = self._services.images.put(
            data, owner=owner, extension=OUTPUT_FORMATS[output_format].extension,
            width=image.width, height=image.height, origin=origin,
        )
        return stored, data
