"""Image inputs of any task (`seedImage`, `maskImage`, `guideImage`, `image`, ...): from what a
client sent to a decoded Pillow image.

Accepted forms: an image UUID (uploaded or generated, owned by the same API key), a data URI,
bare base64, or an http(s) URL fetched under the outbound policy. PNG, JPG and WEBP only. Every
refusal is an `invalid<Parameter>` error naming the parameter; another key's UUID is answered
exactly as an unknown one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from PIL import Image, ImageOps, UnidentifiedImageError

from kiln.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from kiln.media.outbound import fetch

if TYPE_CHECKING:
    from kiln.media.outbound import OutboundPolicy
    from kiln.media.store import ImageStore, StoredImage

MAX_INPUT_BYTES = 20 * 1024 * 1024
MAX_INPUT_PIXELS = 4096 * 4096
INPUT_FORMATS = ("PNG", "JPEG", "WEBP")

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATA_URI = re.compile(r"^data:([\w.+/-]*)((?:;[\w=.+-]+)*),(.*)$", re.DOTALL)
_FORMS = "an image UUID, a data URI, base64 data or an http(s) URL"


class ImageSources(Protocol):
    """Where image inputs come from: an owner's stored images, and URLs fetched under an outbound
    policy (`kiln.service.Services` is one)."""

    @property
    def images(self) -> ImageStore: ...

    @property
    def outbound(self) -> OutboundPolicy: ...


@dataclass(frozen=True)
class ResolvedImage:
    """A decoded input image.

    `image` is fully loaded and EXIF-transposed, in the mode it decoded to (RGB, RGBA, L, P...).
    `image_uuid` is set when the input was an image UUID of this owner. `format` is the decoded
    file format: "PNG", "JPEG" or "WEBP".
    """

    image: Image.Image
    image_uuid: str | None
    format: str = "PNG"


class PixelBudget:
    """The decoded pixels all image inputs of one task may add up to.

    Each image is charged its width × height from its header, before its pixels are decoded, so
    a task over budget is refused without allocating them: `invalid<Parameter>` naming the input
    that crossed it, with the budget as `max`. Safe to charge from several threads.
    """

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, pixels: int, *, parameter: str) -> None:
        with self._lock:
            if self.used + pixels > self.max_pixels:
                raise InvalidRequestError(
                    f"'{parameter}' ({pixels} pixels) brings the task's image inputs to "
                    f"{self.used + pixels} pixels; a task may decode at most {self.max_pixels}: "
                    f"send smaller or fewer images.",
                    code=error_code(parameter), parameter=parameter, max=self.max_pixels,
                )
            self.used += pixels


def error_code(parameter: str) -> str:
    """`seedImage` → `invalidSeedImage`."""
    top = parameter.split(".", 1)[0].split("[", 1)[0]
    return f"invalid{top[:1].upper()}{top[1:]}"


async def resolve_image_input(
    sources: ImageSources, value: object, *, parameter: str, owner: str, budget: PixelBudget | None = None
) -> ResolvedImage:
    """Decode the image a client gave as `parameter`, or raise a typed error naming it.

    Decoding runs on a worker thread. Refused: anything but a non-empty string, an unknown UUID
    (or one of another owner), more than MAX_INPUT_BYTES of data, more than MAX_INPUT_PIXELS
    pixels (decompression bombs) or more than what is left of the task's `budget`, formats other
    than PNG/JPG/WEBP, undecodable data, and URLs the outbound policy refuses (private
    addresses, too slow, too large).
    """
    code = error_code(parameter)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(
            f"'{parameter}' must be {_FORMS}.", code=code, parameter=parameter
        )
    text = value.strip()
    image_uuid = None
    if _UUID.match(text):
        stored = await asyncio.to_thread(sources.images.get, text.lower(), owner=owner)
        data = await asyncio.to_thread(_read, sources.images, stored) if stored is not None else None
        if data is None:
            raise InvalidRequestError(
                f"'{parameter}': no image with UUID {text} for this API key.",
                code=code, parameter=parameter,
            )
        image_uuid = stored.image_uuid  # type: ignore[union-attr]
    elif text.startswith(("http://", "https://")):
        data = await fetch(text, sources.outbound, parameter=parameter, code=code)
    else:
        data = _decode_base64(text, parameter, code)
    image, fmt = await asyncio.to_thread(decode_image_bytes, data, parameter=parameter, budget=budget)
    return ResolvedImage(image, image_uuid, fmt)


def decode_image_bytes(
    data: bytes, *, parameter: str, budget: PixelBudget | None = None
) -> tuple[Image.Image, str]:
    """Decode PNG/JPG/WEBP `data` under the byte and pixel limits (and charged to `budget`,
    when given, before decoding); the image and its format."""
    code = error_code(parameter)
    if len(data) > MAX_INPUT_BYTES:
        raise _too_large(parameter, code)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                fmt = opened.format or ""
                if fmt not in INPUT_FORMATS:
                    raise InvalidRequestError(
                        f"'{parameter}' is a {fmt or 'unknown'} image; send PNG, JPG or WEBP.",
                        code=code, parameter=parameter,
                    )
                width, height = opened.size
                if width * height > MAX_INPUT_PIXELS:
                    raise _too_many_pixels(parameter, code, f"{width}x{height}")
                if budget is not None:
                    budget.charge(width * height, parameter=parameter)
                opened.load()
                image = ImageOps.exif_transpose(opened)
    except InvalidRequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(parameter, code, "too many") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidRequestError(
            f"'{parameter}' could not be decoded as an image ({type(exc).__name__}); "
            f"send {_FORMS} of a PNG, JPG or WEBP file.",
            code=code, parameter=parameter,
        ) from None
    return image, fmt


def _read(images: ImageStore, stored: StoredImage) -> bytes | None:
    """The bytes of `stored`, or None when they were purged since it was looked up."""
    try:
        return images.read(stored)
    except NotFoundError:
        return None


def _decode_base64(text: str, parameter: str, code: str) -> bytes:
    match = _DATA_URI.match(text)
    if text.startswith("data:"):
        if match is None or ";base64" not in match[2]:
            raise InvalidRequestError(
                f"'{parameter}' is a data URI that is not base64-encoded; "
                f"use data:image/png;base64,<data>.",
                code=code, parameter=parameter,
            )
        text = match[3]
    # 4 base64 characters carry 3 bytes: refuse an oversize body before decoding it.
    if len(text) * 3 // 4 > MAX_INPUT_BYTES + 3:
        raise _too_large(parameter, code)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            f"'{parameter}' is neither {_FORMS}.", code=code, parameter=parameter
        ) from None


def _too_large(parameter: str, code: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"'{parameter}' is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB.",
        code=code, parameter=parameter,
    )


def _too_many_pixels(parameter: str, code: str, size: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"'{parameter}' has {size} pixels; at most {MAX_INPUT_PIXELS} "
        f"(e.g. 4096x4096) are accepted.",
        code=code, parameter=parameter,
    )
