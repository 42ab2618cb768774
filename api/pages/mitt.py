"""The patient e-service, ``/mitt`` ("Mitt patientkontrakt", 1177-style).

The patient signs in (the test IdP, or BankID/Freja through the region's IdP) and sees their
agreement in plain language: their fast vårdkontakt and fast läkarkontakt and how to reach
them, what matters to them (they add and change their own goals here), the care's goals, the
planned activities across region and kommun (upcoming first, past folded away) with the
interventions of the SIPs that are part of the agreement, the plan, and who has read their
agreement: the access log entries about them (PDL 8 kap 5 §). ``/mitt/sparrar`` shows their
samtycken and spärrar. Everything through the FHIR core with the patient's own token, like any
SMART app.
"""

from __future__ import annotations

import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages import consent_view, forms, sip_view
from api.pages.common import Page, bilingual, body, home_page, sign_in_routes, signed_in
from api.pages.labels import N_
from api.pages.lifecycle import provenance, set_goal_outcome
from api.pages.session import PATIENT
from api.pages.sip_view import SipView
from api.pages.views import AgreementView, agreement_view
from patientkontrakt.domain import codes
from patientkontrakt.fhir.errors import FhirError, PreconditionFailed
from patientkontrakt.fhir.hooks import WriteContext
from patientkontrakt.fhir.requests import Preferences

router = APIRouter(prefix="/mitt", include_in_schema=False)
_PREFER = Preferences()
LOG_ENTRIES = 50
EARLIER_AGREEMENTS = 10
CONSENTS = 100
GOAL_OUTCOMES = ("active", "achieved", "cancelled")  # ongoing, reached, withdrawn (lifecycleStatus cancelled)
_OUTCOME_WORDS = {"active": "pågår", "achieved": "uppnått", "cancelled": "tillbakataget"}  # stored data is Swedish


sign_in_routes(router, PATIENT)


