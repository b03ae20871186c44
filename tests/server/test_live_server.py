"""Kiln behind a real uvicorn: what only a real server can show (frame sizes, plain clients)."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading

import websockets

from kiln.protocol.envelope import parse_body
from kiln.server import parsing
from tests.conftest import API_KEY


def test_websocket_frames_of_64_mb_are_accepted(ws_url):
    padding = ["x" * (16 * 1024 * 1024)] * 4  # one string may have at most 32 Mi characters

    async def exchange():
        async with websockets.connect(ws_url, max_size=None) as ws:
            await ws.send(json.dumps([{"taskType": "authentication", "apiKey": API_KEY}]))
            assert "data" in json.loads(await ws.recv())
            await ws.send(json.dumps([{"taskType": "ping", "ping": True, "padding": padding}]))
            return json.loads(await ws.recv())

    assert asyncio.run(exchange()) == {"data": [{"taskType": "ping", "pong": True}]}


def test_uncompressed_websocket_clients_work_like_the_js_sdk(ws_url):
    async def exchange():
        url = ws_url.removesuffix("/v1") + "/?sdk=js&version=1.3.2"
        async with websockets.connect(url, compression=None) as ws:
            await ws.send(json.dumps([{"apiKey": API_KEY, "taskType": "authentication"}]))
            return json.loads(await ws.recv())

    (item,) = asyncio.run(exchange())["data"]
    assert item["taskType"] == "authentication" and "taskUUID" not in item


def post_start(ws_url: str, headers: dict[str, str], start: bytes, length: int) -> tuple[int, dict]:
    """POST a body of `length` bytes of which only `start` is ever sent; the reply."""
    port = int(ws_url.rsplit(":", 1)[1].split("/")[0])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", "/v1")
        for name, value in {**headers, "Content-Length": str(length)}.items():
            connection.putheader(name, value)
        connection.endheaders(start)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_wrong_key_is_refused_before_the_body_arrives(ws_url):
    status, reply = post_start(ws_url, {"Authorization": "Bearer wrong"}, b"[", 32 * 1024 * 1024)
    assert (status, reply["errors"][0]["code"]) == (401, "invalidApiKey")


def test_without_a_header_a_large_body_is_refused_from_its_first_task(ws_url):
    start = b'[{"taskType": "imageInference", "positivePrompt": "' + b"x" * (128 * 1024)
    status, reply = post_start(ws_url, {}, start, 32 * 1024 * 1024)
    assert (status, reply["errors"][0]["code"]) == (401, "missingApiKey")


def test_a_large_frame_is_parsed_while_other_sockets_are_answered(ws_url, monkeypatch):
    release = threading.Event()

    def slow_parse(raw):
        if len(raw) > 100_000:
            assert release.wait(timeout=20), "the test never released the parse"
        return parse_body(raw)

    monkeypatch.setattr(parsing, "parse_body", slow_parse)
    ping = json.dumps([{"taskType": "ping", "ping": True}])
    authenticate = json.dumps([{"taskType": "authentication", "apiKey": API_KEY}])

    async def exchange():
        async with websockets.connect(ws_url, max_size=None) as big, websockets.connect(ws_url) as small:
            for ws in (big, small):
                await ws.send(authenticate)
                await ws.recv()
            await big.send(json.dumps([{"taskType": "ping", "ping": True, "padding": "x" * 200_000}]))
            await asyncio.sleep(0.2)
            await small.send(ping)
            try:  # answered while the big frame is still being parsed
                return json.loads(await asyncio.wait_for(small.recv(), timeout=10))
            finally:
                release.set()
                assert json.loads(await big.recv())["data"][0]["pong"] is True

    assert asyncio.run(exchange()) == {"data": [{"taskType": "ping", "pong": True}]}
