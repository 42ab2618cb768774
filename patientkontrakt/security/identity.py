"""Who signs in, as the directory in our own FHIR data knows them.

Staff are Practitioners (HSA-id) with commissions, *medarbetaruppdrag*: PractitionerRoles whose
identifier is the commission's HSA-id and whose ``organization`` is the care unit (domain.md).
A staff member signs in as one commission and acts for its care unit; a commission counts while
it and its Practitioner are active and within its validity ``period``. Patients are Patients
with a personnummer or samordningsnummer. The care provider (*vårdgivare*) of a unit is the top
of its ``partOf`` chain (the region or kommun).

The test IdP lists these; an external OpenID Connect provider names the person by HSA-id or
personnummer, and the directory turns that into the same ``Grant``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from patientkontrakt.domain import codes
from patientkontrakt.domain.identifiers import HSA_ID, PERSONNUMMER, SAMORDNINGSNUMMER
from patientkontrakt.fhir.dates import DateFormatError, now_utc, parse_range
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.security.tokens import LOG_REVIEWER, Grant
from patientkontrakt.storage.repository import Unit

_PARTOF_DEPTH = 10
SOCIAL_CARE = frozenset({"hemtjanst"})  # care unit types of social care (socialtjänst), not health care
log = logging.getLogger("patientkontrakt.security")


@dataclass(frozen=True)
class StaffChoice:
    grant: Grant
    role_id: str
    practitioner_name: str
    title: str
    care_unit_name: str


@dataclass(frozen=True)
class PatientChoice:
    grant: Grant
    patient_id: str
    name: str
    personnummer: str


def _name(resource: dict[str, Any]) -> str:
    for name in resource.get("name") or []:
        if isinstance(name, dict):
            if name.get("text"):
                return str(name["text"])
            parts = [*(name.get("given") or []), name.get("family") or ""]
            return " ".join(p for p in parts if p).strip()
    return str(resource.get("name") or resource.get("id"))


def identifier_value(resource: dict[str, Any], *systems: str) -> str | None:
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") in systems and identifier.get("value"):
            return str(identifier["value"])
    return None


def _ref_id(reference: Any, type_: str) -> str | None:
    if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
        parts = str(reference["reference"]).split("/")
        if len(parts) >= 2 and parts[-2] == type_:
            return parts[-1]
    return None


def _roles(role: dict[str, Any]) -> tuple[str, ...]:
    """The token roles a commission's ``code`` gives (``pk-staff-role#logggranskare``: log reviewer)."""
    codings = [c for concept in role.get("code") or [] if isinstance(concept, dict)
               for c in concept.get("coding") or [] if isinstance(c, dict)]
    reviewer = any(c.get("system") == codes.STAFF_ROLE and c.get("code") == codes.LOG_REVIEWER for c in codings)
    return (LOG_REVIEWER,) if reviewer else ()