async def _mine(page: Page) -> tuple[list[AgreementView], dict[str, list[SipView]]]:
    """The patient's open agreements (active or on hold), newest first, and the open SIPs that
    are part of them (by agreement id): ``$patientkontrakt`` gives both."""
    assert page.session.patient is not None
    bundle = orjson.loads(await page.request.app.state.overview.for_patient(page.access, page.session.patient))
    resources = [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
    plans = [r for r in resources if r["resourceType"] == "CarePlan"]
    views = [v for plan in plans if not sip_view.is_sip(plan) and (v := agreement_view(bundle, plan["id"])) is not None]
    agreements = sorted(views, key=lambda v: v.start, reverse=True)
    return agreements, await _sips(page, [p for p in plans if sip_view.is_sip(p)], resources, agreements)


async def _earlier(page: Page) -> list[AgreementView]:
    """The patient's closed agreements (completed or revoked), most recently ended first: they
    stay readable ("Tidigare patientkontrakt")."""
    service = page.request.app.state.service
    found = body(await service.search(page.access, "CarePlan", [
        ("subject", f"Patient/{page.session.patient}"), ("status", "completed,revoked"),
        ("category", f"{codes.CAREPLAN_CATEGORY}|{codes.PATIENTKONTRAKT}"), ("_count", str(EARLIER_AGREEMENTS))],
        _PREFER))
    views = []
    for entry in found.get("entry", []):
        if entry["resource"]["resourceType"] != "CarePlan":
            continue
        plan_id = entry["resource"]["id"]
        bundle = orjson.loads(await page.request.app.state.overview.for_plan(page.access, plan_id))
        view = agreement_view(bundle, plan_id)
        if view is not None:
            views.append(view)
    return sorted(views, key=lambda v: (v.end or v.start), reverse=True)


async def _search(page: Page, type_: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The resources of ``type_`` a search under the patient's access finds (logged like any)."""
    found = body(await page.request.app.state.service.search(page.access, type_, params, _PREFER))
    return [e["resource"] for e in found.get("entry", []) if e.get("resource", {}).get("resourceType") == type_]


async def _organizations(page: Page, ids: set[str]) -> list[dict[str, Any]]:
    """The Organizations ``ids`` that the patient may read: those their own records name."""
    if not ids:
        return []
    return await _search(page, "Organization", [("_id", ",".join(sorted(ids))), ("_count", str(len(ids)))])


async def _sips(page: Page, plans: list[dict[str, Any]], resources: list[dict[str, Any]],
                agreements: list[AgreementView]) -> dict[str, list[SipView]]:
    """The open SIPs among ``plans``, by the agreement they are part of. The Organizations that do
    their interventions come with the Bundle (``resources``) when the agreement names them too;
    the others are read."""
    shown: dict[str, list[SipView]] = {a.id: [] for a in agreements}
    open_plans = [p for p in plans if p.get("status") in sip_view.OPEN_STATES]
    if not open_plans:
        return shown
    organizations = [r for r in resources if r["resourceType"] == "Organization"]
    missing = sip_view.organizations_named(open_plans) - {str(o["id"]) for o in organizations}
    organizations += await _organizations(page, missing)
    for view in filter(None, (sip_view.sip_view(plan, organizations) for plan in open_plans)):
        for agreement in view.part_of:
            if agreement in shown:
                shown[agreement].append(view)
    return shown


async def _who_has_read(page: Page) -> list[dict[str, str]]:
    """Care units and staff who read or changed the patient's data (not the patient themselves)."""
    log = body(await page.request.app.state.audit_events.search(
        page.access, [("patient", str(page.session.patient)), ("_count", str(LOG_ENTRIES))]))
    rows = []
    for entry in log.get("entry", []):
        event = entry["resource"]
        agents = event.get("agent", [])
        who = agents[0]["who"] if agents else {}
        if str(who.get("reference", "")).startswith("Patient/"):
            continue
        unit = next((a["who"].get("display", a["who"]["identifier"]["value"]) for a in agents[1:]
                     if a.get("type", {}).get("text") == "vårdenhet"), "")
        row = {
            "when": event.get("recorded", ""), "unit": unit, "name": who.get("display", ""),
            "role": (agents[0].get("role") or [{}])[0].get("text", "") if agents else "",
            "what": event["subtype"][0]["code"] if event.get("subtype") else "",
            "refused": event.get("outcome") != "0", "times": 1,
        }
        # The same person doing the same thing the same day is one line, newest time first.
        previous = rows[-1] if rows else None
        if previous is not None and all(previous[k] == row[k] for k in ("unit", "name", "role", "what", "refused")) \
                and previous["when"][:10] == row["when"][:10]:
            previous["times"] += 1
        else:
            rows.append(row)
    return rows


@router.get("")
async def home(request: Request) -> Response:
    async def run(page: Page) -> Response:
        agreements, sips = await _mine(page)
        earlier = await _earlier(page)
        readers = await _who_has_read(page)
        template = "mitt/print.html" if page.request.query_params.get("utskrift") else "mitt/agreement.html"
        return page.render(template, {"agreements": agreements, "earlier": earlier, "readers": readers, "errors": {},
                                      "sips": sips,
                                      "f": {}, "saved": page.request.query_params.get("sparat"),
                                      "printed": datetime.datetime.now(datetime.UTC)})
    return await home_page(request, PATIENT, "mitt/landing.html", run)


@router.get("/sparrar")
async def consents(request: Request) -> Response:
    """"Dina spärrar och samtycken": the patient's samtycken and spärrar, read-only (the care
    unit the patient asks records and revokes them), with the names of the units they are about."""
    async def run(page: Page) -> Response:
        found = await _search(page, "Consent", [("patient", f"Patient/{page.session.patient}"),
                                                ("_count", str(CONSENTS))])
        organizations = await _organizations(page, consent_view.organizations_named(found))
        names = {str(o["id"]): str(o.get("name", "")) for o in organizations if o.get("name")}
        return page.render("mitt/consents.html", {"consents": consent_view.consent_views(found, names)})
    return await signed_in(request, PATIENT, run)


def _goal_form(data: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    form = {k: str(data.get(k, "")).strip() for k in ("text", "due", "status", "reason", "version")}
    errors: dict[str, Any] = {}
    if form["status"] not in GOAL_OUTCOMES:
        form["status"] = "achieved" if form["status"] == "completed" else "active"
    forms.check_text(form, "reason", errors)
    forms.check_text(form, "text", errors, N_("Write what is important to you."))
    forms.check_date(form, "due", errors, N_("Write the date as YYYY-MM-DD."))
    return form, errors


def _goal(patient: str, form: dict[str, str], existing: dict[str, Any] | None = None) -> dict[str, Any]:
    goal: dict[str, Any] = {k: v for k, v in (existing or {}).items() if k != "meta"} or {
        "resourceType": "Goal", "subject": {"reference": f"Patient/{patient}"},
        "expressedBy": {"reference": f"Patient/{patient}"}, "startDate": datetime.date.today().isoformat(),
    }
    goal["description"] = {"text": form["text"]}
    if "lifecycleStatus" not in goal:
        goal["lifecycleStatus"] = "active"
    set_goal_outcome(goal, form.get("status", "active"), form.get("reason", ""))
    if form["due"]:
        goal["target"] = [{"dueDate": form["due"]}]
    else:
        goal.pop("target", None)
    return goal


@router.post("/mal")
async def add_goal(request: Request) -> Response:
    async def run(page: Page) -> Response:
        form, errors = _goal_form(await page.form())
        if not errors:
            try:
                await page.request.app.state.service.create(
                    page.access, "Goal", _goal(str(page.session.patient), form), if_none_exist=None, prefer=_PREFER,
                    context=_goal_provenance(page, f"Eget mål tillagt: {form['text']}", form))
                return page.redirect("/mitt?sparat=1#mina-mal")
            except FhirError as error:
                errors["text"] = bilingual(error.issues[0].details_sv or error.diagnostics, error.issues[0].diagnostics)
        agreements, sips = await _mine(page)
        return page.render("mitt/agreement.html", {"agreements": agreements, "earlier": await _earlier(page),
                                                   "readers": await _who_has_read(page), "errors": errors, "f": form,
                                                   "sips": sips},
                           status_code=422)
    return await signed_in(request, PATIENT, run)


@router.get("/mal/{goal_id}")
async def goal_form(request: Request, goal_id: str) -> Response:
    async def run(page: Page) -> Response:
        goal = body(await page.request.app.state.service.read(page.access, "Goal", goal_id))
        form = {"text": goal.get("description", {}).get("text", ""), "version": goal["meta"]["versionId"],
                "due": ((goal.get("target") or [{}])[0].get("dueDate") or ""),
                "status": _outcome(goal), "reason": str(goal.get("statusReason", ""))}
        own = str((goal.get("expressedBy") or {}).get("reference")) == f"Patient/{page.session.patient}"
        return page.render("mitt/goal.html", {"goal_id": goal_id, "f": form, "errors": {}, "own": own})
    return await signed_in(request, PATIENT, run)


@router.post("/mal/{goal_id}")
async def edit_goal(request: Request, goal_id: str) -> Response:
    async def run(page: Page) -> Response:
        form, errors = _goal_form(await page.form())
        existing = body(await page.request.app.state.service.read(page.access, "Goal", goal_id))
        if not errors:
            try:
                await page.request.app.state.service.update(
                    page.access, "Goal", goal_id, {**_goal(str(page.session.patient), form, existing), "id": goal_id},
                    if_match=f'W/"{form["version"]}"', prefer=_PREFER,
                    context=_goal_provenance(
                        page, f"Eget mål ändrat: {form['text']} ({_OUTCOME_WORDS[form['status']]})", form))
                return page.redirect("/mitt?sparat=1#mina-mal")
            except PreconditionFailed:
                errors["text"] = N_("The goal was changed since you opened it. Reload the page.")
            except FhirError as error:
                errors["text"] = bilingual(error.issues[0].details_sv or error.diagnostics, error.issues[0].diagnostics)
        return page.render("mitt/goal.html", {"goal_id": goal_id, "f": form, "errors": errors, "own": True},
                           status_code=422)
    return await signed_in(request, PATIENT, run)


def _goal_provenance(page: Page, what: str, form: dict[str, str]) -> WriteContext:
    """The patient's change of their own goal, recorded like the care's changes: a Provenance
    (``X-Provenance``) of the new version, with the patient as its agent, which the care units
    of the agreement see in its history of changes."""
    return WriteContext(provenance=provenance(page, what, form.get("reason", ""),
                                              who=f"Patient/{page.session.patient}"))


def _outcome(goal: dict[str, Any]) -> str:
    """The patient's choice for a stored goal: ongoing, reached or withdrawn."""
    if goal.get("lifecycleStatus") == "cancelled":
        return "cancelled"
    return "achieved" if goal.get("lifecycleStatus") == "completed" else "active"
