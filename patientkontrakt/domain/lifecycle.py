"""The agreement's life: which status changes a Patientkontrakt may make, and dates that make sense.

Statuses of a Patientkontrakt (R4 ``CarePlan.status``)::

    (new) ──► draft ──► active ◄──► on-hold
                │         │            │
                │         ├──► completed ◄──┤
                └────────►├──► revoked  ◄───┘
                          │
          completed | revoked ──(reason)──► active        reopening
    draft ──► entered-in-error;  any other ──(reason)──► entered-in-error   correction

* **Free** changes: draft → active | revoked (a draft abandoned) | entered-in-error;
  active → on-hold | completed | revoked; on-hold → active | completed | revoked (an agreement
  may end while paused). Keeping the status is allowed; every version stays in the history.
* **A closed agreement stays as it was closed** (409): an update of a completed or revoked one
  that keeps its status may change only the progress of its activities (``status``,
  ``statusReason``, ``progress``, ``outcome``: an activity another unit performs is kept open at
  the closing and is done, or called off, afterwards); one entered in error changes no more.
  Anything else is changed by reopening it first.
* **With a reason** (a Provenance, see below): *reopening* completed | revoked → active, and
  *correction* active | on-hold | completed | revoked → entered-in-error.
* **Refused** (409): everything else — back to draft once agreed, draft → on-hold | completed
  (activate it first), completed ↔ revoked (reopen, then close the other way: two logged
  steps), anything out of entered-in-error, and anything to ``unknown``.
* **Creation**: as draft, active, on-hold, completed or revoked (completed and revoked for
  agreements that ended before they reached this service, e.g. migrated from an EHR); never as
  entered-in-error or unknown (422): there is nothing to correct, and a Patientkontrakt's status
  is always known.
* A deleted agreement that is written anew continues from the status it had when deleted, so a
  delete cannot launder a closed agreement back to draft. One stored as ``unknown`` (before these
  rules) may take any status a new agreement may, or be corrected to entered-in-error with a reason.

The reason travels as R4 http.html#provenance gives a client: the ``X-Provenance`` header on a
create, update or conditional update, or — in a transaction Bundle — a Provenance entry whose
``target`` references the CarePlan (``CarePlan/id``, versioned or not, or the entry's
``urn:uuid``). Its ``reason`` must hold a text or a coding. The Provenance is stored with the
new version (the header as the writer stores every ``X-Provenance``; the entry as written), so
who reopened or corrected the agreement, when and why stays with the history. A batch entry has
neither: reopen or correct with a single interaction or a transaction.

A refused change is **409 Conflict** with issue code ``business-rule`` at ``CarePlan.status``,
in Swedish and English, naming both statuses: the same body would be accepted for an agreement
in another state, so the conflict is with the resource's current state (RFC 9110 §15.5.10,
"most likely to occur in response to a PUT"), not with the content, which is 422's domain.

Dates (**422**, content that contradicts itself whatever is stored):

* every Period in the resource — ``CarePlan.period``, ``CareTeam.period``,
  ``CareTeam.participant.period``, ``CarePlan.activity.detail.scheduledPeriod``, the bounds of a
  ``scheduledTiming`` and any other — ends at or after its start (R4 invariant ``per-1``; a date
  and a dateTime are compared at their common precision, by the dates they write);
* a Goal's ``target.dueDate`` is not before its ``startDate``.

Activities are never removed: an update of a Patientkontrakt keeps at least as many activities
as before, and every activity element ``id`` it had (422); an activity that will not happen gets
the status ``cancelled`` (or ``entered-in-error``), so the patient's plan keeps its history.
When an agreement is completed or revoked, activities still ``not-started`` or ``scheduled``
are left as they are: the core does not require them resolved, the client closing the
agreement decides (the staff pages cancel the future ones).

Warnings (the write is stored; severity ``warning``, code ``business-rule``): a new activity
— one the previous version did not have, apart from its status and progress — that is
``not-started`` or ``scheduled`` with a planned time already past, and a Goal target date
already past on an open goal when the date is new. See ``WriteHooks.warnings`` for where they
reach the client.

Its length (over 400 lines) is one rule set, the agreement's life, read as a whole by whoever
changes it: the transitions, the reasons they need, the date rules and the warnings.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import orjson

from patientkontrakt.fhir.dates import DateFormatError, parse_range
from patientkontrakt.fhir.errors import Conflict, Issue, Unprocessable
from patientkontrakt.fhir.hooks import WriteContext

CREATABLE = ("draft", "active", "on-hold", "completed", "revoked")
FREE = {
    ("draft", "active"), ("draft", "revoked"), ("draft", "entered-in-error"),
    ("active", "on-hold"), ("active", "completed"), ("active", "revoked"),
    ("on-hold", "active"), ("on-hold", "completed"), ("on-hold", "revoked"),
}
REOPENING = {("completed", "active"), ("revoked", "active")}
CORRECTION = {(before, "entered-in-error") for before in ("active", "on-hold", "completed", "revoked", "unknown")}

# "Ett avslutat patientkontrakt (completed) kan inte ändras till utkast (draft)."
_SUBJECT_SV = {
    "draft": "Ett utkast till patientkontrakt (draft)",
    "active": "Ett gällande patientkontrakt (active)",
    "on-hold": "Ett pausat patientkontrakt (on-hold)",
    "completed": "Ett avslutat patientkontrakt (completed)",
    "revoked": "Ett avbrutet patientkontrakt (revoked)",
    "entered-in-error": "Ett felregistrerat patientkontrakt (entered-in-error)",
    "unknown": "Ett patientkontrakt med okänd status (unknown)",
}
_TARGET_SV = {
    "draft": "utkast (draft)", "active": "gällande (active)", "on-hold": "pausat (on-hold)",
    "completed": "avslutat (completed)", "revoked": "avbrutet (revoked)",
    "entered-in-error": "felregistrerat (entered-in-error)", "unknown": "okänd status (unknown)",
}
_SUBJECT_EN = {
    "draft": "a draft Patientkontrakt", "active": "an active Patientkontrakt",
    "on-hold": "a Patientkontrakt on hold", "completed": "a completed Patientkontrakt",
    "revoked": "a revoked Patientkontrakt", "entered-in-error": "a Patientkontrakt entered in error",
    "unknown": "a Patientkontrakt of unknown status",
}
_REASON_SV = ("Ange skälet i en Provenance med reason: i huvudet X-Provenance, eller som en Provenance i "
              "samma transaktion med patientkontraktet som target.")
_REASON_EN = ("give the reason in a Provenance with a reason: the X-Provenance header, or a Provenance entry "
              "targeting the CarePlan in the same transaction")

_ACTIVITY_OPEN = ("not-started", "scheduled")
_GOAL_OPEN = ("proposed", "planned", "accepted", "active", "on-hold")
# What may change on an activity without making it another activity (for the warnings).
_ACTIVITY_PROGRESS = ("progress", "outcomeCodeableConcept", "outcomeReference")
_DETAIL_PROGRESS = ("status", "statusReason")


# -- status changes -----------------------------------------------------------------------------


def check_transition(before: str | None, after: str, plan_id: str, context: WriteContext) -> None:
    """Refuse a status change the lifecycle does not allow; ``before`` None for a new agreement."""
    if before is None:
        if after not in CREATABLE:
            raise Unprocessable(
                f"CarePlan.status: a new Patientkontrakt cannot be {after}; create it as draft or active "
                "(or completed or revoked when it ended elsewhere)",
                expression=("CarePlan.status",),
                details_sv=f"Ett nytt patientkontrakt kan inte skapas som {_TARGET_SV.get(after, after)}. "
                           "Skapa det som utkast (draft) eller gällande (active).",
            )
        return
    if before == after or (before, after) in FREE or before == "unknown" and after in CREATABLE:
        return
    kind = "reopen" if (before, after) in REOPENING else "correct" if (before, after) in CORRECTION else None
    if kind is not None:
        if has_reason(justification(context, "CarePlan", plan_id)):
            return
        what_en = "reopening" if kind == "reopen" else "marking it entered-in-error"
        what_sv = ("Att öppna ett avslutat eller avbrutet patientkontrakt igen" if kind == "reopen"
                   else "Att markera ett patientkontrakt som felregistrerat")
        raise _refused(before, after,
                       f"{what_en} needs a reason: {_REASON_EN}",
                       f"{what_sv} kräver ett skäl. {_REASON_SV}")
    raise _refused(before, after, *_hint(before, after))


def _hint(before: str, after: str) -> tuple[str, str]:
    """What would be right instead (English, Swedish)."""
    if before == "entered-in-error":
        return ("it stays entered in error; create a new agreement",
                "Det förblir felregistrerat. Skapa ett nytt patientkontrakt.")
    if after == "unknown":
        return ("a Patientkontrakt's status is always known", "Ett patientkontrakts status är alltid känd.")
    if before in ("completed", "revoked"):
        return ("it can only be reopened (active) with a reason; to close it the other way, reopen it and "
                "close it again",
                "Det kan bara öppnas igen (active), med ett angivet skäl. Ska det avslutas på annat sätt: "
                "öppna det igen och avsluta det sedan.")
    if before == "draft":
        return ("a draft becomes active first (or is revoked when abandoned)",
                "Ett utkast blir gällande (active) först, eller avbryts (revoked) om det inte blir av.")
    return ("an agreement that has been in force cannot become a draft again; put it on hold or close it",
            "Ett patientkontrakt som har gällt kan inte bli utkast igen. Pausa det (on-hold) eller avsluta det.")


def _refused(before: str, after: str, english: str, swedish: str) -> Conflict:
    subject_en = _SUBJECT_EN.get(before, before)
    return Conflict(
        f"CarePlan.status: {subject_en} ({before}) cannot become {after}: {english}",
        issues=[Issue(
            code="business-rule",
            diagnostics=f"CarePlan.status: {subject_en} ({before}) cannot become {after}: {english}",
            expression=("CarePlan.status",),
            details_sv=f"{_SUBJECT_SV.get(before, before)} kan inte ändras till {_TARGET_SV.get(after, after)}. "
                       f"{swedish}",
        )],
    )


def justification(context: WriteContext, type_: str, id_: str) -> dict[str, Any] | None:
    """The Provenance that says why this write of ``type_/id_`` is made: the ``X-Provenance``
    header, or a Provenance entry of the same transaction that targets the resource."""
    if context.provenance is not None:
        return context.provenance
    for resource in context.transaction:
        if resource.get("resourceType") == "Provenance" and any(
                ref_key(t) == (type_, id_) for t in resource.get("target") or []):
            return resource
    return None


def has_reason(provenance: dict[str, Any] | None) -> bool:
    """Whether ``provenance`` gives a reason: a ``reason`` with a text or a coding."""
    if not provenance:
        return False
    return any(isinstance(r, dict) and (str(r.get("text") or "").strip() or r.get("coding"))
               for r in provenance.get("reason") or [])


def ref_key(reference: Any) -> tuple[str, str] | None:
    """(type, id) of a literal reference, relative or absolute, a version's or the resource's."""
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    parts = reference["reference"].split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


CLOSED = ("completed", "revoked", "entered-in-error")


def check_closed_unchanged(previous: dict[str, Any], plan: dict[str, Any]) -> None:
    """A closed agreement that keeps its status changes no more than its activities' progress
    (none at all once entered in error); the rest only after a reopening."""
    status = previous.get("status")
    if status not in CLOSED or plan.get("status") != status:
        return
    progress_only = status != "entered-in-error"
    if _closed_content(previous, progress_only) == _closed_content(plan, progress_only):
        return
    subject_en = _SUBJECT_EN.get(str(status), str(status))
    english = (f"CarePlan: {subject_en} ({status}) cannot be changed"
               + (" apart from the progress of its activities" if progress_only else "")
               + ("; reopen it (status active, with a reason) to change it" if status != "entered-in-error"
                  else "; create a new agreement"))
    swedish = (f"{_SUBJECT_SV.get(str(status), str(status))} kan inte ändras"
               + (" utom aktiviteternas utfall" if progress_only else "")
               + (". Öppna det igen (active) med ett angivet skäl för att ändra det." if status != "entered-in-error"
                  else ". Skapa ett nytt patientkontrakt."))
    raise Conflict(english, issues=[Issue(code="business-rule", diagnostics=english, expression=("CarePlan",),
                                          details_sv=swedish)])


def _closed_content(plan: dict[str, Any], progress_only: bool) -> bytes:
    """What a closed agreement keeps: everything but ``meta`` and, when ``progress_only``, the
    progress of its activities."""
    content = {k: v for k, v in plan.items() if k != "meta"}
    if progress_only and isinstance(content.get("activity"), list):
        content["activity"] = [_activity_key(a).decode() if isinstance(a, dict) else a for a in content["activity"]]
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


# -- activities are kept ------------------------------------------------------------------------


def check_activities_kept(previous: dict[str, Any], plan: dict[str, Any]) -> None:
    """An update keeps every activity the agreement had (cancel one instead of removing it)."""
    before, after = previous.get("activity") or [], plan.get("activity") or []
    after_ids = {a.get("id") for a in after if isinstance(a, dict)}
    lost = [a.get("id") for a in before if isinstance(a, dict) and a.get("id") and a.get("id") not in after_ids]
    if len(after) >= len(before) and not lost:
        return
    which = f"the activity with id {lost[0]!r}" if lost else f"{len(before) - len(after)} of its activities"
    raise Unprocessable(
        f"CarePlan.activity: the update removes {which}; activities are never removed from a Patientkontrakt: "
        "set the activity's detail.status to cancelled (or entered-in-error) instead",
        expression=("CarePlan.activity",),
        details_sv="En aktivitet kan inte tas bort ur patientkontraktet. Ändra i stället aktivitetens status "
                   "till inställd (cancelled), så finns den kvar i planens historik.",
    )


# -- dates ----------------------------------------------------------------------------------------


def date_issues(resource: dict[str, Any]) -> list[Issue]:
    """Every Period that ends before it starts, and Goal target dates before the goal's start."""
    type_ = str(resource.get("resourceType", ""))
    issues = [_period_issue(where, period) for where, period in _periods(resource, type_)]
    found = [i for i in issues if i is not None]
    if type_ == "Goal":
        found.extend(_goal_target_issues(resource))
    return found


