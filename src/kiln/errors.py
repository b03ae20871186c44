"""Every error Kiln reports, each carrying a Runware error code and the parameter it concerns.

Errors are raised where the fault is found and turned into a wire error object in one place
(`kiln.protocol.envelope.error_object`). `status` is the HTTP status a REST reply uses.
"""

from __future__ import annotations

from typing import Any


def echoed(value: Any, limit: int = 100) -> str:
    """`repr(value)` for an error message, cut to `limit` characters: a client's 30 MB value is
    never sent back whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class KilnError(Exception):
    """Base of all errors Kiln reports to clients."""

    code = "internalError"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        parameter: str | None = None,
        status: int | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.parameter = parameter
        self.details = {k: v for k, v in details.items() if v is not None}


class InvalidRequestError(KilnError, ValueError):
    """A task or parameter the client sent is malformed or out of range (400)."""

    code = "invalidRequest"
    status = 400


class UnsupportedError(KilnError):
    """A task type or parameter Kiln does not implement (400)."""

    code = "unsupportedParameter"
    status = 400


class AuthenticationError(KilnError, PermissionError):
    """The API key is missing or not valid (401)."""

    code = "invalidApiKey"
    status = 401


class NotFoundError(KilnError, LookupError):
    """A referenced model, image or task does not exist for this key (404)."""

    code = "notFound"
    status = 404


class ConflictError(KilnError):
    """A taskUUID was already used (409)."""

    code = "conflictTaskUUID"
    status = 409


class PayloadTooLargeError(KilnError):
    """A body or image exceeds a size limit (413)."""

    code = "payloadTooLarge"
    status = 413


class RateLimitError(KilnError):
    """A queue or per-key limit is full; retry later (429)."""

    code = "rateLimitExceeded"
    status = 429


class DeliveryError(KilnError):
    """An `uploadEndpoint` or `webhookURL` target did not accept a result (502)."""

    code = "uploadFailed"
    status = 502


class ModelLoadError(KilnError):
    """A catalogued model could not be loaded from its files (500)."""

    code = "modelUnavailable"
    status = 500


class InferenceError(KilnError, RuntimeError):
    """The engine failed while generating (500)."""

    code = "inferenceError"
    status = 500


class MediaUnavailableError(KilnError):
    """The image store (a folder or an S3 bucket) failed or cannot be reached; retry later (503)."""

    code = "mediaUnavailable"
    status = 503


class ServiceUnavailableError(KilnError):
    """A service Kiln depends on (its database) does not answer now; retry later (503)."""

    code = "serviceUnavailable"
    status = 503
