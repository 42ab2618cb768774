"""One of the care's goals on the staff pages: change its text or date, or end it (achieved, not
achieved, cancelled) with the reason, in one transaction with a Provenance that also names the
agreement, so that its care units see it (``plan_changes.py`` says how the agreement's life is
kept). The patient's own goals are theirs to change (``mitt.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages import forms
from api.pages.agreement_page import goal_resources, open_agreement, save
from api.pages.common import Page
from api.pages.labels import N_
from api.pages.lifecycle import core_message, provenance, set_goal_outcome
from api.pages.views import AgreementView, GoalView
from patientkontrakt.domain.agreement_builder import next_version, post_entry, put_entry
from patientkontrakt.fhir.errors import FhirError, NotFound, PreconditionFailed

router = APIRouter(prefix="/personal", include_in_schema=False)

GOAL_OUTCOMES = {"active": N_("Ongoing"), "achieved": N_("Achieved"), "not-achieved": N_("Ended, not achieved"),
                 "cancelled": N_("Cancelled")}
_OUTCOME_WORDS = {"active": "pågår", "achieved": "uppnått", "not-achieved": "inte uppnått", "cancelled": "avbrutet"}


def goal_outcome(goal: GoalView) -> str:
    if goal.status == "cancelled":
        return "cancelled"
    if goal.status == "completed":
        return "not-achieved" if goal.achievement == "not-achieved" else "achieved"
    return "active"


def _care_goal(view: AgreementView, goal_id: str) -> GoalView:
    goal = next((g for g in view.care_goals if g.id == goal_id), None)
    if goal is None:  # the patient's own goals are theirs to change (on /mitt)
        raise NotFound(f"Goal/{goal_id} is not one of the care's goals in CarePlan/{view.id}",
                       details_sv="Målet finns inte bland vårdens mål i patientkontraktet.")
    return goal


@router.get("/avtal/{plan_id}/mal/{goal_id}")
async def goal_form(request: Request, plan_id: str, goal_id: str) -> Response:
    async def run(page: Page, view: AgreementView, _: dict[str, Any]) -> Response:
        goal = _care_goal(view, goal_id)
        form = {"text": goal.text, "due": goal.due, "outcome": goal_outcome(goal), "reason": "",
                "version": goal.version}
        return page.render("personal/goal_edit.html", {"a": view, "g": goal, "f": form, "errors": {},
                                                       "general": [], "outcomes": GOAL_OUTCOMES})
    return await open_agreement(request, plan_id, run)


@router.post("/avtal/{plan_id}/mal/{goal_id}")
async def change_goal(request: Request, plan_id: str, goal_id: str) -> Response:
    """Change one of the care's goals, or end it: achieved, not achieved (both ``completed``:
    no longer sought) or cancelled (abandoned), with the reason; one transaction with its
    Provenance."""
    async def run(page: Page, view: AgreementView, data: dict[str, Any]) -> Response:
        goal = _care_goal(view, goal_id)
        form = {k: forms.text(data, k) for k in ("text", "due", "outcome", "reason", "version")}
        errors: dict[str, Any] = {}
        if not form["text"]:
            errors["text"] = N_("Describe the goal.")
        if form["outcome"] not in GOAL_OUTCOMES:
            errors["outcome-active"] = N_("Choose the goal's status.")
        forms.check_text(form, "reason", errors, N_("Say why the goal changes."))
        forms.check_date(form, "due", errors, N_("Enter the date as YYYY-MM-DD."))
        context = {"a": view, "g": goal, "f": form, "outcomes": GOAL_OUTCOMES}
        if errors:
            return page.render("personal/goal_edit.html", {**context, "errors": errors, "general": []},
                               status_code=422)
        resource = (await goal_resources(page, [goal]))[0]
        resource.pop("meta", None)
        version = form["version"] or goal.version
        set_goal_outcome(resource, form["outcome"], form["reason"])
        resource["description"] = {**(resource.get("description") or {}), "text": form["text"]}
        if form["due"]:
            resource["target"] = [{**((resource.get("target") or [{}])[0]), "dueDate": form["due"]}]
        elif resource.get("target"):
            targets = [t for t in ({k: v for k, v in t.items() if k != "dueDate"} for t in resource["target"]) if t]
            if targets:
                resource["target"] = targets
            else:
                resource.pop("target")
        what = f"Mål ändrat: {form['text']} ({_OUTCOME_WORDS[form['outcome']]})"
        record = provenance(page, what, form["reason"], [f"Goal/{goal_id}/_history/{next_version(version)}",
                                                         f"CarePlan/{plan_id}"])
        try:
            await save(page, [put_entry(resource, version), post_entry(record)])
        except PreconditionFailed:
            general = [N_("Someone else changed the goal since you opened the page. Reload it and try again.")]
            return page.render("personal/goal_edit.html", {**context, "errors": {}, "general": general},
                               status_code=409)
        except FhirError as error:
            return page.render("personal/goal_edit.html", {**context, "errors": {}, "general": core_message(error)},
                               status_code=error.status)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await open_agreement(request, plan_id, run)
