"""What the pages show of an agreement, read from the ``$patientkontrakt`` Bundle.

The Bundle is what the API gives an EHR (``patientkontrakt/domain/overview.py``); this module
turns it into plain values for the templates: the people and their roles over time, the goals
(the patient's own apart), the activities in time order (upcoming and past), and the history of
changes. No FHIR knowledge in the templates, no HTML here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from api.pages.labels import GOAL_STATUS, N_
from patientkontrakt.domain import codes
from patientkontrakt.domain.contact_paths import RoleContact, role_contact
from patientkontrakt.domain.identifiers import PERSONNUMMER, SAMORDNINGSNUMMER
from patientkontrakt.fhir.dates import DateFormatError, now_utc, parse_range

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
CLOSED_PLAN_STATES = ("completed", "revoked", "entered-in-error")
CLOSED_GOAL_STATES = ("completed", "cancelled", "rejected", "entered-in-error")
CANCELLED_ACTIVITY_STATES = ("cancelled", "stopped", "entered-in-error")
GOAL_ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
ROLE_ORDER = ("fast-vardkontakt", "fast-lakarkontakt", "kontaktperson-kommun", "narstaende", "ovrig", "patient")


@dataclass
class Person:
    name: str
    title: str = ""
    unit: str = ""
    phone: str = ""
    reference: str = ""
    reach: RoleContact | None = None  # direct number, unit phone, address, hours (staff members)


@dataclass
class Contact:
    role: str  # a pk-careteam-role code
    person: Person
    start: str = ""
    end: str = ""
    current: bool = True
    role_text: str = ""  # the participant's role in words (CareTeam.participant.role.text), if given


@dataclass
class GoalView:
    id: str
    text: str
    due: str
    status: str
    own: bool
    version: str
    reason: str = ""  # Goal.statusReason: why it was withdrawn or cancelled
    achievement: str = ""  # Goal.achievementStatus code (goal-achievement)

    @property
    def open(self) -> bool:
        """Still pursued: not achieved, withdrawn, cancelled or rejected."""
        return self.status not in CLOSED_GOAL_STATES

    @property
    def label(self) -> str:
        """The status as the pages name it (a message id): an ended goal says whether it was reached."""
        if self.status == "completed":
            return {"achieved": N_("Achieved"), "not-achieved": N_("Not achieved")}.get(self.achievement, N_("Ended"))
        if self.status == "cancelled" and self.own:
            return N_("Withdrawn")
        return GOAL_STATUS.get(self.status, N_("Unknown"))


@dataclass
class ActivityView:
    kind: str
    description: str
    when: datetime | None
    until: datetime | None
    recurring: str
    performer: str
    location: str
    status: str
    index: int = -1  # the position in CarePlan.activity (-1: not one of the plan's own)
    reason: str = ""  # detail.statusReason: why it was cancelled or stopped
    performer_id: str = ""
    kind_code: str = ""  # a pk-activity-kind code (besok, hembesok, telefonkontakt, ...)
    editable: bool = False  # a detail (not a booked Appointment) that the pages may change
    all_day: bool = False  # planned for a day, without a time (scheduledPeriod.start is a date)

    @property
    def past(self) -> bool:
        return self.when is not None and (self.until or self.when) < now_utc()

    @property
    def cancelled(self) -> bool:
        return self.status in CANCELLED_ACTIVITY_STATES


@dataclass
class Change:
    when: str
    who: str
    why: str
    what: str = ""  # Provenance.activity.text: what was changed, in words


@dataclass
class AgreementView:
    id: str
    version: str
    status: str
    title: str
    description: str
    start: str
    end: str
    author: str
    author_id: str
    contributors: list[str]
    patient_id: str
    patient_name: str
    personnummer: str
    patient_phone: str
    team_id: str
    team_version: str
    contacts: list[Contact] = field(default_factory=list)
    goals: list[GoalView] = field(default_factory=list)
    activities: list[ActivityView] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    team: dict[str, Any] = field(default_factory=dict)

    @property
    def closed(self) -> bool:
        """Completed or revoked: read-only, changed only by a reopening."""
        return self.status in CLOSED_PLAN_STATES

    @property
    def current_contacts(self) -> list[Contact]:
        return [c for c in self.contacts if c.current and c.role != "patient"]

    @property
    def former_contacts(self) -> list[Contact]:
        return [c for c in self.contacts if not c.current and c.role != "patient"]

    def contact(self, role: str) -> Contact | None:
        return next((c for c in self.current_contacts if c.role == role), None)

    @property
    def own_goals(self) -> list[GoalView]:
        return [g for g in self.goals if g.own]

    @property
    def care_goals(self) -> list[GoalView]:
        return [g for g in self.goals if not g.own]

    @property
    def upcoming(self) -> list[ActivityView]:
        return [a for a in self.activities if not a.past and not a.cancelled]

    @property
    def past(self) -> list[ActivityView]:
        return list(reversed([a for a in self.activities if a.past and not a.cancelled]))

    @property
    def cancelled(self) -> list[ActivityView]:
        """Activities called off (``cancelled``/``stopped``): kept in the plan, shown apart."""
        return [a for a in self.activities if a.cancelled]


def _ref(value: Any) -> str:
    return str(value.get("reference", "")).split("/_history", 1)[0] if isinstance(value, dict) else ""


def name_of(resource: dict[str, Any] | None) -> str:
    if not resource:
        return ""
    if isinstance(resource.get("name"), str):
        return str(resource["name"])
    for name in resource.get("name") or []:
        if name.get("text"):
            return str(name["text"])
        return " ".join([*name.get("given", []), name.get("family", "")]).strip()
    return ""


def phone_of(resource: dict[str, Any] | None) -> str:
    for telecom in (resource or {}).get("telecom") or []:
        if telecom.get("system") == "phone" and telecom.get("value"):
            return str(telecom["value"])
    return ""


def person_number(patient: dict[str, Any]) -> str:
    for identifier in patient.get("identifier") or []:
        if identifier.get("system") in (PERSONNUMMER, SAMORDNINGSNUMMER) and identifier.get("value"):
            value = str(identifier["value"])
            return f"{value[:8]}-{value[8:]}" if len(value) == 12 else value
    return ""


def _code(concepts: Any, system: str) -> str:
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        for coding in (concept or {}).get("coding", []) if isinstance(concept, dict) else []:
            if coding.get("system") == system:
                return str(coding.get("code", ""))
    return ""


def _display(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    for coding in concept.get("coding", []):
        if coding.get("display"):
            return str(coding["display"])
    return str(concept.get("text", ""))


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_range(value)[0]
    except DateFormatError:
        return None


def _day(value: Any) -> str:
    return value[:10] if isinstance(value, str) else ""


def _current(period: Any) -> bool:
    end = _instant((period or {}).get("end")) if isinstance(period, dict) else None
    if end is None:
        return True
    high = parse_range(period["end"])[1] if "T" not in period["end"] else end
    return high > now_utc()


class _Index:
    def __init__(self, resources: list[dict[str, Any]]) -> None:
        # an OperationOutcome of the Bundle (a note, that something is not shown) has no id
        self.by_ref = {f"{r['resourceType']}/{r['id']}": r for r in resources if "id" in r}

    def get(self, reference: str) -> dict[str, Any] | None:
        return self.by_ref.get(reference)

    def person(self, reference: str, display: str = "") -> Person:
        resource = self.get(reference) or {}
        if resource.get("resourceType") == "PractitionerRole":
            practitioner = self.get(_ref(resource.get("practitioner"))) or {}
            org = self.get(_ref(resource.get("organization"))) or {}
            codes_ = resource.get("code") or [{}]
            return Person(
                name=name_of(practitioner) or str((resource.get("practitioner") or {}).get("display", "")) or display,
                title=str(codes_[0].get("text", "")) if codes_ else "",
                unit=name_of(org) or str((resource.get("organization") or {}).get("display", "")),
                phone=phone_of(resource) or phone_of(org), reference=reference,
                reach=role_contact(resource, org or None),
            )
        return Person(name=name_of(resource) or display.split(",")[0], phone=phone_of(resource),
                      reference=reference)


def agreement_view(bundle: dict[str, Any], plan_id: str | None = None) -> AgreementView | None:
    """The agreement ``plan_id`` (or the first) of a ``$patientkontrakt`` Bundle; None if none."""
    resources = [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
    index = _Index(resources)
    plans = [r for r in resources if r["resourceType"] == "CarePlan" and (plan_id is None or r["id"] == plan_id)]
    if not plans:
        return None
    plan = plans[0]
    patient = index.get(_ref(plan.get("subject"))) or {}
    team = next((index.get(_ref(t)) for t in plan.get("careTeam", []) if index.get(_ref(t))), None) or {}
    contacts = []
    for participant in team.get("participant", []):
        role = _code(participant.get("role"), codes.CARETEAM_ROLE) or "ovrig"
        member = participant.get("member") or {}
        period = participant.get("period") or {}
        role_text = next((str(r["text"]) for r in participant.get("role") or [] if isinstance(r, dict)
                          and r.get("text")), "")
        contacts.append(Contact(role=role, person=index.person(_ref(member), str(member.get("display", ""))),
                                start=_day(period.get("start")), end=_day(period.get("end")),
                                current=_current(period), role_text=role_text))
    contacts.sort(key=lambda c: (ROLE_ORDER.index(c.role) if c.role in ROLE_ORDER else 9, not c.current, c.start))
    goals = []
    for reference in plan.get("goal", []):
        goal = index.get(_ref(reference))
        if goal is None:
            continue
        goals.append(goal_view(goal))
    named = {_ref(g) for r in resources if r["resourceType"] == "CarePlan" for g in r.get("goal", [])}
    for goal in resources:  # the patient's own goals that no agreement names (yet)
        if goal["resourceType"] == "Goal" and f"Goal/{goal['id']}" not in named:
            goals.append(goal_view(goal))
    activities = [_activity(activity, index, i) for i, activity in enumerate(plan.get("activity", []))]
    activities.sort(key=lambda a: (a.when is None, a.when or datetime.max))
    changes = []
    for provenance in resources:
        if provenance["resourceType"] == "Provenance":
            agent = (provenance.get("agent") or [{}])[0]
            who = _ref(agent.get("who"))
            changes.append(Change(
                when=str(provenance.get("recorded", ""))[:16].replace("T", " "),
                who=str((agent.get("who") or {}).get("display") or name_of(index.get(who)) or who),
                why=_display(provenance.get("reason", [{}])[0]) if provenance.get("reason") else "",
                what=str((provenance.get("activity") or {}).get("text", "")),
            ))
    changes.sort(key=lambda c: c.when, reverse=True)
    author = index.get(_ref(plan.get("author"))) or {}
    return AgreementView(
        id=plan["id"], version=str((plan.get("meta") or {}).get("versionId", "")), status=str(plan.get("status")),
        title=str(plan.get("title", "")), description=str(plan.get("description", "")),
        start=_day((plan.get("period") or {}).get("start")), end=_day((plan.get("period") or {}).get("end")),
        author=name_of(author) or str((plan.get("author") or {}).get("display", "")),
        author_id=_ref(plan.get("author")).split("/")[-1],
        contributors=[name_of(index.get(_ref(c))) or str(c.get("display", "")) for c in plan.get("contributor", [])],
        patient_id=str(patient.get("id", "")), patient_name=name_of(patient), personnummer=person_number(patient),
        patient_phone=phone_of(patient), team_id=str(team.get("id", "")),
        team_version=str((team.get("meta") or {}).get("versionId", "")),
        contacts=contacts, goals=goals, activities=activities, changes=changes, plan=plan, team=team,
    )


def goal_view(goal: dict[str, Any]) -> GoalView:
    target = (goal.get("target") or [{}])[0]
    return GoalView(
        id=goal["id"], text=str((goal.get("description") or {}).get("text", "")),
        due=_day(target.get("dueDate")), status=str(goal.get("lifecycleStatus", "")),
        own=_ref(goal.get("expressedBy")).startswith("Patient/"),
        version=str((goal.get("meta") or {}).get("versionId", "")),
        reason=str(goal.get("statusReason", "")),
        achievement=_code(goal.get("achievementStatus"), GOAL_ACHIEVEMENT),
    )


def _activity(activity: dict[str, Any], index: _Index, position: int) -> ActivityView:
    appointment = index.get(_ref(activity.get("reference")))
    if appointment is not None:
        actors = [p.get("actor") or {} for p in appointment.get("participant", [])]
        performer = next((name_of(index.get(_ref(a))) for a in actors if _ref(a).startswith("Organization/")), "")
        return ActivityView(
            kind=_display((appointment.get("serviceType") or [{}])[0]) or _display(appointment.get("appointmentType")),
            description=str(appointment.get("description", "")), when=_instant(appointment.get("start")),
            until=_instant(appointment.get("end")), recurring="", performer=performer, location="",
            status=str(appointment.get("status", "")), index=position,
            reason=_display(appointment.get("cancelationReason")),
            kind_code=_code(appointment.get("serviceType"), codes.ACTIVITY_KIND),
        )
    detail = activity.get("detail") or {}
    period = detail.get("scheduledPeriod") or {}
    timing = detail.get("scheduledTiming") or {}
    when = _instant(period.get("start")) or _instant((timing.get("event") or [None])[0]) \
        or _instant(detail.get("scheduledString"))
    repeat = timing.get("repeat") or {}
    recurring = ""
    if repeat and when is None:
        times = ", ".join(t[:5] for t in repeat.get("timeOfDay", []))
        recurring = f"{repeat.get('frequency', 1)}/{repeat.get('period', 1)}{repeat.get('periodUnit', '')} {times}"
    performers = [name_of(index.get(_ref(p))) or str(p.get("display", "")) for p in detail.get("performer", [])]
    start = period.get("start")
    all_day = isinstance(start, str) and _DATE_ONLY.fullmatch(start) is not None and when is not None
    until = _instant(period.get("end"))
    if all_day and until is None:
        until = parse_range(start)[1]  # the day's last instant: it is upcoming all that day
    return ActivityView(
        kind=_display(detail.get("code")), description=str(detail.get("description", "")), when=when,
        until=until, recurring=recurring.strip(), performer=", ".join(p for p in performers if p),
        location=str((detail.get("location") or {}).get("display", "")), status=str(detail.get("status", "")),
        index=position, reason=_display(detail.get("statusReason")),
        performer_id=next((_ref(p).split("/")[-1] for p in detail.get("performer", [])
                           if _ref(p).startswith("Organization/")), ""),
        kind_code=_code(detail.get("code"), codes.ACTIVITY_KIND), editable=bool(detail), all_day=all_day,
    )
