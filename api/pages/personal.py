"""The staff pages, ``/personal``: the care unit's agreements, one agreement, create, edit,
change of fast vårdkontakt (changing activities and goals, closing and reopening: ``plan_changes.py``).

Every page calls the FHIR core (``FhirService``, ``BundleProcessor``, ``$patientkontrakt``)
with the signed-in staff member's ``Access``: the same access rules and the same access log as
the API. Forms post back to the page they are on; a CSRF token from the session travels in
each. Validation errors are shown all at once, next to their fields and in a summary at the top
(``api/pages/forms.py``): personnummer, required fields, contacts and activities are checked
here, the Patientkontrakt rules by the core (their OperationOutcome ``expression`` says which
field).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages import forms
from api.pages import session as sessions
from api.pages.common import Page, body, login_failed, signed_in
from api.pages.labels import N_
from api.pages.lifecycle import closed_page, core_message, next_states
from api.pages.session import STAFF
from api.pages.views import agreement_view, name_of, person_number
from api.templating import language_of, render
from patientkontrakt.domain import codes
from patientkontrakt.domain.identifiers import (
    IdentifierError,
    PersonIdentity,
    format_person_number,
    parse_person_number,
)
from patientkontrakt.fhir.errors import FhirError, Issue, PreconditionFailed
from patientkontrakt.fhir.hooks import WriteContext
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.security.oauth import OAuthError

router = APIRouter(prefix="/personal", include_in_schema=False)
PAGE_SIZE = 20
STATUSES = ("active", "draft", "on-hold", "completed", "revoked")
SORTS = {"updated": "-_lastUpdated", "start": "-date", "status": "status"}
ACTIVITY_ROWS = 3
EDIT_ACTIVITY_ROWS = 2
_PREFER = Preferences()


# -- sign-in -----------------------------------------------------------------------------------


@router.get("/logga-in")
async def login(request: Request) -> Response:
    return sessions.start_login(request, STAFF)


@router.get("/callback")
async def callback(request: Request) -> Response:
    try:
        return await sessions.finish_login(request, STAFF)
    except (OAuthError, FhirError) as error:
        return login_failed(request, STAFF, error)


@router.post("/logga-ut")
async def logout(request: Request) -> Response:
    async def run(page: Page) -> Response:
        await page.form()
        return await sessions.logout(request, STAFF)
    return await signed_in(request, STAFF, run)


# -- the unit's agreements ---------------------------------------------------------------------


@router.get("")
async def agreements(request: Request) -> Response:
    try:
        sessions.current(request, STAFF)
    except sessions.NotSignedIn:
        return render(request, "personal/landing.html", {"area": STAFF})
    return await signed_in(request, STAFF, _list)


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
        "other_century": other_century,
        "previous": link(page_number - 1) if page_number > 1 else None,
        "next": link(page_number + 1) if page_number < pages else None,
    })


# -- one agreement ------------------------------------------------------------------------------


async def _agreement(page: Page, plan_id: str) -> Any:
    bundle = orjson.loads(await page.request.app.state.overview.for_plan(page.access, plan_id))
    view = agreement_view(bundle, plan_id)
    if view is None:
        raise FhirError(f"CarePlan/{plan_id} is not known")
    return view


@router.get("/avtal/{plan_id}")
async def agreement(request: Request, plan_id: str) -> Response:
    async def run(page: Page) -> Response:
        view = await _agreement(page, plan_id)
        return page.render("personal/agreement.html", {"a": view, "saved": page.request.query_params.get("sparat")})
    return await signed_in(request, STAFF, run)


# -- the unit's staff and the region's units, for the forms --------------------------------------


async def _directory(page: Page) -> dict[str, Any]:
    service = page.request.app.state.service
    unit_org = getattr(page.access, "unit_org", "")
    roles = body(await service.search(page.access, "PractitionerRole", [
        ("active", "true"), ("_include", "PractitionerRole:practitioner"),
        ("_include", "PractitionerRole:organization"), ("_count", "500")], _PREFER))
    resources = {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
                 for e in roles.get("entry", [])}
    own, others = [], []
    for role in (r for r in resources.values() if r["resourceType"] == "PractitionerRole"):
        practitioner = resources.get(str((role.get("practitioner") or {}).get("reference")), {})
        org_ref = str((role.get("organization") or {}).get("reference"))
        org = resources.get(org_ref, {})
        concept = (role.get("code") or [{}])[0]
        code = (concept.get("coding") or [{}])[0].get("code", "")
        entry = {"id": role["id"], "name": name_of(practitioner), "title": concept.get("text", ""),
                 "unit": name_of(org), "doctor": code == "doctor", "org": org_ref.split("/")[-1]}
        (own if org_ref == f"Organization/{unit_org}" else others).append(entry)
    orgs = body(await service.search(page.access, "Organization", [("_count", "500"), ("_sort", "name")], _PREFER))
    units = [{"id": e["resource"]["id"], "name": name_of(e["resource"])} for e in orgs.get("entry", [])
             if any(c.get("system") == codes.CARE_UNIT_TYPE for t in e["resource"].get("type", [])
                    for c in t.get("coding", []))]
    unit = next((e["resource"] for e in orgs.get("entry", []) if e["resource"]["id"] == unit_org), {})
    primary_care = any(c.get("code") == "vardcentral" for t in unit.get("type", []) for c in t.get("coding", []))
    key = lambda r: (r["name"], r["unit"])  # noqa: E731
    return {"own_staff": sorted(own, key=key), "other_staff": sorted(others, key=lambda r: (r["unit"], r["name"])),
            "units": units, "unit_org": unit_org, "primary_care": primary_care}


# -- create -------------------------------------------------------------------------------------


def _empty_form() -> dict[str, Any]:
    return {"personnummer": "", "given": "", "family": "", "phone": "", "vardkontakt": "", "lakarkontakt": "",
            "participants": [], "description": "", "own_goals": "", "care_goals": "", "status": "active",
            "activities": _empty_activities(ACTIVITY_ROWS)}


# ``past``: the box that confirms a date that has passed (shown once such a date is entered)
_ACTIVITY_FIELDS = ("kind", "description", "date", "past", "time", "place", "performer")
_NEW_FORM_FIELDS = ("personnummer", "given", "family", "phone", "vardkontakt", "lakarkontakt", "participants",
                    "description", "own_goals", "care_goals", "status")
_NEW_FORM_ORDER = (*_NEW_FORM_FIELDS, *forms.activity_field_order(ACTIVITY_ROWS, _ACTIVITY_FIELDS), "activities")


def _empty_activities(count: int) -> list[dict[str, str]]:
    return [{k: "" for k in _ACTIVITY_FIELDS} for _ in range(count)]


def _read_activities(data: dict[str, Any], count: int) -> list[dict[str, str]]:
    def text(name: str) -> str:
        value = data.get(name, "")
        return str(value[0] if isinstance(value, list) else value).strip()

    return [{k: text(f"activity-{i}-{k}") for k in _ACTIVITY_FIELDS} for i in range(count)]


@router.get("/nytt")
async def new_form(request: Request) -> Response:
    async def run(page: Page) -> Response:
        return page.render("personal/new.html", {"f": _empty_form(), "errors": {}, "general": [],
                                                 "kinds": _activity_kinds(page), **await _directory(page)})
    return await signed_in(request, STAFF, run)


@router.post("/nytt")
async def create(request: Request) -> Response:
    """Every error of the form in one round: the page checks the patient, the contacts and the
    activities before it returns, and sends the core nothing it would refuse for a reason the
    page can see (an empty list, a missing contact, a second active agreement)."""
    async def run(page: Page) -> Response:
        data = await page.form()
        form = _read_form(data)
        directory = await _directory(page)
        errors: dict[str, Any] = {}
        patient = await _find_or_describe_patient(page, form, errors)
        _check_people(form, directory, errors)
        activities = _activities(form, errors)
        if "id" in patient and form["status"] == "active":
            await _check_no_active_agreement(page, patient["id"], directory["unit_org"], errors)

        def again(general: list[Any]) -> Response:
            return page.render("personal/new.html", {
                "f": form, "errors": forms.in_form_order(errors, _NEW_FORM_ORDER), "general": general,
                "kinds": _activity_kinds(page), **directory}, status_code=422)

        if errors:
            return again([])
        bundle, plan_urn = _agreement_bundle(page, form, patient, activities, directory)
        try:
            result = body(await page.request.app.state.bundles.process(page.access, bundle, _PREFER))
        except FhirError as error:
            return again(forms.issue_fields(error.issues, errors, bundle, activities, _NEW_FORM_FIELDS))
        plan_index = next(i for i, e in enumerate(bundle["entry"]) if e["fullUrl"] == plan_urn)
        location = result["entry"][plan_index]["response"]["location"]
        plan_id = location.split("/CarePlan/")[1].split("/")[0]
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await signed_in(request, STAFF, run)


def _read_form(data: dict[str, Any]) -> dict[str, Any]:
    def text(name: str) -> str:
        value = data.get(name, "")
        return (value[0] if isinstance(value, list) else value).strip()

    def many(name: str) -> list[str]:
        value = data.get(name, [])
        return [v for v in (value if isinstance(value, list) else [value]) if v]

    form = {k: text(k) for k in ("personnummer", "given", "family", "phone", "vardkontakt", "lakarkontakt",
                                 "description", "own_goals", "care_goals", "status")}
    form["participants"] = many("participants")
    form["activities"] = _read_activities(data, ACTIVITY_ROWS)
    return form


async def _find_or_describe_patient(page: Page, form: dict[str, Any], errors: dict[str, Any]) -> dict[str, Any]:
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
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": identity.system,
                                                                           "value": identity.value}],
                               "name": [{"family": form["family"], "given": [form["given"]]}]}
    if form["phone"]:
        patient["telecom"] = [{"system": "phone", "value": form["phone"], "use": "mobile"}]
    return patient


async def _check_no_active_agreement(page: Page, patient_id: str, unit_org: str, errors: dict[str, Any]) -> None:
    """The core allows one active agreement per patient and unit: say so before saving."""
    found = body(await page.request.app.state.service.search(page.access, "CarePlan", [
        ("subject", f"Patient/{patient_id}"), ("status", "active"),
        ("category", f"{codes.CAREPLAN_CATEGORY}|{codes.PATIENTKONTRAKT}"), ("_count", "20")], _PREFER))
    if any(str((e["resource"].get("author") or {}).get("reference")) == f"Organization/{unit_org}"
           for e in found.get("entry", []) if e["resource"]["resourceType"] == "CarePlan"):
        errors.setdefault("personnummer", N_("The patient already has an active agreement with the unit. "
                                             "Open it from the list, or save this one as a draft."))


def _check_people(form: dict[str, Any], directory: dict[str, Any], errors: dict[str, Any]) -> None:
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


def _activities(form: dict[str, Any], errors: dict[str, Any]) -> list[dict[str, Any]]:
    """The filled-in activity rows, checked (empty rows are skipped). A row without a time is
    planned for the day only (stored as a date); a date that has passed is saved once the row's
    box says so."""
    out = []
    today = datetime.date.today()
    for i, row in enumerate(form["activities"]):
        if not any(row[k] for k in _ACTIVITY_FIELDS if k != "past"):
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


def _activity_kinds(page: Page) -> list[tuple[str, str]]:
    labels = page.request.app.state.service.defs.code_displays(codes.ACTIVITY_KIND, language_of(page.request))
    return sorted(labels.items(), key=lambda kc: kc[1])


def _role_ref(role_id: str, directory: dict[str, Any]) -> dict[str, str]:
    staff = {r["id"]: r for r in [*directory["own_staff"], *directory["other_staff"]]}
    chosen = staff.get(role_id, {})
    return {"reference": f"PractitionerRole/{role_id}",
            "display": f"{chosen.get('name', '')}, {chosen.get('unit', '')}".strip(", ")}


def _agreement_bundle(page: Page, form: dict[str, Any], patient: dict[str, Any], activities: list[dict[str, Any]],
                      directory: dict[str, Any]) -> tuple[dict[str, Any], str]:
    today = datetime.date.today().isoformat()
    unit_org = directory["unit_org"]
    entries: list[dict[str, Any]] = []

    def add(resource: dict[str, Any]) -> str:
        urn = f"urn:uuid:{uuid.uuid4()}"
        entries.append({"fullUrl": urn, "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})
        return urn

    if "id" in patient:
        patient_ref = f"Patient/{patient['id']}"
    else:
        patient_ref = add(patient)
    name = name_of(patient) or f"{form['given']} {form['family']}".strip()

    def role(code: str, label: str) -> list[dict[str, Any]]:
        return [{"coding": [{"system": codes.CARETEAM_ROLE, "code": code, "display": label}]}]

    participants = [{"role": role(codes.FAST_VARDKONTAKT, "Fast vårdkontakt"),
                     "member": _role_ref(form["vardkontakt"], directory), "period": {"start": today}}]
    if form["lakarkontakt"]:
        participants.append({"role": role(codes.FAST_LAKARKONTAKT, "Fast läkarkontakt"),
                             "member": _role_ref(form["lakarkontakt"], directory), "period": {"start": today}})
    others = {r["id"]: r for r in directory["other_staff"]}
    for role_id in form["participants"]:
        code, label = ("kontaktperson-kommun", "Kontaktperson i kommunen") \
            if role_id in others and "kommun" in others[role_id]["unit"].lower() or "hemtj" in \
            others.get(role_id, {}).get("unit", "").lower() else ("ovrig", "Övrig deltagare")
        participants.append({"role": role(code, label), "member": _role_ref(role_id, directory),
                             "period": {"start": today}})
    participants.append({"role": role("patient", "Patient"), "member": {"reference": patient_ref},
                         "period": {"start": today}})
    team_urn = add({"resourceType": "CareTeam", "status": "active", "name": f"Vårdteam för {name}",
                    "subject": {"reference": patient_ref}, "participant": participants,
                    "managingOrganization": [{"reference": f"Organization/{unit_org}"}]})
    goal_refs = [{"reference": add(goal)} for goal in _goals(page, form, patient_ref)]
    contributors = sorted({r["org"] for r in directory["other_staff"] if r["id"] in form["participants"]}
                          | {a["performer"] for a in activities} - {unit_org})
    plan = {
        "resourceType": "CarePlan", "status": form["status"] if form["status"] in ("active", "draft") else "active",
        "intent": "plan",
        "category": [{"coding": [{"system": codes.CAREPLAN_CATEGORY, "code": codes.PATIENTKONTRAKT,
                                  "display": "Patientkontrakt"}]}],
        "title": f"Patientkontrakt för {name}",
        "description": form["description"] or "Överenskommelse mellan dig och vården.",
        "subject": {"reference": patient_ref}, "period": {"start": today}, "created": today,
        "author": {"reference": f"Organization/{unit_org}"},
        "careTeam": [{"reference": team_urn}],
    }
    if goal_refs:  # FHIR allows no empty array: an element without values is left out
        plan["goal"] = goal_refs
    if activities:
        plan["activity"] = [_activity_resource(a) for a in activities]
    if contributors:
        plan["contributor"] = [{"reference": f"Organization/{org}"} for org in contributors]
    plan_urn = add(plan)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, plan_urn


def _goals(page: Page, form: dict[str, Any], patient_ref: str) -> list[dict[str, Any]]:
    """New Goals from the form's lines: the patient's own (expressed by the patient) and the
    care's (expressed by the signed-in staff member's commission)."""
    today = datetime.date.today().isoformat()
    goals = []
    for text, expressed in ((form.get("own_goals", ""), {"reference": patient_ref}),
                            (form.get("care_goals", ""), {"reference": page.session.fhir_user or ""})):
        for line in (x.strip() for x in text.splitlines()):
            if line:
                goals.append({"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": line},
                              "subject": {"reference": patient_ref}, "startDate": today, "expressedBy": expressed})
    return goals


def _activity_resource(activity: dict[str, Any]) -> dict[str, Any]:
    """``CarePlan.activity`` for a form row. With a time it is planned for 45 minutes from then;
    without one, for the day: ``scheduledPeriod.start`` is then a date, which a dateTime may be."""
    day, time = activity["day"], activity["time"]
    if time is None:
        period = {"start": day.isoformat()}
    else:
        start = datetime.datetime.combine(day, time.replace(second=0, microsecond=0))
        end = start + datetime.timedelta(minutes=45)
        zone = datetime.datetime.now().astimezone().strftime("%z")
        offset = f"{zone[:3]}:{zone[3:]}" if zone else "+00:00"
        period = {"start": start.strftime("%Y-%m-%dT%H:%M:00") + offset,
                  "end": end.strftime("%Y-%m-%dT%H:%M:00") + offset}
    detail: dict[str, Any] = {
        "code": {"coding": [{"system": codes.ACTIVITY_KIND, "code": activity["kind"]}]},
        "status": "scheduled",
        "scheduledPeriod": period,
        "performer": [{"reference": f"Organization/{activity['performer']}"}],
        "description": activity["description"],
    }
    if activity.get("place"):
        detail["location"] = {"display": activity["place"]}
    return {"detail": detail}


_EDIT_FORM_FIELDS = ("title", "description", "status", "end", "care_goals", "own_goals")


def _field_errors(issues: list[Issue], errors: dict[str, Any], bundle: dict[str, Any] | None = None,
                  activities: list[dict[str, Any]] | None = None) -> list[Any]:
    """The edit form's fields for the core's issues (``forms.issue_fields``); the rest in general."""
    return forms.issue_fields(issues, errors, bundle, activities or [], _EDIT_FORM_FIELDS)


# -- edit, with optimistic locking --------------------------------------------------------------


@router.get("/avtal/{plan_id}/redigera")
async def edit_form(request: Request, plan_id: str) -> Response:
    async def run(page: Page) -> Response:
        view = await _agreement(page, plan_id)
        if view.closed:
            return closed_page(page, view)
        form = {"title": view.title, "description": view.description, "status": view.status, "end": view.end,
                "version": view.version, "activities": _empty_activities(EDIT_ACTIVITY_ROWS)}
        return await _edit_page(page, view, form, {}, None)
    return await signed_in(request, STAFF, run)


async def _edit_page(page: Page, view: Any, form: dict[str, Any], errors: dict[str, Any], conflict: Any,
                     general: list[Any] | None = None, status: int = 200) -> Response:
    directory = await _directory(page)
    return page.render("personal/edit.html", {"a": view, "f": form, "errors": errors, "conflict": conflict,
                                              "general": general or [], "kinds": _activity_kinds(page),
                                              "units": directory["units"], "statuses": next_states(view.status)},
                       status_code=status)


@router.post("/avtal/{plan_id}/redigera")
async def edit(request: Request, plan_id: str) -> Response:
    """Save the agreement's text, status and end, with new goals and activities, as one
    transaction whose CarePlan entry carries ``If-Match``: a stale edit changes nothing."""
    async def run(page: Page) -> Response:
        data = await page.form()
        view = await _agreement(page, plan_id)
        if view.closed:
            return closed_page(page, view)
        form: dict[str, Any] = {k: str(data.get(k, "")).strip()
                                for k in ("title", "description", "status", "end", "version", "care_goals",
                                          "own_goals")}
        form["activities"] = _read_activities(data, EDIT_ACTIVITY_ROWS)
        errors: dict[str, Any] = {}
        if not form["title"]:
            errors["title"] = N_("Enter a title.")
        if form["status"] not in next_states(view.status):
            errors["status"] = N_("Choose a status.")
        if form["end"]:
            try:
                datetime.date.fromisoformat(form["end"])
            except ValueError:
                errors["end"] = N_("Enter the end date as YYYY-MM-DD.")
        activities = _activities(form, errors)
        if errors:
            return await _edit_page(page, view, form, errors, None, status=422)
        plan = {k: v for k, v in view.plan.items() if k != "meta"}
        plan.update(title=form["title"], description=form["description"], status=form["status"])
        period = dict(plan.get("period") or {})
        if form["end"]:
            period["end"] = form["end"]
        else:
            period.pop("end", None)
        plan["period"] = period
        plan["activity"] = [*plan.get("activity", []), *(_activity_resource(a) for a in activities)]
        entries = []
        for goal in _goals(page, form, f"Patient/{view.patient_id}"):
            urn = f"urn:uuid:{uuid.uuid4()}"
            entries.append({"fullUrl": urn, "resource": goal, "request": {"method": "POST", "url": "Goal"}})
            plan["goal"] = [*plan.get("goal", []), {"reference": urn}]
        unit_org = getattr(page.access, "unit_org", "")
        new_performers = {a["performer"] for a in activities} - {unit_org, view.author_id}
        known = {str(c.get("reference", "")).split("/")[-1] for c in plan.get("contributor", [])}
        plan["contributor"] = [*plan.get("contributor", []),
                               *({"reference": f"Organization/{org}"} for org in sorted(new_performers - known))]
        if not plan["contributor"]:
            plan.pop("contributor")
        entries.append({"resource": plan, "request": {"method": "PUT", "url": f"CarePlan/{plan_id}",
                                                      "ifMatch": f'W/"{form["version"]}"'}})
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        try:
            await page.request.app.state.bundles.process(page.access, bundle, _PREFER)
        except PreconditionFailed:
            conflict = await _conflict(page, plan_id, form["version"], view)
            return await _edit_page(page, view, form, {}, conflict, status=409)
        except FhirError as error:
            general = _field_errors(error.issues, errors, bundle, activities) if error.issues else core_message(error)
            return await _edit_page(page, view, form, errors, None, general, status=409 if error.status == 409 else 422)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await signed_in(request, STAFF, run)


async def _conflict(page: Page, plan_id: str, base_version: str, current: Any) -> dict[str, Any]:
    """Who changed the agreement since ``base_version``, when, and what (the fields that differ)."""
    service = page.request.app.state.service
    changed: list[tuple[str, str, str]] = []
    try:
        base = body(await service.vread(page.access, "CarePlan", plan_id, base_version))
    except FhirError:
        base = {}
    labels = {"title": "title", "description": "description", "status": "status"}
    for key, label in labels.items():
        before, after = str(base.get(key, "")), str(current.plan.get(key, ""))
        if before != after:
            changed.append((label, before, after))
    if str((base.get("period") or {}).get("end", "")) != current.end:
        changed.append(("end", str((base.get("period") or {}).get("end", "")), current.end))
    who = None
    try:
        log = body(await page.request.app.state.audit_events.search(
            page.access, [("entity", f"CarePlan/{plan_id}"), ("_count", "20")]))
        for entry in log.get("entry", []):
            event = entry["resource"]
            codes_ = {c.get("code") for c in event.get("subtype", [])}
            if event.get("outcome") == "0" and codes_ & {"update", "transaction"}:
                agents = event.get("agent", [])
                who = {"name": agents[0]["who"].get("display", agents[0]["who"]["identifier"]["value"]),
                       "role": (agents[0].get("role") or [{}])[0].get("text", ""),
                       "unit": next((a["who"].get("display", "") for a in agents[1:]
                                     if a.get("type", {}).get("text") == "vårdenhet"), ""),
                       "when": event.get("recorded", "")[:16].replace("T", " ")}
                break
    except FhirError:
        who = None  # the unit's log is not readable with these scopes: say only what changed
    return {"who": who, "changed": changed, "version": current.version}


# -- fast vårdkontakt -----------------------------------------------------------------------------


@router.get("/avtal/{plan_id}/vardkontakt")
async def contact_form(request: Request, plan_id: str) -> Response:
    async def run(page: Page) -> Response:
        view = await _agreement(page, plan_id)
        if view.closed:
            return closed_page(page, view)
        return page.render("personal/contact.html", {"a": view, "errors": {}, "f": {"reason": ""},
                                                     **await _directory(page)})
    return await signed_in(request, STAFF, run)


@router.post("/avtal/{plan_id}/vardkontakt")
async def change_contact(request: Request, plan_id: str) -> Response:
    async def run(page: Page) -> Response:
        data = await page.form()
        view = await _agreement(page, plan_id)
        if view.closed:
            return closed_page(page, view)
        directory = await _directory(page)
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
        team = {k: v for k, v in view.team.items() if k != "meta"}
        today = datetime.date.today().isoformat()
        kept = [p for p in team["participant"]
                if not (any(c.get("code") == codes.FAST_VARDKONTAKT for r in p.get("role", [])
                            for c in r.get("coding", [])) and _is_current(p))]
        kept.insert(0, {"role": [{"coding": [{"system": codes.CARETEAM_ROLE, "code": codes.FAST_VARDKONTAKT,
                                              "display": "Fast vårdkontakt"}]}],
                        "member": _role_ref(form["new"], directory), "period": {"start": today}})
        team["participant"] = kept
        provenance = {"resourceType": "Provenance", "reason": [{"text": form["reason"]}],
                      "activity": {"text": "Byte av fast vårdkontakt"},
                      "agent": [{"who": {"reference": page.session.fhir_user or "",
                                         "display": page.session.name}}]}
        try:
            await page.request.app.state.service.update(
                page.access, "CareTeam", view.team_id, team, if_match=f'W/"{form["version"] or view.team_version}"',
                prefer=_PREFER, context=WriteContext(provenance=provenance))
        except PreconditionFailed:
            errors["new"] = N_("Someone else changed the care team since you opened the page. Reload it and try again.")
            return page.render("personal/contact.html", {"a": view, "errors": errors, "f": form, **directory},
                               status_code=409)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await signed_in(request, STAFF, run)


def _is_current(participant: dict[str, Any]) -> bool:
    end = (participant.get("period") or {}).get("end")
    return not end or str(end)[:10] >= datetime.date.today().isoformat()
