"""The agreement's life on the staff pages: close the agreement, reopen it; change or cancel an
activity (``activity_changes.py``), mark a care goal achieved or cancelled (``goal_changes.py``).

Nothing is deleted: a cancelled activity stays in ``CarePlan.activity`` with ``detail.status``
``cancelled`` and a ``statusReason``; a goal ends through ``Goal.lifecycleStatus`` (R4
goal-status: ``completed`` = no longer sought, ``cancelled`` = abandoned) with its
``achievementStatus`` and ``statusReason``. Every change is a new version of the resource and a
``Provenance`` (who, for which unit, what in words in ``activity.text``, why in ``reason``):
through ``X-Provenance`` (``WriteContext``) when one resource changes, as a Provenance entry of
the same transaction when several do. A Provenance about goals also names the agreement, so
that the care units taking part in it can read it (the access rules reach a Provenance through
its agreement or team).

The allowed changes of status are the core's (``patientkontrakt/domain``): the pages offer only
the next states the core allows, close an agreement only through the closing step, and show
the core's refusal (409/422, in Swedish) next to the form.
"""

from __future__ import annotations

import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages import forms
from api.pages.agreement_page import closed_agreement, goal_resources, load_agreement, open_agreement, save
from api.pages.common import Page
from api.pages.labels import N_
from api.pages.lifecycle import CLOSING_OUTCOMES, STALE, core_message, provenance
from api.pages.views import ActivityView, AgreementView, GoalView
from patientkontrakt.domain.agreement_builder import editable, next_version, post_entry, put_entry
from patientkontrakt.fhir.errors import FhirError, PreconditionFailed
from patientkontrakt.fhir.hooks import WriteContext
from patientkontrakt.fhir.requests import Preferences

router = APIRouter(prefix="/personal", include_in_schema=False)
_PREFER = Preferences()

FINISHED_ACTIVITY = ("completed", "cancelled", "stopped", "entered-in-error")


def _is_units(activity: ActivityView, view: AgreementView, care_unit_org: str) -> bool:
    """An activity the signed-in unit answers for: performed by it, or by no named unit of an
    agreement it is responsible for."""
    if activity.performer_id:
        return activity.performer_id == care_unit_org
    return view.author_id == care_unit_org


def future_activities(view: AgreementView) -> list[ActivityView]:
    """Activities still to come: not past and not finished (recurring ones without a time too)."""
    return [a for a in view.activities if a.editable and not a.past and a.status not in FINISHED_ACTIVITY]


# -- close ----------------------------------------------------------------------------------------


def _close_context(page: Page, view: AgreementView) -> dict[str, Any]:
    care_unit_org = getattr(page.access, "care_unit_org", "")
    future = future_activities(view)
    return {"a": view, "to_cancel": [a for a in future if _is_units(a, view, care_unit_org)],
            "kept": [a for a in future if not _is_units(a, view, care_unit_org)],
            "open_goals": _plan_goals(view)}


def _plan_goals(view: AgreementView) -> list[GoalView]:
    """The open goals the agreement names (the patient's own that it does not name stay theirs)."""
    named = {str(g.get("reference", "")).split("/_history")[0] for g in view.plan.get("goal", [])}
    return [g for g in view.goals if g.open and f"Goal/{g.id}" in named]


@router.get("/avtal/{plan_id}/avsluta")
async def close_form(request: Request, plan_id: str) -> Response:
    async def run(page: Page, view: AgreementView, _: dict[str, Any]) -> Response:
        return page.render("personal/close.html", {**_close_context(page, view), "f": {}, "errors": {},
                                                   "general": []})
    return await open_agreement(request, plan_id, run)


