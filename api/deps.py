"""Injected things as ``Annotated`` aliases (style.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.service import FhirService, Preferences


def get_service(request: Request) -> FhirService:
    service: FhirService = request.app.state.service
    return service


def get_bundles(request: Request) -> BundleProcessor:
    bundles: BundleProcessor = request.app.state.bundles
    return bundles


def get_prefer(request: Request) -> Preferences:
    return Preferences.parse(request.headers.get("prefer"))


ServiceDep = Annotated[FhirService, Depends(get_service)]
BundlesDep = Annotated[BundleProcessor, Depends(get_bundles)]
PreferDep = Annotated[Preferences, Depends(get_prefer)]
