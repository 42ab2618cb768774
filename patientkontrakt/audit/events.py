"""The access log as read-only FHIR ``AuditEvent`` resources (read and search).

Each log entry is rendered as an R4 AuditEvent on the fly (the log row is the record; nothing is
stored twice). Search parameters: ``patient``, ``agent`` (HSA-id of the user or of the care unit,
personnummer, client id or ``fhirUser`` reference), ``entity`` (``Type/id``; ``Patient/id`` finds
every entry about the patient), ``date`` (with prefixes), ``purpose`` (our own: the v3 ActReason
code of the purpose of use, ``ETREAT`` for emergency access; ``system|code`` too), ``_count`` and
``_offset``; newest first. As in any R4 search, a repeated parameter must hold every time and a
comma-separated value is any of its parts.

Who sees what: a patient the entries about themselves (the *loggutdrag*, PDL 8 kap 5 §); staff
and systems the entries of the care unit they act for (the unit's own log review); a log reviewer
(a commission coded ``pk-staff-role#logggranskare``, token role ``log-reviewer``) the entries of
every unit of their care provider and of no other (the provider's log review, PDL 4 kap. 3 §,
HSLF-FS 2016:40 4 kap. 9 §); each needs an AuditEvent read/search scope. A care unit's refused
attempts (a read of what it may not see, or of what does not exist: the two are logged alike) are
shown to staff, reviewers included, without the patient and resources the server recorded for the
patient's log extract, and ``patient``/``entity`` find only successful entries: otherwise the
log would tell them whose a hidden resource is, or that it exists.

Both interactions run through the interaction pipeline (``fhir/interactions.py``): the scopes, the
stages, refused attempts logged. What a patient or a unit reads of its own log is not itself
logged (the log's own entries are not patient data held in the record; logging every such reading
would make every review grow the log it reviews). A log reviewer's reading is, one entry per
request (per patient asked about), purpose ``HCOMPL``: they read every unit's entries, patients
named, so their reviews must be reviewable in turn (``AuditLog.reviewed``).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import orjson

from patientkontrakt.audit.log import AuditLog
from patientkontrakt.domain.identifiers import HSA_ID, PERSONNUMMER
from patientkontrakt.fhir.access import Access, NoLog
from patientkontrakt.fhir.dates import DateFormatError, format_instant, now_utc, parse_range
from patientkontrakt.fhir.errors import BadRequest, Forbidden, NotFound
from patientkontrakt.fhir.interactions import Interaction, Pipeline
from patientkontrakt.fhir.limits import DEFAULT_LIMITS, Limits, check_parameter_count, check_values
from patientkontrakt.fhir.paging import page_links, page_number
from patientkontrakt.fhir.rendering import dumps, render_bundle
from patientkontrakt.fhir.results import Result
from patientkontrakt.security.tokens import LOG_REVIEWER
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.audit import AuditQuery, AuditRow
from patientkontrakt.storage.repository import Store

SEARCH_PARAMS = ("patient", "agent", "entity", "date", "purpose")
_ACTIONS = {"create": "C", "read": "R", "vread": "R", "search-type": "E", "history-instance": "R",
            "history-type": "E", "history-system": "E", "update": "U", "delete": "D", "operation": "E",
            "transaction": "E", "validate": "E"}
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
MAX_COUNT = 200
# IHE Basic Audit Log Patterns: the entity type of a request id (X-Request-ID)
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"


def render(row: AuditRow, base: str, *, name_refused: bool = True) -> dict[str, Any]:
    """One log entry as an R4 AuditEvent. ``name_refused=False``: a refused entry is shown
    without its patient and resources (they are what its caller was not allowed to see)."""
    if not name_refused and row.outcome != "success":
        row = replace(row, patient_id=None, resources="[]")
    who_system = PERSONNUMMER if row.user_kind == "patient" else HSA_ID if row.user_kind == "staff" else None
    user: dict[str, Any] = {"identifier": {"value": row.user_id, **({"system": who_system} if who_system else {})}}
    if row.fhir_user:
        user["reference"] = row.fhir_user
    if row.user_name:
        user["display"] = row.user_name
    agents: list[dict[str, Any]] = [{
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                             "code": "humanuser" if row.user_kind in ("staff", "patient") else "dataprocessor",
                             "display": "human user" if row.user_kind in ("staff", "patient") else "data processor"}]},
        "who": user,
        "requestor": True,
        **({"role": [{"text": row.role}]} if row.role else {}),
        "purposeOfUse": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                      "code": row.purpose}]}],
    }]
    if row.care_unit:
        agents.append({
            "type": {"text": "vårdenhet"},
            "who": {"identifier": {"system": HSA_ID, "value": row.care_unit},
                    **({"display": row.care_unit_name} if row.care_unit_name else {})},
            "requestor": False,
        })
    if row.client_id:
        agents.append({
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150",
                                 "display": "Application"}]},
            "who": {"identifier": {"value": row.client_id}},
            "requestor": False,
        })
    entities: list[dict[str, Any]] = []
    if row.patient_id:
        entities.append({
            "what": {"reference": f"Patient/{row.patient_id}"},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
                     "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                     "display": "Patient"},
        })
    for name in orjson.loads(row.resources):
        if name != f"Patient/{row.patient_id}":
            entities.append({
                "what": {"reference": name},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                         "display": "System Object"},
            })
    entities.append({"name": "request", "description": row.request})
    if row.request_id:  # as IHE BALP records a request's X-Request-ID
        entities.append({"what": {"identifier": {"value": row.request_id}},
                         "type": {"system": BALP_ENTITY_TYPE, "code": "XrequestId"}})
    return {
        "resourceType": "AuditEvent",
        "id": str(row.seq),
        "meta": {"lastUpdated": format_instant(row.recorded)},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": row.interaction}]
        if row.interaction in _ACTIONS and row.interaction not in ("transaction", "validate", "operation")
        else [{"system": "http://hl7.org/fhir/restful-interaction",
               "code": {"transaction": "transaction", "validate": "operation", "operation": "operation"}.get(
                   row.interaction, "operation")}],
        "action": _ACTIONS.get(row.interaction, "E"),
        "recorded": format_instant(row.recorded),
        "outcome": "0" if row.outcome == "success" else "4",
        "outcomeDesc": f"{row.status} {row.outcome}",
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                        "code": row.purpose}], **({"text": row.reason} if row.reason else {})}],
        "agent": agents,
        "source": {
            "observer": {"display": f"Patientkontrakt {base}"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                      "display": "Application Server"}],
        },
        "entity": entities,
    }


class AuditEvents:
    def __init__(self, store: Store, base: str, pipeline: Pipeline | None = None,
                 limits: Limits = DEFAULT_LIMITS, review_log: AuditLog | None = None) -> None:
        self._store = store
        self._base = base
        self._pipeline = pipeline or Pipeline(NoLog())
        self._limits = limits
        self._review_log = review_log

    async def _reviewed(self, access: Access, interaction: str, request: str,
                        patient_ids: list[str] | None) -> None:
        """A log reviewer's reading is logged (``AuditLog.reviewed``): they read every unit's
        entries, patients named, so their own reading must be reviewable in turn."""
        if self._review_log is not None and _reviewer(access):
            await self._review_log.reviewed(access, interaction, request, patient_ids or [None])

    @staticmethod
    def _scope(access: Access) -> AuditQuery:
        """What the caller may see of the log, as filters; refuses callers with no share in it."""
        who = access.principal
        patient = getattr(access, "patient_id", None)
        if who.kind == "patient" and patient:
            return AuditQuery(patient_ids=[patient])
        if _reviewer(access):
            # Refused entries stay without their patient here too: a reviewer who could see them
            # would learn, by a refused read of their own, whose a hidden resource is.
            return AuditQuery(care_provider=who.care_provider, names_of_successes_only=True)
        if who.kind in ("staff", "system") and who.care_unit:
            return AuditQuery(care_unit=who.care_unit, names_of_successes_only=True)
        raise Forbidden("Only a patient (about themselves) or a care unit (its own entries) may read the log",
                        details_sv="Du har inte behörighet att läsa loggen.")

    async def read(self, access: Access, id_: str) -> Result:
        async with self._pipeline.run(access, Interaction.of("read", "AuditEvent", f"AuditEvent/{id_}")):
            return await self._read(access, id_)

    async def _read(self, access: Access, id_: str) -> Result:
        query = self._scope(access)
        if not (id_.isascii() and id_.isdigit()) or len(id_) > 18:
            raise NotFound(f"AuditEvent/{id_} is not known", details_sv="Loggposten finns inte.")
        query.seq = int(id_)
        rows, _ = await sql.search(self._store, query, 0, 1)
        if not rows:
            raise NotFound(f"AuditEvent/{id_} is not known", details_sv="Loggposten finns inte.")
        event = render(rows[0], self._base, name_refused=not query.names_of_successes_only)
        await self._reviewed(access, "read", f"AuditEvent/{id_}", [rows[0].patient_id] if rows[0].patient_id else None)
        return Result(200, dumps(event), version_id=1, last_updated=rows[0].recorded)

    async def search(self, access: Access, pairs: list[tuple[str, str]], *, max_count: int = MAX_COUNT) -> Result:
        """``max_count``: the largest ``_count`` taken (the log review's CSV export asks for more
        than the API's 200 in one search, so that one export is one logged review)."""
        async with self._pipeline.run(access, Interaction.of("search-type", "AuditEvent", "AuditEvent")):
            return await self._search(access, pairs, max_count)

    async def _search(self, access: Access, pairs: list[tuple[str, str]], max_count: int) -> Result:
        query = self._scope(access)
        check_parameter_count(self._limits, pairs)
        count, offset = 50, 0
        used: list[tuple[str, str]] = []
        for key, value in pairs:
            if key == "_count":
                count = page_number(key, value, max_count)
                continue
            if key == "_offset":
                offset = page_number(key, value)
                continue
            if key in ("_format", "_pretty"):
                continue
            if key not in SEARCH_PARAMS:
                raise BadRequest(f"Unknown AuditEvent search parameter {key!r}; use {', '.join(SEARCH_PARAMS)}",
                                 expression=(key,), details_sv=f"Okänd sökparameter {key!r}.")
            # A repeated parameter narrows the result (AND), a comma-separated list widens it (OR);
            # an empty value is ignored (R4 search.html). Patient filters meet the caller's own.
            check_values(self._limits, key, value)
            values = [v for v in value.split(",") if v]
            if not values:
                continue
            if key == "patient":
                ids = [v.rsplit("/", 1)[-1] for v in values]
                query.patient_ids = [i for i in ids if query.patient_ids is None or i in query.patient_ids]
            elif key == "agent":
                query.agents.append([v.split("|", 1)[-1].removeprefix(self._base + "/") for v in values])
            elif key == "entity":
                query.entity.append([v.removeprefix(self._base + "/") for v in values])
            elif key == "purpose":
                query.purposes.append([v.rsplit("|", 1)[-1] for v in values])
            else:
                query.recorded.append([_date(v) for v in values])
            used.append((key, value))
        rows, total = await sql.search(self._store, query, offset, max(count, 1))
        await self._reviewed(access, "search-type", "AuditEvent" + (f"?{urlencode(used)}" if used else ""),
                             query.patient_ids if any(k == "patient" for k, _ in used) else None)
        has_next = count > 0 and len(rows) > count  # _count=0 asks for the total only: no next page
        rows = rows[:count]
        links = page_links(f"{self._base}/AuditEvent", used, count, offset, has_next=has_next)
        head = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"lastUpdated": format_instant(now_utc())},
                "type": "searchset", "total": total, "link": links}
        entries: list[tuple[dict[str, Any], str | bytes | None, dict[str, Any]]] = [
            ({"fullUrl": f"{self._base}/AuditEvent/{row.seq}"},
             dumps(render(row, self._base, name_refused=not query.names_of_successes_only)),
             {"search": {"mode": "match"}})
            for row in rows
        ]
        return Result(200, render_bundle(head, entries))


def _reviewer(access: Access) -> bool:
    """Whether the caller is a log reviewer of a care provider (token role ``log-reviewer``)."""
    who = access.principal
    return who.kind == "staff" and LOG_REVIEWER in who.roles and bool(who.care_provider)


def _date(value: str) -> tuple[str, Any, Any]:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    text = value[2:] if value[:2] in _PREFIXES else value
    try:
        low, high = parse_range(text)
    except DateFormatError:
        raise BadRequest(f"date={value!r} is not a FHIR date or instant", expression=("date",),
                         details_sv="Ogiltigt datum.") from None
    return prefix, low, high
