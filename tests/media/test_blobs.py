"""The blob stores behind `ImageStore`: a folder and an S3 bucket (moto's server on loopback) pass
the same assertions; `open_blobs` picks one from the settings and refuses anything else."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from kiln.errors import MediaUnavailableError
from kiln.media import FolderBlobs, S3Blobs, open_blobs
from kiln.media.blobs import MAX_PRESIGNED_TTL_S
from kiln.settings import Settings
from tests.s3 import S3Server, free_port, s3_server

NAME = "0b4a7c1e-2f3d-4e5f-8a9b-0c1d2e3f4a5b.png"
DATA = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(params=["folder", "s3"])
def blobs(request, tmp_path) -> FolderBlobs | S3Blobs:
    if request.param == "folder":
        return FolderBlobs(tmp_path / "media")
    server = request.getfixturevalue("s3")
    return S3Blobs(server.bucket, f"test-{tmp_path.name}")


def test_a_blob_reads_back_as_written(blobs):
    blobs.put(NAME, DATA, "image/png")
    assert blobs.get(NAME) == DATA


def test_a_missing_blob_is_none(blobs):
    assert blobs.get(NAME) is None


def test_delete_removes_a_blob_and_a_missing_one_is_no_error(blobs):
    blobs.put(NAME, DATA, "image/png")
    blobs.delete(NAME)
    assert blobs.get(NAME) is None
    blobs.delete(NAME)


def test_without_a_public_base_there_is_no_public_url(blobs):
    assert blobs.public_url(NAME) is None


def test_folder_blobs_leave_no_parts_and_parts_of_a_stopped_process_are_deleted(tmp_path):
    root = tmp_path / "media"
    FolderBlobs(root).put(NAME, DATA, "image/png")
    (root / "half-written.part").write_bytes(b"\x89PN")
    FolderBlobs(root)
    assert sorted(p.name for p in root.iterdir()) == [NAME]


def test_a_folder_that_fails_is_media_unavailable(tmp_path):
    blobs = FolderBlobs(tmp_path / "media")
    (tmp_path / "media" / NAME).mkdir()  # reading a folder as a file fails (as a full disk would)
    with pytest.raises(MediaUnavailableError) as caught:
        blobs.get(NAME)
    assert str(tmp_path) not in caught.value.message


def test_s3_blobs_are_objects_under_the_prefix(s3):
    S3Blobs(s3.bucket, "/under/a/prefix/").put(NAME, DATA, "image/png")
    stored = s3.client().get_object(Bucket=s3.bucket, Key=f"under/a/prefix/{NAME}")
    assert stored["Body"].read() == DATA
    assert stored["ContentType"] == "image/png"
    assert stored["CacheControl"] == "public, max-age=31536000, immutable"


def test_public_urls_are_the_base_and_the_object_key(s3, tmp_path):
    assert (S3Blobs(s3.bucket, "p", public_base="https://cdn.example/media/").public_url(NAME)
            == f"https://cdn.example/media/p/{NAME}")
    assert (FolderBlobs(tmp_path, public_base="https://cdn.example").public_url(NAME)
            == f"https://cdn.example/{NAME}")


def test_a_presigned_url_serves_the_blob_for_at_most_seven_days(s3):
    blobs = S3Blobs(s3.bucket, "signed", public_base="presigned", url_ttl_s=30 * 86400)
    blobs.put(NAME, DATA, "image/png")
    url = blobs.public_url(NAME)
    assert url is not None and url.startswith(f"{s3.endpoint}/{s3.bucket}/signed/{NAME}?")
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(MAX_PRESIGNED_TTL_S)]
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == DATA


def test_an_unreachable_s3_is_media_unavailable_soon_and_names_no_bucket(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    blobs = S3Blobs(s3.bucket, "p", connect_timeout_s=1, read_timeout_s=1)
    started = time.monotonic()
    for call in (lambda: blobs.put(NAME, DATA, "image/png"), lambda: blobs.get(NAME),
                 lambda: blobs.delete(NAME)):
        with pytest.raises(MediaUnavailableError) as caught:
            call()
        assert caught.value.status == 503 and s3.bucket not in caught.value.message
    assert time.monotonic() - started < 20


def test_a_missing_bucket_is_media_unavailable(s3):
    with pytest.raises(MediaUnavailableError, match="GetObject"):
        S3Blobs(f"{s3.bucket}-missing").get(NAME)


def test_open_blobs_without_a_media_url_is_the_media_folder(tmp_path):
    blobs = open_blobs(Settings(data_dir=tmp_path))
    assert isinstance(blobs, FolderBlobs) and blobs.root == tmp_path / "media"


def test_open_blobs_of_an_s3_url_is_that_bucket_and_prefix(s3, tmp_path):
    blobs = open_blobs(Settings(data_dir=tmp_path, media_url=f"s3://{s3.bucket}/kiln/media/"))
    assert isinstance(blobs, S3Blobs) and (blobs.bucket, blobs.prefix) == (s3.bucket, "kiln/media")


@pytest.mark.parametrize("media_url", [
    "/srv/kiln-media", "file:///srv/kiln-media", "s3://", "s3:///prefix", "s3://Bad_Bucket/x",
    "s3://user:secret@bucket/x", "gs://bucket/x", "s3://bucket/x?versionId=1",
])
def test_open_blobs_refuses_other_media_urls(media_url, tmp_path):
    with pytest.raises(ValueError, match="KILN_MEDIA_URL must be s3://bucket"):
        open_blobs(Settings(data_dir=tmp_path, media_url=media_url))


def test_open_blobs_refuses_a_public_base_that_is_no_url_and_presigning_a_folder(tmp_path):
    with pytest.raises(ValueError, match="KILN_MEDIA_PUBLIC_BASE must be an http"):
        open_blobs(Settings(data_dir=tmp_path, media_public_base="cdn.example/media"))
    with pytest.raises(ValueError, match="needs a bucket"):
        open_blobs(Settings(data_dir=tmp_path, media_public_base="presigned"))


def test_a_media_folder_imports_nothing_of_boto3(tmp_path):
    script = ("import sys; from pathlib import Path; from kiln.media import open_blobs; "
              "from kiln.settings import Settings; "
              f"open_blobs(Settings(data_dir=Path({str(tmp_path)!r}))); "
              "assert not [m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')]")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_a_public_s3_base_url_serves_the_object(s3):
    blobs = S3Blobs(s3.bucket, "public", public_base=f"{s3.endpoint}/{s3.bucket}")
    blobs.put(NAME, DATA, "image/png")
    url = blobs.public_url(NAME)
    assert url == f"{s3.endpoint}/{s3.bucket}/public/{NAME}"
    with pytest.raises(urllib.error.HTTPError):  # a private bucket answers 403
        urllib.request.urlopen(url, timeout=10)
    s3.allow_public_reads()
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == DATA
