"""`uploadEndpoint` and `webhookURL`: real HTTP targets on loopback (and S3 served by moto),
retries with backoff, `uploadFailed`, and targets that hang without stalling other tasks."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time

import boto3
import pytest
from moto.server import ThreadedMotoServer

from kiln.errors import InvalidRequestError
from kiln.media.outbound import OutboundPolicy
from kiln.service.delivery import DeliveryOptions
from tests.conftest import API_KEY, OTHER_KEY, cli_env, inference, post
from tests.service.fakes import get_response, receiver, wait_finished

FAST = dict(delivery_backoff_s=0.01, delivery_attempts=3, delivery_timeout_s=5.0)


@pytest.fixture(scope="module")
def fast(services):
    """The session's Kiln, but with fast delivery retries (a second Services on the same data)."""
    from dataclasses import replace

    from starlette.testclient import TestClient

    from kiln.server import create_app
    from kiln.service import Services

    fast_services = Services.open(replace(services.settings, **FAST))
    with TestClient(create_app(fast_services)) as client:
        yield client


def image_bytes(item):
    return base64.b64decode(item["imageBase64Data"])


def test_upload_puts_the_image_bytes_with_its_content_type(fast):
    with receiver() as target:
        task = inference(uploadEndpoint=target.url + "/bucket/out.png?sig=abc")
        response = post(fast, [task])
        (received,) = target.received
    assert response.status_code == 200, response.json()
    (item,) = response.json()["data"]
    assert (received.method, received.path) == ("PUT", "/bucket/out.png?sig=abc")
    assert received.headers["Content-Type"] == "image/png"
    assert received.body == image_bytes(item)


def test_upload_of_a_preprocessed_guide_image(fast):
    from tests.service.test_preprocess import preprocess

    with receiver() as target:
        response = post(fast, [preprocess(uploadEndpoint=target.url + "/guides/edge.png")])
        (received,) = target.received
    assert response.status_code == 200, response.json()
    (item,) = response.json()["data"]
    assert (received.method, received.path) == ("PUT", "/guides/edge.png")
    assert received.headers["Content-Type"] == "image/png"
    assert received.body == base64.b64decode(item["guideImageBase64Data"])


def test_upload_is_retried_after_500s(fast):
    with receiver(statuses=(500, 500, 200)) as target:
        task = inference(uploadEndpoint=target.url + "/x", outputFormat="JPG")
        response = post(fast, [task])
        received = target.received
    (item,) = response.json()["data"]
    assert [r.answered for r in received] == [500, 500, 200]
    assert received[-1].headers["Content-Type"] == "image/jpeg"
    assert received[-1].body == image_bytes(item)


def test_an_upload_that_always_fails_is_upload_failed_and_the_image_stays(fast):
    with receiver(statuses=(503,)) as target:
        task = inference(uploadEndpoint=target.url + "/x", outputType="URL")
        response = post(fast, [task])
        attempts = len(target.received)
    assert attempts == FAST["delivery_attempts"]
    assert response.status_code == 502
    (error,) = response.json()["errors"]
    assert (error["code"], error["parameter"], error["taskUUID"]) == ("uploadFailed", "uploadEndpoint", task["taskUUID"])
    assert "HTTP 503" in error["message"]
    # the image is kept: getResponse has it, its URL serves it
    reply = get_response(fast, task["taskUUID"])
    (item,) = reply["data"]
    assert item["status"] == "success" and item["imageUUID"] == error["imageUUID"]
    assert reply["errors"][0]["code"] == "uploadFailed"
    served = fast.get("/media/" + item["imageURL"].split("/media/", 1)[1])
    assert served.status_code == 200 and served.content[:4] == b"\x89PNG"


def test_a_4xx_answer_is_not_retried(fast):
    with receiver(statuses=(403,)) as target:
        response = post(fast, [inference(uploadEndpoint=target.url + "/x")])
        assert len(target.received) == 1
    assert response.json()["errors"][0]["code"] == "uploadFailed"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_upload_to_an_s3_presigned_url(fast):
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        s3 = boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="results")
        url = s3.generate_presigned_url(
            "put_object", Params={"Bucket": "results", "Key": "kiln/out.png", "ContentType": "image/png"},
            ExpiresIn=300,
        )
        response = post(fast, [inference(uploadEndpoint=url, numberResults=1)])
        (item,) = response.json()["data"]
        stored = s3.get_object(Bucket="results", Key="kiln/out.png")
        assert stored["Body"].read() == image_bytes(item)
        assert stored["ContentType"] == "image/png"
    finally:
        server.stop()


