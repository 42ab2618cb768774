"""The one place where errors become OperationOutcome responses (design §2)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

from patientkontrakt.fhir.errors import (
    BadRequest,
    FhirError,
    MethodNotAllowed,
    NotFound,
    ServerError,
)
from patientkontrakt.fhir.limits import LimitExceeded
from patientkontrakt.fhir.rendering import dumps
from patientkontrakt.storage.database import StatementTimeout

FHIR_JSON = "application/fhir+json; charset=utf-8"
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
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


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return outcome_response(ServerError("Internal error; it has been logged", details_sv="Ett internt fel uppstod."))


async def statement_timeout(request: Request, exc: Exception) -> Response:
    """A statement the database cancelled at ``PK_STATEMENT_TIMEOUT``: 400 ``too-costly``, not a
    server error, so that no client or proxy repeats it on its own (docs/security.md, "Limits")."""
    assert isinstance(exc, StatementTimeout)
    seconds = request.app.state.settings.statement_timeout
    seconds_sv = f"{seconds:g}".replace(".", ",")
    log.warning("a statement ran longer than PK_STATEMENT_TIMEOUT (%g s) on %s %s and was cancelled",
                seconds, request.method, request.url.path)
    return outcome_response(LimitExceeded(
        f"The database cancelled a statement that ran longer than {seconds:g} s (limit PK_STATEMENT_TIMEOUT); "
        "nothing was changed. Ask for less (more selective criteria, a smaller _count, _total=none) or try "
        "again later",
        details_sv=f"Begäran tog för lång tid (högst {seconds_sv} s) och avbröts; inget ändrades. Begränsa "
                   "sökningen eller försök igen senare."))


def install(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(StatementTimeout, statement_timeout)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
