"""An ``Access`` kept in the database and rebuilt later, for work done on a caller's behalf after
their request has ended (a Bulk Data export runs in the background, in whichever process claims
it: ``fhir/export.py``).

What is kept is what the token gave (``Authenticator``): the principal, the granted scopes and
the care unit acted for; nothing else is needed to apply the same rules again, and nothing is
taken from the client's input. The rebuilt access applies the rules as they are at the time it
is used (a samtycke withdrawn, a spärr added since the kick-off is obeyed).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from patientkontrakt.fhir.access import Access, Principal
from patientkontrakt.fhir.export import BulkExport
from patientkontrakt.fhir.search.params import SearchParser
from patientkontrakt.security.rules import CareUnitAccess, ScopedAccess
from patientkontrakt.security.scopes import ResourceScope, Scopes
from patientkontrakt.storage.search_sql import QueryBuilder

if TYPE_CHECKING:
    from patientkontrakt.fhir.service import FhirService


def _scope_text(scope: ResourceScope) -> str:
    letters = "".join(letter for letter in "cruds" if letter in scope.permissions)
    query = f"?{urlencode(scope.query)}" if scope.query else ""
    return f"{scope.context}/{scope.type}.{letters}{query}"


def record(access: Access) -> dict[str, Any] | None:
    """What rebuilds ``access``: a ``CareUnitAccess`` or a plain ``ScopedAccess`` (the bare
    engine's rules, without care units); None for any other (a patient's, the directory
    client's), which is not kept."""
    if isinstance(access, CareUnitAccess):
        rules: dict[str, Any] = {"rules": "care-unit", "care_unit_org": access.care_unit_org,
                                 "emergency_patient": access.emergency_patient}
    elif type(access) is ScopedAccess:
        rules = {"rules": "scoped"}
    else:
        return None
    principal = {**asdict(access.principal), "roles": sorted(access.principal.roles)}
    scopes = " ".join([*(_scope_text(s) for s in access.scopes.resource), *sorted(access.scopes.other)])
    return {**rules, "principal": principal, "scope": scopes}


def rebuild(stored: dict[str, Any], parser: SearchParser, builder: QueryBuilder) -> Access:
    """The access ``record`` kept."""
    principal = Principal(**{**stored["principal"], "roles": frozenset(stored["principal"]["roles"])})
    scopes = Scopes.parse(stored["scope"])
    if stored["rules"] == "care-unit":
        return CareUnitAccess(principal, scopes, parser, builder, stored["care_unit_org"],
                              emergency_patient=stored["emergency_patient"])
    if stored["rules"] == "scoped":
        return ScopedAccess(principal, scopes, parser, builder)
    raise ValueError(f"unknown kind of stored access {stored['rules']!r}")


def bulk_export(service: FhirService) -> BulkExport:
    """``$export`` over ``service``, keeping and rebuilding callers' access as above: what the API
    processes run in the background and ``patientkontrakt worker`` calls (``work_once``)."""
    return BulkExport(service, record,
                      lambda stored: rebuild(stored, service.parser, service.search_engine.builder))
