"""Who an interaction runs for, and what they may see and do.

The FHIR engine asks an ``Access`` at every step of every interaction; it does not know why
the answer is what it is. ``patientkontrakt.security`` implements the rules of this service
(SMART scopes, care units, the patient's compartment) and builds an ``Access`` from a verified
access token; the engine only applies it:

* ``require(type, interaction)`` before anything is read or written (403 when the scopes do not
  grant it);
* ``restriction(type)`` as a condition in every query that returns resources of that type, so
  search results are filtered in the database, before paging, and a resource the caller may
  not see is answered 404, exactly like one that does not exist;
* ``admit`` before each write (may complete the resource, e.g. with the caller's care unit, or
  refuse it) and ``confirm`` once every write of the unit is done, inside the same transaction
  (what was written must be visible to its writer; otherwise everything is rolled back).

An ``Access`` travels with the unit of work (``Unit.access``), so every function that is handed
the unit applies the same rules. ``INTERNAL`` is the service itself (demo loader, migrations,
command line): everything is allowed and nothing is logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from patientkontrakt.fhir.errors import Issue
from patientkontrakt.storage.access_sql import Restriction
from patientkontrakt.storage.repository import StoredResource, Unit

# Interactions (R4 http.html) and the SMART v2 permission each needs.
PERMISSIONS: dict[str, str] = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "search-type": "s",
    "history-type": "s",
    "history-system": "s",
    "create": "c",
    "update": "u",
    "delete": "d",
    "validate": "r",
    "operation": "r",
}


@dataclass(frozen=True)
class Principal:
    """Who acts, as the access log records it (design §6)."""

    kind: str  # staff | patient | system | internal | anonymous
    id: str  # HSA-id (staff), personnummer (patient), client id (system)
    name: str | None = None
    role: str | None = None  # e.g. the staff member's profession, "patient"
    fhir_user: str | None = None  # PractitionerRole/…, Patient/…
    care_unit: str | None = None  # HSA-id of the vårdenhet acted for
    care_unit_name: str | None = None
    care_provider: str | None = None  # HSA-id of the vårdgivare
    client_id: str | None = None
    purpose: str = "TREAT"  # v3 PurposeOfUse: TREAT (vård och behandling), PATRQT (the patient's own),
    # ETREAT (emergency access, nödåtkomst: ``reason`` says why)
    reason: str | None = None
    roles: frozenset[str] = frozenset()  # tasks beyond acting for the unit, e.g. "log-reviewer"


class Access(Protocol):
    principal: Principal

    def require(self, type_: str, interaction: str) -> None:
        """Raise ``Forbidden`` unless the caller may perform ``interaction`` on ``type_`` at all."""
        ...

    def restriction(self, type_: str) -> Restriction | None:
        """The resources of ``type_`` the caller may see, as a condition on ``resource``; None: all."""
        ...

    def past_versions(self, type_: str) -> bool:
        """Whether the caller may see past versions of ``type_`` resources (vread, history).
        ``restriction`` is a condition on the current version; where it depends on the content
        (a scope narrowed by a query), it says nothing about older versions, which have no index
        rows to decide it on: then only current versions are shown."""
        ...

    def reach(self, type_: str) -> Restriction | None:
        """A condition on ``resource`` that holds for every resource of ``type_`` the caller may
        see (and maybe more: ``restriction`` still applies) and that the database answers from
        the caller outward, so a search may start from it; None: none such."""
        ...

    async def reach_size(self, unit: Unit, type_: str, limit: int) -> int | None:
        """How many resources ``reach(type_)`` holds, counted up to ``limit`` (None: no reach)."""
        ...

    @property
    def parameters(self) -> dict[str, Any]:
        """The values of the named parameters in this caller's restrictions (the ``values`` of
        each): the unit passes them with every statement it executes."""
        ...

    async def admit(self, unit: Unit, resource: dict[str, Any], existing: StoredResource | None) -> dict[str, Any]:
        """Before a write of ``resource`` (``existing``: the current version, already known to be
        visible): return it, possibly completed, or raise."""
        ...

    async def confirm(self, unit: Unit, written: list[StoredResource]) -> None:
        """After the unit's writes, in the same transaction: raise if any may not stand."""
        ...

    async def blocked(self, unit: Unit, patient_id: str) -> frozenset[str]:
        """What the caller is not shown of the patient's data although its part in the
        patient's care reaches it: ``"sparr"`` (a spärr) and ``"samtycke"`` (no samtycke). Staff
        are told *that* such information exists, never what it is."""
        ...

    async def notices(self, unit: Unit, patient_id: str) -> list[Issue]:
        """``blocked`` as issues for a Bundle's OperationOutcome (code ``suppressed``, severity
        ``warning``), in the caller's words: that something is not shown and how to proceed."""
        ...

    def owner(self, type_: str) -> tuple[str, str] | None:
        """Who owns a ``type_`` resource this caller creates: (care unit Organization id, care
        provider HSA-id), recorded by storage; None: no one the caller can name (the domain
        may derive one from the content)."""
        ...

    async def admit_delete(self, unit: Unit, existing: StoredResource) -> None:
        """Before deleting ``existing`` (already known to be visible): raise if the caller may not."""
        ...

    @property
    def logged(self) -> bool:
        """Whether what this caller reads and writes goes to the access log."""
        ...


