"""The staff's agreement form, new (``/personal/nytt``) and edited (``/personal/avtal/{id}/redigera``):
its fields, reading what was posted, and the checks the page makes before it calls the core.

Every error of one submission is found at once and shown next to its field (``forms.py``): the
personnummer (and, for a patient nobody has registered, the names), the fast vårdkontakt and
fast läkarkontakt among the unit's staff, the participants, every filled-in activity row, and a
second active agreement of the patient with the unit. What the core still refuses comes back as
issues on the same fields (``edit_issue_fields``).
"""

from __future__ import annotations

import datetime
from typing import Any

from api.pages import forms
from api.pages.common import Page, body
from api.pages.labels import N_
from api.pages.views import AgreementView
from patientkontrakt.domain import codes
from patientkontrakt.domain.agreement_builder import new_patient
from patientkontrakt.domain.identifiers import IdentifierError, parse_person_number
from patientkontrakt.fhir.errors import Issue
from patientkontrakt.fhir.requests import Preferences

_PREFER = Preferences()
ACTIVITY_ROWS = 3
EDIT_ACTIVITY_ROWS = 2
# ``past``: the box that confirms a date that has passed (shown once such a date is entered)
ACTIVITY_FIELDS = ("kind", "description", "date", "past", "time", "place", "performer")
NEW_FORM_FIELDS = ("personnummer", "given", "family", "phone", "vardkontakt", "lakarkontakt", "participants",
                   "description", "own_goals", "care_goals", "status")
NEW_FORM_ORDER = (*NEW_FORM_FIELDS, *forms.activity_field_order(ACTIVITY_ROWS, ACTIVITY_FIELDS), "activities")
EDIT_FORM_FIELDS = ("title", "description", "status", "end", "care_goals", "own_goals")


# -- reading ----------------------------------------------------------------------------------------


def empty_activities(count: int) -> list[dict[str, str]]:
    return [{k: "" for k in ACTIVITY_FIELDS} for _ in range(count)]


def empty_new_form() -> dict[str, Any]:
    return {"personnummer": "", "given": "", "family": "", "phone": "", "vardkontakt": "", "lakarkontakt": "",
            "participants": [], "description": "", "own_goals": "", "care_goals": "", "status": "active",
            "activities": empty_activities(ACTIVITY_ROWS)}


def read_activities(data: dict[str, Any], count: int) -> list[dict[str, str]]:
    return [{k: forms.text(data, f"activity-{i}-{k}") for k in ACTIVITY_FIELDS} for i in range(count)]


def read_new_form(data: dict[str, Any]) -> dict[str, Any]:
    value = data.get("participants", [])
    form: dict[str, Any] = {k: forms.text(data, k) for k in NEW_FORM_FIELDS if k != "participants"}
    form["participants"] = [v for v in (value if isinstance(value, list) else [value]) if v]
    form["activities"] = read_activities(data, ACTIVITY_ROWS)
    return form


def edit_form_of(view: AgreementView) -> dict[str, Any]:
    """The edit form as it opens: the agreement as it is, at its version, no new goals or activities."""
    return {"title": view.title, "description": view.description, "status": view.status, "end": view.end,
            "version": view.version, "activities": empty_activities(EDIT_ACTIVITY_ROWS)}


def read_edit_form(data: dict[str, Any]) -> dict[str, Any]:
    form: dict[str, Any] = {k: str(data.get(k, "")).strip() for k in (*EDIT_FORM_FIELDS, "version")}
    form["activities"] = read_activities(data, EDIT_ACTIVITY_ROWS)
    return form


# -- checking ---------------------------------------------------------------------------------------


def check_edit(form: dict[str, Any], statuses: tuple[str, ...], errors: dict[str, Any]) -> None:
    """The edit form's title, status (one of ``statuses``) and end date."""
    if not form["title"]:
        errors["title"] = N_("Enter a title.")
    if form["status"] not in statuses:
        errors["status"] = N_("Choose a status.")
    forms.check_date(form, "end", errors, N_("Enter the end date as YYYY-MM-DD."))


