"""Every FHIR endpoint requires a valid access token, checked in one place.

``RequireToken`` is ASGI middleware in front of the whole app: a request under ``/fhir``
(except the CapabilityStatement, the SMART discovery document and the conformance resources,
``is_public``) gets a 401
OperationOutcome with ``WWW-Authenticate`` unless its bearer token verifies and is not revoked
(the revocation list is reloaded first when it is due); otherwise the
``Access`` built from the token is put on the request, and the routes hand it to the core. A
route added later cannot forget authentication, and the core cannot be called without an
``Access``. Refused requests are written to the access log.
"""

from __future__ import annotations

import logging

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import outcome_response
from api.requestlog import described
from patientkontrakt.fhir.access import Access, Principal
from patientkontrakt.fhir.conformance import CONFORMANCE_TYPES
from patientkontrakt.fhir.errors import FhirError
from patientkontrakt.security.authenticate import Authenticator
from patientkontrakt.storage.errors import DatabaseUnavailable
from patientkontrakt.storage.replica import LSN_HEADER, SESSION, ReadSession, format_lsn, parse_lsn

log = logging.getLogger("patientkontrakt.api")
_LSN_HEADER = LSN_HEADER.lower().encode()
PUBLIC = frozenset({"/fhir/metadata", "/fhir/.well-known/smart-configuration"})  # for GET and HEAD


def is_public(method: str, path: str) -> bool:
    """The CapabilityStatement, the SMART discovery document, and reading and searching the
    conformance resources the CapabilityStatement names (docs/security.md, "Conformance resources")."""
    if method in ("GET", "HEAD"):
        if path in PUBLIC:
            return True
        parts = path.split("/")  # "", "fhir", type[, id]
        return len(parts) in (3, 4) and parts[2] in CONFORMANCE_TYPES
    parts = path.split("/")
    return method == "POST" and len(parts) == 4 and parts[2] in CONFORMANCE_TYPES and parts[3] == "_search"


class Anonymous:
    """The caller of a request without a valid token, as the access log records it."""

    principal = Principal(kind="anonymous", id="anonymous", purpose="TREAT")
    logged = True


class RequireToken:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        public = is_public(scope.get("method", ""), path)
        if scope["type"] == "http" and (path == "/fhir" or path.startswith("/fhir/")) and not public:
            state = scope["app"].state
            authenticator: Authenticator = state.authenticator
            header = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    header = value.decode("latin-1")
                    break
            try:
                if header is not None:
                    await state.revocations.refresh_if_due()
                access = authenticator.access(header)
            except FhirError as error:
                try:
                    await state.audit.refused(Anonymous(), "request",  # type: ignore[arg-type]
                                              f"{scope['method']} {path}", error.status)
                except (FhirError, DatabaseUnavailable):
                    log.error("a refused request could not be written to the access log: %s", described(scope))
                await outcome_response(error)(scope, receive, send)
                return
            scope.setdefault("state", {})["access"] = access
            await self._with_session(access, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _with_session(self, access: Access, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request in its caller's read session (storage/replica.py): the position the client
        sent back in ``X-PK-LSN``; if the request writes, the position after its commit goes back in
        ``X-PK-LSN`` (only with a replica configured)."""
        sent = None
        for name, value in scope["headers"]:
            if name == _LSN_HEADER:
                sent = parse_lsn(value.decode("latin-1"))
                break
        who = access.principal
        session = ReadSession(client=(who.kind, who.id, who.client_id), after=sent)

        async def send_with_position(message: Message) -> None:
            if message["type"] == "http.response.start" and session.written is not None:
                headers = [*message.get("headers", ()), (_LSN_HEADER, format_lsn(session.written).encode())]
                message = {**message, "headers": headers}
            await send(message)

        token = SESSION.set(session)
        try:
            await self.app(scope, receive, send_with_position)
        finally:
            SESSION.reset(token)


def caller_of(request: Request) -> Access:
    """The caller of a FHIR request (set by ``RequireToken``)."""
    access: Access = request.state.access
    return access
