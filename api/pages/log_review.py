"""The care provider's log review, ``/personal/logg`` and ``/personal/logg.csv``, for log
reviewers only (a commission coded ``pk-staff-role#logggranskare``; anyone else gets 403).

The provider must check the access log systematically and regularly for access without
authority (PDL 4 kap. 3 §, HSLF-FS 2016:40 4 kap. 9 §): the page shows the emergency accesses
(nödåtkomst, purpose ETREAT) first, with who, when, from which unit, for which patient, why and
what; then every access of the provider's units, filtered by user, patient (personnummer or
Patient id) or unit and by date, a page at a time; the CSV export holds the same rows.

Both read the log through the AuditEvent search (``patientkontrakt/audit/events.py``) with the
reviewer's own ``Access``: the scope (the reviewer's care provider), and the logging of the
reviewer's reading (one entry per request, purpose HCOMPL), are the API's. The patients'
names and personnummer shown next to the entries are read by the service itself: the log
names each patient by the Patient id only, and a reviewer's care relationship reaches none of
them.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages import forms
from api.pages.common import Page, body, signed_in
from api.pages.labels import N_
from api.pages.session import STAFF
from api.pages.views import name_of, person_number
from api.templating import language_of, translator
from patientkontrakt.domain.identifiers import IdentifierError, parse_person_number
from patientkontrakt.fhir.access import INTERNAL
from patientkontrakt.fhir.errors import Forbidden
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.security.tokens import LOG_REVIEWER

router = APIRouter(prefix="/personal", include_in_schema=False)
PAGE_SIZE = 50
EMERGENCIES_SHOWN = 50
CSV_MAX_ROWS = 5000
_PREFER = Preferences()
_PATIENTS_PER_SEARCH = 50  # Patient ids per search when naming the rows' patients
_PATIENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_HSA_ID = re.compile(r"^[A-Za-z0-9\-]{1,64}$")
# Cells a spreadsheet would take as a formula (OWASP "CSV injection"): written with a leading '.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# The purposes of use (v3 ActReason) the log records, as the page names them; the CSV keeps the codes.
PURPOSES = {"TREAT": N_("Care and treatment"), "ETREAT": N_("Emergency access"), "PATRQT": N_("The patient's own"),
            "HCOMPL": N_("Log review"), "HSYSADMIN": N_("System administration")}
CSV_COLUMNS = (
    ("recorded", N_("Time")), ("user", N_("User")), ("user_id", N_("User's HSA-id")), ("role", N_("Role")),
    ("unit", N_("Care unit")), ("unit_id", N_("Care unit's HSA-id")), ("patient", N_("Patient")),
    ("personnummer", N_("Personnummer")), ("patient_id", N_("Patient id")), ("purpose", N_("Purpose")),
    ("reason", N_("Reason")), ("action", N_("Action")), ("resources", N_("Resources")),
    ("outcome", N_("Outcome")), ("request", N_("Request")),
)


def _require_reviewer(page: Page) -> None:
    if LOG_REVIEWER not in page.access.principal.roles:
        raise Forbidden("Only a log reviewer of the care provider may review its access log",
                        details_sv="Bara vårdgivarens logggranskare kan granska åtkomstloggen.")


# -- filters ---------------------------------------------------------------------------------------


async def _filters(page: Page) -> tuple[dict[str, str], list[tuple[str, str]], dict[str, Any], bool]:
    """The form's values, the AuditEvent search pairs they make, errors by field, and whether the
    patient asked about has no Patient record at all (then nothing can match)."""
    params = page.request.query_params
    form = {name: params.get(name, "").strip()[:100] for name in ("anvandare", "patient", "enhet", "fran", "till")}
    pairs: list[tuple[str, str]] = []
    errors: dict[str, Any] = {}
    unknown_patient = False
    for name in ("anvandare", "enhet"):
        if form[name] and not _HSA_ID.match(form[name]):
            errors[name] = N_("Write an HSA-id, for example SE2321000016-P0001.")
        elif form[name]:
            pairs.append(("agent", form[name]))
    if form["patient"]:
        ids = await _patient_ids(page, form["patient"], errors)
        if ids:
            pairs.append(("patient", ",".join(ids)))
        elif "patient" not in errors:
            # no Patient record has it, so no search is made; the look-up is logged all the same
            unknown_patient = True
            await page.request.app.state.audit.reviewed(
                page.access, "search-type", "AuditEvent?" + urlencode({"patient": form["patient"]}), [None])
    for name, prefix in (("fran", "ge"), ("till", "le")):
        if form[name]:
            try:
                day = datetime.date.fromisoformat(form[name])
            except ValueError:
                errors[name] = N_("Write the date as YYYY-MM-DD, for example 2026-12-01.")
            else:
                pairs.append(("date", f"{prefix}{day.isoformat()}"))
    return form, pairs, errors, unknown_patient


async def _patient_ids(page: Page, typed: str, errors: dict[str, Any]) -> list[str]:
    """The Patient ids a personnummer (any written form) or a Patient id stands for. Every unit
    registers its own Patient record, so one person may be several."""
    if not any(ch.isdigit() for ch in typed) or not (typed.replace("-", "").replace("+", "").isdigit()):
        if _PATIENT_ID.match(typed):
            return [typed]
        errors["patient"] = N_("Write a personnummer or a Patient id.")
        return []
    try:
        identity = parse_person_number(typed)
    except IdentifierError as exc:
        errors["patient"] = forms.person_number_message(typed, exc)
        return []
    found = body(await page.request.app.state.service.search(
        INTERNAL, "Patient", [("identifier", f"{identity.system}|{identity.value}"), ("_count", "100"),
                              ("_elements", "id")], _PREFER))
    return [str(e["resource"]["id"]) for e in found.get("entry", []) if e["resource"]["resourceType"] == "Patient"]


# -- the log's rows --------------------------------------------------------------------------------


async def _search(page: Page, pairs: list[tuple[str, str]], count: int, offset: int = 0,
                  max_count: int | None = None) -> tuple[list[dict[str, Any]], int]:
    events = page.request.app.state.audit_events
    extra = {"max_count": max_count} if max_count else {}
    found = body(await events.search(page.access, [*pairs, ("_count", str(count)), ("_offset", str(offset))],
                                     **extra))
    rows = [_row(e["resource"]) for e in found.get("entry", [])]
    await _name_patients(page, rows)
    return rows, int(found.get("total", 0))


def _row(event: dict[str, Any]) -> dict[str, Any]:
    """One rendered AuditEvent (``audit/events.render``) as a row of the review."""
    agents = event.get("agent") or []
    user = agents[0] if agents else {}
    unit = next((a for a in agents if (a.get("type") or {}).get("text") == "vårdenhet"), {})
    entities = event.get("entity") or []
    patient = next((e["what"]["reference"] for e in entities
                    if (e.get("role") or {}).get("code") == "1" and "what" in e), "")
    purpose = (event.get("purposeOfEvent") or [{}])[0]
    return {
        "id": event["id"], "recorded": event["recorded"],
        "user": (user.get("who") or {}).get("display", ""),
        "user_id": ((user.get("who") or {}).get("identifier") or {}).get("value", ""),
        "role": ((user.get("role") or [{}])[0]).get("text", ""),
        "unit": (unit.get("who") or {}).get("display", ""),
        "unit_id": ((unit.get("who") or {}).get("identifier") or {}).get("value", ""),
        "patient_id": patient.removeprefix("Patient/"), "patient": "", "personnummer": "",
        "purpose": ((purpose.get("coding") or [{}])[0]).get("code", ""), "reason": purpose.get("text", ""),
        "action": ((event.get("subtype") or [{}])[0]).get("code", ""),
        "resources": " ".join(e["what"]["reference"] for e in entities
                              if "what" in e and (e.get("type") or {}).get("code") == "2"),
        "outcome": event.get("outcomeDesc", ""),
        "request": next((e.get("description", "") for e in entities if e.get("name") == "request"), ""),
    }


async def _name_patients(page: Page, rows: list[dict[str, Any]]) -> None:
    ids = sorted({row["patient_id"] for row in rows if row["patient_id"]})
    patients: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), _PATIENTS_PER_SEARCH):
        chunk = ids[start:start + _PATIENTS_PER_SEARCH]
        found = body(await page.request.app.state.service.search(
            INTERNAL, "Patient", [("_id", ",".join(chunk)), ("_count", str(len(chunk)))], _PREFER))
        patients |= {e["resource"]["id"]: e["resource"] for e in found.get("entry", [])
                     if e["resource"]["resourceType"] == "Patient"}
    for row in rows:
        patient = patients.get(row["patient_id"])
        if patient is not None:
            row["patient"], row["personnummer"] = name_of(patient), person_number(patient)


# -- the page and the export -----------------------------------------------------------------------


@router.get("/logg")
async def log_review(request: Request) -> Response:
    async def run(page: Page) -> Response:
        _require_reviewer(page)
        form, pairs, errors, unknown_patient = await _filters(page)
        raw_page = page.request.query_params.get("sida", "")
        number = max(1, int(raw_page)) if raw_page.isascii() and raw_page.isdigit() and len(raw_page) < 7 else 1
        emergencies, emergency_total = await _search(page, [("purpose", "ETREAT")], EMERGENCIES_SHOWN)
        rows: list[dict[str, Any]] = []
        total = 0
        if not errors and not unknown_patient:
            rows, total = await _search(page, pairs, PAGE_SIZE, (number - 1) * PAGE_SIZE)
        pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
        query = {k: v for k, v in form.items() if v}

        def link(n: int) -> str:
            return "/personal/logg?" + urlencode({**query, "sida": n})

        return page.render("personal/log_review.html", {
            "emergencies": emergencies, "emergency_total": emergency_total, "rows": rows, "total": total,
            "f": form, "errors": errors, "page_number": number, "pages": pages, "purposes": PURPOSES,
            "csv": "/personal/logg.csv" + (f"?{urlencode(query)}" if query else ""), "csv_max": CSV_MAX_ROWS,
            "previous": link(number - 1) if number > 1 else None,
            "next": link(number + 1) if number < pages else None,
        }, status_code=422 if errors else 200)
    return await signed_in(request, STAFF, run)


@router.get("/logg.csv")
async def log_export(request: Request) -> Response:
    async def run(page: Page) -> Response:
        _require_reviewer(page)
        form, pairs, errors, unknown_patient = await _filters(page)
        if errors:
            return page.render("personal/log_review.html", {
                "emergencies": [], "emergency_total": 0, "rows": [], "total": 0, "f": form, "errors": errors,
                "purposes": PURPOSES,
                "page_number": 1, "pages": 1, "csv": None, "csv_max": CSV_MAX_ROWS, "previous": None, "next": None,
            }, status_code=422)
        rows = [] if unknown_patient else (await _search(page, pairs, CSV_MAX_ROWS, max_count=CSV_MAX_ROWS))[0]
        gettext = translator(language_of(page.request)).gettext
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M")
        return page.finish(Response(
            csv_text(rows, [gettext(label) for _, label in CSV_COLUMNS]).encode("utf-8-sig"),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="atkomstlogg-{stamp}.csv"',
                     "Cache-Control": "no-store"}))
    return await signed_in(request, STAFF, run)


def csv_text(rows: list[dict[str, Any]], headings: list[str]) -> str:
    """The rows as CSV (``;``-separated as Swedish Excel expects, every cell quoted as needed), one
    line per log entry; a cell that a spreadsheet would run as a formula starts with ``'``."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow([_cell(h) for h in headings])
    for row in rows:
        writer.writerow([_cell(str(row.get(key) or "")) for key, _ in CSV_COLUMNS])
    return out.getvalue()


def _cell(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_START) else value
