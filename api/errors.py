"""The one place where errors become responses (design §2), and the one place that logs them.

* ``FhirError`` → an OperationOutcome with its status.
* ``DatabaseUnavailable`` (the database is down, restarting, refusing connections) → 503 with
  ``Retry-After`` (``PK_RETRY_AFTER``): an OperationOutcome (``transient``) under ``/fhir``, an
  OAuth error at the token endpoints, a page in Swedish (or English) everywhere else. Logged as
  one short line at most every ``OUTAGE_LOG_INTERVAL`` seconds, however many requests meet it.
* anything else → 500 OperationOutcome, logged once by ``_unexpected``, without patient data:
  the error's types and codes and where it was raised (``patientkontrakt.logs``), never its
  message, the statement or its parameters, in a few kilobytes at most.
* ``ClientDisconnect`` (the client left before its request was read) is not an error: an info
  line, no traceback.

Starlette's ``ServerErrorMiddleware`` calls ``_unexpected`` and then raises the error again so
that "servers can log it": uvicorn would log it a second time, with its full text ("Exception in
ASGI application"). ``Guard``, around the whole stack, ends it there.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from api.requestlog import described, wrap
from api.templating import render
from patientkontrakt.fhir.errors import (
    BadRequest,
    FhirError,
    MethodNotAllowed,
    NotFound,
    ServerError,
    ServiceUnavailable,
)
from patientkontrakt.fhir.limits import LimitExceeded
from patientkontrakt.fhir.rendering import dumps
from patientkontrakt.logs import describe, where
from patientkontrakt.storage.database import StatementTimeout
from patientkontrakt.storage.errors import DatabaseUnavailable

FHIR_JSON = "application/fhir+json; charset=utf-8"
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
# OAuth endpoints that answer a program (RFC 6749 §5.2 JSON errors), not a person's browser.
_OAUTH_API = frozenset({"/oauth/token", "/oauth/introspect", "/oauth/revoke", "/oauth/jwks"})
DEFAULT_RETRY_AFTER = 10
OUTAGE_LOG_INTERVAL = 10.0
_LOGGED = "patientkontrakt.error_logged"
log = logging.getLogger("patientkontrakt.api")


def outcome_response(error: FhirError) -> Response:
    return Response(
        content=dumps(error.outcome()),
        status_code=error.status,
        media_type=FHIR_JSON,
        headers=error.headers or None,
    )


async def _fhir_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return outcome_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: FhirError = NotFound(f"No such endpoint: {request.method} {request.url.path}",
                                    details_sv="Adressen finns inte.")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not supported on {request.url.path}",
                                 details_sv="Metoden stöds inte här.", headers={"Allow": _allowed(request)})
    else:
        body = dumps(BadRequest(str(exc.detail)).outcome())
        return Response(body, status_code=exc.status_code, media_type=FHIR_JSON)
    return outcome_response(error)


def _allowed(request: Request) -> str:
    """Every method some route serves at this path: a 405 carries ``Allow`` (RFC 9110 §15.5.6)."""
    routes = request.app.router.routes
    # HEAD is served wherever GET is (api/rest.py)
    return ", ".join(m for m in _METHODS
                     if any(r.matches({**request.scope, "method": "GET" if m == "HEAD" else m})[0] == Match.FULL
                            for r in routes))


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return outcome_response(BadRequest(f"Invalid request: {exc.errors()}"))


# -- the database is unavailable ----------------------------------------------------------------


class _OutageLog:
    """One warning line per interval while requests meet an outage, saying how many did."""

    def __init__(self) -> None:
        self._last = float("-inf")
        self._since = 0

    def met(self, scope: Scope, error: DatabaseUnavailable) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last < OUTAGE_LOG_INTERVAL:
            return
        log.warning("database unavailable, answering 503 (%d requests since the last such line; this one: %s): %s",
                    self._since, described(scope), error)
        self._last, self._since = now, 0


_outages = _OutageLog()


def unavailable_response(request: Request, error: DatabaseUnavailable) -> Response:
    """503 with ``Retry-After``, in the form the caller reads."""
    _outages.met(request.scope, error)
    settings = getattr(request.app.state, "settings", None)
    retry = str(getattr(settings, "retry_after", DEFAULT_RETRY_AFTER))
    headers = {"Retry-After": retry, "Cache-Control": "no-store"}
    path = request.url.path
    if path == "/fhir" or path.startswith("/fhir/"):
        if error.unknown_outcome:
            problem = ServiceUnavailable(
                "The connection to the database broke while the change was being committed: it may or may not "
                f"have been stored. Read it before trying again (in {retry} s or later).",
                details_sv="Kontakten med databasen bröts medan ändringen sparades; den kan ha sparats. "
                           "Kontrollera innan du försöker igen.", headers=headers)
        else:
            problem = ServiceUnavailable(f"The database is unavailable; try again in {retry} s",
                                         details_sv="Tjänsten kan inte nå sin databas just nu. Försök igen om en "
                                                    "stund.", headers=headers)
        return outcome_response(problem)
    if path in _OAUTH_API:
        return JSONResponse({"error": "temporarily_unavailable",
                             "error_description": f"the database is unavailable; try again in {retry} s"},
                            status_code=503, headers=headers)
    return render(request, "unavailable.html", {"unknown_outcome": error.unknown_outcome}, status_code=503,
                  headers=headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DatabaseUnavailable)
    return unavailable_response(request, exc)


# -- everything else ----------------------------------------------------------------------------


async def _unexpected(request: Request, exc: Exception) -> Response:
    """What no other handler took, from Starlette's ``ServerErrorMiddleware``."""
    request.scope[_LOGGED] = True
    if isinstance(exc, DatabaseUnavailable):  # met outside the routes (a middleware)
        return unavailable_response(request, exc)
    if isinstance(exc, ClientDisconnect):
        log.info("client disconnected before its request was read: %s", described(request.scope))
        return outcome_response(BadRequest("The request was not received whole"))
    log.error("unexpected error on %s: %s\n%s", described(request.scope), describe(exc), where(exc))
    return outcome_response(ServerError("Internal error; it has been logged", details_sv="Ett internt fel uppstod."))