def _periods(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _periods(item, f"{where}[{i}]")
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("start"), str) and isinstance(node.get("end"), str):
        yield where, node
    for key, child in node.items():
        if isinstance(child, dict | list) and key not in ("contained", "extension", "modifierExtension"):
            yield from _periods(child, f"{where}.{key}")


def ends_before(end: str, start: str) -> bool | None:
    """Whether ``end`` is certainly before ``start``; None when either is not a FHIR date.

    Two times are compared as instants. A date (or partial date) against anything is compared by
    the calendar dates the values write, at the coarser precision: a date has no time zone, so
    ``2024-03-05`` does not end before ``2024-03-05T00:30:00+01:00``."""
    try:
        _, end_high = parse_range(end)
        start_low, _ = parse_range(start)
    except DateFormatError:
        return None
    if "T" in end and "T" in start:
        return end_high < start_low
    precision = min(len(end.split("T")[0]), len(start.split("T")[0]))
    return end[:precision] < start[:precision]


_PERIOD_SV = {
    "CarePlan.period": "Patientkontraktets giltighetstid",
    "CareTeam.period": "Vårdteamets period",
}


def _period_label(where: str) -> str:
    if where in _PERIOD_SV:
        return _PERIOD_SV[where]
    if where.endswith(".scheduledPeriod") or ".scheduledTiming" in where:
        return "Aktivitetens planerade tid"
    if ".participant[" in where:
        return "Deltagarens period i vårdteamet"
    return "Perioden"


