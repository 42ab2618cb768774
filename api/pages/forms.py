"""What the pages' forms share: reading a posted field, the common checks (a text's length, a
date), the personnummer's messages, the error summary's order, and the core's OperationOutcome
issues put next to the fields they are about.

A form shows every error of one submission at once, each next to its field and once in the
summary at the top (the GOV.UK and Designsystemet pattern). The page checks what it can itself
(required fields, the personnummer, the contacts, the activities) before it calls the core; what
the core still refuses comes back as issues whose ``expression`` names the element, which
``issue_fields`` turns into the form's field. A transaction's issues name the entry
(``Bundle.entry[2].resource.activity[0]``), so the Bundle the page sent says which resource that is.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Collection, Sequence
from typing import Any

from api.pages.common import bilingual
from api.pages.labels import N_
from patientkontrakt.domain import codes
from patientkontrakt.domain.identifiers import IdentifierError, PersonIdentity, parse_person_number
from patientkontrakt.fhir.errors import Issue

EMPTY_PERSON_NUMBER = N_("Enter the patient's personnummer")
PERSON_NUMBER = {
    "format": N_("A personnummer has 10 or 12 digits, for example 19121212-1212"),
    "check-digit": N_("The last digit of the personnummer (the check digit) does not match. Check the number"),
    "date": N_("The personnummer does not contain a real date. Check the number"),
    "future": N_("The birth date in the personnummer is in the future. Check the number"),
}

_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]\.resource\.?(.*)")
_ENTRY_DIAGNOSTICS = re.compile(r"Bundle\.entry\[\d+\]: ")
_PATH = re.compile(r"[A-Z][A-Za-z]+(?:\.[A-Za-z]+(?:\[\d+\])?)*")
_INDEX = re.compile(r"^([A-Za-z]+)\[(\d+)\]\.?(.*)$")
_ACTIVITY_PARTS = (("scheduled", "date"), ("performer", "performer"), ("code", "kind"), ("location", "place"))
MAX_TEXT = 500  # a reason, a goal: what the forms' ``maxlength`` allows
TOO_LONG = N_("Write at most 500 characters.")


def text(data: dict[str, Any], name: str) -> str:
    """A posted field, trimmed (the first, when it was posted more than once)."""
    value = data.get(name, "")
    return str(value[0] if isinstance(value, list) else value).strip()


def check_text(form: dict[str, str], name: str, errors: dict[str, Any], missing: str | None = None) -> None:
    """``form[name]`` at most ``MAX_TEXT`` long and, with a ``missing`` message, not empty."""
    if not form[name]:
        if missing is not None:
            errors[name] = missing
    elif len(form[name]) > MAX_TEXT:
        errors[name] = TOO_LONG


def check_date(form: dict[str, str], name: str, errors: dict[str, Any], message: str) -> None:
    """``form[name]`` empty or a date (YYYY-MM-DD); ``message`` when it is neither."""
    if form[name]:
        try:
            datetime.date.fromisoformat(form[name])
        except ValueError:
            errors[name] = message


def person_number_message(text: str, error: IdentifierError) -> str:
    """What a nurse reads when ``text`` is no personnummer (``error`` from ``parse_person_number``)."""
    if not text.strip():
        return EMPTY_PERSON_NUMBER
    return PERSON_NUMBER.get(error.reason, PERSON_NUMBER["format"])


def other_century(text: str, identity: PersonIdentity) -> PersonIdentity | None:
    """For a 10-digit ``text``: the same number a hundred years off (``-`` read as ``+`` or the
    other way round), if that is a valid number of someone already born; else None."""
    if len(re.sub(r"\D", "", text)) != 10:
        return None
    year = int(identity.value[:4]) + (100 if "+" in text else -100)
    try:
        return parse_person_number(f"{year:04d}{identity.value[4:]}")
    except IdentifierError:
        return None


def short_form(identity: PersonIdentity) -> str:
    """``YYMMDD-NNNN``, with ``+`` for someone of 100 or more (Skatteverket)."""
    born = identity.birth_date
    today = datetime.date.today()
    hundred = (today.year - born.year - ((today.month, today.day) < (born.month, born.day))) >= 100
    return f"{identity.value[2:8]}{'+' if hundred else '-'}{identity.value[8:]}"


def in_form_order(errors: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """``errors`` in the order of the fields on the page (``order``), the rest after them."""
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(errors.items(), key=lambda item: rank.get(item[0], len(rank))))


def activity_field_order(rows: int, fields: Sequence[str]) -> list[str]:
    return [f"activity-{i}-{name}" for i in range(rows) for name in fields]


def issue_fields(issues: list[Issue], errors: dict[str, Any], bundle: dict[str, Any] | None = None,
                 new_activities: Sequence[dict[str, Any]] = (), fields: Collection[str] = ()) -> list[Any]:
    """Put each of the core's ``issues`` into ``errors`` under the field it is about (one of
    ``fields``, or an activity row's field) unless that field has an error already; return the
    others, each once, for the top of the summary. ``new_activities``: the form's activity rows
    sent, in order, as the last of the CarePlan's activities (each with its form ``row``)."""
    general: list[Any] = []
    seen: set[str] = set()
    for issue in issues:
        message = bilingual(issue.details_sv or issue.diagnostics, issue.diagnostics)
        path, resource = _path(issue, bundle)
        field = _field(path, issue.diagnostics, resource, new_activities)
        if field is not None and (field in fields or field.startswith("activity-")):
            errors.setdefault(field, message)
            continue
        if message.sv not in seen:
            seen.add(message.sv)
            general.append(message)
    return general


