"""The `authentication` task, shared by both transports (PROTOCOL.md section 3)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from kiln.errors import AuthenticationError
from kiln.keys import KeyStore, Principal
from kiln.protocol.envelope import TaskHeader

AUTH_HEADER = TaskHeader("authentication", None)


async def authenticate_task(keys: KeyStore, task: dict[str, Any]) -> tuple[Principal, dict[str, Any]]:
    """Check the `apiKey` of an authentication task (on a worker thread: it may read the
    database); return the principal and the reply item.

    The reply item carries `connectionSessionUUID` and no `taskUUID` (the JS SDK matches the
    auth reply by `taskType` only when `taskUUID` is absent).
    """
    api_key = task.get("apiKey")
    if not api_key:
        raise AuthenticationError(
            "The authentication task has no 'apiKey'.", code="missingApiKey", parameter="apiKey"
        )
    principal = await asyncio.to_thread(keys.authenticate, api_key)
    if principal is None:
        raise invalid_key()
    session = task.get("connectionSessionUUID")
    return principal, {
        "taskType": "authentication",
        "connectionSessionUUID": session if isinstance(session, str) and session else str(uuid.uuid4()),
    }


def invalid_key() -> AuthenticationError:
    return AuthenticationError(
        "Invalid API key. Ask this server's operator for one (`kiln keys create`).",
        code="invalidApiKey",
        parameter="apiKey",
    )


def missing_key() -> AuthenticationError:
    return AuthenticationError(
        "Authenticate first: send [{\"taskType\": \"authentication\", \"apiKey\": \"...\"}] "
        "(WebSocket), or an 'Authorization: Bearer <key>' header (REST).",
        code="missingApiKey",
        parameter="apiKey",
    )
