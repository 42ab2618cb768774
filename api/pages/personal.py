"""The staff pages, ``/personal``: the care unit's agreements, one agreement, create, edit,
change of fast vårdkontakt, close.

Every page calls the FHIR core (``FhirService``, ``BundleProcessor``, ``$patientkontrakt``)
with the signed-in staff member's ``Access``: the same access rules and the same access log as
the API. Forms post back to the page they are on; a CSRF token from the session travels in
each. Validation errors are shown next to their fields: personnummer and required fields are
checked here, the Patientkontrakt rules by the core (their OperationOutcome ``expression`` says
which field).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages import session as sessions
from api.pages.common import Page, bilingual, body, login_failed, signed_in
from api.pages.labels import N_
from api.pages.session import STAFF
from api.pages.views import agreement_view, name_of, person_number
from api.templating import language_of, render
from patientkontrakt.domain import codes
from patientkontrakt.domain.identifiers import PERSONNUMMER, IdentifierError, parse_person_number
from patientkontrakt.fhir.errors import FhirError, Issue, PreconditionFailed
from patientkontrakt.fhir.hooks import WriteContext
from patientkontrakt.fhir.service import Preferences
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
    if status in STATUSES:
        pairs.append(("status", status))
    if query:
        try:
            number = parse_person_number(query).value
            pairs.append(("patient.identifier", f"{PERSONNUMMER}|{number}"))
        except IdentifierError as exc:
            if any(ch.isdigit() for ch in query):
                error = bilingual(exc.swedish, exc.english)
            pairs.append(("patient.name", query))
    bundle = body(await page.request.app.state.service.search(page.access, "CarePlan", pairs, _PREFER)) \
        if error is None else {"entry": [], "total": 0}
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


_ACTIVITY_FIELDS = ("kind", "description", "date", "time", "place", "performer")


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
    async def run(page: Page) -> Response:
        data = await page.form()
        form = _read_form(data)
        directory = await _directory(page)
        errors: dict[str, Any] = {}
        patient = await _find_or_describe_patient(page, form, errors)
        _check_people(form, directory, errors)
        activities = _activities(form, errors)
        if errors:
            return page.render("personal/new.html", {"f": form, "errors": errors, "general": [],
                                                     "kinds": _activity_kinds(page), **directory}, status_code=422)
        bundle, plan_urn = _agreement_bundle(page, form, patient, activities, directory)
        try:
            result = body(await page.request.app.state.bundles.process(page.access, bundle, _PREFER))
        except FhirError as error:
            general = _field_errors(error.issues, errors)
            return page.render("personal/new.html", {"f": form, "errors": errors, "general": general,
                                                     "kinds": _activity_kinds(page), **directory}, status_code=422)
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
    """The patient by personnummer (one the unit may see), or the one to register."""
    try:
        identity = parse_person_number(form["personnummer"])
    except IdentifierError as exc:
        errors["personnummer"] = bilingual(exc.swedish, exc.english)
        return {}
    form["personnummer"] = identity.value
    found = body(await page.request.app.state.service.search(
        page.access, "Patient", [("identifier", f"{identity.system}|{identity.value}")], _PREFER))
    existing = [e["resource"] for e in found.get("entry", []) if e["resource"]["resourceType"] == "Patient"]
    if existing:
        return existing[0]
    if not form["family"]:
        errors["family"] = N_("Enter the last name of a new patient.")
    if not form["given"]:
        errors["given"] = N_("Enter the first name of a new patient.")
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": identity.system,
                                                                           "value": identity.value}],
                               "name": [{"family": form["family"], "given": [form["given"]]}]}
    if form["phone"]:
        patient["telecom"] = [{"system": "phone", "value": form["phone"], "use": "mobile"}]
    return patient


def _check_people(form: dict[str, Any], directory: dict[str, Any], errors: dict[str, Any]) -> None:
    own = {r["id"]: r for r in directory["own_staff"]}
    if form["vardkontakt"] not in own:
        errors["vardkontakt"] = N_("Choose the fast vårdkontakt among the unit's staff.")
    if directory["primary_care"]:
        chosen = own.get(form["lakarkontakt"])
        if chosen is None or not chosen["doctor"]:
            errors["lakarkontakt"] = N_("At a vårdcentral the patient has a fast läkarkontakt who is a physician.")
    elif form["lakarkontakt"] and form["lakarkontakt"] not in own:
        errors["lakarkontakt"] = N_("Choose the fast läkarkontakt among the unit's physicians.")
    known = {r["id"] for r in directory["other_staff"]} | set(own)
    if any(p not in known for p in form["participants"]):
        errors["participants"] = N_("Choose participants from the list.")


def _activities(form: dict[str, Any], errors: dict[str, Any]) -> list[dict[str, Any]]:
    """The filled-in activity rows, checked (empty rows are skipped)."""
    out = []
    for i, row in enumerate(form["activities"]):
        if not (row["description"] or row["kind"] or row["date"]):
            continue
        if not row["description"]:
            errors[f"activity-{i}-description"] = N_("Describe the activity.")
        if not row["performer"]:
            errors[f"activity-{i}-performer"] = N_("Choose the unit responsible for the activity.")
        when = None
        try:
            day = datetime.date.fromisoformat(row["date"])
            hour, _, minute = (row["time"] or "09:00").partition(":")
            when = datetime.datetime.combine(day, datetime.time(int(hour), int(minute or 0)))
        except ValueError:
            errors[f"activity-{i}-date"] = N_("Enter a date (YYYY-MM-DD) and a time (HH:MM).")
        if when is not None and row["description"] and row["performer"]:
            out.append({"kind": row["kind"] or "besok", "description": row["description"], "when": when,
                        "performer": row["performer"], "place": row.get("place", "")})
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
        "careTeam": [{"reference": team_urn}], "goal": goal_refs,
        "activity": [_activity_resource(a) for a in activities],
    }
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
    start = activity["when"]
    end = start + datetime.timedelta(minutes=45)
    zone = datetime.datetime.now().astimezone().strftime("%z")
    offset = f"{zone[:3]}:{zone[3:]}" if zone else "+00:00"
    detail: dict[str, Any] = {
        "code": {"coding": [{"system": codes.ACTIVITY_KIND, "code": activity["kind"]}]},
        "status": "scheduled",
        "scheduledPeriod": {"start": start.strftime("%Y-%m-%dT%H:%M:00") + offset,
                            "end": end.strftime("%Y-%m-%dT%H:%M:00") + offset},
        "performer": [{"reference": f"Organization/{activity['performer']}"}],
        "description": activity["description"],
    }
    if activity.get("place"):
        detail["location"] = {"display": activity["place"]}
    return {"detail": detail}


_FIELDS = (
    ("CareTeam.participant", "vardkontakt"), ("Patient.identifier", "personnummer"), ("Patient.name", "family"),
    ("CarePlan.activity", "activities"), ("CarePlan.description", "description"),
)


def _field_errors(issues: list[Issue], errors: dict[str, Any]) -> list[Any]:
    """Put the core's issues next to the fields their ``expression`` names; the rest in general."""
    general = []
    for issue in issues:
        text = bilingual(issue.details_sv or issue.diagnostics, issue.diagnostics)
        expression = " ".join(issue.expression)
        field = next((f for prefix, f in _FIELDS if prefix in expression.replace("Bundle.entry", "")
                      or prefix.split(".", 1)[1] in expression and prefix.split(".")[0] in issue.diagnostics), None)
        if field and field not in errors:
            errors[field] = text
        else:
            general.append(text)
    return general


