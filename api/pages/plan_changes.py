"""The agreement's life on the staff pages: change or cancel an activity, mark a care goal
achieved or cancelled, close the agreement, reopen it.

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

from api.pages.agreement_page import load_agreement
from api.pages.common import Page, body, signed_in
from api.pages.directory import activity_kinds, staff_directory
from api.pages.labels import N_
from api.pages.lifecycle import CLOSING_OUTCOMES, closed_page, core_message, provenance, set_goal_outcome
from api.pages.session import STAFF
from api.pages.views import ActivityView, AgreementView, GoalView
from patientkontrakt.domain import codes
from patientkontrakt.fhir.errors import FhirError, NotFound, PreconditionFailed
from patientkontrakt.fhir.hooks import WriteContext
from patientkontrakt.fhir.service import Preferences

router = APIRouter(prefix="/personal", include_in_schema=False)
_PREFER = Preferences()
MAX_REASON = 500

FINISHED_ACTIVITY = ("completed", "cancelled", "stopped", "entered-in-error")


async def _view(page: Page, plan_id: str) -> AgreementView:
    view: AgreementView = await load_agreement(page, plan_id)
    return view


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name, "")
    return str(value[0] if isinstance(value, list) else value).strip()


def _plan(view: AgreementView) -> dict[str, Any]:
    return {k: v for k, v in view.plan.items() if k != "meta"}


def _next(version: str) -> str:
    return str(int(version) + 1) if version.isdigit() else version


async def _transaction(page: Page, entries: list[dict[str, Any]]) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    await page.request.app.state.bundles.process(page.access, bundle, _PREFER)


def _put(resource: dict[str, Any], version: str) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}",
                                              "ifMatch": f'W/"{version}"'}}


def _post(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def _is_units(activity: ActivityView, view: AgreementView, unit_org: str) -> bool:
    """An activity the signed-in unit answers for: performed by it, or by no named unit of an
    agreement it is responsible for."""
    if activity.performer_id:
        return activity.performer_id == unit_org
    return view.author_id == unit_org


def future_activities(view: AgreementView) -> list[ActivityView]:
    """Activities still to come: not past and not finished (recurring ones without a time too)."""
    return [a for a in view.activities if a.editable and not a.past and a.status not in FINISHED_ACTIVITY]


# -- close ----------------------------------------------------------------------------------------


def _close_context(page: Page, view: AgreementView) -> dict[str, Any]:
    unit_org = getattr(page.access, "unit_org", "")
    future = future_activities(view)
    return {"a": view, "to_cancel": [a for a in future if _is_units(a, view, unit_org)],
            "kept": [a for a in future if not _is_units(a, view, unit_org)],
            "open_goals": _plan_goals(view)}


def _plan_goals(view: AgreementView) -> list[GoalView]:
    """The open goals the agreement names (the patient's own that it does not name stay theirs)."""
    named = {str(g.get("reference", "")).split("/_history")[0] for g in view.plan.get("goal", [])}
    return [g for g in view.goals if g.open and f"Goal/{g.id}" in named]


@router.get("/avtal/{plan_id}/avsluta")
async def close_form(request: Request, plan_id: str) -> Response:
    async def run(page: Page) -> Response:
        view = await _view(page, plan_id)
        if view.closed:
            return closed_page(page, view)
        return page.render("personal/close.html", {**_close_context(page, view), "f": {}, "errors": {},
                                                   "general": []})
    return await signed_in(request, STAFF, run)


@router.post("/avtal/{plan_id}/avsluta")
async def close(request: Request, plan_id: str) -> Response:
    """Close the agreement: its status, its end date, the unit's future activities cancelled with
    the reason and, if chosen, its open goals ended, in one transaction with one Provenance."""
    async def run(page: Page) -> Response:
        data = await page.form()
        view = await _view(page, plan_id)
        if view.closed:
            return closed_page(page, view)
        form = {k: _text(data, k) for k in ("outcome", "reason", "goals", "confirm", "version")}
        errors: dict[str, Any] = {}
        if form["outcome"] not in CLOSING_OUTCOMES:
            errors["outcome-completed"] = N_("Choose how the agreement ends.")
        if not form["reason"]:
            errors["reason"] = N_("Say why the agreement is closed.")
        elif len(form["reason"]) > MAX_REASON:
            errors["reason"] = N_("Write at most 500 characters.")
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
        plan = _plan(view)
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
        entries = [_put(plan, version)]
        targets = [f"CarePlan/{plan_id}/_history/{_next(version)}"]
        closed_goals = context["open_goals"] if form["goals"] == "close" else []
        goals = await _goal_resources(page, closed_goals)
        for goal in goals:
            goal["lifecycleStatus"] = "completed"  # R4: no longer sought; achievementStatus kept as it was
            goal["statusDate"] = today
            goal["statusReason"] = cancelled_reason
            stored_version = goal.pop("meta", {}).get("versionId", "")
            entries.append(_put(goal, stored_version))
            targets.append(f"Goal/{goal['id']}/_history/{_next(stored_version)}")
        what = f"Avslutat ({outcome})"
        if context["to_cancel"]:
            what += f"; {len(context['to_cancel'])} framtida aktiviteter inställda"
        if goals:
            what += f"; {len(goals)} mål avslutade"
        entries.append(_post(provenance(page, what, form["reason"], targets)))
        try:
            await _transaction(page, entries)
        except PreconditionFailed:
            general = [N_("Someone else changed the agreement since you opened the page. Check it and close it again.")]
            return page.render("personal/close.html", {**_close_context(page, await _view(page, plan_id)), "f": form,
                                                       "errors": {}, "general": general}, status_code=409)
        except FhirError as error:
            return page.render("personal/close.html", {**context, "f": form, "errors": {},
                                                       "general": core_message(error)}, status_code=error.status)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await signed_in(request, STAFF, run)


async def _goal_resources(page: Page, goals: list[GoalView]) -> list[dict[str, Any]]:
    service = page.request.app.state.service
    return [body(await service.read(page.access, "Goal", g.id)) for g in goals]


# -- reopen ---------------------------------------------------------------------------------------


@router.get("/avtal/{plan_id}/ateroppna")
async def reopen_form(request: Request, plan_id: str) -> Response:
    async def run(page: Page) -> Response:
        view = await _view(page, plan_id)
        if not view.closed:
            return page.redirect(f"/personal/avtal/{plan_id}")
        return page.render("personal/reopen.html", {"a": view, "f": {}, "errors": {}, "general": []})
    return await signed_in(request, STAFF, run)


@router.post("/avtal/{plan_id}/ateroppna")
async def reopen(request: Request, plan_id: str) -> Response:
    """The documented way out of completed/revoked: status active again, with the reason as the
    write's ``X-Provenance``; the core decides whether it is allowed."""
    async def run(page: Page) -> Response:
        data = await page.form()
        view = await _view(page, plan_id)
        form = {k: _text(data, k) for k in ("reason", "version")}
        errors: dict[str, Any] = {}
        if not form["reason"]:
            errors["reason"] = N_("Say why the agreement is reopened.")
        elif len(form["reason"]) > MAX_REASON:
            errors["reason"] = N_("Write at most 500 characters.")
        if not view.closed:
            return page.redirect(f"/personal/avtal/{plan_id}")
        if errors:
            return page.render("personal/reopen.html", {"a": view, "f": form, "errors": errors, "general": []},
                               status_code=422)
        plan = _plan(view)
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
            general = [N_("Someone else changed the agreement since you opened the page. Reload it and try again.")]
            return page.render("personal/reopen.html", {"a": view, "f": form, "errors": {}, "general": general},
                               status_code=409)
        except FhirError as error:
            return page.render("personal/reopen.html", {"a": view, "f": form, "errors": {},
                                                        "general": core_message(error)}, status_code=error.status)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await signed_in(request, STAFF, run)


# -- one activity -----------------------------------------------------------------------------------


def _find_activity(view: AgreementView, index: str) -> ActivityView | None:
    if not index.isdigit():
        return None
    return next((a for a in view.activities if a.index == int(index) and a.editable), None)


def _activity_form(activity: ActivityView) -> dict[str, str]:
    when = activity.when.astimezone() if activity.when else None
    return {"kind": activity.kind_code, "description": activity.description,
            "date": when.date().isoformat() if when else "", "time": when.strftime("%H:%M") if when else "",
            "place": activity.location, "performer": activity.performer_id, "reason": "", "action": ""}


async def _activity_page(page: Page, view: AgreementView, activity: ActivityView, form: dict[str, str],
                         errors: dict[str, Any], general: list[Any], status: int = 200) -> Response:
    directory = await staff_directory(page)
    return page.render("personal/activity_edit.html", {
        "a": view, "act": activity, "f": form, "errors": errors, "general": general,
        "kinds": activity_kinds(page), "units": directory["units"]}, status_code=status)


@router.get("/avtal/{plan_id}/aktivitet/{index}")
async def activity_form(request: Request, plan_id: str, index: str) -> Response:
    async def run(page: Page) -> Response:
        view = await _view(page, plan_id)
        if view.closed:
            return closed_page(page, view)
        activity = _find_activity(view, index)
        if activity is None:
            raise NotFound(f"CarePlan/{plan_id} has no activity {index}", details_sv="Aktiviteten finns inte.")
        return await _activity_page(page, view, activity, _activity_form(activity), {}, [])
    return await signed_in(request, STAFF, run)


@router.post("/avtal/{plan_id}/aktivitet/{index}")
async def change_activity(request: Request, plan_id: str, index: str) -> Response:
    """Move or change one activity (time, place, performer, kind, what), or cancel it with a
    reason; the agreement's version guards against a concurrent change."""
    async def run(page: Page) -> Response:
        data = await page.form()
        view = await _view(page, plan_id)
        if view.closed:
            return closed_page(page, view)
        activity = _find_activity(view, index)
        if activity is None:
            raise NotFound(f"CarePlan/{plan_id} has no activity {index}", details_sv="Aktiviteten finns inte.")
        form = {k: _text(data, k) for k in ("kind", "description", "date", "time", "place", "performer", "reason",
                                            "action", "version")}
        errors: dict[str, Any] = {}
        cancel = form["action"] == "cancel"
        if activity.cancelled:
            errors["reason"] = N_("The activity is already cancelled.")
        if not form["reason"]:
            errors["reason"] = N_("Say why the activity is cancelled.") if cancel else \
                N_("Say why the activity changes.")
        elif len(form["reason"]) > MAX_REASON:
            errors["reason"] = N_("Write at most 500 characters.")
        when = None
        if not cancel:
            if not form["description"]:
                errors["description"] = N_("Describe the activity.")
            if not form["performer"]:
                errors["performer"] = N_("Choose the unit responsible for the activity.")
            try:
                day = datetime.date.fromisoformat(form["date"])
                hour, _, minute = (form["time"] or "09:00").partition(":")
                when = datetime.datetime.combine(day, datetime.time(int(hour), int(minute or 0))).astimezone()
            except ValueError:
                errors["date"] = N_("Enter a date (YYYY-MM-DD) and a time (HH:MM).")
        if errors:
            return await _activity_page(page, view, activity, form, errors, [], status=422)
        plan = _plan(view)
        activities = [dict(a) for a in plan.get("activity", [])]
        detail = dict(activities[activity.index]["detail"])
        if cancel:
            detail["status"] = "cancelled"
            detail["statusReason"] = {"text": form["reason"]}
            what = f"Aktivitet inställd: {activity.description or activity.kind}"
        else:
            what = _describe_change(activity, form, when)
            _apply_change(detail, form, when, activity)
        activities[activity.index] = {**activities[activity.index], "detail": detail}
        plan["activity"] = activities
        known = {str(c.get("reference", "")).split("/")[-1] for c in plan.get("contributor", [])}
        if not cancel and form["performer"] not in known | {view.author_id}:
            plan["contributor"] = [*plan.get("contributor", []), {"reference": f"Organization/{form['performer']}"}]
        try:
            await page.request.app.state.service.update(
                page.access, "CarePlan", plan_id, plan, if_match=f'W/"{form["version"] or view.version}"',
                prefer=_PREFER, context=WriteContext(provenance=provenance(page, what, form["reason"])))
        except PreconditionFailed:
            general = [N_("Someone else changed the agreement since you opened the page. Reload it and try again.")]
            return await _activity_page(page, view, activity, form, {}, general, status=409)
        except FhirError as error:
            return await _activity_page(page, view, activity, form, {}, core_message(error), status=error.status)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await signed_in(request, STAFF, run)


def _apply_change(detail: dict[str, Any], form: dict[str, str], when: datetime.datetime | None,
                  activity: ActivityView) -> None:
    """The new time (keeping the activity's length), kind, what, place and responsible unit."""
    assert when is not None
    start, end = activity.when, activity.until
    length = (end - start) if start and end and end > start else datetime.timedelta(minutes=45)
    detail.pop("scheduledTiming", None)
    detail.pop("scheduledString", None)
    detail["scheduledPeriod"] = {"start": when.isoformat(timespec="seconds"),
                                 "end": (when + length).isoformat(timespec="seconds")}
    if form["kind"]:
        detail["code"] = {"coding": [{"system": codes.ACTIVITY_KIND, "code": form["kind"]}]}
    detail["description"] = form["description"]
    detail["performer"] = [{"reference": f"Organization/{form['performer']}"}]
    if form["place"]:
        detail["location"] = {"display": form["place"]}
    else:
        detail.pop("location", None)


def _describe_change(activity: ActivityView, form: dict[str, str], when: datetime.datetime | None) -> str:
    """What changed, in words (Swedish, as stored data is): the Provenance's ``activity.text``."""
    changed = []
    before = activity.when.astimezone() if activity.when else None
    if when is not None and (before is None or before.replace(second=0, microsecond=0) != when):
        old = before.strftime("%Y-%m-%d %H:%M") if before else "ingen tid"
        changed.append(f"tid {old} → {when:%Y-%m-%d %H:%M}")
    if form["place"] != activity.location:
        changed.append(f"plats {activity.location or '–'} → {form['place'] or '–'}")
    if form["performer"] != activity.performer_id:
        changed.append("ansvarig enhet")
    if form["kind"] and form["kind"] != activity.kind_code:
        changed.append("typ")
    if form["description"] != activity.description:
        changed.append("beskrivning")
    label = activity.description or activity.kind
    return f"Aktivitet ändrad: {label}" + (f" ({', '.join(changed)})" if changed else "")


# -- one of the care's goals ----------------------------------------------------------------------

GOAL_OUTCOMES = {"active": N_("Ongoing"), "achieved": N_("Achieved"), "not-achieved": N_("Ended, not achieved"),
                 "cancelled": N_("Cancelled")}


def goal_outcome(goal: GoalView) -> str:
    if goal.status == "cancelled":
        return "cancelled"
    if goal.status == "completed":
        return "not-achieved" if goal.achievement == "not-achieved" else "achieved"
    return "active"


@router.get("/avtal/{plan_id}/mal/{goal_id}")
async def goal_form(request: Request, plan_id: str, goal_id: str) -> Response:
    async def run(page: Page) -> Response:
        view = await _view(page, plan_id)
        if view.closed:
            return closed_page(page, view)
        goal = _care_goal(view, goal_id)
        form = {"text": goal.text, "due": goal.due, "outcome": goal_outcome(goal), "reason": "",
                "version": goal.version}
        return page.render("personal/goal_edit.html", {"a": view, "g": goal, "f": form, "errors": {},
                                                       "general": [], "outcomes": GOAL_OUTCOMES})
    return await signed_in(request, STAFF, run)


def _care_goal(view: AgreementView, goal_id: str) -> GoalView:
    goal = next((g for g in view.care_goals if g.id == goal_id), None)
    if goal is None:  # the patient's own goals are theirs to change (on /mitt)
        raise NotFound(f"Goal/{goal_id} is not one of the care's goals in CarePlan/{view.id}",
                       details_sv="Målet finns inte bland vårdens mål i patientkontraktet.")
    return goal


@router.post("/avtal/{plan_id}/mal/{goal_id}")
async def change_goal(request: Request, plan_id: str, goal_id: str) -> Response:
    """Change one of the care's goals, or end it: achieved, not achieved (both ``completed``:
    no longer sought) or cancelled (abandoned), with the reason; one transaction with its
    Provenance."""
    async def run(page: Page) -> Response:
        data = await page.form()
        view = await _view(page, plan_id)
        if view.closed:
            return closed_page(page, view)
        goal = _care_goal(view, goal_id)
        form = {k: _text(data, k) for k in ("text", "due", "outcome", "reason", "version")}
        errors: dict[str, Any] = {}
        if not form["text"]:
            errors["text"] = N_("Describe the goal.")
        if form["outcome"] not in GOAL_OUTCOMES:
            errors["outcome-active"] = N_("Choose the goal's status.")
        if not form["reason"]:
            errors["reason"] = N_("Say why the goal changes.")
        elif len(form["reason"]) > MAX_REASON:
            errors["reason"] = N_("Write at most 500 characters.")
        if form["due"]:
            try:
                datetime.date.fromisoformat(form["due"])
            except ValueError:
                errors["due"] = N_("Enter the date as YYYY-MM-DD.")
        context = {"a": view, "g": goal, "f": form, "outcomes": GOAL_OUTCOMES}
        if errors:
            return page.render("personal/goal_edit.html", {**context, "errors": errors, "general": []},
                               status_code=422)
        resource = (await _goal_resources(page, [goal]))[0]
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
        words = {"active": "pågår", "achieved": "uppnått", "not-achieved": "inte uppnått", "cancelled": "avbrutet"}
        what = f"Mål ändrat: {form['text']} ({words[form['outcome']]})"
        record = provenance(page, what, form["reason"], [f"Goal/{goal_id}/_history/{_next(version)}",
                                                         f"CarePlan/{plan_id}"])
        try:
            await _transaction(page, [_put(resource, version), _post(record)])
        except PreconditionFailed:
            general = [N_("Someone else changed the goal since you opened the page. Reload it and try again.")]
            return page.render("personal/goal_edit.html", {**context, "errors": {}, "general": general},
                               status_code=409)
        except FhirError as error:
            return page.render("personal/goal_edit.html", {**context, "errors": {}, "general": core_message(error)},
                               status_code=error.status)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await signed_in(request, STAFF, run)
