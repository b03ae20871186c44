"""Every HTTP request Kiln makes to a URL a client gave: image inputs, `uploadEndpoint`,
`webhookURL`. Each URL is treated as hostile.

Guarantees: only http(s); the host's every resolved address must be public (not private,
loopback, link-local, multicast, reserved or unspecified) unless the operator allows private
addresses; redirects are followed by hand, at most `MAX_REDIRECTS`, each target checked again;
a response body is read in chunks and abandoned as soon as it passes `max_bytes`; every request
has a total time limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from kiln.errors import InvalidRequestError, KilnError, PayloadTooLargeError

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class OutboundPolicy:
    allow_private: bool = False
    timeout_s: float = 15.0
    max_bytes: int = 20 * 1024 * 1024


class BlockedURLError(InvalidRequestError):
    """A URL whose scheme or address is not allowed."""


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_url(url: str, policy: OutboundPolicy, *, parameter: str, code: str) -> None:
    """Raise `BlockedURLError` (with `code`, naming `parameter`) if `url` may not be reached."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlockedURLError(
            f"'{parameter}' must be an http(s) URL, got {url[:100]!r}.", code=code, parameter=parameter
        )
    if policy.allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
            type=socket.SOCK_STREAM,
        )
    except OSError:
        raise BlockedURLError(
            f"The host of '{parameter}' ({parts.hostname}) does not resolve.", code=code, parameter=parameter
        ) from None
    if not infos or not all(_is_public(str(info[4][0])) for info in infos):
        raise BlockedURLError(
            f"'{parameter}' points to a private, loopback or link-local address "
            f"({parts.hostname}); only public addresses are allowed.",
            code=code,
            parameter=parameter,
        )


async def fetch(url: str, policy: OutboundPolicy, *, parameter: str, code: str) -> bytes:
    """GET `url` under `policy`; the body, or a typed error naming `parameter`."""
    try:
        async with asyncio.timeout(policy.timeout_s):
            async with httpx.AsyncClient(follow_redirects=False, timeout=policy.timeout_s) as client:
                for _ in range(MAX_REDIRECTS + 1):
                    await check_url(url, policy, parameter=parameter, code=code)
                    async with client.stream("GET", url) as response:
                        if response.is_redirect and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            continue
                        if response.status_code != 200:
                            raise InvalidRequestError(
                                f"Fetching '{parameter}' failed: HTTP {response.status_code}.",
                                code=code, parameter=parameter,
                            )
                        return await _read_limited(response, policy.max_bytes, parameter)
                raise InvalidRequestError(
                    f"Fetching '{parameter}' took more than {MAX_REDIRECTS} redirects.",
                    code=code, parameter=parameter,
                )
    except KilnError:
        raise
    except TimeoutError:
        raise InvalidRequestError(
            f"Fetching '{parameter}' took longer than {policy.timeout_s:g} s.", code=code, parameter=parameter
        ) from None
    except httpx.HTTPError as exc:
        raise InvalidRequestError(
            f"Fetching '{parameter}' failed: {type(exc).__name__}.", code=code, parameter=parameter
        ) from None


async def _read_limited(response: httpx.Response, max_bytes: int, parameter: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(parameter, max_bytes)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(parameter, max_bytes)
    return bytes(body)


def _too_large(parameter: str, max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"'{parameter}' is larger than {max_bytes // (1024 * 1024)} MB.",
        code=f"invalid{parameter[:1].upper()}{parameter[1:]}", parameter=parameter,
    )


async def send(
    method: str,
    url: str,
    policy: OutboundPolicy,
    *,
    content: bytes,
    headers: dict[str, str],
    parameter: str,
    code: str,
) -> httpx.Response:
    """Send `content` to `url` (PUT or POST) under `policy`, without following redirects.

    Raises the typed error for a blocked URL; transport failures raise `httpx.HTTPError` or
    `TimeoutError` so callers can retry them.
    """
    await check_url(url, policy, parameter=parameter, code=code)
    async with asyncio.timeout(policy.timeout_s):
        async with httpx.AsyncClient(follow_redirects=False, timeout=policy.timeout_s) as client:
            response = await client.request(method, url, content=content, headers=headers)
            await response.aread()
            return response
