"""A Patientkontrakt written from the staff pages' forms: the FHIR R4 resources and the
transaction Bundles the pages send the core.

Pure: the form's values (read and checked by the page, ``api/pages/agreement_form.py``), the
unit's directory of staff and care units, and the resources the page read come in; FHIR dicts go
out. Who writes (the staff member's ``PractitionerRole`` reference), the patient's name as the
pages show it and today's date are arguments; nothing here reads a request, a session or the
store.

* **A new agreement** is one transaction: the Patient when the unit registers them, the CareTeam
  (fast vårdkontakt, fast läkarkontakt when chosen, the other participants, the patient), the
  Goals, and the CarePlan naming them by ``urn:uuid``. The other units taking part (a participant's
  unit, an activity's performer) are the plan's ``contributor``\\ s. No empty array is written.
* **An edit** is one transaction: the new Goals, and the CarePlan as a PUT with ``If-Match`` on
  the version the form was opened at, so a stale edit stores nothing.
* **A new fast vårdkontakt** takes the current one's place in the CareTeam; former ones (their
  period ended) stay, and the change carries a Provenance with the reason.

A form's activity row (``activity``) is planned for 45 minutes from its time, or for the day
when it has none: ``scheduledPeriod.start`` is then a date, which a FHIR dateTime may be.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from patientkontrakt.domain import codes
from patientkontrakt.domain.identifiers import PersonIdentity
from patientkontrakt.domain.lifecycle import ref_key

ACTIVITY_LENGTH = datetime.timedelta(minutes=45)
DEFAULT_DESCRIPTION = "Överenskommelse mellan dig och vården."
MUNICIPAL_UNIT_WORDS = ("kommun", "hemtj")  # a participant of such a unit is the kommun's contact person

Resource = dict[str, Any]


# -- transaction entries ----------------------------------------------------------------------------


def new_urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def transaction(entries: list[Resource]) -> Resource:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def post_entry(resource: Resource, full_url: str | None = None) -> Resource:
    """An entry creating ``resource``; ``full_url`` (a ``urn:uuid``) when other entries refer to it."""
    entry: Resource = {"fullUrl": full_url} if full_url else {}
    entry.update(resource=resource, request={"method": "POST", "url": resource["resourceType"]})
    return entry


def put_entry(resource: Resource, version: str) -> Resource:
    """An entry updating ``resource`` (which has its id) if it is still at ``version``."""
    return {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}",
                                              "ifMatch": f'W/"{version}"'}}


def next_version(version: str) -> str:
    """The version an update of a resource at ``version`` makes (to name it in a Provenance)."""
    return str(int(version) + 1) if version.isdigit() else version


def editable(resource: Mapping[str, Any]) -> Resource:
    """A copy of a stored resource to change and write back: without its ``meta``."""
    return {k: v for k, v in resource.items() if k != "meta"}


# -- the parts of an agreement ----------------------------------------------------------------------


def new_patient(identity: PersonIdentity, given: str, family: str, phone: str = "") -> Resource:
    """The Patient the unit registers: the personnummer (or samordningsnummer), the name, a mobile."""
    patient: Resource = {"resourceType": "Patient", "identifier": [{"system": identity.system,
                                                                     "value": identity.value}],
                         "name": [{"family": family, "given": [given]}]}
    if phone:
        patient["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    return patient


def role_reference(role_id: str, directory: Mapping[str, Any]) -> dict[str, str]:
    """A reference to a ``PractitionerRole`` of the directory, displayed as "name, unit"."""
    staff = {r["id"]: r for r in [*directory["own_staff"], *directory["other_staff"]]}
    chosen = staff.get(role_id, {})
    return {"reference": f"PractitionerRole/{role_id}",
            "display": f"{chosen.get('name', '')}, {chosen.get('unit', '')}".strip(", ")}


def new_goals(form: Mapping[str, Any], patient_ref: str, staff_ref: str, today: datetime.date) -> list[Resource]:
    """A Goal for each line of the form's ``own_goals`` (expressed by the patient) and
    ``care_goals`` (expressed by ``staff_ref``, the signed-in staff member); blank lines are none."""
    goals = []
    for text, expressed_by in ((form.get("own_goals", ""), patient_ref), (form.get("care_goals", ""), staff_ref)):
        for line in (x.strip() for x in text.splitlines()):
            if line:
                goals.append({"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": line},
                              "subject": {"reference": patient_ref}, "startDate": today.isoformat(),
                              "expressedBy": {"reference": expressed_by}})
    return goals


def activity(row: Mapping[str, Any], utc_offset: str | None = None) -> Resource:
    """``CarePlan.activity`` for a checked form row (``kind``, ``description``, ``day``, ``time``
    or None, ``performer``: an Organization id, ``place``). A time is written with
    ``utc_offset`` (``+01:00``; by default the offset this machine has now)."""
    day, time = row["day"], row["time"]
    if time is None:
        period = {"start": day.isoformat()}
    else:
        start = datetime.datetime.combine(day, time.replace(second=0, microsecond=0))
        end = start + ACTIVITY_LENGTH
        offset = utc_offset if utc_offset is not None else _local_offset()
        period = {"start": start.strftime("%Y-%m-%dT%H:%M:00") + offset,
                  "end": end.strftime("%Y-%m-%dT%H:%M:00") + offset}
    detail: Resource = {
        "code": {"coding": [{"system": codes.ACTIVITY_KIND, "code": row["kind"]}]},
        "status": "scheduled",
        "scheduledPeriod": period,
        "performer": [{"reference": f"Organization/{row['performer']}"}],
        "description": row["description"],
    }
    if row.get("place"):
        detail["location"] = {"display": row["place"]}
    return {"detail": detail}


def _local_offset() -> str:
    zone = datetime.datetime.now().astimezone().strftime("%z")
    return f"{zone[:3]}:{zone[3:]}" if zone else "+00:00"


def _role(code: str, label: str) -> list[Resource]:
    return [{"coding": [{"system": codes.CARETEAM_ROLE, "code": code, "display": label}]}]


def _participant_role(role_id: str, directory: Mapping[str, Any]) -> list[Resource]:
    """A participant from the kommun's home care or social services is its contact person."""
    others = {r["id"]: r for r in directory["other_staff"]}
    unit = str(others.get(role_id, {}).get("unit", "")).lower()
    if any(word in unit for word in MUNICIPAL_UNIT_WORDS):
        return _role("kontaktperson-kommun", "Kontaktperson i kommunen")
    return _role("ovrig", "Övrig deltagare")


