"""Delivery of results beyond the reply: `uploadEndpoint` (PUT of the image bytes) and
`webhookURL` (POST of each result), both retried with backoff, both through the SSRF-guarded
`kiln.media.outbound.send`.

Every request carries `Kiln-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>`
under the secret of the task's key, made anew for each attempt, so a receiver can tell Kiln's
requests from forgeries and refuse replays (README: Delivery).

Guarantees: one attempt never runs longer than the policy's time limit, and a delivery makes at
most `RetryPolicy.attempts` attempts, so a hung or failing target delays only its own task
(uploads) or nothing at all (webhooks run as background tasks).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx

from kiln.errors import DeliveryError, InvalidRequestError, KilnError, echoed
from kiln.media.encoding import MIME_BY_EXTENSION
from kiln.media.outbound import OutboundPolicy, check_url, send
from kiln.media.store import ImageStore, StoredImage

log = logging.getLogger(__name__)

DELIVERY_METHODS = ("sync", "async")
SIGNATURE_HEADER = "Kiln-Signature"


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The `Kiln-Signature` value of `body` sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; the wait before retry n (1-based) is `backoff_s * 2**(n-1)`."""

    attempts: int = 5
    backoff_s: float = 1.0

    def delay(self, retry: int) -> float:
        return self.backoff_s * 2 ** (retry - 1)


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


@dataclass(frozen=True)
class DeliveryOptions:
    """How the results of one task travel (PROTOCOL.md 6.1-6.5), read from any task type.

    `background` tasks are answered at once with an acknowledgement and run on without the
    client: results go to `getResponse` and to the webhook.
    """

    method: str = "sync"
    webhook_url: str | None = None
    upload_endpoint: str | None = None

    @property
    def background(self) -> bool:
        return self.method == "async" or self.webhook_url is not None

    @classmethod
    async def read(cls, task: dict[str, Any], policy: OutboundPolicy) -> DeliveryOptions:
        """Validate `deliveryMethod`, `webhookURL` and `uploadEndpoint` of `task`: typed errors
        (`invalidDeliveryMethod`, `invalidWebhookURL`, `invalidUploadEndpoint`) for a bad value
        or a URL the outbound policy refuses."""
        method = task.get("deliveryMethod") or "sync"
        if method not in DELIVERY_METHODS:
            raise InvalidRequestError(
                f"Invalid value for 'deliveryMethod': must be one of sync, async; got {echoed(method)}.",
                code="invalidDeliveryMethod", parameter="deliveryMethod", type="string",
                allowedValues=list(DELIVERY_METHODS),
            )
        urls: dict[str, str | None] = {}
        for name, code in (("webhookURL", "invalidWebhookURL"), ("uploadEndpoint", "invalidUploadEndpoint")):
            value = task.get(name) or None
            if value is not None and not isinstance(value, str):
                raise InvalidRequestError(
                    f"Invalid value for '{name}': must be an http(s) URL string.",
                    code=code, parameter=name, type="string",
                )
            if value is not None:
                await check_url(value, policy, parameter=name, code=code)
            urls[name] = value
        return cls(method, urls["webhookURL"], urls["uploadEndpoint"])


async def send_with_retries(
    method: str,
    url: str,
    content: bytes,
    content_type: str,
    policy: OutboundPolicy,
    retry: RetryPolicy,
    *,
    secret: str,
    parameter: str,
    code: str,
) -> int:
    """Send until the target answers 2xx; return the number of attempts it took.

    5xx, 408, 429, network errors and timeouts are retried with backoff; any other status, a
    refused URL or the last failed attempt raise `DeliveryError` with `code`.
    """
    problem = "no attempt made"
    for attempt in range(1, retry.attempts + 1):
        if attempt > 1:
            await asyncio.sleep(retry.delay(attempt - 1))
        try:
            headers = {"Content-Type": content_type,
                       SIGNATURE_HEADER: signature(secret, content, int(time.time()))}
            response = await send(
                method, url, policy, content=content, headers=headers,
                parameter=parameter, code=code,
            )
        except KilnError as exc:  # the URL is refused (e.g. it now resolves to a private address)
            raise DeliveryError(exc.message, code=code, parameter=parameter) from None
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            problem = f"{type(exc).__name__} (time limit {policy.timeout_s:g} s)" if isinstance(
                exc, TimeoutError | httpx.TimeoutException) else type(exc).__name__
            continue
        if 200 <= response.status_code < 300:
            return attempt
        problem = f"HTTP {response.status_code}"
        if not _retryable(response.status_code):
            break
    raise DeliveryError(
        f"{method} to '{parameter}' failed after {attempt} attempt(s): {problem}.",
        code=code, parameter=parameter,
    )


async def upload_image(
    images: ImageStore, stored: StoredImage, url: str, policy: OutboundPolicy, retry: RetryPolicy,
    *, secret: str,
) -> None:
    """PUT the bytes of `stored` (read from `images`) to `url` with its Content-Type, signed with
    `secret`; `uploadFailed` if it fails."""
    data = await asyncio.to_thread(images.read, stored)
    await send_with_retries(
        "PUT", url, data, MIME_BY_EXTENSION[stored.extension], policy, retry,
        secret=secret, parameter="uploadEndpoint", code="uploadFailed",
    )


async def post_webhook(
    url: str, message: dict[str, Any], policy: OutboundPolicy, retry: RetryPolicy, *, secret: str
) -> bool:
    """POST one reply message (JSON) to `url`, signed with `secret`; whether it was accepted.
    Failures are logged."""
    try:
        await send_with_retries(
            "POST", url, json.dumps(message).encode(), "application/json", policy, retry,
            secret=secret, parameter="webhookURL", code="webhookFailed",
        )
    except KilnError as error:
        log.warning("webhook delivery abandoned: %s", error.message)
        return False
    return True


class BackgroundTasks:
    """Coroutines that outlive the request that started them (async tasks, webhooks).

    Each is referenced until it ends, so it is never garbage-collected mid-run; an exception is
    logged, never lost silently.
    """

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._running.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._running)

    async def cancel_all(self) -> None:
        """Cancel every running coroutine and wait until each has handled its cancellation."""
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
