"""Pixel work around the editing modes, in Pillow and numpy: sizes, masks, outpaint padding,
the crop around a mask, and pasting the original back with a feathered edge.

Masks are "L" images where 255 repaints and 0 keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from kiln.errors import InvalidRequestError

MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 128, 2048, 64
MASK_FEATHER = 4
"""Pixels over which a repainted region fades into the kept original, inside the mask."""
ASPECT_TOLERANCE = 0.02
"""A mask whose aspect ratio is within 2% of the image's is resized to it; others are refused."""


@dataclass(frozen=True)
class Padding:
    top: int
    right: int
    bottom: int
    left: int


def default_size(width: int, height: int) -> tuple[int, int]:
    """The generation size for a seed image: each side rounded down to a multiple of 64 and
    clamped to 128-2048 (the aspect ratio may change slightly)."""
    return tuple(  # type: ignore[return-value]
        min(MAX_SIDE, max(MIN_SIDE, side // SIDE_MULTIPLE * SIDE_MULTIPLE)) for side in (width, height)
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels of `image`; transparency is flattened onto white."""
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` as RGB, resized (Lanczos) to exactly `size` when it differs."""
    image = to_rgb(image)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def prepare_mask(mask: Image.Image, size: tuple[int, int], *, parameter: str = "maskImage") -> Image.Image:
    """A binary "L" mask of `size` from a grayscale, RGB or RGBA mask of any size with the same
    aspect ratio. Transparent pixels count as black (keep); gray at or above 128 repaints.

    Raises `invalid<Parameter>` when the aspect ratios differ by more than ASPECT_TOLERANCE.
    """
    width, height = size
    if abs(mask.width * height / (mask.height * width) - 1) > ASPECT_TOLERANCE:
        raise InvalidRequestError(
            f"'{parameter}' is {mask.width}x{mask.height}, which cannot be matched to the "
            f"{width}x{height} image: send a mask of the image's size (or aspect ratio).",
            code=f"invalid{parameter[:1].upper()}{parameter[1:]}", parameter=parameter,
        )
    if "A" in mask.getbands() or (mask.mode == "P" and "transparency" in mask.info):
        rgba = mask.convert("RGBA")
        mask = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    gray = mask.convert("L")
    if gray.size != size:
        gray = gray.resize(size, Image.Resampling.BILINEAR)
    return gray.point(lambda value: 255 if value >= 128 else 0)


def feathered_paste_back(
    original: Image.Image, generated: Image.Image, mask: Image.Image, feather: int = MASK_FEATHER
) -> Image.Image:
    """`generated` where `mask` repaints, `original` elsewhere, blended over `feather` pixels
    inside the mask. Pixels the mask keeps are exactly `original`'s."""
    weight = np.asarray(mask, dtype=np.float32) / 255.0
    if feather > 0:
        blurred = np.asarray(mask.filter(ImageFilter.GaussianBlur(feather / 2)), dtype=np.float32) / 255.0
        weight = np.minimum(weight, blurred)
    weight = weight[..., None]
    mixed = np.asarray(generated, dtype=np.float32) * weight + np.asarray(original, dtype=np.float32) * (1 - weight)
    return Image.fromarray(np.rint(mixed).astype(np.uint8), "RGB")


def outpaint_canvas(seed: Image.Image, padding: Padding, blur: int) -> tuple[Image.Image, Image.Image]:
    """The seed on a canvas grown by `padding`, the new borders filled by repeating its edge
    pixels, and the mask repainting the borders plus `blur` pixels into the seed (the seam)."""
    pixels = np.asarray(to_rgb(seed))
    padded = np.pad(
        pixels, ((padding.top, padding.bottom), (padding.left, padding.right), (0, 0)), mode="edge"
    )
    canvas = Image.fromarray(padded, "RGB")
    mask = np.full(padded.shape[:2], 255, dtype=np.uint8)
    # The seam band is repainted only on the sides that grew.
    top = padding.top + (blur if padding.top else 0)
    left = padding.left + (blur if padding.left else 0)
    bottom = padding.top + seed.height - (blur if padding.bottom else 0)
    right = padding.left + seed.width - (blur if padding.right else 0)
    mask[top:bottom, left:right] = 0
    return canvas, Image.fromarray(mask, "L")


def mask_crop_box(mask: Image.Image, margin: int) -> tuple[int, int, int, int] | None:
    """The box (left, top, right, bottom) around the mask's repainted pixels grown by `margin`
    on each side and clipped to the image; None when the mask repaints nothing."""
    box = mask.getbbox()
    if box is None:
        return None
    left, top, right, bottom = box
    return (
        max(0, left - margin), max(0, top - margin),
        min(mask.width, right + margin), min(mask.height, bottom + margin),
    )


def working_size(box: tuple[int, int, int, int], area: int) -> tuple[int, int]:
    """The size at which to inpaint a crop: the crop's aspect ratio scaled to about `area`
    pixels (the model's native resolution), each side a multiple of 8."""
    width, height = box[2] - box[0], box[3] - box[1]
    scale = (area / (width * height)) ** 0.5
    return max(64, round(width * scale / 8) * 8), max(64, round(height * scale / 8) * 8)
