"""`GET /` serves the playground; `POST /` and WebSocket upgrades on `/` are the API as before."""

from __future__ import annotations

import html
import json
import re

from kiln.protocol.image_inference import LIMITS
from kiln.schedulers import ALL_SCHEDULER_NAMES
from tests.conftest import API_KEY


def rendered_limits(page: str) -> dict:
    (attribute,) = re.findall(r'data-limits="([^"]*)"', page)
    return json.loads(html.unescape(attribute))


def test_a_plain_get_serves_the_page_with_the_protocols_limits(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    limits = rendered_limits(response.text)
    width = LIMITS["width"]
    assert limits["width"] == {"type": "integer", "min": width.min, "max": width.max, "step": 64}
    assert limits["scheduler"]["allowed"] == list(ALL_SCHEDULER_NAMES)
    assert "canny" in limits["preProcessorType"]["allowed"]


def test_the_pages_assets_are_served_and_nothing_else(client):
    page = client.get("/").text
    for name, media_type in (("playground.js", "text/javascript"), ("playground.css", "text/css")):
        assert f'"playground/{name}"' in page
        response = client.get(f"/playground/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(media_type)
    assert client.get("/playground/index.html").status_code == 404
    assert client.get("/playground/..%2F__init__.py").status_code == 404


def test_post_and_websocket_on_the_root_are_still_the_api(client):
    response = client.post("/", json=[{"taskType": "ping", "ping": True}],
                           headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.json() == {"data": [{"taskType": "ping", "pong": True}]}
    with client.websocket_connect("/") as ws:
        ws.send_json([{"taskType": "authentication", "apiKey": API_KEY}])
        assert "connectionSessionUUID" in ws.receive_json()["data"][0]