def _path(issue: Issue, bundle: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The issue's element as ``Type.path``, and the resource of the Bundle entry it is in."""
    entries = (bundle or {}).get("entry", [])
    for expression in issue.expression:
        match = _ENTRY.fullmatch(expression)
        if match and int(match[1]) < len(entries):
            resource = entries[int(match[1])].get("resource") or {}
            return f"{resource.get('resourceType', '')}.{match[2]}".rstrip("."), resource
        if expression[:1].isupper() and not expression.startswith("Bundle"):
            return expression, {}
    # without the Bundle: the diagnostics begin with the element ("Bundle.entry[1]: CarePlan.goal: ...")
    found = _PATH.match(_ENTRY_DIAGNOSTICS.sub("", issue.diagnostics, count=1))
    return (found.group(0) if found else ""), {}


def _field(path: str, diagnostics: str, resource: dict[str, Any],
           new_activities: Sequence[dict[str, Any]]) -> str | None:
    kind, _, rest = path.partition(".")
    text = diagnostics.lower()
    if kind == "Patient":
        return next((f for prefix, f in (("identifier", "personnummer"), ("name", "family"), ("telecom", "phone"))
                     if rest.startswith(prefix)), None)
    if kind == "Goal":
        expressed = str((resource.get("expressedBy") or {}).get("reference", ""))
        return "own_goals" if expressed.startswith(("Patient/", "urn:")) else "care_goals"
    if kind == "CareTeam":
        return _team_field(rest, text, resource)
    if kind != "CarePlan":
        return None
    if rest.startswith("careTeam"):
        return _team_field("", text, {})
    if rest.startswith("activity"):
        return _activity_field(rest, resource, new_activities)
    if rest.startswith("status"):
        return "personnummer" if "already has an active" in text else "status"
    return next((f for prefix, f in (("description", "description"), ("title", "title"), ("period", "end"))
                 if rest.startswith(prefix)), None)


def _team_field(rest: str, text: str, team: dict[str, Any]) -> str:
    match = _INDEX.match(rest)
    if match and match[1] == "participant" and int(match[2]) < len(team.get("participant", [])):
        participant = team["participant"][int(match[2])]
        role = {c.get("code") for r in participant.get("role", []) for c in r.get("coding", [])
                if c.get("system") == codes.CARETEAM_ROLE}
        if codes.FAST_VARDKONTAKT in role:
            return "vardkontakt"
        if codes.FAST_LAKARKONTAKT in role:
            return "lakarkontakt"
        return "personnummer" if "patient" in role else "participants"
    return "lakarkontakt" if "läkarkontakt" in text or "physician" in text else "vardkontakt"


def _activity_field(rest: str, plan: dict[str, Any], new_activities: Sequence[dict[str, Any]]) -> str | None:
    match = _INDEX.match(rest)
    if not match or not new_activities:
        return None
    first_new = len(plan.get("activity", [])) - len(new_activities) if plan else 0
    index = int(match[2]) - first_new
    if not 0 <= index < len(new_activities):
        return None
    part = next((f for prefix, f in _ACTIVITY_PARTS if match[3].startswith(f"detail.{prefix}")), "description")
    return f"activity-{new_activities[index]['row']}-{part}"
