"""A caller's ``Access`` kept in the database and rebuilt later, for work done on their behalf
after their request has ended: a Subscription's deliveries (``notify/worker.py``) and a Bulk Data
export's run (``fhir/export.py``), in whichever process does it.

A notification carries only what its subscriber may read *at delivery time*, and an export only
what its client may read when it runs (issue 15), so that work needs the same ``Access`` the
request ran under, without its token (which expires within minutes and must not be stored).
``principal_of`` writes down what ``Authenticator._build`` derived from the token: which rules
apply (care unit, patient, directory, scopes only), the ``Principal``, the granted SMART resource
scopes, the care unit acted for and the patient of a patient's token; nothing is taken from the
client's input. ``access_from`` builds the same ``Access`` class from it, so the work goes through
exactly the request-time rules and the access SQL of today (samtycke and spärr as they are then,
not as they were at the request).

Not kept: emergency access (nödåtkomst, ``ETREAT``). It is given for one patient for one
session's need; a subscription or an export outlives it, so the caller is recorded as acting for
treatment (``TREAT``) and the work sees only what the ordinary rules show.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from patientkontrakt.fhir.access import INTERNAL, Access, Internal, Principal
from patientkontrakt.fhir.export import BulkExport
from patientkontrakt.fhir.search.params import SearchParser
from patientkontrakt.security.rules import CareUnitAccess, DirectoryAccess, PatientAccess, ScopedAccess
from patientkontrakt.security.scopes import ResourceScope, Scopes
from patientkontrakt.storage.search_sql import QueryBuilder

if TYPE_CHECKING:
    from patientkontrakt.fhir.service import FhirService

VERSION = 1
_LETTERS = "cruds"


class UnknownPrincipal(ValueError):
    """A stored principal this code cannot rebuild (corrupt, or written by a newer version)."""


def scope_text(scope: ResourceScope) -> str:
    """A resource scope in its SMART v2 form (``user/CarePlan.rs?status=active``)."""
    letters = "".join(letter for letter in _LETTERS if letter in scope.permissions)
    text = f"{scope.context}/{scope.type}.{letters}"
    return text + "?" + urlencode(list(scope.query)) if scope.query else text


def principal_of(access: Access) -> str:
    """What rebuilds ``access`` later (JSON text; no token, no secret)."""
    principal = access.principal
    if principal.purpose == "ETREAT":
        principal = replace(principal, purpose="TREAT", reason=None)
    record: dict[str, Any] = {"v": VERSION, "principal": {**asdict(principal), "roles": sorted(principal.roles)}}
    if isinstance(access, Internal):
        record["rules"] = "internal"
    elif isinstance(access, ScopedAccess):
        record["scopes"] = [scope_text(s) for s in access.scopes.resource] + sorted(access.scopes.other)
        if isinstance(access, CareUnitAccess):
            record["rules"] = "care-unit"
            record["care_unit_org"] = access.care_unit_org
        elif isinstance(access, PatientAccess):
            record["rules"] = "patient"
            record["patient"] = access.patient_id
        elif isinstance(access, DirectoryAccess):
            record["rules"] = "directory"
        else:
            record["rules"] = "scopes"
    else:
        raise UnknownPrincipal(f"cannot record an access of type {type(access).__name__}")
    return orjson.dumps(record).decode()


def access_from(principal: str, parser: SearchParser, builder: QueryBuilder) -> Access:
    """The ``Access`` ``principal_of`` recorded, under the rules of today."""
    try:
        record = orjson.loads(principal)
        if record.get("v") != VERSION:
            raise UnknownPrincipal(f"principal version {record.get('v')!r}")
        rules = record["rules"]
        if rules == "internal":
            return INTERNAL
        fields = dict(record["principal"])
        fields["roles"] = frozenset(fields.get("roles") or ())
        who = Principal(**fields)
        scopes = Scopes.parse(" ".join(record["scopes"]))
        if rules == "care-unit":
            return CareUnitAccess(who, scopes, parser, builder, str(record["care_unit_org"]))
        if rules == "patient":
            return PatientAccess(who, scopes, parser, builder, str(record["patient"]))
        if rules == "directory":
            return DirectoryAccess(who, scopes, parser, builder)
        if rules == "scopes":
            return ScopedAccess(who, scopes, parser, builder)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise UnknownPrincipal(f"unreadable principal: {type(error).__name__}") from error
    raise UnknownPrincipal(f"unknown rules {rules!r}")


def exportable(access: Access) -> str | None:
    """What an export job keeps of its caller (``principal_of``): a backend system acting for a
    care unit, or the bare engine's scoped system client; None for any other (a patient's, the
    directory client's), which may not export."""
    if isinstance(access, CareUnitAccess) or type(access) is ScopedAccess:
        return principal_of(access)
    return None


def bulk_export(service: FhirService) -> BulkExport:
    """``$export`` over ``service``, keeping and rebuilding callers' access as above: what the API
    processes run in the background and ``patientkontrakt worker`` calls (``work_once``)."""
    return BulkExport(service, exportable,
                      lambda stored: access_from(stored, service.parser, service.search_engine.builder))
