"""One activity of an agreement on the staff pages: move or change it (time, place, responsible
unit, kind, what), or cancel it, with the reason. The CarePlan is written as a new version with
``If-Match`` and the change in words as its ``X-Provenance`` (``plan_changes.py`` says how the
agreement's life is kept).
"""

from __future__ import annotations

import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages import forms
from api.pages.agreement_page import open_agreement
from api.pages.common import Page
from api.pages.directory import activity_kinds, staff_directory
from api.pages.labels import N_
from api.pages.lifecycle import STALE, core_message, provenance
from api.pages.views import ActivityView, AgreementView
from patientkontrakt.domain import codes
from patientkontrakt.domain.agreement_builder import ACTIVITY_LENGTH, editable
from patientkontrakt.fhir.errors import FhirError, NotFound, PreconditionFailed
from patientkontrakt.fhir.hooks import WriteContext
from patientkontrakt.fhir.requests import Preferences

router = APIRouter(prefix="/personal", include_in_schema=False)
_PREFER = Preferences()
FIELDS = ("kind", "description", "date", "time", "place", "performer", "reason", "action", "version")


def _find_activity(view: AgreementView, index: str) -> ActivityView:
    activity = next((a for a in view.activities if index.isdigit() and a.index == int(index) and a.editable), None)
    if activity is None:
        raise NotFound(f"CarePlan/{view.id} has no activity {index}", details_sv="Aktiviteten finns inte.")
    return activity


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
    async def run(page: Page, view: AgreementView, _: dict[str, Any]) -> Response:
        activity = _find_activity(view, index)
        return await _activity_page(page, view, activity, _activity_form(activity), {}, [])
    return await open_agreement(request, plan_id, run)


@router.post("/avtal/{plan_id}/aktivitet/{index}")
async def change_activity(request: Request, plan_id: str, index: str) -> Response:
    """Move or change one activity (time, place, performer, kind, what), or cancel it with a
    reason; the agreement's version guards against a concurrent change."""
    async def run(page: Page, view: AgreementView, data: dict[str, Any]) -> Response:
        activity = _find_activity(view, index)
        form = {k: forms.text(data, k) for k in FIELDS}
        errors: dict[str, Any] = {}
        cancel = form["action"] == "cancel"
        if activity.cancelled:
            errors["reason"] = N_("The activity is already cancelled.")
        forms.check_text(form, "reason", errors, N_("Say why the activity is cancelled.") if cancel else
                         N_("Say why the activity changes."))
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
        plan = editable(view.plan)
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
            return await _activity_page(page, view, activity, form, {}, [STALE], status=409)
        except FhirError as error:
            return await _activity_page(page, view, activity, form, {}, core_message(error), status=error.status)
        return page.redirect(f"/personal/avtal/{plan_id}?sparat=1")
    return await open_agreement(request, plan_id, run)


def _apply_change(detail: dict[str, Any], form: dict[str, str], when: datetime.datetime | None,
                  activity: ActivityView) -> None:
    """The new time (keeping the activity's length), kind, what, place and responsible unit."""
    assert when is not None
    start, end = activity.when, activity.until
    length = (end - start) if start and end and end > start else ACTIVITY_LENGTH
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