class Internal:
    """The service itself: allowed everything, restricted nowhere, not logged."""

    principal = Principal(kind="internal", id="patientkontrakt", name="Patientkontrakt", purpose="SYSADMIN")
    logged = False
    parameters: dict[str, Any] = {}

    def require(self, type_: str, interaction: str) -> None:
        return None

    def restriction(self, type_: str) -> Restriction | None:
        return None

    def past_versions(self, type_: str) -> bool:
        return True

    def reach(self, type_: str) -> Restriction | None:
        return None

    async def reach_size(self, unit: Unit, type_: str, limit: int) -> int | None:
        return None

    async def admit(self, unit: Unit, resource: dict[str, Any], existing: StoredResource | None) -> dict[str, Any]:
        return resource

    async def confirm(self, unit: Unit, written: list[StoredResource]) -> None:
        return None

    def owner(self, type_: str) -> tuple[str, str] | None:
        return None

    async def blocked(self, unit: Unit, patient_id: str) -> frozenset[str]:
        return frozenset()

    async def notices(self, unit: Unit, patient_id: str) -> list[Issue]:
        return []

    async def admit_delete(self, unit: Unit, existing: StoredResource) -> None:
        return None


INTERNAL: Access = Internal()


def access_of(unit: Unit) -> Access:
    """The access a unit of work runs under (``INTERNAL`` when none was given)."""
    access: Access | None = unit.access
    return access if access is not None else INTERNAL


async def blocked_notices(unit: Unit, patient_id: str) -> list[Issue]:
    """What the unit's caller is told of the patient's information it is not shown
    (``Access.notices``)."""
    return await access_of(unit).notices(unit, patient_id)


def bound(restriction: Restriction | None) -> Any:
    """The restriction's condition, to put in a statement that a unit of the same caller
    executes: the unit passes the values of its named parameters (``Access.parameters``) at
    execution, so the condition is neither copied nor compiled again per request."""
    return None if restriction is None else restriction.condition


async def visible(unit: Unit, resources: list[StoredResource]) -> list[StoredResource]:
    """``resources`` without those the unit's caller may not see (one query per restricted type)."""
    access = access_of(unit)
    kept: set[int] = set()
    by_type: dict[str, list[int]] = {}
    for resource in resources:
        by_type.setdefault(resource.type, []).append(resource.pk)
    for type_, pks in by_type.items():
        restriction = access.restriction(type_)
        kept |= set(pks) if restriction is None else await unit.visible_pks(pks, bound(restriction))
    return [r for r in resources if r.pk in kept]


class AccessLog(Protocol):
    """The access log (Patientdatalagen 4 kap 3 §), as the engine calls it.

    ``resources`` are what the interaction returned or wrote; the log keeps one entry per
    patient among them. Writes are logged in the write's own transaction (``unit``); reads
    before the response is sent, and if that fails the read fails.
    """

    async def record(self, access: Access, interaction: str, request: str, resources: list[StoredResource],
                     *, status: int = 200, unit: Unit | None = None) -> None: ...

    async def refused(self, access: Access, interaction: str, request: str, status: int,
                      resource: StoredResource | None = None) -> None: ...


class NoLog:
    """For the engine's own tests and tools: nothing is logged."""

    async def record(self, access: Access, interaction: str, request: str, resources: list[StoredResource],
                     *, status: int = 200, unit: Unit | None = None) -> None:
        return None

    async def refused(self, access: Access, interaction: str, request: str, status: int,
                      resource: StoredResource | None = None) -> None:
        return None