def _people_and_units(role: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The Practitioner and Organization a PractitionerRole names, as (type, id) keys."""
    for element, type_ in (("practitioner", "Practitioner"), ("organization", "Organization")):
        if (id_ := _ref_id(role.get(element), type_)) is not None:
            yield type_, id_


def _current(period: Any, now: datetime) -> bool:
    """Whether a validity ``period`` includes ``now`` (no period, or an open end, is open)."""
    if not isinstance(period, dict):
        return True
    try:
        if period.get("start") and parse_range(str(period["start"]))[0] > now:
            return False
        if period.get("end") and parse_range(str(period["end"]))[1] < now:
            return False
    except DateFormatError:
        return False
    return True


class _Reads:
    """Reads of one unit of work, each resource read once: listing every commission needs the
    same few Practitioners and Organizations (and their ``partOf`` chains) again and again, and
    ``prefetch`` reads what a list will need in one statement."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self._known: dict[tuple[str, str], dict[str, Any] | None] = {}

    async def prefetch(self, keys: Iterable[tuple[str, str]]) -> None:
        missing = [key for key in dict.fromkeys(keys) if key not in self._known]
        if not missing:
            return
        for stored in await self.unit.get_many(missing):  # current, not deleted
            self._known[(stored.type, stored.id)] = orjson.loads(stored.body)
        for key in missing:
            self._known.setdefault(key, None)

    async def get(self, type_: str, id_: str | None) -> dict[str, Any] | None:
        if id_ is None:
            return None
        key = (type_, id_)
        if key not in self._known:
            stored = await self.unit.get(type_, id_)
            self._known[key] = orjson.loads(stored.body) if stored is not None and not stored.deleted else None
        return self._known[key]


class Directory:
    def __init__(self, service: FhirService) -> None:
        self._service = service

    async def _search(self, unit: Unit, type_: str, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        query = self._service.parser.parse(type_, pairs, strict=True)
        page = await self._service.search_engine.find(unit, query)
        return [orjson.loads(r.body) for r in page.matches]

    @staticmethod
    async def _provider(reads: _Reads, org: dict[str, Any]) -> str | None:
        for _ in range(_PARTOF_DEPTH):
            parent = await reads.get("Organization", _ref_id(org.get("partOf"), "Organization"))
            if parent is None:
                break
            org = parent
        return identifier_value(org, HSA_ID)

    async def _staff_grant(self, reads: _Reads, role: dict[str, Any]) -> StaffChoice | None:
        practitioner = await reads.get("Practitioner", _ref_id(role.get("practitioner"), "Practitioner"))
        org = await reads.get("Organization", _ref_id(role.get("organization"), "Organization"))
        if practitioner is None or org is None or role.get("active") is False \
                or practitioner.get("active") is False or not _current(role.get("period"), now_utc()):
            return None
        person_hsa = identifier_value(practitioner, HSA_ID)
        if person_hsa is None:
            return None
        codes = role.get("code") or []
        title = str(codes[0].get("text") or "") if codes and isinstance(codes[0], dict) else ""
        grant = Grant(
            kind="staff", sub=person_hsa, name=_name(practitioner), title=title or None,
            fhir_user=f"PractitionerRole/{role['id']}", care_unit=identifier_value(org, HSA_ID),
            care_unit_name=str(org.get("name") or ""), care_unit_org=str(org["id"]),
            commission=identifier_value(role, HSA_ID), care_provider=await self._provider(reads, org),
            roles=_roles(role),
        )
        return StaffChoice(grant, str(role["id"]), _name(practitioner), title, str(org.get("name") or ""))

    @staticmethod
    def _patient_grant(patient: dict[str, Any]) -> PatientChoice | None:
        number = identifier_value(patient, PERSONNUMMER, SAMORDNINGSNUMMER)
        if number is None:
            return None
        grant = Grant(kind="patient", sub=number, name=_name(patient), fhir_user=f"Patient/{patient['id']}",
                      patient=str(patient["id"]))
        return PatientChoice(grant, str(patient["id"]), _name(patient), number)

    # -- the test IdP's lists --------------------------------------------------------------

    async def staff(self, limit: int = 200) -> list[StaffChoice]:
        """Every active commission, by name then unit."""
        async with self._service.store.reading() as unit:
            roles = await self._search(unit, "PractitionerRole", [("active", "true"), ("_count", str(limit))])
            reads = _Reads(unit)
            await reads.prefetch(key for role in roles for key in _people_and_units(role))
            choices = []
            for role in roles:
                choice = await self._staff_grant(reads, role)
                if choice is not None:
                    choices.append(choice)
        return sorted(choices, key=lambda c: (c.practitioner_name, c.care_unit_name))

    async def patients(self, limit: int = 60) -> list[PatientChoice]:
        async with self._service.store.reading() as unit:
            patients = await self._search(unit, "Patient", [("_sort", "family"), ("_count", str(limit))])
        return [c for p in patients if (c := self._patient_grant(p)) is not None]

    # -- one person ------------------------------------------------------------------------

    async def commission(self, role_id: str) -> Grant | None:
        async with self._service.store.reading() as unit:
            reads = _Reads(unit)
            role = await reads.get("PractitionerRole", role_id)
            choice = await self._staff_grant(reads, role) if role is not None else None
        return choice.grant if choice else None

    async def commissions_of(self, person_hsa: str) -> list[StaffChoice]:
        """The commissions of the practitioner with this HSA-id (an external IdP's staff login)."""
        async with self._service.store.reading() as unit:
            people = await self._search(unit, "Practitioner", [("identifier", f"{HSA_ID}|{person_hsa}")])
            choices: list[StaffChoice] = []
            reads = _Reads(unit)
            for person in people:
                roles = await self._search(unit, "PractitionerRole",
                                           [("practitioner", f"Practitioner/{person['id']}"), ("active", "true")])
                for role in roles:
                    choice = await self._staff_grant(reads, role)
                    if choice is not None:
                        choices.append(choice)
        return choices

    async def patient(self, patient_id: str) -> Grant | None:
        async with self._service.store.reading() as unit:
            patient = await _Reads(unit).get("Patient", patient_id)
        choice = self._patient_grant(patient) if patient is not None else None
        return choice.grant if choice else None

    async def patient_by_number(self, number: str) -> Grant | None:
        """The patient with this personnummer or samordningsnummer (12 digits)."""
        async with self._service.store.reading() as unit:
            for system in (PERSONNUMMER, SAMORDNINGSNUMMER):
                found = await self._search(unit, "Patient", [("identifier", f"{system}|{number}")])
                if found:
                    choice = self._patient_grant(found[0])
                    return choice.grant if choice else None
        return None

    async def care_unit(self, hsa_id: str) -> tuple[str, str, str | None] | None:
        """(Organization id, name, care provider HSA-id) of the unit with this HSA-id; None when no
        Organization, or more than one, has it (an HSA-id names one unit: two records claiming it
        are an error in the directory, and acting for either could be acting for the wrong one)."""
        async with self._service.store.reading() as unit:
            found = await self._search(unit, "Organization", [("identifier", f"{HSA_ID}|{hsa_id}")])
            if len(found) != 1:
                if found:
                    log.error("HSA-id %s is claimed by %d Organizations: no one may act for it", hsa_id, len(found))
                return None
            provider = await self._provider(_Reads(unit), found[0])
            return str(found[0]["id"]), str(found[0].get("name") or ""), provider

    async def is_social_care(self, org_id: str) -> bool:
        """Whether ``Organization/org_id`` is a social-care unit (hemtjänst): an *omsorgsgivare*,
        not a *vårdgivare*, so the emergency rules of lag 2022:913 (3 kap. 6 §) are not its."""
        async with self._service.store.reading() as unit:
            org = await _Reads(unit).get("Organization", org_id)
        types = [c for concept in (org or {}).get("type") or [] if isinstance(concept, dict)
                 for c in concept.get("coding") or [] if isinstance(c, dict)]
        return any(c.get("system") == codes.CARE_UNIT_TYPE and c.get("code") in SOCIAL_CARE for c in types)

    async def care_unit_by_id(self, org_id: str) -> tuple[str | None, str, str | None]:
        """(HSA-id, name, care provider HSA-id) of the unit ``Organization/org_id``."""
        async with self._service.store.reading() as unit:
            reads = _Reads(unit)
            org = await reads.get("Organization", org_id)
            if org is None:
                raise LookupError(f"no Organization/{org_id}")
            return identifier_value(org, HSA_ID), str(org.get("name") or ""), await self._provider(reads, org)