def _period_issue(where: str, period: dict[str, Any]) -> Issue | None:
    end, start = period["end"], period["start"]
    if not ends_before(end, start):
        return None
    return Issue(
        code="invariant",
        diagnostics=f"{where}.end: per-1: the period ends ({end}) before it starts ({start})",
        expression=(f"{where}.end",),
        details_sv=f"{_period_label(where)} slutar ({end}) innan den börjar ({start}). "
                   "Slutet får inte ligga före början.",
    )


def _goal_target_issues(goal: dict[str, Any]) -> list[Issue]:
    start = goal.get("startDate")
    if not isinstance(start, str):
        return []
    found = []
    for i, target in enumerate(goal.get("target") or []):
        due = target.get("dueDate") if isinstance(target, dict) else None
        if isinstance(due, str) and ends_before(due, start):
            found.append(Issue(
                code="business-rule",
                diagnostics=f"Goal.target[{i}].dueDate: the target date {due} is before the goal's startDate {start}",
                expression=(f"Goal.target[{i}].dueDate",),
                details_sv=f"Målets datum ({due}) ligger före datumet då arbetet med målet börjar ({start}).",
            ))
    return found


# -- warnings -------------------------------------------------------------------------------------


def plan_warnings(plan: dict[str, Any], previous: dict[str, Any] | None, now: datetime.datetime) -> list[Issue]:
    """New activities that are still to happen but whose planned time has passed."""
    known = {_activity_key(a) for a in (previous or {}).get("activity") or [] if isinstance(a, dict)}
    found = []
    for i, activity in enumerate(plan.get("activity") or []):
        if not isinstance(activity, dict) or _activity_key(activity) in known:
            continue
        detail = activity.get("detail") or {}
        if detail.get("status") not in _ACTIVITY_OPEN:
            continue
        latest = _latest_planned(detail)
        if latest is None or latest[1] >= now:
            continue
        found.append(Issue(
            code="business-rule", severity="warning",
            diagnostics=f"CarePlan.activity[{i}].detail: the new activity is {detail.get('status')} but planned "
                        f"for {latest[0]}, which has passed; check the date or record it as completed",
            expression=(f"CarePlan.activity[{i}].detail",),
            details_sv=f"Den nya aktiviteten är planerad till {latest[0]}, som redan har passerat. "
                       "Kontrollera datumet, eller markera aktiviteten som genomförd.",
        ))
    return found


