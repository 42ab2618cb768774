"""``$patientkontrakt``: the whole agreement in one Bundle (OperationDefinition in fhir_profiles).

One round trip for the patient view and for an EHR: the Patient, the agreement (CarePlan) with
its activities in time order, its CareTeam (with the history of fast vårdkontakt), the goals
(the patient's own first, including those the patient added that no agreement names yet), the
SIPs (samordnad individuell plan) that are part of the agreement,
booked Appointments in time order, the PractitionerRoles, Practitioners and Organizations all
of these name, and the Provenance of changes to the agreement, its team and its goals.

``Patient/{id}/$patientkontrakt`` gives every agreement that is active or on hold; when there is
none, the Bundle holds the Patient and an OperationOutcome saying so. ``CarePlan/{id}/$patientkontrakt``
gives that agreement whatever its status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from patientkontrakt.domain import codes
from patientkontrakt.fhir.access import Access, NoLog, access_of, blocked_notices, visible
from patientkontrakt.fhir.dates import DateFormatError, format_instant, now_utc, parse_range
from patientkontrakt.fhir.errors import FhirError, Gone, HiddenResource, Issue, operation_outcome
from patientkontrakt.fhir.indexing import parse_reference, reference_elements
from patientkontrakt.fhir.interactions import Interaction, Pipeline
from patientkontrakt.fhir.rendering import dumps, render_bundle
from patientkontrakt.fhir.writes import ID_PATTERN
from patientkontrakt.storage.repository import Store, StoredResource, Unit

_ORDER = {"Patient": 0, "CarePlan": 1, "CareTeam": 2, "Goal": 3, "Appointment": 4, "PractitionerRole": 5,
          "Practitioner": 6, "Organization": 7, "Provenance": 8}
_FOLLOWED = frozenset({"Patient", "CareTeam", "Goal", "Appointment", "PractitionerRole", "Practitioner",
                       "Organization"})
MAX_RESOURCES = 500


def _start(value: Any) -> str:
    """Sort key: the start of a Period/Timing/dateTime as an ISO instant; no time sorts last."""
    try:
        if isinstance(value, str):
            return format_instant(parse_range(value)[0])
        if isinstance(value, dict):
            if "start" in value:
                return _start(value["start"])
            events = value.get("event") or []
            if events:
                return _start(events[0])
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if bounds:
                return _start(bounds)
    except DateFormatError:
        pass
    return "9999"


def _stated_by_patient(goal: StoredResource) -> bool:
    expressed = (orjson.loads(goal.body).get("expressedBy") or {}).get("reference", "")
    return isinstance(expressed, str) and expressed.startswith("Patient/")


def _allowed(unit: Unit, type_: str) -> bool:
    """Whether the caller's scopes let them read ``type_`` (what they may not is left out)."""
    try:
        access_of(unit).require(type_, "read")
    except FhirError:
        return False
    return True


def _activity_start(activity: dict[str, Any], appointments: dict[str, dict[str, Any]]) -> str:
    detail = activity.get("detail") or {}
    for key in ("scheduledPeriod", "scheduledTiming", "scheduledString"):
        if key in detail:
            return _start(detail[key])
    reference = (activity.get("reference") or {}).get("reference", "")
    appointment = appointments.get(reference.split("/_history", 1)[0])
    return _start(appointment.get("start")) if appointment else "9999"


