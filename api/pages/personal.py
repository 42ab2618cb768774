"""The staff pages, ``/personal``: the care unit's agreements, one agreement, create, edit,
change of fast vårdkontakt (changing activities and goals, closing and reopening:
``plan_changes.py``, ``activity_changes.py``, ``goal_changes.py``).

Every page calls the FHIR core (``FhirService``, ``BundleProcessor``, ``$patientkontrakt``)
with the signed-in staff member's ``Access``: the same access rules and the same access log as
the API. Forms post back to the page they are on; a CSRF token from the session travels in
each. Validation errors are shown all at once, next to their fields and in a summary at the top
(``api/pages/forms.py``): personnummer, required fields, contacts and activities are checked
by the page (``agreement_form.py``), the Patientkontrakt rules by the core (their
OperationOutcome ``expression`` says which field). What is written is built in the domain
(``patientkontrakt/domain/agreement_builder.py``); an edit that came too late says who changed
what (``edit_conflict.py``).
"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages import agreement_form, forms
from api.pages.agreement_page import load_agreement, open_agreement
from api.pages.common import Page, body, home_page, sign_in_routes, signed_in
from api.pages.directory import activity_kinds, staff_directory
from api.pages.edit_conflict import describe_conflict
from api.pages.labels import N_
from api.pages.lifecycle import core_message, next_states
from api.pages.session import STAFF
from api.pages.views import AgreementView, name_of, person_number
from patientkontrakt.domain import agreement_builder as build
from patientkontrakt.domain import codes
from patientkontrakt.domain.identifiers import (
    IdentifierError,
    PersonIdentity,
    format_person_number,
    parse_person_number,
)
from patientkontrakt.fhir.errors import FhirError, PreconditionFailed
from patientkontrakt.fhir.hooks import WriteContext
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.security.tokens import LOG_REVIEWER

router = APIRouter(prefix="/personal", include_in_schema=False)
PAGE_SIZE = 20
STATUSES = ("active", "draft", "on-hold", "completed", "revoked")
SORTS = {"updated": "-_lastUpdated", "start": "-date", "status": "status"}
_PREFER = Preferences()


# -- sign-in -----------------------------------------------------------------------------------


sign_in_routes(router, STAFF)


# -- the unit's agreements ---------------------------------------------------------------------


@router.get("")
async def agreements(request: Request) -> Response:
    return await home_page(request, STAFF, "personal/landing.html", _list)


async def _list(page: Page) -> Response:
    params = page.request.query_params
    query = params.get("q", "").strip()
    status = params.get("status", "")
    sort = params.get("sort", "updated")
    raw_page = params.get("sida", "")
    page_number = max(1, int(raw_page)) if raw_page.isascii() and raw_page.isdigit() and len(raw_page) < 7 else 1
    pairs = [("category", f"{codes.CAREPLAN_CATEGORY}|{codes.PATIENTKONTRAKT}"), ("_include", "CarePlan:subject"),
             ("_count", str(PAGE_SIZE)), ("_offset", str((page_number - 1) * PAGE_SIZE)),
             ("_sort", SORTS.get(sort, SORTS["updated"])), ("_total", "accurate")]
    error = None
    identity = other_century = None
    if status in STATUSES:
        pairs.append(("status", status))
    if query and any(ch.isdigit() for ch in query):
        # a personnummer or samordningsnummer in any written form: 10 or 12 digits, with or without
        # "-" ("+" for 100 years or older in the 10-digit form), found under its 12-digit normal form
        try:
            identity = parse_person_number(query)
        except IdentifierError as exc:
            error = forms.person_number_message(query, exc)
    elif query:
        pairs.append(("patient.name", query))

    async def search(identifier: PersonIdentity | None) -> dict[str, Any]:
        extra = [] if identifier is None else [("patient.identifier", f"{identifier.system}|{identifier.value}")]
        return body(await page.request.app.state.service.search(page.access, "CarePlan", [*pairs, *extra], _PREFER))

    bundle = await search(identity) if error is None else {"entry": [], "total": 0}
    if identity is not None and not bundle.get("total") and (other := forms.other_century(query, identity)):
        # "121212-1212" is born 2012 by Skatteverket's rule; someone born 1912 is written
        # "121212+1212". When the rule finds no one and the other century does, show that, and say why.
        found = await search(other)
        if found.get("total"):
            bundle, other_century = found, {"typed": query, "number": format_person_number(other.value),
                                            "short": forms.short_form(other)}
    patients = {f"Patient/{e['resource']['id']}": e["resource"] for e in bundle.get("entry", [])
                if e["resource"]["resourceType"] == "Patient"}
    rows = []
    for entry in bundle.get("entry", []):
        plan = entry["resource"]
        if plan["resourceType"] != "CarePlan":
            continue
        patient = patients.get(str((plan.get("subject") or {}).get("reference")), {})
        rows.append({"id": plan["id"], "title": plan.get("title", ""), "status": plan.get("status", ""),
                     "patient": name_of(patient), "personnummer": person_number(patient),
                     "start": str((plan.get("period") or {}).get("start", ""))[:10],
                     "updated": str(plan["meta"]["lastUpdated"])[:10]})
    total = int(bundle.get("total", 0))
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)

    def link(number: int) -> str:
        return "/personal?" + urlencode({"q": query, "status": status, "sort": sort, "sida": number})

    return page.render("personal/list.html", {
        "rows": rows, "total": total, "q": query, "status": status, "sort": sort, "statuses": STATUSES,
        "sorts": list(SORTS), "page_number": page_number, "pages": pages, "query_error": error,
        "other_century": other_century, "log_reviewer": LOG_REVIEWER in page.access.principal.roles,
        "previous": link(page_number - 1) if page_number > 1 else None,
        "next": link(page_number + 1) if page_number < pages else None,
    })



# -- one agreement ------------------------------------------------------------------------------


@router.get("/avtal/{plan_id}")
async def agreement(request: Request, plan_id: str) -> Response:
    async def run(page: Page) -> Response:
        view = await load_agreement(page, plan_id)
        return page.render("personal/agreement.html", {"a": view, "saved": page.request.query_params.get("sparat")})
    return await signed_in(request, STAFF, run)


# -- create -------------------------------------------------------------------------------------


@router.get("/nytt")
async def new_form(request: Request) -> Response:
    async def run(page: Page) -> Response:
        return page.render("personal/new.html", {"f": agreement_form.empty_new_form(), "errors": {}, "general": [],
                                                 "kinds": activity_kinds(page), **await staff_directory(page)})
    return await signed_in(request, STAFF, run)


@router.post("/nytt")
async def create(request: Request) -> Response:
    """Every error of the form in one round: the page checks the patient, the contacts and the
    activities before it returns, and sends the core nothing it would refuse for a reason the
    page can see (an empty list, a missing contact, a second active agreement)."""
    async def run(page: Page) -> Response:
        data = await page.form()
        form = agreement_form.read_new_form(data)
        directory = await staff_directory(page)
        errors: dict[str, Any] = {}
        patient = await agreement_form.find_or_describe_patient(page, form, errors)
        agreement_form.check_people(form, directory, errors)
        activities = agreement_form.checked_activities(form, errors)
        if "id" in patient and form["status"] == "active":
            await agreement_form.check_no_active_agreement(page, patient["id"], directory["care_unit_org"], errors)

        def again(general: list[Any]) -> Response:
            return page.render("personal/new.html", {
                "f": form, "errors": forms.in_form_order(errors, agreement_form.NEW_FORM_ORDER), "general": general,
                "kinds": activity_kinds(page), **directory}, status_code=422)

        if errors:
            return again([])
        bundle, plan_urn = build.agreement_bundle(
            form, patient, activities, directory, name=name_of(patient) or f"{form['given']} {form['family']}".strip(),
            staff_ref=page.session.fhir_user or "", today=datetime.date.today())
        try:
            result = body(await page.request.app.state.bundles.process(page.access, bundle, _PREFER))
        except FhirError as error:
            return again(forms.issue_fields(error.issues, errors, bundle, activities, agreement_form.NEW_FORM_FIELDS))
        plan_index = next(i for i, e in enumerate(bundle["entry"]) if e["fullUrl"] == plan_urn)
        location = result["entry"][plan_index]["response"]["location"]
        plan_id = location.split("/CarePlan/")[1].split("/")[0]
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await signed_in(request, STAFF, run)


# -- edit, with optimistic locking --------------------------------------------------------------


@router.get("/avtal/{plan_id}/redigera")
async def edit_form(request: Request, plan_id: str) -> Response:
    async def run(page: Page, view: AgreementView, _: dict[str, Any]) -> Response:
        return await _edit_page(page, view, agreement_form.edit_form_of(view), {}, None)
    return await open_agreement(request, plan_id, run)


async def _edit_page(page: Page, view: AgreementView, form: dict[str, Any], errors: dict[str, Any], conflict: Any,
                     general: list[Any] | None = None, status: int = 200) -> Response:
    directory = await staff_directory(page)
    return page.render("personal/edit.html", {"a": view, "f": form, "errors": errors, "conflict": conflict,
                                              "general": general or [], "kinds": activity_kinds(page),
                                              "units": directory["units"], "statuses": next_states(view.status)},
                       status_code=status)


@router.post("/avtal/{plan_id}/redigera")
async def edit(request: Request, plan_id: str) -> Response:
    """Save the agreement's text, status and end, with new goals and activities, as one
    transaction whose CarePlan entry carries ``If-Match``: a stale edit changes nothing."""
    async def run(page: Page, view: AgreementView, data: dict[str, Any]) -> Response:
        form = agreement_form.read_edit_form(data)
        errors: dict[str, Any] = {}
        agreement_form.check_edit(form, next_states(view.status), errors)
        activities = agreement_form.checked_activities(form, errors)
        if errors:
            return await _edit_page(page, view, form, errors, None, status=422)
        bundle = build.edited_agreement_bundle(
            view.plan, form, activities, patient_ref=f"Patient/{view.patient_id}",
            staff_ref=page.session.fhir_user or "", care_unit_org=getattr(page.access, "care_unit_org", ""),
            today=datetime.date.today())
        try:
            await page.request.app.state.bundles.process(page.access, bundle, _PREFER)
        except PreconditionFailed:
            conflict = await describe_conflict(page, plan_id, form["version"], view)
            return await _edit_page(page, view, form, {}, conflict, status=409)
        except FhirError as error:
            general = agreement_form.edit_issue_fields(error.issues, errors, bundle, activities) if error.issues \
                else core_message(error)
            return await _edit_page(page, view, form, errors, None, general, status=409 if error.status == 409 else 422)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await open_agreement(request, plan_id, run)


# -- fast vårdkontakt -----------------------------------------------------------------------------


@router.get("/avtal/{plan_id}/vardkontakt")
async def contact_form(request: Request, plan_id: str) -> Response:
    async def run(page: Page, view: AgreementView, _: dict[str, Any]) -> Response:
        return page.render("personal/contact.html", {"a": view, "errors": {}, "f": {"reason": ""},
                                                     **await staff_directory(page)})
    return await open_agreement(request, plan_id, run)


@router.post("/avtal/{plan_id}/vardkontakt")
async def change_contact(request: Request, plan_id: str) -> Response:
    async def run(page: Page, view: AgreementView, data: dict[str, Any]) -> Response:
        directory = await staff_directory(page)
        form = {"new": str(data.get("new", "")), "reason": str(data.get("reason", "")).strip(),
                "version": str(data.get("version", ""))}
        errors: dict[str, Any] = {}
        current = view.contact(codes.FAST_VARDKONTAKT)
        if form["new"] not in {r["id"] for r in directory["own_staff"]}:
            errors["new"] = N_("Choose the new fast vårdkontakt among the unit's staff.")
        elif current is not None and current.person.reference == f"PractitionerRole/{form['new']}":
            errors["new"] = N_("That is already the patient's fast vårdkontakt.")
        if not form["reason"]:
            errors["reason"] = N_("Say why the fast vårdkontakt changes.")
        if errors:
            return page.render("personal/contact.html", {"a": view, "errors": errors, "f": form, **directory},
                               status_code=422)
        team = build.with_fast_vardkontakt(view.team, build.role_reference(form["new"], directory),
                                           datetime.date.today())
        provenance = build.contact_change_provenance(form["reason"], page.session.fhir_user or "", page.session.name)
        try:
            await page.request.app.state.service.update(
                page.access, "CareTeam", view.team_id, team, if_match=f'W/"{form["version"] or view.team_version}"',
                prefer=_PREFER, context=WriteContext(provenance=provenance))
        except PreconditionFailed:
            errors["new"] = N_("Someone else changed the care team since you opened the page. Reload it and try again.")
            return page.render("personal/contact.html", {"a": view, "errors": errors, "f": form, **directory},
                               status_code=409)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await open_agreement(request, plan_id, run)
