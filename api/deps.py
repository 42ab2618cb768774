"""Injected things as ``Annotated`` aliases (style.md).

The providers are ``async def`` although they do not await: FastAPI runs a plain ``def``
dependency in the thread pool, a thread hop on every request (docs/performance.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from patientkontrakt.audit.events import AuditEvents
from patientkontrakt.domain.overview import AgreementOverview
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.errors import NotFound
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.fhir.service import FhirService


async def get_service(request: Request) -> FhirService:
    service: FhirService = request.app.state.service
    return service


async def get_bundles(request: Request) -> BundleProcessor:
    bundles: BundleProcessor = request.app.state.bundles
    return bundles


async def get_overview(request: Request) -> AgreementOverview:
    overview: AgreementOverview | None = getattr(request.app.state, "overview", None)
    if overview is None:
        raise NotFound("$patientkontrakt is not available on this server", details_sv="Operationen finns inte här.")
    return overview


async def get_audit_events(request: Request) -> AuditEvents:
    events: AuditEvents = request.app.state.audit_events
    return events


async def get_prefer(request: Request) -> Preferences:
    return Preferences.parse(request.headers.get("prefer"))


ServiceDep = Annotated[FhirService, Depends(get_service)]
BundlesDep = Annotated[BundleProcessor, Depends(get_bundles)]
OverviewDep = Annotated[AgreementOverview, Depends(get_overview)]
PreferDep = Annotated[Preferences, Depends(get_prefer)]
AuditEventsDep = Annotated[AuditEvents, Depends(get_audit_events)]
