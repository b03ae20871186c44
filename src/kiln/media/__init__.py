"""Images in and out: encoding to the wire formats and the owned image store."""

from kiln.media.encoding import OUTPUT_FORMATS, encode_image
from kiln.media.store import ImageStore, StoredImage

__all__ = ["OUTPUT_FORMATS", "ImageStore", "StoredImage", "encode_image"]