async def find_or_describe_patient(page: Page, form: dict[str, Any], errors: dict[str, Any]) -> dict[str, Any]:
    """The patient by personnummer (one the unit may see), or the one to register. The names
    are asked for when the number is valid and no patient has it: a number mistyped says so,
    and does not also ask for the names of a patient who may be registered."""
    try:
        identity = parse_person_number(form["personnummer"])
    except IdentifierError as exc:
        errors["personnummer"] = forms.person_number_message(form["personnummer"], exc)
        return {}
    form["personnummer"] = identity.value
    found = body(await page.request.app.state.service.search(
        page.access, "Patient", [("identifier", f"{identity.system}|{identity.value}")], _PREFER))
    existing = [e["resource"] for e in found.get("entry", []) if e["resource"]["resourceType"] == "Patient"]
    if existing:
        return existing[0]
    if not form["given"]:
        errors["given"] = N_("Enter the first name of a new patient.")
    if not form["family"]:
        errors["family"] = N_("Enter the last name of a new patient.")
    return new_patient(identity, form["given"], form["family"], form["phone"])


async def check_no_active_agreement(page: Page, patient_id: str, care_unit_org: str, errors: dict[str, Any]) -> None:
    """The core allows one active agreement per patient and unit: say so before saving."""
    found = body(await page.request.app.state.service.search(page.access, "CarePlan", [
        ("subject", f"Patient/{patient_id}"), ("status", "active"),
        ("category", f"{codes.CAREPLAN_CATEGORY}|{codes.PATIENTKONTRAKT}"), ("_count", "20")], _PREFER))
    if any(str((e["resource"].get("author") or {}).get("reference")) == f"Organization/{care_unit_org}"
           for e in found.get("entry", []) if e["resource"]["resourceType"] == "CarePlan"):
        errors.setdefault("personnummer", N_("The patient already has an active agreement with the unit. "
                                             "Open it from the list, or save this one as a draft."))


def check_people(form: dict[str, Any], directory: dict[str, Any], errors: dict[str, Any]) -> None:
    own = {r["id"]: r for r in directory["own_staff"]}
    if not form["vardkontakt"]:
        errors["vardkontakt"] = N_("Choose a fast vårdkontakt")
    elif form["vardkontakt"] not in own:
        errors["vardkontakt"] = N_("Choose the fast vårdkontakt among the unit's staff.")
    chosen = own.get(form["lakarkontakt"])
    if not form["lakarkontakt"]:
        if directory["primary_care"]:  # HSL 7 kap 3 §: a vårdcentral's patients have one
            errors["lakarkontakt"] = N_("Choose a fast läkarkontakt")
    elif chosen is None or not chosen["doctor"]:
        errors["lakarkontakt"] = N_("Choose the fast läkarkontakt among the unit's physicians.")
    known = {r["id"] for r in directory["other_staff"]} | set(own)
    if any(p not in known for p in form["participants"]):
        errors["participants"] = N_("Choose participants from the list.")


def checked_activities(form: dict[str, Any], errors: dict[str, Any]) -> list[dict[str, Any]]:
    """The filled-in activity rows, checked (empty rows are skipped), for ``agreement_builder.activity``.
    A row without a time is planned for the day only (stored as a date); a date that has passed
    is saved once the row's box says so."""
    out = []
    today = datetime.date.today()
    for i, row in enumerate(form["activities"]):
        if not any(row[k] for k in ACTIVITY_FIELDS if k != "past"):
            continue
        name = f"activity-{i}-"
        if not row["kind"]:
            errors[name + "kind"] = N_("Choose the kind of activity.")
        if not row["description"]:
            errors[name + "description"] = N_("Describe the activity.")
        day = time = None
        if not row["date"]:
            errors[name + "date"] = N_("Enter the date of the activity.")
        else:
            try:
                day = datetime.date.fromisoformat(row["date"])
            except ValueError:
                errors[name + "date"] = N_("Enter the date as YYYY-MM-DD.")
        if day is not None and day < today and not row["past"]:
            errors[name + "past"] = N_("The date has already passed – save anyway? Then tick the box.")
        if row["time"]:
            try:
                time = datetime.time.fromisoformat(row["time"])
            except ValueError:
                errors[name + "time"] = N_("Enter the time as HH:MM, or leave it empty.")
        if not row["performer"]:
            errors[name + "performer"] = N_("Choose the unit responsible for the activity.")
        if not any(key.startswith(name) for key in errors):
            out.append({"kind": row["kind"], "description": row["description"], "day": day, "time": time,
                        "performer": row["performer"], "place": row.get("place", ""), "row": i})
    return out


def edit_issue_fields(issues: list[Issue], errors: dict[str, Any], bundle: dict[str, Any] | None = None,
                      activities: list[dict[str, Any]] | None = None) -> list[Any]:
    """The edit form's fields for the core's issues (``forms.issue_fields``); the rest in general."""
    return forms.issue_fields(issues, errors, bundle, activities or [], EDIT_FORM_FIELDS)
