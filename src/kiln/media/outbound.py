"""Every HTTP request Kiln makes to a URL a client gave: image inputs, `uploadEndpoint`,
`webhookURL`. Each URL is treated as hostile.

Guarantees: only http(s) with a port of 1-65535; each request connects to an address that was
resolved once and checked, never to a second resolution of the name (no DNS rebinding), while
the `Host` header and the TLS server name (SNI, certificate check) stay the URL's own; every
resolved address must be public (not private, loopback, link-local, multicast, reserved,
unspecified, 192.0.0.0/24, nor an IPv6 form embedding such an IPv4 address) unless the operator
allows private addresses; names resolve on a small thread pool of their own, within
`resolve_timeout_s`; proxy variables of the environment are ignored; redirects are followed by
hand, at most `MAX_REDIRECTS`, each target resolved, checked and pinned again; a response body is
read in chunks and abandoned as soon as it passes `max_bytes`; every request has a total time
limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from kiln.errors import InvalidRequestError, KilnError, PayloadTooLargeError

MAX_REDIRECTS = 5

# getaddrinfo cannot be cancelled: a hung resolver holds a thread until the system gives up, so
# resolution gets threads of its own and cannot starve the default pool that image work uses.
_RESOLVER_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kiln-resolve")

_IETF_PROTOCOL_ASSIGNMENTS = ipaddress.ip_network("192.0.0.0/24")  # IETF protocol assignments
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the last 32 bits are IPv4
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215)
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d (RFC 4291)


@dataclass(frozen=True)
class OutboundPolicy:
    """The rules of one kind of outbound request.

    `transport` carries a request once its address is pinned: None for real connections, an
    `httpx.MockTransport` in tests (it sees the pinned URL, the `Host` header and `sni_hostname`).
    `proxy` (the operator's `KILN_OUTBOUND_PROXY`): requests go through it, after the name was
    checked here; the proxy resolves the name again, so it must refuse private addresses too.
    """

    allow_private: bool = False
    timeout_s: float = 15.0
    max_bytes: int = 20 * 1024 * 1024
    resolve_timeout_s: float = 5.0
    proxy: str | None = None
    transport: httpx.AsyncBaseTransport | None = field(default=None, compare=False)


class BlockedURLError(InvalidRequestError):
    """A URL whose scheme, port or address is not allowed."""


def is_public_address(address: str) -> bool:
    """Whether `address` (IPv4 or IPv6) may be reached when private addresses are not allowed.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16) are
    judged by that IPv4 address; IPv4-compatible ::a.b.c.d and local-use NAT64 are refused.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _IPV4_COMPATIBLE or ip in _NAT64_LOCAL:
            return False
        embedded = ip.ipv4_mapped or ip.sixtofour
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    if isinstance(ip, ipaddress.IPv4Address) and ip in _IETF_PROTOCOL_ASSIGNMENTS:
        return False
    return ip.is_global and not ip.is_multicast


def _split(url: str, *, parameter: str, code: str) -> SplitResult:
    """`url` split, or `BlockedURLError` unless it is http(s) with a host and a valid port."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlockedURLError(
            f"'{parameter}' must be an http(s) URL, got {url[:100]!r}.", code=code, parameter=parameter
        )
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise BlockedURLError(
            f"'{parameter}' has an invalid port ({parts.netloc[:100]!r}); a port is 1-65535.",
            code=code, parameter=parameter,
        )
    return parts


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))  # unique, in resolver order


async def resolve_checked(
    host: str, port: int, policy: OutboundPolicy, *, parameter: str, code: str
) -> list[str]:
    """The addresses of `host`, resolved once; each is public unless `policy` allows private.

    Raises `BlockedURLError` for a name that does not resolve or any refused address, and
    `httpx.ConnectTimeout` when resolution takes longer than `policy.resolve_timeout_s`.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(policy.resolve_timeout_s):
            addresses = await loop.run_in_executor(_RESOLVER_POOL, _getaddrinfo, host, port)
    except TimeoutError:
        raise httpx.ConnectTimeout(
            f"resolving {host} took longer than {policy.resolve_timeout_s:g} s"
        ) from None
    except (OSError, UnicodeError):
        addresses = []
    if not addresses:
        raise BlockedURLError(
            f"The host of '{parameter}' ({host}) does not resolve.", code=code, parameter=parameter
        )
    if not policy.allow_private and not all(is_public_address(a) for a in addresses):
        raise BlockedURLError(
            f"'{parameter}' points to a private, loopback or link-local address "
            f"({host}); only public addresses are allowed.",
            code=code,
            parameter=parameter,
        )
    return addresses


async def check_url(url: str, policy: OutboundPolicy, *, parameter: str, code: str) -> None:
    """Raise `BlockedURLError` (with `code`, naming `parameter`) if `url` may not be reached.

    An early answer for a client; the connection itself is guarded again by `PinnedTransport`.
    """
    parts = _split(url, parameter=parameter, code=code)
    if not policy.allow_private:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await resolve_checked(parts.hostname or "", port, policy, parameter=parameter, code=code)


class PinnedTransport(httpx.AsyncBaseTransport):
    """Resolves and checks the host of each request, then connects to a checked address.

    The request keeps its `Host` header and TLS server name, so virtual hosts and certificate
    checks see the original name. Addresses are tried in the resolver's order; a connection
    is never reused for another request (it was verified for one name only).
    """

    def __init__(self, policy: OutboundPolicy, *, parameter: str, code: str) -> None:
        self._policy = policy
        self._parameter = parameter
        self._code = code
        self._inner = policy.transport or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_keepalive_connections=0), proxy=policy.proxy
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await resolve_checked(
            host.strip("[]"), port, self._policy, parameter=self._parameter, code=self._code
        )
        if self._policy.proxy:  # the proxy connects by name: the checked request goes as is
            return await self._inner.handle_async_request(request)
        for address in addresses[:-1]:
            try:
                return await self._send(request, address, host)
            except httpx.ConnectError:
                continue
        return await self._send(request, addresses[-1], host)

    async def _send(self, request: httpx.Request, address: str, host: str) -> httpx.Response:
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,  # holds Host: the original name
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": host},
        )
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _client(policy: OutboundPolicy, *, parameter: str, code: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=PinnedTransport(policy, parameter=parameter, code=code),
        follow_redirects=False,
        timeout=policy.timeout_s,
        trust_env=False,  # a proxy would resolve the name again, out of reach of the check
    )


async def fetch(url: str, policy: OutboundPolicy, *, parameter: str, code: str) -> bytes:
    """GET `url` under `policy`; the body, or a typed error naming `parameter`."""
    try:
        async with asyncio.timeout(policy.timeout_s):
            async with _client(policy, parameter=parameter, code=code) as client:
                for _ in range(MAX_REDIRECTS + 1):
                    _split(url, parameter=parameter, code=code)
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
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
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
    _split(url, parameter=parameter, code=code)
    async with asyncio.timeout(policy.timeout_s):
        async with _client(policy, parameter=parameter, code=code) as client:
            try:
                response = await client.request(method, url, content=content, headers=headers)
            except httpx.InvalidURL:
                raise BlockedURLError(
                    f"'{parameter}' is not a valid URL.", code=code, parameter=parameter
                ) from None
            await response.aread()
            return response
