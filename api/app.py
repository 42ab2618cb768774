"""The FastAPI application."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from api import errors, fhir
from api.limits import BodySizeLimit
from patientkontrakt import __version__
from patientkontrakt.config import Settings, get_settings
from patientkontrakt.domain.codes import CANONICAL
from patientkontrakt.domain.overview import AgreementOverview
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.dates import format_instant, now_utc
from patientkontrakt.storage.database import create_engine, ensure_migrated
from patientkontrakt.storage.repository import Store

log = logging.getLogger("patientkontrakt.api")

_HOME = """<!doctype html>
<html lang="sv"><head><meta charset="utf-8"><title>Patientkontrakt</title></head>
<body><main>
<h1>Patientkontrakt</h1>
<p>FHIR R4-tjänst för patientkontrakt. / FHIR R4 service for the Swedish Patientkontrakt.</p>
<ul>
<li>FHIR-bas / FHIR base: <a href="{base}">{base}</a></li>
<li>CapabilityStatement: <a href="{base}/metadata">{base}/metadata</a></li>
</ul>
</main></body></html>
"""


def create_app(settings: Settings | None = None, *, domain_rules: bool = True) -> FastAPI:
    """The application. ``domain_rules=False`` gives the bare FHIR R4 engine (for its own tests)."""
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level.upper())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
        try:
            await ensure_migrated(engine)
        except Exception:
            await engine.dispose()
            raise
        store = Store(engine)
        service = build_service(settings, store, domain_rules=domain_rules)
        app.state.service = service
        app.state.bundles = BundleProcessor(service)
        if domain_rules:
            app.state.overview = AgreementOverview(store, service.base)
            operation = ("patientkontrakt", f"{CANONICAL}/OperationDefinition/patientkontrakt")
            app.state.operations = {"Patient": [operation], "CarePlan": [operation]}
        app.state.started = format_instant(now_utc())
        # The definitions and compiled profiles are a large, long-lived object graph: moved out of
        # the collector's reach, full collections no longer scan them and stop adding tens of
        # milliseconds to the slowest requests (docs/performance.md).
        gc.collect()
        gc.freeze()
        yield
        await store.dispose()

    app = FastAPI(
        title="Patientkontrakt",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    errors.install(app)
    app.include_router(fhir.router)

    @app.get("/", include_in_schema=False)
    async def home() -> HTMLResponse:
        return HTMLResponse(_HOME.format(base=settings.fhir_base))

    @app.get("/healthz", include_in_schema=False)
    async def health() -> Response:
        """Liveness and readiness: 200 when the database answers, else 503."""
        try:
            await app.state.service.store.ping()
        except (OSError, SQLAlchemyError) as exc:
            log.warning("health check failed: %s", exc)
            return Response('{"status":"database unavailable"}', status_code=503, media_type="application/json")
        return Response('{"status":"ok"}', media_type="application/json")

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
