"""The SSRF guard of every client-given URL (`kiln.media.outbound`): each connection goes to
the address that was checked, redirects included; refused address forms; bad ports; proxies
of the environment ignored; name resolution with a time limit on its own threads.

Private addresses are disallowed here (the session's settings allow them for the other tests).
`dns` fakes the system resolver (`socket.getaddrinfo`), the boundary a rebinding attack uses.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from kiln.errors import KilnError
from kiln.media.outbound import OutboundPolicy, check_url, fetch, is_public_address, send
from tests.conftest import inference, post

PUBLIC = "93.184.216.34"
GUARDED = OutboundPolicy(allow_private=False, timeout_s=2.0)


class FakeDNS:
    """Answers for some names, in turn (the last one repeats); other names resolve for real."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[tuple[str, str]] = []  # (name, thread name)
        self.delay_s = 0.0

    def __call__(self, host: str | bytes, port: object, *args: object, **kwargs: object) -> list[object]:
        if isinstance(host, bytes):  # anyio (under httpx) passes the IDNA-encoded name
            host = host.decode("ascii")
        if host not in self.answers:
            return self.real(host, port, *args, **kwargs)  # type: ignore[operator]
        self.calls.append((host, threading.current_thread().name))
        time.sleep(self.delay_s)
        answers = self.answers[host]
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0)) if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@contextmanager
def canary() -> Iterator[tuple[int, list[str]]]:
    """A loopback server that records every request line it gets; yields (port, requests)."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            hits.append(f"{self.command} {self.path}")
            self.send_response(200)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"secret")

        do_GET = do_POST = do_PUT = _answer  # noqa: N815 (http.server's naming)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def refused(coroutine: object) -> KilnError:
    with pytest.raises(KilnError) as caught:
        asyncio.run(coroutine)  # type: ignore[arg-type]
    return caught.value


def test_a_name_that_rebinds_to_loopback_never_reaches_the_canary(dns):
    with canary() as (port, hits):
        dns.answers["rebind.test"] = [[PUBLIC], ["127.0.0.1"]]
        error = refused(fetch(f"http://rebind.test:{port}/x.png", GUARDED,
                              parameter="seedImage", code="invalidSeedImage"))
        assert error.code == "invalidSeedImage"
        dns.answers["rebind.test"] = [[PUBLIC], ["127.0.0.1"]]
        with pytest.raises((httpx.HTTPError, TimeoutError)):
            asyncio.run(send("POST", f"http://rebind.test:{port}/hook", GUARDED, content=b"{}",
                             headers={}, parameter="webhookURL", code="invalidWebhookURL"))
    assert hits == []
    assert [name for name, _ in dns.calls] == ["rebind.test", "rebind.test"]  # once per request


def pinning_transport(seen: list[httpx.Request]) -> httpx.MockTransport:
    """Redirects start.test to next.test, where the image is; records each pinned request."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers["host"] == "start.test":
            return httpx.Response(302, headers={"Location": "https://next.test/img.png"})
        return httpx.Response(200, content=b"image")

    return httpx.MockTransport(handle)


def test_each_redirect_is_resolved_checked_and_pinned_with_the_original_host_and_sni(dns):
    seen: list[httpx.Request] = []
    policy = OutboundPolicy(allow_private=False, transport=pinning_transport(seen))
    dns.answers["start.test"] = [[PUBLIC]]
    dns.answers["next.test"] = [["2606:2800:220:1:248:1893:25c8:1946"], ["127.0.0.1"]]
    body = asyncio.run(fetch("http://start.test/a", policy, parameter="seedImage", code="invalidSeedImage"))
    assert body == b"image"
    first, second = seen
    assert (first.url.host, first.headers["host"], first.extensions["sni_hostname"]) == (
        PUBLIC, "start.test", "start.test")
    assert str(second.url) == "https://[2606:2800:220:1:248:1893:25c8:1946]/img.png"
    assert (second.headers["host"], second.extensions["sni_hostname"]) == ("next.test", "next.test")


