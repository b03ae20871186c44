r"""lineart_anime: the Anime2Sketch generator ControlNet's lineart_anime annotator runs, as a
`torch.export` program, turning an image into white line art on black.

No maintained library ships that generator, so the operator exports it once with controlnet_aux,
on a machine that has it (`pip install controlnet_aux`) and network access, and registers the
`.pt2` file that writes::

    python -c "import torch; from controlnet_aux.lineart_anime import LineartAnimeDetector; \
    net = LineartAnimeDetector.from_pretrained('lllyasviel/Annotators').model.eval(); \
    side = {2: 256 * torch.export.Dim('height', min=2, max=16), \
            3: 256 * torch.export.Dim('width', min=2, max=16)}; \
    torch.export.save(torch.export.export(net, (torch.zeros(1, 3, 512, 512),), \
                                          dynamic_shapes=(side,)), 'lineart_anime.pt2')"

The registered program takes one 1x3xHxW float tensor, RGB scaled to [-1, 1], H and W multiples
of 256 from 512 to 2048, and returns 1x1xHxW line art in [-1, 1] (lines dark); loading checks that
contract once on a 512x512 input. (The generator's eight stride-2 downsamplings leave a 1x1
bottleneck at 256 pixels, a size `torch.export` cannot keep dynamic, hence 512 at least.) The pre-
and post-processing are controlnet_aux's `LineartAnimeDetector.__call__`, with the detection size
capped so that long thin images stay cheap.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image
from torch.export.passes import move_to_device_pass

from kiln.engine.annotators.loading import AnnotatorOptions, load_once
from kiln.engine.residency import Residency

DETECT_RESOLUTION = 512
"""The shorter side the image is scaled to before detection (controlnet_aux's default)..."""

MAX_DETECT_SIDE = 2048
"""...unless that makes the longer side longer than this: then the longer side is scaled to it,
so a long thin image is not detected at an enormous size."""

_BLOCK = 256
"""The generator's input height and width are multiples of this (eight stride-2 downsamplings)."""

_MIN_SIDE = 2 * _BLOCK
"""The smallest height and width the exported generator takes."""


def load(path: str, device: str) -> torch.nn.Module:
    generator = move_to_device_pass(torch.export.load(path), device).module()
    with torch.inference_mode():
        probe = generator(torch.zeros(1, 3, _MIN_SIDE, _MIN_SIDE, device=device))
    if not isinstance(probe, torch.Tensor) or tuple(probe.shape) != (1, 1, _MIN_SIDE, _MIN_SIDE):
        got = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
        raise ValueError(
            f"expected a program mapping a 1x3x{_MIN_SIDE}x{_MIN_SIDE} image to "
            f"1x1x{_MIN_SIDE}x{_MIN_SIDE} line art (the Anime2Sketch generator), got {got}"
        )
    return generator


def _generator_input(rgb: np.ndarray) -> np.ndarray:
    """`rgb` scaled as controlnet_aux does: the shorter side to `DETECT_RESOLUTION` (or the longer
    to `MAX_DETECT_SIDE`, whichever is smaller), both sides rounded to multiples of 64, then
    (bicubic) up to the next multiples of `_BLOCK`, at least `_MIN_SIDE`."""
    height, width = rgb.shape[:2]
    scale = min(DETECT_RESOLUTION / min(height, width), MAX_DETECT_SIDE / max(height, width))
    detect_width = max(64, int(np.round(width * scale / 64)) * 64)
    detect_height = max(64, int(np.round(height * scale / 64)) * 64)
    interpolation = cv2.INTER_LANCZOS4 if scale > 1 else cv2.INTER_AREA
    detected = cv2.resize(rgb, (detect_width, detect_height), interpolation=interpolation)
    size = [max(_MIN_SIDE, _BLOCK * -(-side // _BLOCK)) for side in (detect_width, detect_height)]
    return cv2.resize(detected, size, interpolation=cv2.INTER_CUBIC)


def anime_line_art(
    path: str, image: Image.Image, device: str, _: AnnotatorOptions,
    residency: Residency | None = None,
) -> Image.Image:
    """The anime line art of `image` from the exported Anime2Sketch generator at `path`: a
    grayscale image of `image`'s size, lines white on black (the inverse of the generator's dark
    lines on white, as the lineart_anime ControlNet expects). The generator sees at most
    `MAX_DETECT_SIDE` pixels per side, whatever `image`'s size."""
    generator = load_once("lineart_anime", path, device, load, residency)
    rgb = np.array(image.convert("RGB"))
    feed = torch.from_numpy(_generator_input(rgb)).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.inference_mode():
        line_art = generator(feed.to(device))[0, 0].float() * 127.5 + 127.5
    line_art = cv2.resize(
        line_art.cpu().numpy(), (image.width, image.height), interpolation=cv2.INTER_CUBIC
    )
    return Image.fromarray(255 - np.round(line_art.clip(0, 255)).astype(np.uint8))
