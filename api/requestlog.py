"""The request log: one line per request, with nothing of the patient in it.

uvicorn's and gunicorn's access logs print the request line, and with it the ids in the path and
the query string (``GET /fhir/Patient?identifier=194303050068``); both are off
(``patientkontrakt.logs.configure``, ``deploy/gunicorn.conf.py``). This log records the method,
the route's template with the resource type filled in, the status and the duration::

    GET /fhir/Patient/{id_} 200 2.4ms

never an id, a query string or a header. A client that left before its answer is logged with
status 499 (nginx's "client closed request"). It is on with ``PK_REQUEST_LOG=true``
(``patientkontrakt serve --request-log``).

Each request has an id (``patientkontrakt.logs.request_id``): the client's ``X-Request-ID`` if
it is a sane token, else a new one. It is echoed in the answer's ``X-Request-ID``, carried by
every log record written for the request (``REQUEST_ID``) and stored with its access-log entries.

The same wrapper counts every request for ``/metrics`` (``patientkontrakt/metrics.py``), by
method, route template and status, with its duration, whether the log is on or not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.asgi import HttpWrapper
from patientkontrakt import metrics
from patientkontrakt.fhir.service import RESOURCE_TYPES
from patientkontrakt.logs import REQUEST_ID, request_id

log = logging.getLogger("patientkontrakt.requests")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_TYPES = frozenset(RESOURCE_TYPES)
CLIENT_CLOSED = 499


def described(scope: Scope) -> str:
    """``METHOD /route/{template}`` of a request, safe to log: a method we do not serve is
    ``OTHER``, a path no route matched is ``(no route)``, and ``{type_}`` is filled in only with
    a resource type this server serves."""
    return f"{method_of(scope)} {route_of(scope)}"


def method_of(scope: Scope) -> str:
    method = scope.get("method")
    return method if method in _METHODS else "OTHER"


def route_of(scope: Scope) -> str:
    """The template of the route that serves (or, before routing, would serve) the request."""
    route, params = scope.get("route"), scope.get("path_params")
    if route is None and hasattr(scope.get("app"), "router"):
        for candidate in scope["app"].router.routes:
            match, child = candidate.matches(scope)
            if match == Match.FULL:
                route, params = candidate, child.get("path_params")
                break
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return "(no route)"
    type_ = (params or {}).get("type_")
    if type_ in _TYPES:
        path = path.replace("{type_}", type_)
    return path or "/"


class RequestLog(HttpWrapper):
    """ASGI wrapper around the whole application (``install``): counts every request, and logs it
    when ``logged``."""

    def __init__(self, app: ASGIApp, logged: bool = True) -> None:
        super().__init__(app)
        self.logged = logged

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 0
        left = False
        offered = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
        rid = request_id(offered.decode("latin-1") if offered is not None else None)
        current = REQUEST_ID.set(rid)

        async def receiving() -> Message:
            nonlocal left
            message = await receive()
            if message["type"] == "http.disconnect" and not status:
                left = True
            return message

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        finally:
            seconds = time.perf_counter() - started
            method, route, answered = method_of(scope), route_of(scope), CLIENT_CLOSED if left else status
            metrics.REQUESTS.labels(method, route, str(answered)).inc()
            metrics.REQUEST_SECONDS.labels(method, route).observe(seconds)
            app = scope.get("app")
            service = getattr(getattr(app, "state", None), "service", None)
            if service is not None:
                metrics.observe_pool(service.store.engine)
            if self.logged:
                log.info("%s %s %d %.1fms", method, route, answered, seconds * 1000)
            REQUEST_ID.reset(current)


def install(app: FastAPI, logged: bool) -> None:
    """Count every request of ``app`` for /metrics, errors included, and log it if ``logged``:
    around everything else, the outermost layer (after ``api.errors.install``)."""
    wrap(app, lambda inner: RequestLog(inner, logged))


def wrap(app: FastAPI, outer: Callable[[ASGIApp], Any]) -> None:
    """Put ``outer`` around ``app``'s whole middleware stack, outside Starlette's
    ``ServerErrorMiddleware`` (which ``add_middleware`` cannot reach)."""
    build = app.build_middleware_stack

    def build_wrapped() -> ASGIApp:
        wrapped: ASGIApp = outer(build())
        return wrapped

    app.build_middleware_stack = build_wrapped  # type: ignore[method-assign]