def test_a_redirect_to_a_private_address_is_refused_before_connecting(dns):
    seen: list[httpx.Request] = []
    policy = OutboundPolicy(allow_private=False, transport=pinning_transport(seen))
    dns.answers["start.test"] = [[PUBLIC]]
    dns.answers["next.test"] = [["169.254.169.254"]]
    error = refused(fetch("http://start.test/a", policy, parameter="seedImage", code="invalidSeedImage"))
    assert error.code == "invalidSeedImage" and "private" in error.message
    assert [r.headers["host"] for r in seen] == ["start.test"]


@pytest.mark.parametrize("host", [
    "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
    "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
    "[64:ff9b:1::a00:1]",  # local-use NAT64
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[2002:a00:1::1]",  # 6to4 of 10.0.0.1
    "[::127.0.0.1]",  # IPv4-compatible
    "[::8.8.8.8]",  # IPv4-compatible (deprecated, refused whatever it embeds)
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:10.1.2.3]",
    "192.0.0.8",
    "192.0.0.171",
    "127.0.0.1",
    "169.254.169.254",
])
def test_refused_address_forms(host):
    error = refused(check_url(f"http://{host}/", GUARDED, parameter="webhookURL", code="invalidWebhookURL"))
    assert (error.code, error.parameter) == ("invalidWebhookURL", "webhookURL")
    assert "private" in error.message


@pytest.mark.parametrize("address", ["8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111"])
def test_public_forms_are_allowed(address):
    assert is_public_address(address)


@pytest.mark.parametrize("url", ["http://example.com:99999/a.png", "http://example.com:0/a.png",
                                 "https://example.com:-1/", "http://example.com:http/"])
@pytest.mark.parametrize("allow_private", [False, True])
def test_a_bad_port_is_a_typed_error(url, allow_private):
    policy = OutboundPolicy(allow_private=allow_private)
    for call in (check_url, fetch):
        error = refused(call(url, policy, parameter="seedImage", code="invalidSeedImage"))
        assert (error.code, error.status) == ("invalidSeedImage", 400)
        assert "port" in error.message


def test_a_bad_port_over_rest_is_a_typed_400_not_an_internal_error(client):
    for field, code in (("seedImage", "invalidSeedImage"), ("webhookURL", "invalidWebhookURL"),
                        ("uploadEndpoint", "invalidUploadEndpoint")):
        response = post(client, [inference(**{field: "http://example.com:99999/x"})])
        assert response.status_code == 400, response.json()
        (error,) = response.json()["errors"]
        assert (error["code"], error["parameter"]) == (code, field)


def test_proxy_variables_of_the_environment_are_ignored(monkeypatch):
    with canary() as (proxy_port, proxy_hits), canary() as (port, hits):
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy_port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        body = asyncio.run(fetch(f"http://127.0.0.1:{port}/a.png", OutboundPolicy(allow_private=True),
                                 parameter="seedImage", code="invalidSeedImage"))
    assert body == b"secret"
    assert (proxy_hits, hits) == ([], ["GET /a.png"])


def test_the_operators_proxy_is_used_after_the_name_is_checked(dns):
    with canary() as (proxy_port, proxy_hits):
        policy = OutboundPolicy(allow_private=False, timeout_s=2.0,
                                proxy=f"http://127.0.0.1:{proxy_port}")
        dns.answers["public.test"] = [[PUBLIC]]
        body = asyncio.run(fetch("http://public.test/a.png", policy, parameter="seedImage",
                                 code="invalidSeedImage"))
        dns.answers["inside.test"] = [["10.0.0.7"]]
        error = refused(fetch("http://inside.test/a.png", policy, parameter="seedImage",
                              code="invalidSeedImage"))
    assert body == b"secret" and proxy_hits == ["GET http://public.test/a.png"]
    assert error.code == "invalidSeedImage"  # refused here: the proxy never saw it


def test_resolution_has_a_time_limit_and_threads_of_its_own(dns):
    dns.answers["slow.test"] = [[PUBLIC]]
    dns.delay_s = 1.5
    policy = OutboundPolicy(allow_private=False, resolve_timeout_s=0.2)
    started = time.monotonic()
    error = refused(fetch("http://slow.test/a.png", policy, parameter="seedImage", code="invalidSeedImage"))
    assert time.monotonic() - started < 1.0
    assert error.code == "invalidSeedImage"
    ((_, thread),) = dns.calls
    assert thread.startswith("kiln-resolve")