def care_team(form: Mapping[str, Any], patient_ref: str, name: str, directory: Mapping[str, Any],
              today: datetime.date) -> Resource:
    """The new agreement's CareTeam, managed by the unit (``directory["care_unit_org"]``)."""
    start = {"start": today.isoformat()}
    participants = [{"role": _role(codes.FAST_VARDKONTAKT, "Fast vårdkontakt"),
                     "member": role_reference(form["vardkontakt"], directory), "period": dict(start)}]
    if form["lakarkontakt"]:
        participants.append({"role": _role(codes.FAST_LAKARKONTAKT, "Fast läkarkontakt"),
                             "member": role_reference(form["lakarkontakt"], directory), "period": dict(start)})
    for role_id in form["participants"]:
        participants.append({"role": _participant_role(role_id, directory),
                             "member": role_reference(role_id, directory), "period": dict(start)})
    participants.append({"role": _role("patient", "Patient"), "member": {"reference": patient_ref},
                         "period": dict(start)})
    return {"resourceType": "CareTeam", "status": "active", "name": f"Vårdteam för {name}",
            "subject": {"reference": patient_ref}, "participant": participants,
            "managingOrganization": [{"reference": f"Organization/{directory['care_unit_org']}"}]}


def agreement_bundle(form: Mapping[str, Any], patient: Resource, activities: Iterable[Mapping[str, Any]],
                     directory: Mapping[str, Any], *, name: str, staff_ref: str,
                     today: datetime.date) -> tuple[Resource, str]:
    """The transaction that writes a new agreement, and the ``urn:uuid`` of its CarePlan entry.

    ``form``: ``vardkontakt``, ``lakarkontakt`` and ``participants`` (PractitionerRole ids of the
    directory), ``description``, ``own_goals``, ``care_goals``, ``status`` (active or draft);
    ``patient``: a stored Patient (with its id) or a new one (``new_patient``); ``activities``:
    the checked rows (``activity``); ``name``: the patient's name, for the titles."""
    activities = list(activities)
    care_unit_org = directory["care_unit_org"]
    entries: list[Resource] = []

    def add(resource: Resource) -> str:
        urn = new_urn()
        entries.append(post_entry(resource, urn))
        return urn

    patient_ref = f"Patient/{patient['id']}" if "id" in patient else add(patient)
    team_urn = add(care_team(form, patient_ref, name, directory, today))
    goal_refs = [{"reference": add(goal)} for goal in new_goals(form, patient_ref, staff_ref, today)]
    contributors = sorted({r["org"] for r in directory["other_staff"] if r["id"] in form["participants"]}
                          | {a["performer"] for a in activities} - {care_unit_org})
    plan: Resource = {
        "resourceType": "CarePlan", "status": form["status"] if form["status"] in ("active", "draft") else "active",
        "intent": "plan",
        "category": [{"coding": [{"system": codes.CAREPLAN_CATEGORY, "code": codes.PATIENTKONTRAKT,
                                  "display": "Patientkontrakt"}]}],
        "title": f"Patientkontrakt för {name}",
        "description": form["description"] or DEFAULT_DESCRIPTION,
        "subject": {"reference": patient_ref}, "period": {"start": today.isoformat()}, "created": today.isoformat(),
        "author": {"reference": f"Organization/{care_unit_org}"},
        "careTeam": [{"reference": team_urn}],
    }
    if goal_refs:  # FHIR allows no empty array: an element without values is left out
        plan["goal"] = goal_refs
    if activities:
        plan["activity"] = [activity(a) for a in activities]
    if contributors:
        plan["contributor"] = [{"reference": f"Organization/{org}"} for org in contributors]
    plan_urn = add(plan)
    return transaction(entries), plan_urn


