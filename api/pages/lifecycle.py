"""The agreement's status on the pages: which next states the edit form offers, and the answer
to an attempt to change a closed agreement, or one changed since the page was opened.

The rules themselves are the core's (``patientkontrakt/domain``): draft → active → on-hold ↔
active → completed | revoked, nothing leaves completed or revoked but a reopening with a reason.
The pages offer only what those allow, close an agreement only through the closing step
(``plan_changes.py``) and show the core's refusal when it says no.
"""

from __future__ import annotations

import datetime
from typing import Any

from fastapi.responses import Response

from api.pages.common import Page, bilingual
from api.pages.labels import N_
from api.pages.views import AgreementView
from patientkontrakt.fhir.dates import format_instant, now_utc
from patientkontrakt.fhir.errors import FhirError

NEXT_STATES: dict[str, tuple[str, ...]] = {
    "draft": ("draft", "active"), "active": ("active", "on-hold"), "on-hold": ("on-hold", "active"),
}
CLOSING_OUTCOMES = ("completed", "revoked")
GOAL_ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
STALE = N_("Someone else changed the agreement since you opened the page. Reload it and try again.")


def next_states(status: str) -> tuple[str, ...]:
    """The statuses the edit form may set from ``status``, the current one first (none when closed)."""
    return NEXT_STATES.get(status, ())


def provenance(page: Page, what: str, why: str, targets: list[str] | None = None,
               who: str | None = None) -> dict[str, Any]:
    """Who (the signed-in commission, for its unit; ``who`` when it is the patient), what (in
    words) and why."""
    agent: dict[str, Any] = {"who": {"reference": who or page.session.fhir_user or "", "display": page.session.name}}
    care_unit_org = getattr(page.access, "care_unit_org", "")
    if care_unit_org:
        agent["onBehalfOf"] = {"reference": f"Organization/{care_unit_org}"}
    record: dict[str, Any] = {
        "resourceType": "Provenance",
        "recorded": format_instant(now_utc()),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "UPDATE"}], "text": what},
        "agent": [agent],
    }
    if why:
        record["reason"] = [{"text": why}]
    if targets:
        record["target"] = [{"reference": t} for t in targets]
    return record


def closed_page(page: Page, view: AgreementView) -> Response:
    """"Avtalet är avslutat och kan inte ändras": 409, with the way back to the agreement."""
    return page.render("personal/closed.html", {"a": view}, status_code=409)


def core_message(error: FhirError) -> list[Any]:
    """The core's refusal in both languages (every issue), for a form's error summary."""
    if not error.issues:
        return [bilingual(error.details_sv or error.diagnostics, error.diagnostics)]
    return [bilingual(i.details_sv or i.diagnostics, i.diagnostics) for i in error.issues]


def set_goal_outcome(goal: dict[str, Any], outcome: str, reason: str) -> None:
    """R4 Goal: ``lifecycleStatus`` active, completed (no longer sought) or cancelled (abandoned);
    ``achievementStatus`` achieved/not-achieved for a completed goal; ``statusReason`` and
    ``statusDate`` when it ends. A goal taken up again drops its achievement and reason."""
    before = (goal.get("lifecycleStatus"), goal.get("achievementStatus"))
    goal.pop("statusReason", None)
    if outcome == "active":
        goal["lifecycleStatus"] = "active"
        goal.pop("achievementStatus", None)
    else:
        goal["lifecycleStatus"] = "cancelled" if outcome == "cancelled" else "completed"
        if outcome in ("achieved", "not-achieved"):
            goal["achievementStatus"] = {"coding": [{"system": GOAL_ACHIEVEMENT, "code": outcome}]}
        else:
            goal.pop("achievementStatus", None)
        if reason:
            goal["statusReason"] = reason
    if (goal.get("lifecycleStatus"), goal.get("achievementStatus")) != before:
        goal["statusDate"] = datetime.date.today().isoformat()
