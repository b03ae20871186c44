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

    def validate(self, raw: dict[str, Any]) -> PreprocessTask:
        """The parsed task, or its typed error (the dispatcher calls this before admission)."""
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

    async def __call__(self, raw: dict[str, Any], principal: Principal) -> AsyncIterator[dict[str, Any]]:
        task = self.validate(raw)
        owner = principal.key_id
        resolved = await resolve_image_input(self._services, task.inputImage, parameter="inputImage", owner=owner)
        yield await asyncio.to_thread(self._run, task, resolved, owner)

    def _run(self, task: PreprocessTask, resolved: ResolvedImage, owner: str) -> dict[str, Any]:
        input_uuid = resolved.image_uuid or self._store(resolved.image, owner, "PNG", 95, "uploaded")[0].image_uuid
        image = resolved.image.convert("RGB")
        size = target_size(image.size, task.width, task.height)
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
        guide = self._guide(task, image)
        stored, data = self._store(guide, owner, task.outputFormat, task.outputQuality, "guide")
        item: dict[str, Any] = {
            "guideImageUUID": stored.image_uuid,
            "inputImageUUID": input_uuid,
            **output_fields("guideImage", task.outputType, self._services.settings.base_url, stored, data),
        }
        if task.includeCost:
            item["cost"] = PREPROCESS_COST
        return item

    def _guide(self, task: PreprocessTask, image: Image.Image) -> Image.Image:
        kind = task.preProcessorType
        if kind in BUILT_IN:
            return run_preprocessor(kind, image, CannyThresholds(task.lowThresholdCanny, task.highThresholdCanny))
        entry = self._annotator(kind)  # looked up again: it may have been removed since validation
        from kiln.engine.annotators import (  # imports torch: first use only
            AnnotatorOptions,
            annotate,
        )

        options = AnnotatorOptions(hands_and_face=task.includeHandsAndFaceOpenPose)
        return annotate(kind, entry.path, image, device=self._services.settings.device, options=options)

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
