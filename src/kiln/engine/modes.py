"""What a request must be before it runs (size, steps, seeds), and the editing modes in the
engine: image-to-image and inpainting inputs of a pipeline call.

Outpainting reaches the engine as inpainting of a padded image, so there are two modes here.
"""

from __future__ import annotations

import math
from typing import Any

from diffusers import DiffusionPipeline
from PIL import Image

from kiln.architectures import DISPLAY_NAMES, FLOW_ARCHITECTURES, size_multiple
from kiln.errors import InvalidRequestError
from kiln.generation import GenerationRequest

MAX_SEED = 2**63 - 1


def check_request(request: GenerationRequest) -> None:
    """Reject what diffusers would fail on obscurely, naming the parameter to fix: sizes that
    are not multiples of the architecture's `size_multiple` (8, or 16 for FLUX and SD3), no
    steps, seeds out of range."""
    multiple = size_multiple(request.model.architecture)
    for name, value in (("width", request.width), ("height", request.height)):
        if value <= 0 or value % multiple:
            raise InvalidRequestError(
                f"{name} must be a positive multiple of {multiple} for "
                f"{DISPLAY_NAMES[request.model.architecture]} models, got {value}", parameter=name
            )
    if request.steps < 1:
        raise InvalidRequestError(
            f"steps must be at least 1, got {request.steps}", parameter="steps"
        )
    for seed in request.seeds:
        if not 0 <= seed <= MAX_SEED:
            raise InvalidRequestError(
                f"seed must be between 0 and {MAX_SEED}, got {seed}", parameter="seed"
            )


def check_mode_inputs(request: GenerationRequest) -> None:
    """Reject a request whose images do not match its mode and size, naming the parameter."""
    if request.mode == "text":
        return
    if not 0 <= request.strength <= 1:
        raise InvalidRequestError(
            f"strength must be between 0 and 1, got {request.strength}", parameter="strength"
        )
    images = [("seedImage", request.init_image)]
    if request.mode == "inpaint":
        images.append(("maskImage", request.mask_image))
    for parameter, image in images:
        if not isinstance(image, Image.Image):
            raise InvalidRequestError(f"mode {request.mode!r} needs {parameter}", parameter=parameter)
        if image.size != (request.width, request.height):
            raise InvalidRequestError(
                f"{parameter} is {image.width}x{image.height}, the request "
                f"{request.width}x{request.height}; resize it first",
                parameter=parameter,
            )


def check_pipeline_mode(pipe: DiffusionPipeline, request: GenerationRequest) -> None:
    """A dedicated inpainting checkpoint (9-channel UNet) only runs inpainting."""
    if pipe.unet.config.in_channels == 9 and request.mode != "inpaint":
        raise InvalidRequestError(
            f"{request.model.air} is an inpainting model: send a seedImage with a maskImage "
            f"(or outpaint), or use a regular checkpoint",
            parameter="model",
        )


def unchanged_images(request: GenerationRequest) -> list[Image.Image] | None:
    """Strength 0 means no transformation: the seed image itself, once per seed; else None."""
    if request.mode == "text" or request.strength > 0:
        return None
    return [request.init_image.convert("RGB") for _ in request.seeds]


def mode_call_kwargs(request: GenerationRequest, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` of a text-to-image call, with the mode's inputs added.

    diffusers runs int(steps × strength) denoising steps; when that is 0 it returns the merely
    noised seed image. So when steps × strength < 1, ceil(1 / strength) steps are scheduled:
    exactly one then runs, at the noise level `strength` asks for.
    """
    if request.mode == "text":
        return kwargs
    steps = request.steps
    if int(steps * request.strength) < 1:
        steps = math.ceil(1 / request.strength)
        steps += int(steps * request.strength) < 1  # float rounding, e.g. 1 / 3 * 3
    kwargs = {
        **kwargs,
        "image": request.init_image,
        "strength": request.strength,
        "num_inference_steps": steps,
    }
    if request.mode == "image":
        if request.model.architecture not in FLOW_ARCHITECTURES:
            # SD img2img pipelines take their size from the image and have no width/height
            # arguments; FLUX's and SD3's have them, and default to 1024 px.
            del kwargs["width"], kwargs["height"]
    else:
        # width/height stay: the inpainting pipelines default to 512x512 whatever the image.
        kwargs["mask_image"] = request.mask_image
    return kwargs
