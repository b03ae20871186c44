"""S3 for tests: moto's S3 server on a loopback port, with the AWS variables pointing boto3 at it.

Use it in a fixture of the scope a test module needs::

    @pytest.fixture(scope="module")
    def s3() -> Iterator[S3Server]:
        with s3_server() as server:
            yield server
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@dataclass
class S3Server:
    """A running moto S3: `endpoint` (http://127.0.0.1:PORT) and the `bucket` made for the test."""

    endpoint: str
    bucket: str
    _server: ThreadedMotoServer

    def client(self) -> Any:
        """A boto3 S3 client of the test itself, independent of Kiln's."""
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def allow_public_reads(self) -> None:
        """Let anyone GET the bucket's objects without signing, as a bucket behind a public base
        URL does."""
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{self.bucket}/*"}]}
        self.client().put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(policy))

    def keys(self) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.bucket)
        return [entry["Key"] for entry in listed.get("Contents", [])]

    def stop(self) -> None:
        """Stop the server (an outage); stopping twice is harmless."""
        with contextlib.suppress(Exception):
            self._server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def s3_server(bucket: str | None = None) -> Iterator[S3Server]:
    """moto's S3 on a free loopback port with `bucket` created (default: a new name; moto's
    servers in one process share their buckets); until exit, `AWS_ENDPOINT_URL`,
    dummy credentials and the region are set in the environment (and a developer's own AWS
    files and profile are out of the way), so boto3 clients made meanwhile use this server."""
    bucket = bucket or f"kiln-media-{uuid.uuid4().hex[:12]}"
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        env.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        s3 = S3Server(endpoint, bucket, server)
        s3.client().create_bucket(Bucket=bucket)
        try:
            yield s3
        finally:
            s3.stop()
