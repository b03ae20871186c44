"""The output fields of an image result, shared by every task that returns an image."""

from __future__ import annotations

import base64

from kiln.media import StoredImage
from kiln.media.encoding import MIME_BY_EXTENSION


def output_fields(prefix: str, output_type: str, base_url: str, stored: StoredImage, data: bytes) -> dict[str, str]:
    """`{prefix}URL`, `{prefix}Base64Data` or `{prefix}DataURI` of `stored` (whose encoded
    bytes are `data`), as `output_type` asks; e.g. prefix "image" or "guideImage"."""
    if output_type == "URL":
        return {f"{prefix}URL": f"{base_url}/media/{stored.image_uuid}.{stored.extension}"}
    encoded = base64.b64encode(data).decode()
    if output_type == "base64Data":
        return {f"{prefix}Base64Data": encoded}
    return {f"{prefix}DataURI": f"data:{MIME_BY_EXTENSION[stored.extension]};base64,{encoded}"}
