"""The editing modes of `imageInference`: image-to-image, inpainting and outpainting.

From a validated task with a `seedImage`, an `EditPlan`: the generation request the engine runs
(mode, images, size, strength) and how each generated image becomes the delivered one (the
original pasted back outside the mask, a mask crop pasted into the full image).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

from PIL import Image, ImageChops

from kiln.errors import InvalidRequestError
from kiln.generation import GenerationRequest
from kiln.media import compose
from kiln.media.inputs import PixelBudget, resolve_image_input
from kiln.models import CatalogEntry
from kiln.protocol.image_inference import ImageInferenceTask
from kiln.service.services import Services

DEFAULT_STRENGTH = 0.8
OUTPAINT_STRENGTH = 1.0
"""New borders have no content to keep, so outpainting repaints them fully unless told."""
NATIVE_SIDE = 512
"""Side of the square a model works best at, when its catalog entry gives no default size."""


@dataclass(frozen=True)
class EditPlan:
    """What the engine runs, and `finish`, which turns each of its images into the result."""

    request: GenerationRequest
    finish: Callable[[Image.Image], Image.Image] = lambda image: image


async def plan_edit(
    services: Services, task: ImageInferenceTask, entry: CatalogEntry,
    request: GenerationRequest, owner: str, budget: PixelBudget | None = None,
) -> EditPlan:
    """The plan for `task`: text-to-image as `request` is, or the editing mode its images ask for.

    Image inputs are resolved, charged to `budget` (and may raise their typed errors); the pixel
    work runs off the event loop.
    """
    if task.seedImage is None:
        _check_text_model(task, entry)
        return EditPlan(request)
    seed = await resolve_image_input(services, task.seedImage, parameter="seedImage", owner=owner, budget=budget)
    mask = None
    if task.maskImage is not None:
        resolved = await resolve_image_input(
            services, task.maskImage, parameter="maskImage", owner=owner, budget=budget
        )
        mask = resolved.image
    return await asyncio.to_thread(_plan, task, entry, request, seed.image, mask)


def _check_text_model(task: ImageInferenceTask, entry: CatalogEntry) -> None:
    if entry.type == "inpainting":
        raise InvalidRequestError(
            f"'{task.model}' is an inpainting model: send 'seedImage' with 'maskImage' or "
            f"'outpaint', or use a regular checkpoint for text-to-image.",
            code="invalidModel", parameter="model",
        )


def _plan(
    task: ImageInferenceTask, entry: CatalogEntry, request: GenerationRequest,
    seed: Image.Image, mask: Image.Image | None,
) -> EditPlan:
    if task.outpaint is not None:
        return _outpaint(task, request, seed, mask)
    size = (
        task.width or compose.default_size(*seed.size)[0],
        task.height or compose.default_size(*seed.size)[1],
    )
    original = compose.fit(seed, size)
    strength = task.strength if task.strength is not None else DEFAULT_STRENGTH
    if mask is None:
        if entry.type == "inpainting":
            raise InvalidRequestError(
                f"'{task.model}' is an inpainting model: send 'maskImage' (or 'outpaint') with "
                f"'seedImage', or use a regular checkpoint for image-to-image.",
                code="invalidModel", parameter="model",
            )
        return EditPlan(replace(
            request, mode="image", width=size[0], height=size[1], init_image=original, strength=strength,
        ))
    binary = compose.prepare_mask(mask, size)
    if task.maskMargin is not None:
        return _inpaint_crop(request, entry, original, binary, task.maskMargin, strength)
    return _inpaint(request, original, binary, strength, compose.MASK_FEATHER)


def _inpaint(
    request: GenerationRequest, original: Image.Image, mask: Image.Image, strength: float, feather: int
) -> EditPlan:
    inpaint = replace(
        request, mode="inpaint", width=original.width, height=original.height,
        init_image=original, mask_image=mask, strength=strength,
    )
    return EditPlan(inpaint, lambda image: compose.feathered_paste_back(original, image, mask, feather))


def _inpaint_crop(
    request: GenerationRequest, entry: CatalogEntry, original: Image.Image, mask: Image.Image,
    margin: int, strength: float,
) -> EditPlan:
    """Inpaint only the box around the mask plus `margin`, at the model's native resolution;
    ControlNet guides (which cover the whole image) are cropped to the same box."""
    box = compose.mask_crop_box(mask, margin)
    if box is None:  # the mask keeps everything: only the whole image can be "inpainted"
        return _inpaint(request, original, mask, strength, compose.MASK_FEATHER)
    native = (entry.defaults.width or NATIVE_SIDE) * (entry.defaults.height or NATIVE_SIDE)
    working = compose.working_size(box, native)
    crop = original.crop(box)
    controlnets = tuple(  # each guide covers the whole image: the same box of it steers the crop
        replace(control, guide_image=compose.fit(control.guide_image, original.size).crop(box).resize(
            working, Image.Resampling.LANCZOS))
        for control in request.controlnets
    )
    inpaint = replace(
        request, mode="inpaint", width=working[0], height=working[1],
        init_image=crop.resize(working, Image.Resampling.LANCZOS),
        mask_image=mask.crop(box).resize(working, Image.Resampling.NEAREST), strength=strength,
        controlnets=controlnets,
    )

    def finish(image: Image.Image) -> Image.Image:
        generated = original.copy()
        generated.paste(image.resize(crop.size, Image.Resampling.LANCZOS), box[:2])
        return compose.feathered_paste_back(original, generated, mask)

    return EditPlan(inpaint, finish)


def _outpaint(
    task: ImageInferenceTask, request: GenerationRequest, seed: Image.Image, mask: Image.Image | None
) -> EditPlan:
    sides = task.outpaint
    assert sides is not None
    padding = compose.Padding(sides.top, sides.right, sides.bottom, sides.left)
    _check_outpaint_side("width", task.width, seed.width, ("left", sides.left), ("right", sides.right))
    _check_outpaint_side("height", task.height, seed.height, ("top", sides.top), ("bottom", sides.bottom))
    canvas, border = compose.outpaint_canvas(seed, padding, sides.blur)
    if mask is not None:  # the client's mask applies to the seed image, inside the canvas
        seed_mask = Image.new("L", canvas.size, 0)
        seed_mask.paste(compose.prepare_mask(mask, seed.size), (padding.left, padding.top))
        border = ImageChops.lighter(border, seed_mask)
    strength = task.strength if task.strength is not None else OUTPAINT_STRENGTH
    return _inpaint(request, canvas, border, strength, sides.blur)


def _check_outpaint_side(
    parameter: str, given: int | None, seed_side: int, before: tuple[str, int], after: tuple[str, int]
) -> None:
    """The final `parameter` (width or height) is the seed's plus both extensions."""
    size = seed_side + before[1] + after[1]
    explain = (
        f"the seed image's {parameter} {seed_side} + outpaint.{before[0]} {before[1]} + "
        f"outpaint.{after[0]} {after[1]} = {size}"
    )
    if given is not None and given != size:
        raise InvalidRequestError(
            f"For outpainting, '{parameter}' is the final size and must be {explain}; got {given}.",
            code=f"invalid{parameter.capitalize()}", parameter=parameter, expected=size,
        )
    if size % compose.SIDE_MULTIPLE or not compose.MIN_SIDE <= size <= compose.MAX_SIDE:
        raise InvalidRequestError(
            f"The outpainted {parameter} would be {explain}, but it must be a multiple of "
            f"{compose.SIDE_MULTIPLE} from {compose.MIN_SIDE} to {compose.MAX_SIDE}: resize the "
            f"seed image or change the extensions.",
            code="invalidOutpaint", parameter="outpaint", expected=size,
        )
