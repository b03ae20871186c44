"""The ASGI application: routes of the transports over one dispatcher."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from kiln import __version__
from kiln.errors import KilnError, NotFoundError
from kiln.media.encoding import MIME_BY_EXTENSION
from kiln.protocol.envelope import error_object
from kiln.server.playground import Playground
from kiln.server.readiness import Readiness
from kiln.server.rest import handle_rest
from kiln.server.websocket import WebSocketSession
from kiln.service import Dispatcher, Services

_MEDIA_NAME = re.compile(r"^([0-9a-f-]{36})\.(png|jpg|webp)$")
# the bytes under a media URL never change: caches may keep them for a year without asking again
_MEDIA_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}


def _no_such_image() -> Response:
    return JSONResponse({"errors": [{"code": "notFound", "message": "No such image."}]}, 404)


def create_app(services: Services, preload: Sequence[str] = ()) -> Starlette:
    """The Kiln ASGI app over `services` (closed when the app shuts down).

    On start the engine is built and the models of `preload` (AIRs) are loaded in the
    background; `GET /ready` answers 503 until both are done.
    """
    dispatcher = Dispatcher(services)
    readiness = Readiness(services, preload)
    playground = Playground()

    async def rest(request: Request) -> Response:
        return await handle_rest(request, dispatcher)

    async def websocket(ws: WebSocket) -> None:
        await WebSocketSession(ws, dispatcher).run()

    async def media(request: Request) -> Response:
        match = _MEDIA_NAME.match(request.path_params["name"])
        if match is None:
            return _no_such_image()
        try:  # the index row, then the blob from the folder or the bucket: any front serves any image
            stored = await asyncio.to_thread(services.images.get, match[1])
            if stored is None or stored.extension != match[2]:
                return _no_such_image()
            data = await asyncio.to_thread(services.images.read, stored)
        except NotFoundError:  # purged since the lookup
            return _no_such_image()
        except KilnError as error:  # the database or the store is unavailable
            return JSONResponse({"errors": [error_object(error)]}, error.status)
        return Response(data, media_type=MIME_BY_EXTENSION[stored.extension], headers=_MEDIA_HEADERS)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def ready(request: Request) -> Response:
        is_ready, body = await readiness.report()
        return JSONResponse(body, status_code=200 if is_ready else 503)

    async def metrics(request: Request) -> Response:
        body, content_type = dispatcher.metrics.exposition(services.executor.metrics.exposition())
        return Response(body, media_type=content_type)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        readiness.start()
        yield
        readiness.stop()
        await dispatcher.drain(services.settings.drain_s)
        services.close()

    return Starlette(
        routes=[
            Route("/v1", rest, methods=["POST"]),
            Route("/", rest, methods=["POST"]),
            Route("/", playground.page, methods=["GET"]),  # a plain GET; upgrades go to the WebSocket
            Route("/playground/{name}", playground.asset, methods=["GET"]),
            WebSocketRoute("/v1", websocket),
            WebSocketRoute("/", websocket),
            Route("/media/{name}", media, methods=["GET", "HEAD"]),
            Route("/health", health),
            Route("/ready", ready),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
