"""Request body size limit as pure ASGI middleware: 413 before the body is buffered."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import outcome_response
from patientkontrakt.fhir.errors import BadRequest, PayloadTooLarge


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await outcome_response(BadRequest("Content-Length is not a number"))(scope, receive, send)
                    return
                if int(value) > self.max_bytes:
                    await self._too_large()(scope, receive, send)
                    return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error()
            return message

        await self.app(scope, limited, send)

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body is larger than {self.max_bytes} bytes",
                               details_sv="Innehållet är för stort.")

    def _too_large(self):  # type: ignore[no-untyped-def]
        return outcome_response(self._error())