class AgreementOverview:
    """The operation, under the caller's access: it holds only what they may see, and what it
    returns is logged like any read."""

    def __init__(self, store: Store, base: str, pipeline: Pipeline | None = None) -> None:
        self._store = store
        self._base = base
        self._pipeline = pipeline or Pipeline(NoLog())

    async def for_patient(self, access: Access, patient_id: str) -> bytes:
        return await self._run(access, "Patient", patient_id, self._for_patient)

    async def for_plan(self, access: Access, plan_id: str) -> bytes:
        return await self._run(access, "CarePlan", plan_id, self._for_plan)

    async def _run(self, access: Access, type_: str, id_: str, body: Any) -> bytes:
        interaction = Interaction.of("operation", type_, f"{type_}/{id_}/$patientkontrakt", ("CarePlan", "operation"))
        async with self._pipeline.run(access, interaction) as exchange:
            async with self._store.reading(access) as unit:
                # An id that cannot be a FHIR id (a NUL byte, which PostgreSQL refuses in a
                # string, among them) is not looked up: it is as unknown as an absent one.
                start = await unit.get(type_, id_) if ID_PATTERN.match(id_) else None
                if start is None or not await visible(unit, [start]):
                    # an absent resource like a hidden one, so that the log does not tell them
                    # apart (the pipeline logs it once the connection is back in the pool)
                    missing = "Patienten finns inte." if type_ == "Patient" else "Patientkontraktet finns inte."
                    raise HiddenResource(f"{type_}/{id_} is not known", start, details_sv=missing)
                result, resources = await body(unit, start)
            await exchange.shown(resources)
        return bytes(result)

    async def _for_patient(self, unit: Unit, patient: StoredResource) -> tuple[bytes, list[StoredResource]]:
        patient_id = patient.id
        if patient.deleted:
            raise Gone(f"Patient/{patient_id} was deleted", details_sv="Patienten har tagits bort.")
        pks = await unit.referencing("CarePlan", "subject", [("Patient", patient_id)], 50)
        plans = [
            p for p in await visible(unit, await unit.get_by_pks(pks))
            if not p.deleted and self._is_open_agreement(orjson.loads(p.body))
        ]
        notices = await blocked_notices(unit, patient_id)
        if not plans:
            note = Issue(code="not-found", severity="information",
                         diagnostics=f"Patient/{patient_id} has no active Patientkontrakt",
                         details_sv="Du har inget gällande patientkontrakt just nu.")
            return self._bundle([patient], outcome=[note, *notices]), [patient]
        resources = await self._collect(unit, [patient, *plans])
        return self._bundle(resources, outcome=notices), resources

    async def _for_plan(self, unit: Unit, plan: StoredResource) -> tuple[bytes, list[StoredResource]]:
        if plan.deleted:
            raise Gone(f"CarePlan/{plan.id} was deleted", details_sv="Patientkontraktet har tagits bort.")
        resources = await self._collect(unit, [plan])
        notices = await blocked_notices(unit, plan.patient_id) if plan.patient_id else []
        return self._bundle(resources, outcome=notices), resources

    @staticmethod
    def _is_open_agreement(plan: dict[str, Any]) -> bool:
        categories = plan.get("category") or []
        is_agreement = any(
            c.get("system") == codes.CAREPLAN_CATEGORY and c.get("code") == codes.PATIENTKONTRAKT
            for concept in categories for c in concept.get("coding", [])
        )
        return is_agreement and plan.get("status") in ("active", "on-hold")

    async def _collect(self, unit: Unit, start: list[StoredResource]) -> list[StoredResource]:
        """Everything the agreement reaches, following references among the types we hold."""
        found = {(r.type, r.id): r for r in start}
        frontier = list(start)
        while frontier and len(found) < MAX_RESOURCES:
            wanted: set[tuple[str, str]] = set()
            for resource in frontier:
                for _, element in reference_elements(orjson.loads(resource.body)):
                    parsed = parse_reference(element["reference"], self._base)
                    if parsed.type in _FOLLOWED and parsed.id and (parsed.type, parsed.id) not in found:
                        wanted.add((parsed.type, parsed.id))
            frontier = await visible(unit, [r for r in await unit.get_many(wanted) if _allowed(unit, r.type)])
            found.update(((r.type, r.id), r) for r in frontier)
        # the SIPs that are part of the agreement: who does what in the kommun's and the
        # region's coordinated plan, shown beside the agreement's own activities
        agreements = [key for key in found if key[0] == "CarePlan"]
        if agreements:
            pks = await unit.referencing("CarePlan", "part-of", agreements, 20)
            sips = [r for r in await unit.get_by_pks(pks) if not r.deleted and (r.type, r.id) not in found]
            found.update(((r.type, r.id), r) for r in await visible(unit, sips))
        patients = [key for key in found if key[0] == "Patient"]
        if patients and _allowed(unit, "Goal"):
            # The patient's own goals ("Det här är viktigt för mig") belong to the agreement even
            # before the care names them in it.
            pks = await unit.referencing("Goal", "patient", patients, 100)
            goals = [r for r in await unit.get_by_pks(pks) if not r.deleted and (r.type, r.id) not in found
                     and _stated_by_patient(r)]
            found.update(((r.type, r.id), r) for r in await visible(unit, goals))
        # the history of changes: Provenance of the agreement, its team and its goals
        targets = [key for key in found if key[0] in ("CarePlan", "CareTeam", "Goal")]
        if targets and _allowed(unit, "Provenance"):
            pks = await unit.referencing("Provenance", "target", targets, 100)
            provenance = [r for r in await unit.get_by_pks(pks) if not r.deleted]
            found.update(((r.type, r.id), r) for r in await visible(unit, provenance))
        return list(found.values())

    def _bundle(self, resources: Iterable[StoredResource], outcome: list[Issue] | None = None) -> bytes:
        parsed = {(r.type, r.id): orjson.loads(r.body) for r in resources}
        appointments = {f"Appointment/{i}": body for (t, i), body in parsed.items() if t == "Appointment"}
        entries: list[tuple[dict[str, Any], str | bytes | None, dict[str, Any]]] = []

        def sort_key(item: tuple[tuple[str, str], dict[str, Any]]) -> tuple[Any, ...]:
            (type_, id_), body = item
            if type_ == "Goal":
                own = ((body.get("expressedBy") or {}).get("reference", "")).startswith("Patient/")
                return (_ORDER[type_], 0 if own else 1, id_)
            if type_ == "Appointment":
                return (_ORDER[type_], _start(body.get("start")), id_)
            return (_ORDER.get(type_, 9), "", id_)

        for (type_, id_), body in sorted(parsed.items(), key=sort_key):
            if type_ == "CarePlan" and body.get("activity"):
                body = {**body, "activity": sorted(body["activity"], key=lambda a: _activity_start(a, appointments))}
            entries.append(({"fullUrl": f"{self._base}/{type_}/{id_}"}, dumps(body), {}))
        if outcome:
            entries.append(({}, dumps(operation_outcome(outcome)), {}))
        head = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": format_instant(now_utc())},
            "type": "collection",
            "timestamp": format_instant(now_utc()),
        }
        return render_bundle(head, entries)