def test_webhook_gets_one_post_per_result_with_retries(fast):
    with receiver(statuses=(500, 200)) as hook:
        task = inference(numberResults=2, webhookURL=hook.url + "/hook?token=t1")
        response = post(fast, [task])
        assert response.json() == {"data": [
            {"taskType": "imageInference", "taskUUID": task["taskUUID"], "status": "processing"}
        ]}
        received = hook.wait_for(3)
        time.sleep(0.2)  # nothing more arrives
        assert len(hook.received) == 3
    assert all(r.method == "POST" and r.path == "/hook?token=t1" for r in received)
    assert all(r.headers["Content-Type"] == "application/json" for r in received)
    accepted = [json.loads(r.body)["data"] for r in received if r.answered == 200]
    assert len(accepted) == 2 and all(len(items) == 1 for items in accepted)
    items = [items[0] for items in accepted]
    assert {i["status"] for i in items} == {"success"}
    assert sorted(i["seed"] for i in items) == [1234, 1235]
    polled = wait_finished(fast, task["taskUUID"])["data"]
    assert sorted(i["imageUUID"] for i in polled) == sorted(i["imageUUID"] for i in items)


def test_webhook_gets_the_error_of_a_failed_task(fast):
    with receiver() as hook:
        task = inference(model="civitai:404@404", webhookURL=hook.url)
        post(fast, [task])
        (received,) = hook.wait_for(1)
    (error,) = json.loads(received.body)["errors"]
    assert (error["code"], error["status"], error["taskUUID"]) == ("unknownModel", "error", task["taskUUID"])


def test_a_hung_upload_target_does_not_stall_other_tasks(settings):
    from tests.service.fakes import fake_kiln

    with fake_kiln(settings, delivery_timeout_s=1.5, delivery_attempts=1) as (client, _, _), \
            receiver(delay_s=5) as hung:
        slow = inference(uploadEndpoint=hung.url + "/x", deliveryMethod="async")
        post(client, [slow])
        hung.wait_for(1)  # the upload is hanging now
        started = time.monotonic()
        quick = post(client, [inference()])
        assert quick.status_code == 200
        assert time.monotonic() - started < 1.0
        assert get_response(client, slow["taskUUID"])["data"][-1]["status"] == "processing"
        reply = wait_finished(client, slow["taskUUID"], timeout_s=10)
    assert "time limit" in reply["errors"][0]["message"]
    assert reply["errors"][0]["code"] == "uploadFailed"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("uploadEndpoint", "ftp://example.com/x", "invalidUploadEndpoint"),
        ("webhookURL", "file:///etc/passwd", "invalidWebhookURL"),
        ("webhookURL", 42, "invalidWebhookURL"),
    ],
)
def test_bad_delivery_urls_are_refused_before_any_work(client, field, value, code):
    response = post(client, [inference(**{field: value})])
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == code


def test_private_targets_are_refused_unless_allowed():
    task = {"uploadEndpoint": "http://127.0.0.1:9/x"}
    with pytest.raises(InvalidRequestError) as caught:
        asyncio.run(DeliveryOptions.read(task, OutboundPolicy(allow_private=False)))
    assert caught.value.code == "invalidUploadEndpoint"
    options = asyncio.run(DeliveryOptions.read({"webhookURL": "http://10.0.0.1/"}, OutboundPolicy(allow_private=True)))
    assert options.background and options.webhook_url == "http://10.0.0.1/"


def verify(received, secret: str) -> int:
    """What a receiver does: the signature's timestamp, after checking its HMAC."""
    fields = dict(part.split("=", 1) for part in received.headers["Kiln-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + received.body, hashlib.sha256)
    assert hmac.compare_digest(fields["v1"], expected.hexdigest())
    return int(fields["t"])


def test_webhooks_and_uploads_are_signed_with_the_keys_secret(fast, settings, data_dir):
    with receiver() as hook, receiver() as upload:
        task = inference(webhookURL=hook.url, uploadEndpoint=upload.url + "/out.png")
        post(fast, [task])
        (posted,) = hook.wait_for(1)
        (put,) = upload.wait_for(1)
    def webhook_secret(key: str) -> subprocess.CompletedProcess[str]:
        env = cli_env(settings, KILN_API_KEYS=f"{API_KEY},{OTHER_KEY}")  # as the server's
        return subprocess.run([sys.executable, "-m", "kiln.cli", "--data-dir", str(data_dir),
                               "keys", "webhook-secret", key],
                              capture_output=True, text=True, timeout=60, env=env)

    shown = webhook_secret(API_KEY)
    secret = shown.stdout.strip()
    assert shown.returncode == 0 and secret.startswith("whsec_"), shown.stderr
    for received in (posted, put):
        assert abs(verify(received, secret) - time.time()) < 60
    assert webhook_secret(OTHER_KEY).stdout.strip() not in ("", secret)  # one secret per key
    assert webhook_secret("kiln_not-a-key").returncode == 2
    with pytest.raises(AssertionError):
        verify(dataclasses.replace(posted, body=posted.body + b" "), secret)  # tampered
