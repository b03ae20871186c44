"""Images in an S3 bucket (`KILN_MEDIA_URL=s3://...`, moto's server on loopback) through the REST
API: `/media` serves them from the bucket, uploads work as inputs, `KILN_MEDIA_PUBLIC_BASE`
points the URLs at the bucket (or presigned URLs), and an outage is a typed error, not a hang."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from tests.conftest import inference, new_uuid, post
from tests.images import data_uri, gradient
from tests.s3 import S3Server, s3_server
from tests.service.fakes import fake_kiln

PREFIX = "kiln/media"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def s3_kiln(settings, server: S3Server, **overrides: Any):
    """A Kiln on a fake engine whose images live in `server`'s bucket."""
    return fake_kiln(settings, media_url=f"s3://{server.bucket}/{PREFIX}", **overrides)


def generate(client, **task: Any) -> dict[str, Any]:
    response = post(client, [inference(outputType="URL", **task)])
    assert response.status_code == 200, response.json()
    (item,) = response.json()["data"]
    return item


def upload(client, image: Image.Image) -> dict[str, Any]:
    response = post(client, [{"taskType": "imageUpload", "taskUUID": new_uuid(),
                              "image": data_uri(image)}])
    assert response.status_code == 200, response.json()
    (item,) = response.json()["data"]
    return item


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def test_an_image_url_is_served_from_the_bucket(settings, s3):
    with s3_kiln(settings, s3) as (client, _, _):
        item = generate(client, width=192, height=128)
        url = item["imageURL"]
        assert url == f"http://testserver/media/{item['imageUUID']}.png"
        response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert png(response.content).size == (192, 128)
    key = f"{PREFIX}/{item['imageUUID']}.png"
    assert key in s3.keys()
    assert s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read() == response.content
    assert not (settings.media_dir / f"{item['imageUUID']}.png").exists()


def test_an_uploaded_image_is_a_seed_image_by_uuid_read_from_the_bucket(settings, s3):
    with s3_kiln(settings, s3) as (client, _, _):
        uploaded = upload(client, gradient(128, 128))
        assert client.get(uploaded["imageURL"]).status_code == 200
        item = generate(client, seedImage=uploaded["imageUUID"], strength=0.5)
        assert client.get(item["imageURL"]).status_code == 200
        s3.client().delete_object(Bucket=s3.bucket, Key=f"{PREFIX}/{uploaded['imageUUID']}.png")
        gone = post(client, [inference(seedImage=uploaded["imageUUID"], strength=0.5)]).json()
        assert client.get(uploaded["imageURL"]).status_code == 404
    assert gone["errors"][0]["code"] == "invalidSeedImage"


def test_presigned_image_urls_are_served_by_the_bucket(settings, s3):
    with s3_kiln(settings, s3, media_public_base="presigned") as (client, _, _):
        item = generate(client, width=128, height=128)
    url = item["imageURL"]
    assert url.startswith(f"{s3.endpoint}/{s3.bucket}/{PREFIX}/{item['imageUUID']}.png?")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == [str(int(min(settings.media_ttl_s, 7 * 86400)))]
    assert "X-Amz-Signature" in query
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert png(response.content).size == (128, 128)


def test_with_a_public_base_image_urls_are_the_buckets_objects(settings, s3):
    s3.allow_public_reads()
    base = f"{s3.endpoint}/{s3.bucket}"
    with s3_kiln(settings, s3, media_public_base=base) as (client, _, _):
        item = generate(client, width=128, height=192)
        uploaded = upload(client, gradient(32, 32))
        served_by_kiln = client.get(f"/media/{item['imageUUID']}.png").content  # any front serves
    assert item["imageURL"] == f"{base}/{PREFIX}/{item['imageUUID']}.png"
    assert uploaded["imageURL"] == f"{base}/{PREFIX}/{uploaded['imageUUID']}.png"
    from_bucket = httpx.get(item["imageURL"], timeout=10)
    assert from_bucket.status_code == 200
    assert from_bucket.content == served_by_kiln
    assert png(from_bucket.content).size == (128, 192)


def test_an_s3_outage_is_a_typed_error_not_a_500_or_a_hang(settings):
    with s3_server() as down, s3_kiln(settings, down) as (client, _, _):
        item = generate(client)
        down.stop()
        started = time.monotonic()
        served = client.get(item["imageURL"])
        generated = post(client, [inference(outputType="URL")])
        uploaded = post(client, [{"taskType": "imageUpload", "taskUUID": new_uuid(),
                                  "image": data_uri(gradient(32, 32))}])
        elapsed = time.monotonic() - started
    assert elapsed < 60
    for response in (served, generated, uploaded):
        assert response.status_code == 503, response.text
        (error,) = response.json()["errors"]
        assert error["code"] == "mediaUnavailable"
        assert down.bucket not in error["message"]
