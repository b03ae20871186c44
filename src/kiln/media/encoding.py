"""Encoding generated images to PNG, JPG or WEBP with Pillow."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class OutputFormat:
    pil_name: str
    extension: str
    mime_type: str


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    "PNG": OutputFormat("PNG", "png", "image/png"),
    "JPG": OutputFormat("JPEG", "jpg", "image/jpeg"),
    "WEBP": OutputFormat("WEBP", "webp", "image/webp"),
}
"""Wire name (upper case, `JPEG` normalised to `JPG`) → encoder settings."""

MIME_BY_EXTENSION = {f.extension: f.mime_type for f in OUTPUT_FORMATS.values()}


def encode_image(image: Image.Image, output_format: str, quality: int) -> bytes:
    """Encode `image` as `output_format` (a key of OUTPUT_FORMATS). The same pixels and
    arguments always give the same bytes; `quality` applies to JPG and WEBP."""
    fmt = OUTPUT_FORMATS[output_format]
    buffer = io.BytesIO()
    if fmt.pil_name == "PNG":
        image.save(buffer, format="PNG")
    else:
        image.convert("RGB").save(buffer, format=fmt.pil_name, quality=quality)
    return buffer.getvalue()
