"""What R4 http.html and RFC 9110 ask of every URL, done once around the routes (docs/api.md,
"The HTTP surface"):

* ``FhirTrailingSlash``: ``/fhir/`` is the base and ``/fhir/Patient/`` the type, served as such
  rather than redirected (a client that does not follow redirects, httpx's default, would lose
  its transaction to a 307). Other paths keep Starlette's redirect.
* ``HeadAsGet``: ``HEAD`` is the ``GET`` of the same URL without its body (RFC 9110 §9.3.2): the
  same status and headers (``Content-Length`` and ``ETag`` included), and, the ``GET`` being what
  runs, the same access rules and the same entry in the access log.
* ``JsonMediaType``: a client that asked for ``application/json`` (``Accept``, or ``_format``)
  gets it named in ``Content-Type``; ``application/fhir+json`` stays the default.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import Message, Receive, Scope, Send

from api.asgi import HttpWrapper

_FHIR_JSON = b"application/fhir+json"
_PLAIN_JSON = b"application/json; charset=utf-8"
_FHIR_TYPES = frozenset({"application/fhir+json", "application/json+fhir"})
_ROUTING = ("route", "path_params", "endpoint")  # what routing adds to a scope


class FhirTrailingSlash(HttpWrapper):
    """One trailing slash under ``/fhir`` is dropped before routing (FHIR ids have no ``/``, so
    nothing else could be meant). The scope is changed in place, so the request log names the
    route that served it."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path.endswith("/") and (path == "/fhir/" or path.startswith("/fhir/")) and not path.endswith("//"):
            scope["path"] = path[:-1]
            raw: bytes | None = scope.get("raw_path")
            if raw is not None and raw.endswith(b"/"):
                scope["raw_path"] = raw[:-1]
        await self.app(scope, receive, send)


class HeadAsGet(HttpWrapper):
    """``HEAD`` runs as ``GET``; the body is dropped on its way out. The server's own scope keeps
    ``HEAD`` (uvicorn then expects no body), the application gets a copy that says ``GET``; the
    route found for it is copied back, for the request log (api/requestlog.py)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, headers_only)
        finally:
            for key in _ROUTING:
                if key in as_get:
                    scope[key] = as_get[key]


def wants_plain_json(query_string: bytes, accept: str | None) -> bool:
    """Whether the client asked for ``application/json`` rather than ``application/fhir+json``:
    ``_format`` decides if given (``json`` or ``application/json``), else ``Accept`` with its
    q-values; a tie, or a wildcard, is the default ``application/fhir+json``."""
    if b"_format" in query_string:
        formats = [value for name, value in parse_qsl(query_string.decode("latin-1")) if name == "_format"]
        if formats:  # the last, as the routes read it (api/fhir.py _negotiate)
            return formats[-1].split(";")[0].strip().lower() in ("json", "application/json")
    if not accept or "application/json" not in accept.lower():
        return False
    best_plain, best_fhir = -1.0, -1.0
    for part in accept.lower().split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        if kind == "application/json":
            best_plain = max(best_plain, q)
        elif kind in _FHIR_TYPES:
            best_fhir = max(best_fhir, q)
    return best_plain > best_fhir


class JsonMediaType(HttpWrapper):
    """Under ``/fhir``: ``Content-Type: application/fhir+json`` becomes ``application/json``
    when that is what the client asked for (``wants_plain_json``); the body is the same."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if not (path == "/fhir" or path.startswith("/fhir/")):
            await self.app(scope, receive, send)
            return
        accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), None)
        if not wants_plain_json(scope.get("query_string", b""), accept):
            await self.app(scope, receive, send)
            return

        async def plain(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(k, _PLAIN_JSON if k == b"content-type" and v.startswith(_FHIR_JSON) else v)
                                      for k, v in message.get("headers", ())]
            await send(message)

        await self.app(scope, receive, plain)
