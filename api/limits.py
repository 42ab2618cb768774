"""How much of a request the server waits for, and how long (docs/security.md, "Limits").

* ``BodyLimits`` (ASGI middleware): a body larger than ``PK_MAX_BODY_BYTES`` is 413 before it is
  buffered; a body not received within ``PK_BODY_TIMEOUT`` seconds of the request's start (its
  headers complete) is 408, and the connection is closed.
* ``HeaderTimeoutProtocol`` (uvicorn's HTTP/1.1 protocol): a request whose headers are not
  complete ``PK_HEADER_TIMEOUT`` seconds after its first byte is answered 408 and its connection
  closed; a connection that sends nothing at all for that long is closed. uvicorn itself only
  times out idle keep-alive connections (``timeout_keep_alive``): one byte a second held a
  connection for as long as the client liked. ``patientkontrakt serve`` and the gunicorn workers
  (``deploy/gunicorn.conf.py``) run with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.asgi import HttpWrapper
from api.errors import FHIR_JSON, outcome_response
from patientkontrakt.config import get_settings
from patientkontrakt.fhir.errors import BadRequest, FhirError, PayloadTooLarge
from patientkontrakt.fhir.rendering import dumps

log = logging.getLogger("patientkontrakt.api")


class RequestTimeout(FhirError):
    """The client did not send its request in time (RFC 9110 §15.5.9): 408, and the server closes
    the connection."""

    status = 408
    code = "timeout"
    default_sv = "Begäran kom inte fram i tid."


def request_timeout(part: str, seconds: float, setting: str) -> RequestTimeout:
    seconds_sv = f"{seconds:g}".replace(".", ",")
    part_sv = {"headers": "huvudet", "body": "innehållet"}[part]
    return RequestTimeout(
        f"The request's {part} did not arrive within {seconds:g} s (limit {setting}); the connection is closed",
        details_sv=f"Begärans {part_sv} kom inte fram i tid (högst {seconds_sv} s).",
        headers={"Connection": "close"})


class _BodyTimedOut(Exception):
    """Raised into the application when the body is late; ``BodyLimits`` answers it."""


class BodyLimits(HttpWrapper):
    """The request body: at most ``max_bytes`` (413), within ``timeout`` seconds of the request's
    start (408, connection closed). A request without a body, or whose body is read, pays nothing
    but a clock reading."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await outcome_response(BadRequest("Content-Length is not a number"))(scope, receive, send)
                    return
                if int(value) > self.max_bytes:
                    await outcome_response(self._too_large())(scope, receive, send)
                    return
        deadline = time.monotonic() + self.timeout
        received = 0
        more = True

        async def limited() -> Message:
            nonlocal received, more
            if not more:
                return await receive()  # the body is in: only a disconnect can come
            try:
                with anyio.fail_after(deadline - time.monotonic()):
                    message = await receive()
            except TimeoutError:
                raise _BodyTimedOut from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
                more = message.get("more_body", False)
            else:
                more = False
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTimedOut:
            log.info("a request body did not arrive within PK_BODY_TIMEOUT (%g s): 408", self.timeout)
            try:
                await outcome_response(request_timeout("body", self.timeout, "PK_BODY_TIMEOUT"))(scope, receive, send)
            except RuntimeError:
                pass  # the application had begun its response: the server closes the connection

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body is larger than {self.max_bytes} bytes",
                               details_sv="Innehållet är för stort.")


class _HeaderTimeout:
    """Mixin for uvicorn's HTTP/1.1 protocols: the headers of each request must be complete
    ``PK_HEADER_TIMEOUT`` seconds after its first byte (after the connection opens, for the first
    request). Between requests uvicorn's keep-alive timeout applies, as before."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._header_timeout = get_settings().header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._timed_cycle: Any = None
        self._started = False  # has the request being timed sent any byte
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()
        self._started = True
        super().data_received(data)  # type: ignore[misc]
        if self._header_timer is not None and self.cycle is not self._timed_cycle:
            self._disarm()  # the headers are complete: the request has its cycle

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._timed_cycle = self.cycle
        self._started = False
        self._header_timer = self.loop.call_later(self._header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._started:
            log.info("request headers did not arrive within PK_HEADER_TIMEOUT (%g s): 408", self._header_timeout)
            error = request_timeout("headers", self._header_timeout, "PK_HEADER_TIMEOUT")
            body = dumps(error.outcome())
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: " + FHIR_JSON.encode()
                + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        self.transport.close()


class HttpToolsHeaderTimeout(_HeaderTimeout, HttpToolsProtocol):
    pass


class H11HeaderTimeout(_HeaderTimeout, H11Protocol):
    pass


# What uvicorn's ``http="auto"`` would choose (httptools comes with uvicorn[standard]), with the
# header timeout; ``patientkontrakt serve`` and deploy/gunicorn.conf.py name it.
HeaderTimeoutProtocol: type[asyncio.Protocol] = HttpToolsHeaderTimeout
