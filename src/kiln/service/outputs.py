"""The output fields of an image result, shared by every task that returns an image."""

from __future__ import annotations

import base64

from kiln.media import StoredImage
from kiln.media.encoding import MIME_BY_EXTENSION


def image_url(stored: StoredImage, base_url: str) -> str:
    """Where a client fetches `stored`: its public URL when KILN_MEDIA_PUBLIC_BASE is set
    (the bucket's base, or a presigned URL), otherwise Kiln's `/media` route under `base_url`."""
    return stored.public_url or f"{base_url}/media/{stored.name}"


def output_fields(prefix: str, output_type: str, base_url: str, stored: StoredImage, data: bytes) -> dict[str, str]:
    """`{prefix}URL`, `{prefix}Base64Data` or `{prefix}DataURI` of `stored` (whose encoded
    bytes are `data`), as `output_type` asks; e.g. prefix "image" or "guideImage"."""
    if output_type == "URL":
        return {f"{prefix}URL": image_url(stored, base_url)}
    encoded = base64.b64encode(data).decode()
    if output_type == "base64Data":
        return {f"{prefix}Base64Data": encoded}
    return {f"{prefix}DataURI": f"data:{MIME_BY_EXTENSION[stored.extension]};base64,{encoded}"}