# -- edit, with optimistic locking --------------------------------------------------------------


@router.get("/avtal/{plan_id}/redigera")
async def edit_form(request: Request, plan_id: str) -> Response:
    async def run(page: Page) -> Response:
        view = await _agreement(page, plan_id)
        form = {"title": view.title, "description": view.description, "status": view.status, "end": view.end,
                "version": view.version, "activities": _empty_activities(EDIT_ACTIVITY_ROWS)}
        return await _edit_page(page, view, form, {}, None)
    return await signed_in(request, STAFF, run)


async def _edit_page(page: Page, view: Any, form: dict[str, Any], errors: dict[str, Any], conflict: Any,
                     general: list[Any] | None = None, status: int = 200) -> Response:
    directory = await _directory(page)
    return page.render("personal/edit.html", {"a": view, "f": form, "errors": errors, "conflict": conflict,
                                              "general": general or [], "kinds": _activity_kinds(page),
                                              "units": directory["units"]}, status_code=status)


@router.post("/avtal/{plan_id}/redigera")
async def edit(request: Request, plan_id: str) -> Response:
    """Save the agreement's text, status and end, with new goals and activities, as one
    transaction whose CarePlan entry carries ``If-Match``: a stale edit changes nothing."""
    async def run(page: Page) -> Response:
        data = await page.form()
        view = await _agreement(page, plan_id)
        form: dict[str, Any] = {k: str(data.get(k, "")).strip()
                                for k in ("title", "description", "status", "end", "version", "care_goals",
                                          "own_goals")}
        form["activities"] = _read_activities(data, EDIT_ACTIVITY_ROWS)
        errors: dict[str, Any] = {}
        if not form["title"]:
            errors["title"] = N_("Enter a title.")
        if form["status"] not in ("draft", "active", "on-hold"):
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
            general = _field_errors(error.issues, errors)
            return await _edit_page(page, view, form, errors, None, general, status=422)
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
        return page.render("personal/contact.html", {"a": view, "errors": {}, "f": {"reason": ""},
                                                     **await _directory(page)})
    return await signed_in(request, STAFF, run)


@router.post("/avtal/{plan_id}/vardkontakt")
async def change_contact(request: Request, plan_id: str) -> Response:
    async def run(page: Page) -> Response:
        data = await page.form()
        view = await _agreement(page, plan_id)
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


# -- close ----------------------------------------------------------------------------------------


@router.post("/avtal/{plan_id}/avsluta")
async def close(request: Request, plan_id: str) -> Response:
    async def run(page: Page) -> Response:
        data = await page.form()
        view = await _agreement(page, plan_id)
        outcome = str(data.get("outcome", "completed"))
        plan = {k: v for k, v in view.plan.items() if k != "meta"}
        plan["status"] = "revoked" if outcome == "revoked" else "completed"
        plan["period"] = {**(plan.get("period") or {}), "end": datetime.date.today().isoformat()}
        try:
            await page.request.app.state.service.update(page.access, "CarePlan", plan_id, plan,
                                                        if_match=f'W/"{data.get("version", view.version)}"',
                                                        prefer=_PREFER)
        except PreconditionFailed:
            return page.redirect(f"/personal/avtal/{plan_id}/redigera")
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await signed_in(request, STAFF, run)
