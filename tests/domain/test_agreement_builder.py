"""The resources and transactions the staff forms write (patientkontrakt/domain/agreement_builder.py):
pure, so checked here without a server; that the core accepts them is the browser tests' part."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from patientkontrakt.domain import agreement_builder as build
from patientkontrakt.domain import codes
from patientkontrakt.domain.identifiers import PERSONNUMMER, parse_person_number

TODAY = datetime.date(2026, 3, 2)
STAFF = "PractitionerRole/nurse-1"
DIRECTORY: dict[str, Any] = {
    "care_unit_org": "vc-1", "primary_care": True, "units": [],
    "own_staff": [{"id": "nurse-1", "name": "Anna Ek", "unit": "Vårdcentralen Ek", "doctor": False, "org": "vc-1"},
                  {"id": "doc-1", "name": "Bo Lind", "unit": "Vårdcentralen Ek", "doctor": True, "org": "vc-1"}],
    "other_staff": [{"id": "home-1", "name": "Cia Berg", "unit": "Hemtjänsten Norr", "doctor": False, "org": "kn-1"},
                    {"id": "soc-1", "name": "Dan Ås", "unit": "Kommunens socialtjänst", "doctor": False, "org": "kn-2"},
                    {"id": "hosp-1", "name": "Eva Ro", "unit": "Medicinkliniken", "doctor": True, "org": "sh-1"}],
}


def _form(**changes: Any) -> dict[str, Any]:
    form = {"given": "Tolvan", "family": "Tolvansson", "vardkontakt": "nurse-1", "lakarkontakt": "doc-1",
            "participants": ["home-1", "hosp-1"], "description": "", "own_goals": "Gå till affären\n\n  ",
            "care_goals": " Blodtryck under 140 \nSluta röka", "status": "active"}
    return {**form, **changes}


def _row(**changes: Any) -> dict[str, Any]:
    row = {"kind": "besok", "description": "Återbesök", "day": datetime.date(2026, 4, 1),
           "time": datetime.time(9, 30), "performer": "sh-1", "place": "", "row": 0}
    return {**row, **changes}


def _by_type(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle["entry"]:
        found.setdefault(entry["resource"]["resourceType"], []).append(entry)
    return found


def test_a_new_agreement_for_a_new_patient_is_one_transaction_that_links_its_parts() -> None:
    patient = build.new_patient(parse_person_number("19121212-1212"), "Tolvan", "Tolvansson", "070-123 45 67")
    bundle, plan_urn = build.agreement_bundle(_form(), patient, [_row()], DIRECTORY, name="Tolvan Tolvansson",
                                              staff_ref=STAFF, today=TODAY)

    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Patient", "CareTeam", "Goal", "Goal", "Goal",
                                                                       "CarePlan"]
    urns = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urns)) == len(urns) and all(u.startswith("urn:uuid:") for u in urns)
    assert all(e["request"] == {"method": "POST", "url": e["resource"]["resourceType"]} for e in bundle["entry"])
    parts = _by_type(bundle)
    [patient_entry], [team_entry], [plan_entry] = parts["Patient"], parts["CareTeam"], parts["CarePlan"]
    assert plan_entry["fullUrl"] == plan_urn
    assert patient_entry["resource"] == {
        "resourceType": "Patient", "identifier": [{"system": PERSONNUMMER, "value": "191212121212"}],
        "name": [{"family": "Tolvansson", "given": ["Tolvan"]}],
        "telecom": [{"system": "phone", "value": "070-123 45 67", "use": "mobile"}]}

    plan = plan_entry["resource"]
    patient_ref = patient_entry["fullUrl"]
    assert plan["subject"] == {"reference": patient_ref}
    assert plan["careTeam"] == [{"reference": team_entry["fullUrl"]}]
    assert plan["goal"] == [{"reference": e["fullUrl"]} for e in parts["Goal"]]
    assert plan["status"] == "active" and plan["intent"] == "plan"
    assert plan["category"][0]["coding"][0]["code"] == codes.PATIENTKONTRAKT
    assert plan["title"] == "Patientkontrakt för Tolvan Tolvansson"
    assert plan["description"] == build.DEFAULT_DESCRIPTION
    assert plan["period"] == {"start": "2026-03-02"} and plan["created"] == "2026-03-02"
    assert plan["author"] == {"reference": "Organization/vc-1"}
    # the other units taking part: a participant's (home care; the hospital's too) and the activity's performer
    assert plan["contributor"] == [{"reference": "Organization/kn-1"}, {"reference": "Organization/sh-1"}]
    assert [a["detail"]["description"] for a in plan["activity"]] == ["Återbesök"]


def test_the_care_team_names_the_contacts_the_participants_and_the_patient() -> None:
    bundle, _ = build.agreement_bundle(_form(participants=["home-1", "soc-1", "hosp-1"]), {"resourceType": "Patient",
                                       "id": "p-1"}, [], DIRECTORY, name="Tolvan", staff_ref=STAFF, today=TODAY)
    [team] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "CareTeam"]
    roles = [(p["role"][0]["coding"][0]["code"], p["member"]) for p in team["participant"]]
    assert roles == [
        (codes.FAST_VARDKONTAKT, {"reference": "PractitionerRole/nurse-1", "display": "Anna Ek, Vårdcentralen Ek"}),
        (codes.FAST_LAKARKONTAKT, {"reference": "PractitionerRole/doc-1", "display": "Bo Lind, Vårdcentralen Ek"}),
        ("kontaktperson-kommun", {"reference": "PractitionerRole/home-1", "display": "Cia Berg, Hemtjänsten Norr"}),
        ("kontaktperson-kommun", {"reference": "PractitionerRole/soc-1", "display": "Dan Ås, Kommunens socialtjänst"}),
        ("ovrig", {"reference": "PractitionerRole/hosp-1", "display": "Eva Ro, Medicinkliniken"}),
        ("patient", {"reference": "Patient/p-1"}),
    ]
    assert all(p["role"][0]["coding"][0]["system"] == codes.CARETEAM_ROLE for p in team["participant"])
    assert all(p["period"] == {"start": "2026-03-02"} for p in team["participant"])
    assert team["name"] == "Vårdteam för Tolvan" and team["status"] == "active"
    assert team["subject"] == {"reference": "Patient/p-1"}
    assert team["managingOrganization"] == [{"reference": "Organization/vc-1"}]


def test_an_agreement_without_a_lakarkontakt_goals_activities_or_other_units_writes_no_empty_arrays() -> None:
    form = _form(lakarkontakt="", participants=[], own_goals="", care_goals=" \n", status="draft",
                 description="Vi ses varje vecka.")
    bundle, plan_urn = build.agreement_bundle(form, {"resourceType": "Patient", "id": "p-1"}, [], DIRECTORY,
                                              name="Tolvan", staff_ref=STAFF, today=TODAY)
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["CareTeam", "CarePlan"]
    plan = bundle["entry"][-1]["resource"]
    assert not {"goal", "activity", "contributor"} & set(plan)
    assert plan["status"] == "draft" and plan["description"] == "Vi ses varje vecka."
    assert plan["subject"] == {"reference": "Patient/p-1"}
    team = bundle["entry"][0]["resource"]
    assert [p["role"][0]["coding"][0]["code"] for p in team["participant"]] == [codes.FAST_VARDKONTAKT, "patient"]


@pytest.mark.parametrize("status", ["on-hold", "completed", ""])
def test_a_new_agreement_is_active_or_a_draft(status: str) -> None:
    bundle, _ = build.agreement_bundle(_form(status=status), {"resourceType": "Patient", "id": "p-1"}, [], DIRECTORY,
                                       name="Tolvan", staff_ref=STAFF, today=TODAY)
    assert bundle["entry"][-1]["resource"]["status"] == "active"


def test_goals_are_the_patients_own_and_the_cares_one_a_line() -> None:
    goals = build.new_goals(_form(), "Patient/p-1", STAFF, TODAY)
    assert [(g["description"]["text"], g["expressedBy"]["reference"]) for g in goals] == [
        ("Gå till affären", "Patient/p-1"), ("Blodtryck under 140", STAFF), ("Sluta röka", STAFF)]
    assert all(g["resourceType"] == "Goal" and g["lifecycleStatus"] == "active" and g["startDate"] == "2026-03-02"
               and g["subject"] == {"reference": "Patient/p-1"} for g in goals)
    assert build.new_goals({"own_goals": "", "care_goals": "\n  \n"}, "Patient/p-1", STAFF, TODAY) == []


def test_an_activity_with_a_time_lasts_45_minutes_and_one_without_is_for_the_day() -> None:
    timed = build.activity(_row(place="Mottagning 3"), utc_offset="+02:00")["detail"]
    assert timed == {
        "code": {"coding": [{"system": codes.ACTIVITY_KIND, "code": "besok"}]}, "status": "scheduled",
        "scheduledPeriod": {"start": "2026-04-01T09:30:00+02:00", "end": "2026-04-01T10:15:00+02:00"},
        "performer": [{"reference": "Organization/sh-1"}], "description": "Återbesök",
        "location": {"display": "Mottagning 3"}}
    late = build.activity(_row(time=datetime.time(23, 50, 12)), utc_offset="+01:00")["detail"]["scheduledPeriod"]
    assert late == {"start": "2026-04-01T23:50:00+01:00", "end": "2026-04-02T00:35:00+01:00"}
    day = build.activity(_row(time=None))["detail"]
    assert day["scheduledPeriod"] == {"start": "2026-04-01"} and "location" not in day
    local = build.activity(_row())["detail"]["scheduledPeriod"]["start"]
    assert local.startswith("2026-04-01T09:30:00") and local[-6] in "+-" and local[-3] == ":"


def _stored_plan() -> dict[str, Any]:
    return {"resourceType": "CarePlan", "id": "plan-1", "meta": {"versionId": "4", "lastUpdated": "2026-03-01"},
            "status": "active", "title": "Gammal", "description": "Före", "period": {"start": "2026-01-01",
                                                                                    "end": "2026-12-31"},
            "author": {"reference": "Organization/vc-1"}, "goal": [{"reference": "Goal/g-1"}],
            "activity": [{"detail": {"status": "scheduled", "description": "Första"}}],
            "contributor": [{"reference": "Organization/sh-1"}]}


def _edit(**changes: Any) -> dict[str, Any]:
    form = {"title": "Ny", "description": "Efter", "status": "on-hold", "end": "", "version": "4",
            "own_goals": "", "care_goals": "Promenad varje dag"}
    return {**form, **changes}


def test_an_edit_puts_the_plan_at_the_version_the_form_was_opened_at_with_its_new_goals() -> None:
    stored = _stored_plan()
    bundle = build.edited_agreement_bundle(stored, _edit(), [_row(performer="kn-1"), _row(performer="vc-1")],
                                           patient_ref="Patient/p-1", staff_ref=STAFF, care_unit_org="vc-1",
                                           today=TODAY)
    assert bundle["type"] == "transaction"
    goal_entry, plan_entry = bundle["entry"]
    assert goal_entry["request"] == {"method": "POST", "url": "Goal"}
    assert goal_entry["resource"]["description"] == {"text": "Promenad varje dag"}
    assert goal_entry["resource"]["expressedBy"] == {"reference": STAFF}
    assert plan_entry["request"] == {"method": "PUT", "url": "CarePlan/plan-1", "ifMatch": 'W/"4"'}
    plan = plan_entry["resource"]
    assert "meta" not in plan and "meta" in stored  # the stored plan is left as it was
    assert (plan["title"], plan["description"], plan["status"]) == ("Ny", "Efter", "on-hold")
    assert plan["period"] == {"start": "2026-01-01"}  # no end: the period stays open
    assert plan["goal"] == [{"reference": "Goal/g-1"}, {"reference": goal_entry["fullUrl"]}]
    assert [a["detail"]["description"] for a in plan["activity"]] == ["Första", "Återbesök", "Återbesök"]
    # a performer of another unit takes part; the own unit does not
    assert plan["contributor"] == [{"reference": "Organization/sh-1"}, {"reference": "Organization/kn-1"}]


def test_an_edit_without_new_goals_or_units_changes_only_the_plan() -> None:
    stored = {**_stored_plan(), "contributor": []}
    bundle = build.edited_agreement_bundle(stored, _edit(care_goals="", end="2027-01-31", version="7"),
                                           [_row(performer="vc-1")], patient_ref="Patient/p-1", staff_ref=STAFF,
                                           care_unit_org="vc-1", today=TODAY)
    [entry] = bundle["entry"]
    plan = entry["resource"]
    assert entry["request"]["ifMatch"] == 'W/"7"'
    assert plan["period"] == {"start": "2026-01-01", "end": "2027-01-31"}
    assert plan["goal"] == [{"reference": "Goal/g-1"}]
    assert "contributor" not in plan


def test_a_new_fast_vardkontakt_takes_the_current_ones_place_and_former_ones_stay() -> None:
    def contact(who: str, period: dict[str, str], code: str = codes.FAST_VARDKONTAKT) -> dict[str, Any]:
        return {"role": [{"coding": [{"system": codes.CARETEAM_ROLE, "code": code}]}],
                "member": {"reference": f"PractitionerRole/{who}"}, "period": period}

    former = contact("old-1", {"start": "2025-01-01", "end": "2025-06-30"})
    doctor = contact("doc-1", {"start": "2025-01-01"}, codes.FAST_LAKARKONTAKT)
    team = {"resourceType": "CareTeam", "id": "team-1", "meta": {"versionId": "2"},
            "participant": [former, contact("nurse-1", {"start": "2025-07-01"}), doctor,
                            contact("until-today", {"start": "2025-07-01", "end": "2026-03-02"})]}
    member = build.role_reference("nurse-2", {"own_staff": [{"id": "nurse-2", "name": "Gun", "unit": "VC"}],
                                              "other_staff": []})
    changed = build.with_fast_vardkontakt(team, member, TODAY)
    assert "meta" not in changed and changed["id"] == "team-1"
    first, *rest = changed["participant"]
    assert first["member"] == {"reference": "PractitionerRole/nurse-2", "display": "Gun, VC"}
    assert first["role"][0]["coding"][0]["code"] == codes.FAST_VARDKONTAKT
    assert first["period"] == {"start": "2026-03-02"}
    assert rest == [former, doctor]
    assert len(team["participant"]) == 4  # the team read is not changed


def test_the_change_of_contact_carries_its_reason_and_who() -> None:
    record = build.contact_change_provenance("Byter enhet", STAFF, "Anna Ek")
    assert record == {"resourceType": "Provenance", "reason": [{"text": "Byter enhet"}],
                      "activity": {"text": "Byte av fast vårdkontakt"},
                      "agent": [{"who": {"reference": STAFF, "display": "Anna Ek"}}]}


def test_transaction_entries_and_versions() -> None:
    goal = {"resourceType": "Goal", "id": "g-1"}
    assert build.put_entry(goal, "3") == {"resource": goal, "request": {"method": "PUT", "url": "Goal/g-1",
                                                                        "ifMatch": 'W/"3"'}}
    assert build.post_entry(goal) == {"resource": goal, "request": {"method": "POST", "url": "Goal"}}
    assert build.post_entry(goal, "urn:uuid:1")["fullUrl"] == "urn:uuid:1"
    assert build.next_version("3") == "4" and build.next_version("") == ""
    assert build.role_reference("nobody", DIRECTORY) == {"reference": "PractitionerRole/nobody", "display": ""}
