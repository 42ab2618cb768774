"""Composition of the Patientkontrakt service: the FHIR engine with our rules and operations."""

from __future__ import annotations

from patientkontrakt.config import Settings
from patientkontrakt.domain.rules import PatientkontraktRules
from patientkontrakt.fhir.definitions import load_definitions
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.storage.repository import Store


def build_service(settings: Settings, store: Store, *, domain_rules: bool = True) -> FhirService:
    """The FHIR service; ``domain_rules=False`` gives the bare R4 engine."""
    defs = load_definitions(settings.profiles_dir)
    return FhirService(settings, store, defs, hooks=PatientkontraktRules(defs) if domain_rules else None)
