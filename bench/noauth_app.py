"""The service without authentication, access rules or access log: the benchmark's reference
for what those cost on a read (``make bench`` reports auth + audit against it).

Every request runs as the service itself (``INTERNAL``: no scopes checked, no restriction, not
logged). This module is part of the benchmark only: the service has no setting that turns
security off, and this app is started by ``bench.servers`` alone.

    PK_DATABASE_URL=... python -m bench.noauth_app --port 8002
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.app import create_app as create_service
from bench.serving import serve, server_arguments
from patientkontrakt.fhir.access import INTERNAL, Access


class _Everyone:
    """Stands in for the Authenticator: every request, with or without a token, is INTERNAL."""

    def access(self, authorization: str | None) -> Access:
        return INTERNAL


def create_app() -> FastAPI:
    app = create_service()
    service_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        async with service_lifespan(application):
            application.state.authenticator = _Everyone()
            yield

    app.router.lifespan_context = lifespan
    return app


def main() -> None:
    args = server_arguments(__doc__.splitlines()[0], port=8002).parse_args()
    serve("bench.noauth_app:create_app", args, log_level=os.environ.get("PK_LOG_LEVEL", "warning"))


if __name__ == "__main__":
    main()
