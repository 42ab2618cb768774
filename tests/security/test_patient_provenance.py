"""A patient's change of their own goal is recorded like the care's changes: a Provenance of the
new version (``X-Provenance``, R4 http.html#provenance) naming the patient, which the units of
the agreement see in its history and no other unit does. The patient may record nothing else:
no Provenance of their own (alone or in a Bundle), none naming someone else as the agent or
acting for an organisation, none about another resource.

On PostgreSQL and on SQLite (the embedded default), since the rules are SQL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.security.conftest import AUTHOR, OTHER_UNIT, TARGET, World, settings_on_each_database

settings = settings_on_each_database  # every test here runs on PostgreSQL and on SQLite


def _why(patient: str, **extra: Any) -> str:
    return json.dumps({"resourceType": "Provenance", "recorded": "2026-12-05T10:00:00Z",
                       "activity": {"text": "Eget mål ändrat"}, "reason": [{"text": "Jag orkar promenera längre nu"}],
                       "agent": [{"who": {"reference": f"Patient/{patient}"}}], **extra})


def _provenance_of(app: TestClient, headers: dict[str, str], goal: str) -> list[dict[str, Any]]:
    found = app.get("/fhir/Provenance", params={"target": f"Goal/{goal}"}, headers=headers)
    assert found.status_code == 200, found.text
    return [e["resource"] for e in found.json().get("entry", []) if e["resource"]["resourceType"] == "Provenance"]


def _version(app: TestClient, world: World, goal: str) -> str:
    response = app.get(f"/fhir/Goal/{goal}", headers=world.system(AUTHOR))
    assert response.status_code == 200, response.text
    return str(response.json()["meta"]["versionId"])


def test_the_patients_goal_change_is_recorded_and_seen_by_the_agreements_units(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    patient = world.patient(target.patient)
    author, other = world.system(AUTHOR), world.system(OTHER_UNIT)
    # a goal the patient writes now (no agreement names it yet) and one the agreement names
    created = app.post("/fhir/Goal", headers={**patient, "X-Provenance": _why(target.patient)}, json={
        "resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Gå till affären själv"},
        "subject": {"reference": f"Patient/{target.patient}"},
        "expressedBy": {"reference": f"Patient/{target.patient}"}})
    assert created.status_code == 201, created.text
    new_goal = created.json()["id"]
    own = app.get(f"/fhir/Goal/{target.patient_goal}", headers=patient).json()
    changed = app.put(f"/fhir/Goal/{own['id']}", headers={**patient, "X-Provenance": _why(target.patient)},
                      json={**{k: v for k, v in own.items() if k != "meta"}, "description": {"text": "Ändrat"}})
    assert changed.status_code == 200, changed.text
    for goal, version in ((new_goal, "1"), (own["id"], changed.json()["meta"]["versionId"])):
        [record] = _provenance_of(app, patient, goal)
        assert record["target"] == [{"reference": f"Goal/{goal}/_history/{version}"}]
        assert record["agent"][0]["who"]["reference"] == f"Patient/{target.patient}"
        assert [r["id"] for r in _provenance_of(app, author, goal)] == [record["id"]]
        assert app.get(f"/fhir/Provenance/{record['id']}", headers=author).status_code == 200
        # a unit outside the agreement sees neither the record nor that it exists
        assert _provenance_of(app, other, goal) == []
        assert app.get(f"/fhir/Provenance/{record['id']}", headers=other).status_code == 404
        assert record["id"] not in app.get("/fhir/_history", params={"_count": "1000"}, headers=other).text
    # the agreement's overview, which the pages' history of changes is made from, carries both
    overview = app.get(f"/fhir/Patient/{target.patient}/$patientkontrakt", headers=author)
    assert overview.status_code == 200, overview.text
    targets = {t["reference"].split("/_history")[0] for e in overview.json()["entry"]
               if e["resource"]["resourceType"] == "Provenance" for t in e["resource"]["target"]}
    assert {f"Goal/{new_goal}", f"Goal/{own['id']}"} <= targets


@pytest.mark.parametrize(("provenance", "status"), [
    # a patient the caller may not see is absent: the reference does not resolve
    pytest.param({"agent": [{"who": {"reference": "Patient/{other}"}}]}, 422, id="another patient"),
    pytest.param({"agent": [{"who": {"reference": "PractitionerRole/{contact}"}}]}, 403, id="their nurse"),
    pytest.param({"agent": [{"who": {"reference": "Patient/{me}"},
                             "onBehalfOf": {"reference": f"Organization/{AUTHOR}"}}]}, 403, id="on behalf of a unit"),
    pytest.param({"entity": [{"role": "source", "what": {"reference": "Patient/{me}"}}]}, 403,
                 id="more than who and why"),
])
def test_a_patient_records_no_other_provenance(world: World, app: TestClient, provenance: dict[str, Any],
                                               status: int) -> None:
    target = world.agreements[TARGET]
    patient = world.patient(target.patient)
    own = app.get(f"/fhir/Goal/{target.patient_goal}", headers=patient).json()
    before = _version(app, world, own["id"])
    names = {"{me}": target.patient, "{other}": world.agreements[TARGET + 1].patient,
             "{contact}": target.staff_roles[0]}
    text = json.dumps(provenance)
    for name, value in names.items():
        text = text.replace(name, value)
    header = _why(target.patient, **json.loads(text))
    refused = app.put(f"/fhir/Goal/{own['id']}", headers={**patient, "X-Provenance": header},
                      json={**{k: v for k, v in own.items() if k != "meta"}, "description": {"text": "Ändrat"}})
    assert refused.status_code == status, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert _version(app, world, own["id"]) == before  # the goal is not changed without its record
    assert _provenance_of(app, world.system(AUTHOR), own["id"]) == []


def test_a_patient_writes_no_provenance_directly(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    patient = world.patient(target.patient)
    own = app.get(f"/fhir/Goal/{target.patient_goal}", headers=patient).json()
    record = {**json.loads(_why(target.patient)),
              "target": [{"reference": f"Goal/{own['id']}/_history/{own['meta']['versionId']}"}]}
    alone = app.post("/fhir/Provenance", headers=patient, json=record)
    assert alone.status_code == 403, alone.text
    # nor as an entry beside the goal it records, in a transaction or a batch
    for kind in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [
            {"resource": {**{k: v for k, v in own.items() if k != "meta"}, "description": {"text": "Ändrat"}},
             "request": {"method": "PUT", "url": f"Goal/{own['id']}"}},
            {"resource": record, "request": {"method": "POST", "url": "Provenance"}}]}
        answer = app.post("/fhir", headers=patient, json=bundle)
        if kind == "transaction":
            assert answer.status_code == 403, answer.text
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json()["entry"][1]["response"]["status"].startswith("403")
    assert _provenance_of(app, world.system(AUTHOR), own["id"]) == []
    assert _provenance_of(app, patient, own["id"]) == []
