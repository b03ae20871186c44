"""The playground at `GET /`: a page that is a client of Kiln's own WebSocket task API.

Plain HTML, CSS and JavaScript served from the package (no build step, nothing fetched from
elsewhere). The form's limits are the protocol's own, rendered into the page when it is served.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from kiln.protocol import image_inference, preprocess
from kiln.protocol.validation import Limit

_HERE = Path(__file__).parent
_ASSETS = {
    "playground.css": "text/css; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
}
_FORM_LIMITS = {
    **{name: image_inference.LIMITS[name] for name in (
        "width", "height", "steps", "CFGScale", "scheduler", "seed", "numberResults", "strength",
    )},
    "controlNet[].weight": image_inference.LIMITS["controlNet[].weight"],
    "preProcessorType": preprocess.LIMITS["preProcessorType"],
}
# The page talks only to the server that served it; its scripts and styles are its own files.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; connect-src 'self' ws: wss:; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _describe(limit: Limit) -> dict[str, Any]:
    described = {"type": limit.type, "min": limit.min, "max": limit.max,
                 "step": limit.multiple_of, "allowed": limit.allowed}
    return {key: value for key, value in described.items() if value is not None}


def render_page() -> str:
    """index.html with `data-limits` holding each form field's limits as JSON."""
    limits = json.dumps({name: _describe(limit) for name, limit in _FORM_LIMITS.items()})
    return (_HERE / "index.html").read_text().replace("{{limits}}", html.escape(limits))


class Playground:
    """The page (rendered once) and its two asset files."""

    def __init__(self) -> None:
        self._page = render_page()

    async def page(self, request: Request) -> Response:
        return HTMLResponse(self._page, headers=_HEADERS)

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _ASSETS:
            return Response("Not found", status_code=404, media_type="text/plain")
        return FileResponse(_HERE / name, media_type=_ASSETS[name], headers=_HEADERS)
