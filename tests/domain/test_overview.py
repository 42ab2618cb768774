"""``$patientkontrakt`` (patientkontrakt/domain/overview.py): the whole agreement as one Bundle, over HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from patientkontrakt.domain import codes
from patientkontrakt.fhir.dates import parse_range
from tests.domain.support import (
    EXAMPLES,
    TODAY,
    commit,
    deep,
    example,
    generator,
    members,
    participant,
    put,
    read,
    region_for,
    search,
    store_agreement,
)

BASE = "http://testserver/fhir"
ORDER = ["Patient", "CarePlan", "CareTeam", "Goal", "Appointment", "PractitionerRole", "Practitioner",
         "Organization", "Provenance"]


def collection(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    assert bundle["timestamp"]
    return list(bundle["entry"])


def keys(entries: list[dict[str, Any]]) -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries if "id" in e["resource"]]


def of_type(entries: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in entries if e["resource"]["resourceType"] == type_]


def starts(plan: dict[str, Any], appointments: dict[str, dict[str, Any]]) -> list[str]:
    """The start of each activity in the order given; untimed ones as None."""
    out: list[str | None] = []
    for activity in plan["activity"]:
        detail = activity.get("detail", {})
        if "scheduledPeriod" in detail:
            out.append(detail["scheduledPeriod"]["start"])
        elif "reference" in activity:
            out.append(appointments[activity["reference"]["reference"]]["start"])
        else:
            out.append(None)
    timed = [s for s in out if s is not None]
    assert out == [*timed, *[None] * (len(out) - len(timed))], "untimed activities come last"
    return timed


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def instants(values: list[str]) -> list[Any]:
    return [parse_range(v)[0] for v in values]


def test_active_agreement_is_one_bundle_with_everything_it_names(pk_client: TestClient) -> None:
    gen = generator()
    patient, team, *goals, plan = store_agreement(pk_client, gen, 0)
    # Activities stored out of time order; a second patient-stated goal whose id sorts last.
    plan = deep(plan)
    plan["activity"].reverse()
    own = {**deep(goals[0]), "id": "zz-own-goal", "description": {"text": "Sova hela natten"}}
    plan["goal"].append({"reference": "Goal/zz-own-goal"})
    commit(pk_client, [own, plan])
    # A change of fast vårdkontakt, so the team has history and a Provenance.
    old = members(team, codes.FAST_VARDKONTAKT)[-1]["member"]["reference"]
    new = next(f"PractitionerRole/{r['id']}" for r in gen.region.roles
               if r["organization"]["reference"] == plan["author"]["reference"]
               and r["code"][0]["coding"][0]["code"] == "nurse" and f"PractitionerRole/{r['id']}" != old)
    changed = deep(team)
    changed["participant"] = [p for p in changed["participant"] if p["member"]["reference"] != old]
    changed["participant"].append(participant(codes.FAST_VARDKONTAKT, new, TODAY.isoformat()))
    assert put(pk_client, changed).status_code == 200
    [provenance] = search(pk_client, "Provenance", target=f"CareTeam/{team['id']}")

    entries = collection(pk_client.get(f"/fhir/Patient/{patient['id']}/$patientkontrakt"))

    stored_team = read(pk_client, "CareTeam", team["id"])
    expected = {f"{r['resourceType']}/{r['id']}" for r in region_for(gen, [stored_team, *goals, own, plan])}
    expected |= {f"Patient/{patient['id']}", f"CarePlan/{plan['id']}", f"CareTeam/{team['id']}",
                 *(f"Goal/{g['id']}" for g in [*goals, own]), f"Provenance/{provenance['id']}"}
    assert new in expected and old in expected
    assert sorted(keys(entries)) == sorted(expected)
    assert all(e["fullUrl"] == f"{BASE}/{k}" for e, k in zip(entries, keys(entries), strict=True))
    types = [e["resource"]["resourceType"] for e in entries]
    assert types == sorted(types, key=ORDER.index), "Patient, CarePlan, CareTeam, Goals, … , Provenance"
    assert of_type(entries, "CareTeam") == [stored_team]
    assert of_type(entries, "Provenance")[0]["reason"] == [{"text": "Byte av fast vårdkontakt"}]

    [bundled_plan] = of_type(entries, "CarePlan")
    timed = starts(bundled_plan, {})
    assert len(timed) == 4 and instants(timed) == sorted(instants(timed))
    stored = starts(read(pk_client, "CarePlan", plan["id"]), {})
    assert instants(stored) == sorted(instants(stored), reverse=True), "stored latest first"
    assert sorted(map(_canonical, bundled_plan["activity"])) == sorted(map(_canonical, plan["activity"]))

    bundled_goals = of_type(entries, "Goal")
    stated_by_patient = [g["expressedBy"]["reference"].startswith("Patient/") for g in bundled_goals]
    assert stated_by_patient == [True, True, False, False], "the patient's own goals come first"
    assert {g["id"] for g in bundled_goals[:2]} == {goals[0]["id"], "zz-own-goal"}


def test_booked_appointments_are_included_and_sorted_with_the_activities(pk_client: TestClient) -> None:
    commit(pk_client, [example(path.stem) for path in sorted(EXAMPLES.glob("*-pk-example-*.json"))])
    entries = collection(pk_client.get("/fhir/Patient/pk-example-patient-tolvan/$patientkontrakt"))
    appointments = {f"Appointment/{a['id']}": a for a in of_type(entries, "Appointment")}
    assert set(appointments) == {"Appointment/pk-example-aktivitet-besok", "Appointment/pk-example-aktivitet-video"}
    assert [a["start"] for a in appointments.values()] == sorted(a["start"] for a in appointments.values())
    plans = {p["id"]: p for p in of_type(entries, "CarePlan")}
    # the agreement, and the SIP that is part of it (the kommun's and the region's plan)
    assert set(plans) == {"pk-example-patientkontrakt-tolvan", "pk-example-sip-tolvan"}
    plan = plans["pk-example-patientkontrakt-tolvan"]
    timed = starts(plan, appointments)
    assert timed == ["2026-12-01T07:30:00+01:00", "2026-12-08T09:00:00+01:00", "2027-01-12T13:00:00+01:00",
                     "2027-01-19T14:00:00+01:00"]
    assert [g["id"] for g in of_type(entries, "Goal")] == ["pk-example-mal-handla-sjalv", "pk-example-mal-hba1c"]
    assert {r["id"] for r in of_type(entries, "PractitionerRole")} == {
        "pk-example-role-anna-vc-norr", "pk-example-role-bengt-vc-norr", "pk-example-role-erik-vc-norr",
        "pk-example-role-karin-hemtjansten"}
    assert len(of_type(entries, "Practitioner")) == 4 and len(of_type(entries, "Organization")) == 5


@pytest.mark.parametrize(("number", "status"), [(4, "draft"), (6, "completed"), (7, "revoked")])
def test_patient_without_open_agreement_gets_patient_and_information(pk_client: TestClient, number: int,
                                                                    status: str) -> None:
    resources = store_agreement(pk_client, generator(), number)
    assert resources[-1]["status"] == status
    patient = resources[0]
    entries = collection(pk_client.get(f"/fhir/Patient/{patient['id']}/$patientkontrakt"))
    assert [e["resource"]["resourceType"] for e in entries] == ["Patient", "OperationOutcome"]
    assert entries[0]["resource"] == read(pk_client, "Patient", patient["id"])
    [issue] = entries[1]["resource"]["issue"]
    assert issue["severity"] == "information" and issue["code"] == "not-found"
    assert issue["details"]["text"] == "Du har inget gällande patientkontrakt just nu."
    assert f"Patient/{patient['id']} has no active Patientkontrakt" in issue["diagnostics"]


def test_on_hold_agreement_is_shown(pk_client: TestClient) -> None:
    patient, team, *_, plan = store_agreement(pk_client, generator(), 5)
    assert plan["status"] == "on-hold"
    entries = collection(pk_client.get(f"/fhir/Patient/{patient['id']}/$patientkontrakt"))
    assert [p["id"] for p in of_type(entries, "CarePlan")] == [plan["id"]]
    assert [t["id"] for t in of_type(entries, "CareTeam")] == [team["id"]]
    assert of_type(entries, "OperationOutcome") == []


def test_careplan_overview_works_for_a_completed_plan(pk_client: TestClient) -> None:
    patient, team, *goals, plan = store_agreement(pk_client, generator(), 6)
    assert plan["status"] == "completed"
    entries = collection(pk_client.get(f"/fhir/CarePlan/{plan['id']}/$patientkontrakt"))
    found = keys(entries)
    assert found[:3] == [f"Patient/{patient['id']}", f"CarePlan/{plan['id']}", f"CareTeam/{team['id']}"]
    assert {f"Goal/{g['id']}" for g in goals} <= set(found)
    assert plan["author"]["reference"] in found
    assert all(r in found for r in (m["member"]["reference"] for m in team["participant"]))


def test_unknown_and_deleted_resources(pk_client: TestClient) -> None:
    for path, swedish in (("/fhir/Patient/nobody/$patientkontrakt", "Patienten finns inte."),
                          ("/fhir/CarePlan/nothing/$patientkontrakt", "Patientkontraktet finns inte.")):
        response = pk_client.get(path)
        assert response.status_code == 404
        [issue] = response.json()["issue"]
        assert issue["code"] == "not-found" and issue["details"]["text"] == swedish
    patient = {**example("Patient-pk-example-patient-tolvan"), "id": "gone"}
    del patient["generalPractitioner"]
    assert put(pk_client, patient).status_code == 201
    assert pk_client.delete("/fhir/Patient/gone").status_code == 204
    response = pk_client.get("/fhir/Patient/gone/$patientkontrakt")
    assert response.status_code == 410
    assert response.json()["issue"][0]["code"] == "deleted"