def edited_agreement_bundle(plan: Mapping[str, Any], form: Mapping[str, Any],
                            activities: Iterable[Mapping[str, Any]], *, patient_ref: str, staff_ref: str,
                            care_unit_org: str, today: datetime.date) -> Resource:
    """The transaction that saves the edit form on the stored ``plan``: its ``title``,
    ``description``, ``status`` and ``end`` (none: the period stays open), new goals and
    activities added to those it has, and a performer of another unit as a contributor; the
    CarePlan is a PUT with ``If-Match`` on the form's ``version``."""
    activities = list(activities)
    changed = editable(plan)
    changed.update(title=form["title"], description=form["description"], status=form["status"])
    period = dict(changed.get("period") or {})
    if form["end"]:
        period["end"] = form["end"]
    else:
        period.pop("end", None)
    changed["period"] = period
    changed["activity"] = [*changed.get("activity", []), *(activity(a) for a in activities)]
    entries = []
    for goal in new_goals(form, patient_ref, staff_ref, today):
        urn = new_urn()
        entries.append(post_entry(goal, urn))
        changed["goal"] = [*changed.get("goal", []), {"reference": urn}]
    author = ref_key(changed.get("author"))
    author_id = author[1] if author else ""
    new_performers = {a["performer"] for a in activities} - {care_unit_org, author_id}
    known = {str(c.get("reference", "")).split("/")[-1] for c in changed.get("contributor", [])}
    changed["contributor"] = [*changed.get("contributor", []),
                              *({"reference": f"Organization/{org}"} for org in sorted(new_performers - known))]
    if not changed["contributor"]:
        changed.pop("contributor")
    entries.append(put_entry(changed, form["version"]))
    return transaction(entries)


# -- a new fast vårdkontakt -------------------------------------------------------------------------


def _is_fast_vardkontakt(participant: Mapping[str, Any]) -> bool:
    return any(c.get("code") == codes.FAST_VARDKONTAKT for r in participant.get("role", [])
               for c in r.get("coding", []))


def _is_current(participant: Mapping[str, Any], today: datetime.date) -> bool:
    end = (participant.get("period") or {}).get("end")
    return not end or str(end)[:10] >= today.isoformat()


def with_fast_vardkontakt(team: Mapping[str, Any], member: dict[str, str], today: datetime.date) -> Resource:
    """``team`` with ``member`` (a ``role_reference``) as its fast vårdkontakt from today, first
    among the participants, in place of the current one."""
    changed = editable(team)
    kept = [p for p in changed["participant"] if not (_is_fast_vardkontakt(p) and _is_current(p, today))]
    kept.insert(0, {"role": _role(codes.FAST_VARDKONTAKT, "Fast vårdkontakt"), "member": member,
                    "period": {"start": today.isoformat()}})
    changed["participant"] = kept
    return changed


def contact_change_provenance(reason: str, who: str, who_name: str) -> Resource:
    """Why the fast vårdkontakt changed, and who changed it (the staff member's reference and name)."""
    return {"resourceType": "Provenance", "reason": [{"text": reason}],
            "activity": {"text": "Byte av fast vårdkontakt"},
            "agent": [{"who": {"reference": who, "display": who_name}}]}
