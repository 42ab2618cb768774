"""The FastAPI application."""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError

from api import docs, errors, export, fhir, oauth, requestlog, tracing
from api.auth import RequireToken
from api.headers import SecurityHeaders
from api.limits import BodyLimits
from api.oidc import ExternalIdP
from api.pages import activity_changes, goal_changes, log_review, mitt, personal, plan_changes, unit
from api.rest import FhirTrailingSlash, HeadAsGet, JsonMediaType
from api.templating import LANGUAGE_COOKIE, LANGUAGES
from patientkontrakt import __version__, metrics
from patientkontrakt.audit.checkpoint import AuditKeys
from patientkontrakt.audit.events import AuditEvents
from patientkontrakt.audit.log import AuditLog
from patientkontrakt.audit.sealer import Sealer
from patientkontrakt.config import Settings, get_settings
from patientkontrakt.domain.codes import CANONICAL
from patientkontrakt.domain.overview import AgreementOverview
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.conformance import ConformanceResources
from patientkontrakt.fhir.dates import format_instant, now_utc
from patientkontrakt.fhir.export import run_forever
from patientkontrakt.health import Probe
from patientkontrakt.logs import configure as configure_logging
from patientkontrakt.logs import describe
from patientkontrakt.security.authenticate import Authenticator
from patientkontrakt.security.identity import Directory
from patientkontrakt.security.keys import SigningKeys
from patientkontrakt.security.oauth import AuthorizationServer
from patientkontrakt.security.revocation import Revocations
from patientkontrakt.security.rules import PATIENT_DATA, UNIT_OWN
from patientkontrakt.security.stored_access import bulk_export
from patientkontrakt.security.tokens import AccessTokens
from patientkontrakt.storage.engines import open_store
from patientkontrakt.storage.errors import DatabaseUnavailable
from patientkontrakt.storage.oauth import OAuthStore

log = logging.getLogger("patientkontrakt.api")
_frozen = False


