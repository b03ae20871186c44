"""Kiln behind a real uvicorn: what only a real server can show (frame sizes, plain clients)."""

from __future__ import annotations

import asyncio
import json

import websockets

from tests.conftest import API_KEY


def test_websocket_frames_of_64_mb_are_accepted(ws_url):
    padding = "x" * (64 * 1024 * 1024)

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
