"""The ASGI transports: REST, WebSocket, media downloads and health."""

from kiln.server.app import create_app

__all__ = ["create_app"]