def _freeze_once() -> None:
    """The imports, definitions and compiled profiles are a large, long-lived object graph: moved
    out of the collector's reach once the first app of the process has started, full collections
    no longer scan them and stop adding tens of milliseconds to the slowest requests
    (docs/performance.md). A server process starts one app. A process that starts apps one after
    another (the tests) freezes with the first only: frozen objects are never collected, so freezing
    each would keep every app, and unfreezing at each stop made each start's full collection
    scan the whole heap again (0.1-0.25 s, at some 840 app starts)."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


_HOME = """<!doctype html>
<html lang="sv"><head><meta charset="utf-8"><title>Patientkontrakt</title></head>
<body><main>
<h1>Patientkontrakt</h1>
<p>FHIR R4-tjänst för patientkontrakt. / FHIR R4 service for the Swedish Patientkontrakt.</p>
<ul>
<li>Personal / staff: <a href="/personal">/personal</a></li>
<li>Mitt patientkontrakt / patients: <a href="/mitt">/mitt</a></li>
<li>FHIR-bas / FHIR base: <a href="{base}">{base}</a> (SMART on FHIR:
<a href="{base}/.well-known/smart-configuration">{base}/.well-known/smart-configuration</a>)</li>
<li>CapabilityStatement: <a href="{base}/metadata">{base}/metadata</a></li>
</ul>
</main></body></html>
"""


def create_app(settings: Settings | None = None, *, domain_rules: bool = True,
               care_unit_rules: bool | None = None) -> FastAPI:
    """The application as deployed: the FHIR engine with the Patientkontrakt rules, SMART
    authorization with the care-unit and patient access rules, and the access log.

    For the tests of the layers underneath (not reachable from configuration):
    ``domain_rules=False`` gives the bare FHIR R4 engine, and ``care_unit_rules=False`` (the default
    without domain rules) checks tokens and scopes but no care units, so those tests can write
    resources of any unit. Every FHIR request still needs a valid token.
    """
    settings = settings or get_settings()
    care_unit_rules = domain_rules if care_unit_rules is None else care_unit_rules
    configure_logging(settings.log_level, settings.log_format)
    keys = SigningKeys.load(settings.signing_key, settings.previous_keys)
    traces = tracing.provider()  # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set (api/tracing.py)
    audit_keys = AuditKeys.load(settings.audit_log_origin, settings.audit_key, settings.previous_audit_keys)
    if settings.test_idp:
        log.warning("PK_TEST_IDP is on: anyone can sign in as any demo user. Never use it with real data.")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await open_store(settings, settings.db_pool_size)  # with the replica, if any
        audit = AuditLog(store)
        # The access log's sealer (every process runs one; one at a time seals), which also keeps
        # the monthly partitions ahead: first now, then every PK_AUDIT_SEAL_INTERVAL seconds.
        sealer = Sealer(store, audit_keys, settings.audit_checkpoint_file)
        if settings.audit_seal_interval > 0:
            sealing: asyncio.Task[None] | None = asyncio.create_task(sealer.run(settings.audit_seal_interval))
        else:
            sealing = None
            try:
                await sealer.maintain()
            except Exception as exc:  # the log still works without the partitions ahead (default partition)
                log.warning("access log: cannot check its partitions: %s", exc)
        service = build_service(settings, store, domain_rules=domain_rules, log=audit)
        tokens = AccessTokens(keys, settings.base_url.rstrip("/"), settings.fhir_base, settings.access_token_lifetime)
        revocations = Revocations(OAuthStore(store), settings.revocation_refresh_seconds)
        app.state.settings = settings
        app.state.audit_keys = audit_keys
        app.state.service = service
        app.state.audit = audit
        app.state.audit_events = AuditEvents(store, service.base, service.pipeline, service.limits,
                                             review_log=audit)
        app.state.bundles = BundleProcessor(service)
        # Bulk Data $export: every API process runs exports in the background (several may:
        # jobs are claimed in the database), unless PK_EXPORT_POLL_INTERVAL is 0.
        app.state.export = bulk_export(service)
        exporting = asyncio.create_task(run_forever(app.state.export, settings.export_poll_interval)) \
            if settings.export_poll_interval > 0 else None
        app.state.conformance = ConformanceResources.load(settings.profiles_dir, service.base, service.limits,
                                                          settings.default_page_size, settings.max_page_size)
        app.state.revocations = revocations
        app.state.authenticator = Authenticator(tokens, service.parser, service.search_engine.builder,
                                                care_unit_rules=care_unit_rules, revocations=revocations)
        app.state.oauth = AuthorizationServer(settings, keys, tokens, OAuthStore(store), Directory(service),
                                              revocations)
        app.state.external_idp = ExternalIdP(settings, keys) if settings.oidc_issuer and settings.oidc_client_id \
            else None
        if domain_rules:
            app.state.overview = AgreementOverview(store, service.base, service.pipeline)
            operation = ("patientkontrakt", f"{CANONICAL}/OperationDefinition/patientkontrakt")
            app.state.operations = {"Patient": [operation], "CarePlan": [operation]}
        # Under the care-unit rules a caller may not see every resource of the patient data
        # types (nor other units' Subscriptions and Groups), so new ones get server ids
        # (Writer.client_ids): a hidden id and an unknown one must get the same answer to a PUT.
        app.state.update_create = frozenset(service.types) - PATIENT_DATA - UNIT_OWN \
            if care_unit_rules else None
        app.state.readiness = Probe(store, settings)
        app.state.started = format_instant(now_utc())
        _freeze_once()
        yield
        if exporting is not None:
            exporting.cancel()
            with suppress(asyncio.CancelledError):
                await exporting
        if sealing is not None:
            sealing.cancel()
            with suppress(asyncio.CancelledError):
                await sealing
        await store.dispose()
        if traces is not None:
            traces.shutdown()  # exports what is left

    app = FastAPI(
        title="Patientkontrakt",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # api/docs.py: Swagger UI served by the service, under its CSP
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    errors.install(app)
    if traces is not None:  # inside the request log, which sets the request id
        requestlog.wrap(app, lambda inner: tracing.Tracing(inner, traces))
    requestlog.install(app, logged=settings.request_log)
    # The API's routes join the application's own list: FastAPI (0.165) matches an included
    # router's routes twice per request, once to choose the router and once to handle, about a
    # tenth of a millisecond of a FHIR request (docs/performance.md). They carry their prefix and
    # no settings of the router (dependencies, limits) that an inclusion would add.
    for router in (oauth.router, export.router, fhir.router):  # export before fhir: its /{type_}/{id_}
        app.router.routes.extend(router.routes)                 # would take Patient/$export
    app.router.routes[0:0] = [fhir.READ_FIRST, *fhir.WRITE_FIRST]
    app.include_router(personal.router)
    app.include_router(plan_changes.router)
    app.include_router(activity_changes.router)
    app.include_router(goal_changes.router)
    app.include_router(unit.router)
    app.include_router(log_review.router)
    app.include_router(mitt.router)
    docs.install(app)
    app.mount("/static", StaticFiles(directory=Path(__file__).resolve().parent / "static"), name="static")

    @app.get("/lang", include_in_schema=False)
    async def switch_language(to: str = "sv", next: str = "/") -> RedirectResponse:
        """The language switch on every page: remembered in a cookie for a year."""
        target = next if next.startswith("/") and not next.startswith("//") else "/"
        response = RedirectResponse(target, status_code=303)
        if to in LANGUAGES:
            response.set_cookie(LANGUAGE_COOKIE, to, max_age=365 * 24 * 3600, samesite="lax", httponly=True,
                                secure=settings.base_url.startswith("https://"))
        return response

    @app.get("/", include_in_schema=False)
    async def home() -> HTMLResponse:
        return HTMLResponse(_HOME.format(base=settings.fhir_base))

    @app.get("/healthz", include_in_schema=False)
    async def health() -> Response:
        """Liveness: the process answers. Nothing else is asked (not the database: a database
        outage is no reason to restart every process; /readyz takes them out of rotation)."""
        return Response('{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", include_in_schema=False)
    async def ready(request: Request) -> Response:
        """Readiness (``patientkontrakt/health.py``): 200 when the database answers, its schema is
        this code's and a delivery worker beat recently, else 503; the body names each check's
        result, in fixed words; concurrent requests share one round of checks (``Probe``).
        (``request.app``, not ``app``: FastAPI keeps endpoints in a module-level cache, and a
        closure over the app would keep every app a process ever made.)"""
        state = request.app.state
        found = await state.readiness.check()
        body = orjson.dumps({"status": "ok" if found.ready else "unavailable", "checks": found.checks})
        return Response(body, status_code=200 if found.ready else 503, media_type="application/json",
                        headers={"cache-control": "no-store"})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        """The Prometheus metrics (``patientkontrakt/metrics.py``), to a scraper that sends
        ``Authorization: Bearer PK_METRICS_TOKEN``; off (404) without that setting. They hold no
        patient data, but they tell the service's load and its failures to whoever reads them."""
        state = request.app.state
        token = state.settings.metrics_token.get_secret_value()
        if not token:
            return Response('{"status":"off: set PK_METRICS_TOKEN"}', status_code=404,
                            media_type="application/json")
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return Response('{"status":"a bearer token is needed"}', status_code=401, media_type="application/json",
                            headers={"www-authenticate": 'Bearer realm="metrics"'})
        store = state.service.store
        metrics.observe_pool(store.engine)
        try:
            found: metrics.Snapshot | None = await asyncio.wait_for(
                metrics.snapshot(store, state.audit_keys), settings.ready_timeout)
        except (TimeoutError, OSError, SQLAlchemyError, DatabaseUnavailable) as exc:
            log.warning("metrics: the database's figures are missing: %s", describe(exc))
            found = None
        return Response(metrics.exposition(found), media_type=metrics.CONTENT_TYPE,
                        headers={"cache-control": "no-store"})

    app.add_middleware(RequireToken)
    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
    app.add_middleware(SecurityHeaders)  # on every response, refusals included
    # Around those (api/rest.py): they change what is asked or how it is labelled, never refuse.
    app.add_middleware(JsonMediaType)
    app.add_middleware(HeadAsGet)
    app.add_middleware(FhirTrailingSlash)
    return app
