"""Images in and out: encoding to the wire formats, the owned image store and the blob stores
(a folder or an S3 bucket) that hold its bytes."""

from kiln.media.blobs import Blobs, FolderBlobs, S3Blobs, open_blobs
from kiln.media.encoding import OUTPUT_FORMATS, encode_image
from kiln.media.store import ImageStore, StoredImage

__all__ = ["OUTPUT_FORMATS", "Blobs", "FolderBlobs", "ImageStore", "S3Blobs", "StoredImage",
           "encode_image", "open_blobs"]
