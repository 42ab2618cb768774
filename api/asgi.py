"""The base of the service's own ASGI wrappers (security headers, body limits, request log)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HttpWrapper:
    """An ASGI wrapper around ``app`` for HTTP requests (``handle``); anything else (lifespan,
    websockets) passes through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