@router.post("/avtal/{plan_id}/avsluta")
async def close(request: Request, plan_id: str) -> Response:
    """Close the agreement: its status, its end date, the unit's future activities cancelled with
    the reason and, if chosen, its open goals ended, in one transaction with one Provenance."""
    async def run(page: Page, view: AgreementView, data: dict[str, Any]) -> Response:
        form = {k: forms.text(data, k) for k in ("outcome", "reason", "goals", "confirm", "version")}
        errors: dict[str, Any] = {}
        if form["outcome"] not in CLOSING_OUTCOMES:
            errors["outcome-completed"] = N_("Choose how the agreement ends.")
        forms.check_text(form, "reason", errors, N_("Say why the agreement is closed."))
        context = _close_context(page, view)
        if context["open_goals"] and form["goals"] not in ("keep", "close"):
            errors["goals-keep"] = N_("Choose what happens to the goals.")
        if form["confirm"] != "yes":
            errors["confirm"] = N_("Confirm that the agreement is to be closed.")
        if errors:
            return page.render("personal/close.html", {**context, "f": form, "errors": errors, "general": []},
                               status_code=422)
        version = form["version"] or view.version
        today = datetime.date.today().isoformat()
        plan = editable(view.plan)
        plan["status"] = form["outcome"]
        plan["period"] = {**(plan.get("period") or {}), "end": today}
        outcome = "Det är genomfört" if form["outcome"] == "completed" else "Avslutas i förtid"
        cancelled_reason = f"Patientkontraktet avslutades: {form['reason']}"
        activities = [dict(a) for a in plan.get("activity", [])]
        for item in context["to_cancel"]:
            detail = dict(activities[item.index]["detail"])
            detail["status"] = "cancelled"
            detail["statusReason"] = {"text": cancelled_reason}
            activities[item.index] = {**activities[item.index], "detail": detail}
        if activities:
            plan["activity"] = activities
        entries = [put_entry(plan, version)]
        targets = [f"CarePlan/{plan_id}/_history/{next_version(version)}"]
        closed_goals = context["open_goals"] if form["goals"] == "close" else []
        goals = await goal_resources(page, closed_goals)
        for goal in goals:
            goal["lifecycleStatus"] = "completed"  # R4: no longer sought; achievementStatus kept as it was
            goal["statusDate"] = today
            goal["statusReason"] = cancelled_reason
            stored_version = goal.pop("meta", {}).get("versionId", "")
            entries.append(put_entry(goal, stored_version))
            targets.append(f"Goal/{goal['id']}/_history/{next_version(stored_version)}")
        what = f"Avslutat ({outcome})"
        if context["to_cancel"]:
            what += f"; {len(context['to_cancel'])} framtida aktiviteter inställda"
        if goals:
            what += f"; {len(goals)} mål avslutade"
        entries.append(post_entry(provenance(page, what, form["reason"], targets)))
        try:
            await save(page, entries)
        except PreconditionFailed:
            general = [N_("Someone else changed the agreement since you opened the page. Check it and close it again.")]
            return page.render("personal/close.html", {**_close_context(page, await load_agreement(page, plan_id)),
                                                       "f": form, "errors": {}, "general": general}, status_code=409)
        except FhirError as error:
            return page.render("personal/close.html", {**context, "f": form, "errors": {},
                                                       "general": core_message(error)}, status_code=error.status)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await open_agreement(request, plan_id, run)


# -- reopen ---------------------------------------------------------------------------------------


@router.get("/avtal/{plan_id}/ateroppna")
async def reopen_form(request: Request, plan_id: str) -> Response:
    async def run(page: Page, view: AgreementView, _: dict[str, Any]) -> Response:
        return page.render("personal/reopen.html", {"a": view, "f": {}, "errors": {}, "general": []})
    return await closed_agreement(request, plan_id, run)


@router.post("/avtal/{plan_id}/ateroppna")
async def reopen(request: Request, plan_id: str) -> Response:
    """The documented way out of completed/revoked: status active again, with the reason as the
    write's ``X-Provenance``; the core decides whether it is allowed."""
    async def run(page: Page, view: AgreementView, data: dict[str, Any]) -> Response:
        form = {k: forms.text(data, k) for k in ("reason", "version")}
        errors: dict[str, Any] = {}
        forms.check_text(form, "reason", errors, N_("Say why the agreement is reopened."))
        if errors:
            return page.render("personal/reopen.html", {"a": view, "f": form, "errors": errors, "general": []},
                               status_code=422)
        plan = editable(view.plan)
        plan["status"] = "active"
        period = dict(plan.get("period") or {})
        period.pop("end", None)
        plan["period"] = period
        record = provenance(page, "Återöppnat", form["reason"])
        try:
            await page.request.app.state.service.update(
                page.access, "CarePlan", plan_id, plan, if_match=f'W/"{form["version"] or view.version}"',
                prefer=_PREFER, context=WriteContext(provenance=record))
        except PreconditionFailed:
            return page.render("personal/reopen.html", {"a": view, "f": form, "errors": {}, "general": [STALE]},
                               status_code=409)
        except FhirError as error:
            return page.render("personal/reopen.html", {"a": view, "f": form, "errors": {},
                                                        "general": core_message(error)}, status_code=error.status)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await closed_agreement(request, plan_id, run)