class Guard:
    """Around the whole stack (outside ``ServerErrorMiddleware``): an error that has been answered
    and logged goes no further, so the server does not log it again, whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if scope["type"] != "http":
                raise
            if not scope.get(_LOGGED):  # the error handler itself failed
                log.error("error while answering %s: %s\n%s", described(scope), describe(exc), where(exc))


async def statement_timeout(request: Request, exc: Exception) -> Response:
    """A statement the database cancelled at ``PK_STATEMENT_TIMEOUT``: 400 ``too-costly``, not a
    server error, so that no client or proxy repeats it on its own (docs/security.md, "Limits")."""
    assert isinstance(exc, StatementTimeout)
    seconds = request.app.state.settings.statement_timeout
    seconds_sv = f"{seconds:g}".replace(".", ",")
    log.warning("a statement ran longer than PK_STATEMENT_TIMEOUT (%g s) on %s and was cancelled",
                seconds, described(request.scope))
    return outcome_response(LimitExceeded(
        f"The database cancelled a statement that ran longer than {seconds:g} s (limit PK_STATEMENT_TIMEOUT); "
        "nothing was changed. Ask for less (more selective criteria, a smaller _count, _total=none) or try "
        "again later",
        details_sv=f"Begäran tog för lång tid (högst {seconds_sv} s) och avbröts; inget ändrades. Begränsa "
                   "sökningen eller försök igen senare."))


def install(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(DatabaseUnavailable, _unavailable)
    app.add_exception_handler(StatementTimeout, statement_timeout)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    wrap(app, Guard)
