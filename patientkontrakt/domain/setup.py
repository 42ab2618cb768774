"""Composition of the Patientkontrakt service: the FHIR engine with our rules and operations, and the
write side of notifications (``notify``) watching every write."""

from __future__ import annotations

from patientkontrakt.config import Settings
from patientkontrakt.domain.rules import PatientkontraktRules
from patientkontrakt.fhir.access import AccessLog
from patientkontrakt.fhir.definitions import load_definitions
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.notify.outbox import Notifications
from patientkontrakt.notify.subscriptions import SubscriptionRules
from patientkontrakt.storage.repository import Store


def build_service(settings: Settings, store: Store, *, domain_rules: bool = True,
                  log: AccessLog | None = None) -> FhirService:
    """The FHIR service; ``domain_rules=False`` gives the bare R4 engine. ``log`` is the access
    log (none for tools that act as the service itself)."""
    defs = load_definitions(settings.profiles_dir)
    service = FhirService(settings, store, defs, hooks=PatientkontraktRules(defs) if domain_rules else None, log=log)
    rules = SubscriptionRules(service.parser, service.search_engine.builder, service.types,
                              settings.subscription_allowed)
    service.writer.observer = Notifications(service.parser, service.search_engine.builder, rules)
    return service