def goal_warnings(goal: dict[str, Any], previous: dict[str, Any] | None, now: datetime.datetime) -> list[Issue]:
    """Target dates already past, on an open goal, that the previous version did not have."""
    if goal.get("lifecycleStatus") not in _GOAL_OPEN:
        return []
    known = {t.get("dueDate") for t in (previous or {}).get("target") or [] if isinstance(t, dict)}
    found = []
    for i, target in enumerate(goal.get("target") or []):
        due = target.get("dueDate") if isinstance(target, dict) else None
        if not isinstance(due, str) or due in known:
            continue
        try:
            passed = parse_range(due)[1] < now
        except DateFormatError:
            continue
        if passed:
            found.append(Issue(
                code="business-rule", severity="warning",
                diagnostics=f"Goal.target[{i}].dueDate: the target date {due} has already passed",
                expression=(f"Goal.target[{i}].dueDate",),
                details_sv=f"Målets datum ({due}) har redan passerat. Kontrollera datumet.",
            ))
    return found


def _activity_key(activity: dict[str, Any]) -> bytes:
    """The activity apart from its progress: a changed status does not make it a new activity."""
    trimmed = {k: v for k, v in activity.items() if k not in _ACTIVITY_PROGRESS}
    if isinstance(trimmed.get("detail"), dict):
        trimmed["detail"] = {k: v for k, v in trimmed["detail"].items() if k not in _DETAIL_PROGRESS}
    return orjson.dumps(trimmed, option=orjson.OPT_SORT_KEYS)


def _latest_planned(detail: dict[str, Any]) -> tuple[str, datetime.datetime] | None:
    """The last planned moment of an activity (its text, and the end of its range), if it has one:
    the end (else the start) of ``scheduledPeriod``; of a ``scheduledTiming`` its last event, or
    the end of its repeat's bounds (a repeat without an end goes on: None)."""
    values: list[str] = []
    period = detail.get("scheduledPeriod")
    if isinstance(period, dict):
        values.extend(v for v in (period.get("end") or period.get("start"),) if isinstance(v, str))
    timing = detail.get("scheduledTiming")
    if isinstance(timing, dict):
        repeat = timing.get("repeat")
        if isinstance(repeat, dict):
            end = (repeat.get("boundsPeriod") or {}).get("end")
            if not isinstance(end, str):
                return None
            values.append(end)
        values.extend(v for v in timing.get("event") or [] if isinstance(v, str))
    latest: tuple[str, datetime.datetime] | None = None
    for value in values:
        try:
            high = parse_range(value)[1]
        except DateFormatError:
            continue
        if latest is None or high > latest[1]:
            latest = (value, high)
    return latest
