"""The `imageUpload` task: store a client's image under a new UUID usable as any image input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from PIL import Image

from kiln.keys import Principal
from kiln.media import OUTPUT_FORMATS, encode_image
from kiln.media.inputs import ResolvedImage, resolve_image_input
from kiln.progress import StepListener
from kiln.protocol.image_upload import ImageUploadTask, parse_image_upload
from kiln.service.outputs import image_url
from kiln.service.services import Services

MAX_STORED_SIDE = 2048


class ImageUploadHandler:
    """Stores the uploaded image with its owner and answers `imageUUID` and `imageURL`.

    A long side above MAX_STORED_SIDE is scaled down, keeping the aspect ratio. JPEG uploads
    are stored as JPG (quality 95), all others as lossless PNG (transparency kept). An image
    UUID of the same key is answered with that image, not copied.
    """

    def __init__(self, services: Services) -> None:
        self._services = services

    parse = staticmethod(parse_image_upload)

    async def __call__(
        self, task: ImageUploadTask, principal: Principal, progress: StepListener | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        resolved = await resolve_image_input(
            self._services, task.image, parameter="image", owner=principal.key_id
        )
        if resolved.image_uuid is not None:
            stored = await asyncio.to_thread(
                self._services.images.get, resolved.image_uuid, owner=principal.key_id)
        else:
            stored = await asyncio.to_thread(self._store, resolved, principal.key_id)
        assert stored is not None
        yield {
            "imageUUID": stored.image_uuid,
            "imageURL": image_url(stored, self._services.settings.base_url),
        }

    def _store(self, resolved: ResolvedImage, owner: str) -> Any:
        output_format = "JPG" if resolved.format == "JPEG" else "PNG"
        image = resolved.image
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGBA" if output_format == "PNG" else "RGB")
        if max(image.size) > MAX_STORED_SIDE:
            image = image.copy()
            image.thumbnail((MAX_STORED_SIDE, MAX_STORED_SIDE), Image.Resampling.LANCZOS)
        data = encode_image(image, output_format, 95)
        return self._services.images.put(
            data, owner=owner, extension=OUTPUT_FORMATS[output_format].extension,
            width=image.width, height=image.height, origin="uploaded",
        )
