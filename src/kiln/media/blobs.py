"""Where the bytes of stored images live: a local folder or an S3 bucket, behind one interface.

`open_blobs(settings)` picks the store `KILN_MEDIA_URL` names. boto3 is imported only for an
`s3://` URL. Every failure of a store reaches callers as `MediaUnavailableError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

from kiln.errors import MediaUnavailableError

if TYPE_CHECKING:
    from kiln.settings import Settings

log = logging.getLogger(__name__)

PRESIGNED = "presigned"  # KILN_MEDIA_PUBLIC_BASE value: presigned GET URLs of the bucket
MAX_PRESIGNED_TTL_S = 7 * 24 * 3600  # the longest validity SigV4 allows
# the Cache-Control of Kiln's /media: a blob never changes, so caches before a public base keep it
_IMMUTABLE = "public, max-age=31536000, immutable"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class Blobs(Protocol):
    """Byte strings under flat names (`<uuid>.<ext>`). Every method blocks: call them off the
    event loop. A failure of the store itself raises `MediaUnavailableError`."""

    def put(self, name: str, data: bytes, content_type: str) -> None:
        """Store `data` under `name`, whole: a reader sees all of it or nothing."""

    def get(self, name: str) -> bytes | None:
        """The bytes under `name`, or None when there are none."""

    def delete(self, name: str) -> None:
        """Remove `name`; a missing name is not an error."""

    def public_url(self, name: str) -> str | None:
        """Where clients fetch `name` without Kiln, or None: then Kiln's `/media/<name>` does."""


class FolderBlobs:
    """Blobs as files in `root`, each written to a `.part` file and renamed into place.

    `.part` files left by a process that stopped mid-write are deleted on open. With
    `public_base` (something that serves the folder, e.g. a CDN), a blob's public URL is
    `<public_base>/<name>`.
    """

    def __init__(self, root: Path, public_base: str | None = None) -> None:
        self.root = root
        self._public_base = public_base.rstrip("/") if public_base else None
        root.mkdir(parents=True, exist_ok=True)
        for partial in root.glob("*.part"):
            partial.unlink(missing_ok=True)

    def put(self, name: str, data: bytes, content_type: str) -> None:
        path = self.root / name
        tmp = path.with_suffix(".part")
        with _unavailable_on(OSError, "write", path):
            tmp.write_bytes(data)
            os.replace(tmp, path)

    def get(self, name: str) -> bytes | None:
        path = self.root / name
        with _unavailable_on(OSError, "read", path):
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None

    def delete(self, name: str) -> None:
        path = self.root / name
        with _unavailable_on(OSError, "delete", path):
            path.unlink(missing_ok=True)

    def public_url(self, name: str) -> str | None:
        return f"{self._public_base}/{name}" if self._public_base else None


class S3Blobs:
    """Blobs as the objects `<prefix>/<name>` of an S3 bucket, or of any S3-compatible store.

    Credentials, region and endpoint come from the standard AWS variables and files
    (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`,
    ...), as for the AWS CLI. No call hangs: connecting and each read are bounded by timeouts, and a call
    makes at most `max_attempts` attempts. A blob's public URL is `<public_base>/<object key>`,
    or a presigned GET URL valid for `url_ttl_s` (at most 7 days) when `public_base` is
    "presigned".
    """

    def __init__(
        self, bucket: str, prefix: str = "", *, public_base: str | None = None,
        url_ttl_s: float = MAX_PRESIGNED_TTL_S, connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0, max_attempts: int = 3,
    ) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._public_base = public_base.rstrip("/") if public_base else None
        self._url_ttl_s = int(max(1, min(url_ttl_s, MAX_PRESIGNED_TTL_S)))
        self._failures = (BotoCoreError, ClientError)
        self._client: Any = boto3.client("s3", config=Config(
            signature_version="s3v4",  # presigned URLs of up to 7 days; SigV2 is deprecated
            connect_timeout=connect_timeout_s, read_timeout=read_timeout_s,
            retries={"mode": "standard", "max_attempts": max_attempts},
        ))

    def put(self, name: str, data: bytes, content_type: str) -> None:
        key = self._key(name)
        with _unavailable_on(self._failures, "PutObject", self._where(key)):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                                    CacheControl=_IMMUTABLE)

    def get(self, name: str) -> bytes | None:
        key = self._key(name)
        with _unavailable_on(self._failures, "GetObject", self._where(key)):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
            except self._client.exceptions.NoSuchKey:
                return None
            return response["Body"].read()

    def delete(self, name: str) -> None:
        key = self._key(name)
        with _unavailable_on(self._failures, "DeleteObject", self._where(key)):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def public_url(self, name: str) -> str | None:
        key = self._key(name)
        if self._public_base == PRESIGNED:
            with _unavailable_on(self._failures, "presign", self._where(key)):
                return self._client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": key},
                    ExpiresIn=self._url_ttl_s)
        return f"{self._public_base}/{quote(key)}" if self._public_base else None

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def open_blobs(settings: Settings) -> Blobs:
    """The blob store of `settings`: the folder `settings.media_dir` when `media_url` is None,
    the bucket of an `s3://bucket[/prefix]` URL otherwise.

    A ValueError says what to send instead for any other `media_url`, and for a
    `media_public_base` that is neither an http(s) URL nor "presigned" (which needs a bucket).
    """
    base = settings.media_public_base
    if base is not None and base != PRESIGNED and not base.startswith(("http://", "https://")):
        raise ValueError(
            f"KILN_MEDIA_PUBLIC_BASE must be an http(s) URL or '{PRESIGNED}', got {base!r}")
    if settings.media_url is None:
        if base == PRESIGNED:
            raise ValueError(f"KILN_MEDIA_PUBLIC_BASE={PRESIGNED} needs a bucket "
                             "(KILN_MEDIA_URL=s3://bucket/prefix); a folder has no presigned URLs")
        return FolderBlobs(settings.media_dir, public_base=base)
    url = urlsplit(settings.media_url)
    if url.scheme != "s3" or not _BUCKET.match(url.netloc) or url.query or url.fragment:
        raise ValueError(
            f"KILN_MEDIA_URL must be s3://bucket or s3://bucket/prefix (or unset, for the folder "
            f"{settings.media_dir}), got {settings.media_url!r}")
    return S3Blobs(url.netloc, url.path, public_base=base,
                   url_ttl_s=min(settings.media_ttl_s, MAX_PRESIGNED_TTL_S))


@contextlib.contextmanager
def _unavailable_on(
    failures: type[BaseException] | tuple[type[BaseException], ...], operation: str, where: object
) -> Iterator[None]:
    """Turn `failures` into `MediaUnavailableError`; the details (paths, bucket) go to the log,
    not to clients."""
    try:
        yield
    except failures as exc:
        log.warning("media store: %s of %s failed: %s", operation, where, exc)
        raise MediaUnavailableError(
            f"The image store is unavailable ({operation} failed: {type(exc).__name__}); "
            "try again later.") from exc
