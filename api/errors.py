"""The one place where errors become responses (design §2), and the one place that logs them.

* ``FhirError`` → an OperationOutcome with its status.
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

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from api.requestlog import described, wrap
from patientkontrakt.fhir.errors import (
    BadRequest,
    FhirError,
    MethodNotAllowed,
    NotFound,
    ServerError,
)
from patientkontrakt.fhir.rendering import dumps
from patientkontrakt.logs import describe, where

FHIR_JSON = "application/fhir+json; charset=utf-8"
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
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
    return ", ".join(m for m in _METHODS
                     if any(r.matches({**request.scope, "method": m})[0] == Match.FULL for r in routes))


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return outcome_response(BadRequest(f"Invalid request: {exc.errors()}"))


# -- everything else ----------------------------------------------------------------------------


async def _unexpected(request: Request, exc: Exception) -> Response:
    """What no other handler took, from Starlette's ``ServerErrorMiddleware``."""
    request.scope[_LOGGED] = True
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


def install(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    wrap(app, Guard)
