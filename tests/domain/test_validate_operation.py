"""``$validate`` (R4 operation-resource-validate) with the Patientkontrakt profiles and rules, over HTTP.

The answer is 200 with an OperationOutcome whether the content is valid or not ('All OK'
information when it is); only a malformed request (unknown profile, bad mode) is a 400.
``mode=create|update|delete`` tries the real write in a transaction that is rolled back.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from patientkontrakt.domain import codes
from patientkontrakt.domain.identifiers import PERSONNUMMER
from tests.domain.support import (
    TODAY,
    assert_issue,
    deep,
    example,
    generator,
    members,
    participant,
    read,
    role_code,
    search,
    store_agreement,
    versions_stored,
)

PATIENT_PROFILE = codes.profile_url("pk-patient")


@pytest.fixture
def agreement(pk_client: TestClient) -> list[dict[str, Any]]:
    """Demo agreement 0 stored with its part of the region: [Patient, CareTeam, Goal×3, CarePlan]."""
    return store_agreement(pk_client, generator(), 0)


def outcome(response: httpx.Response) -> list[dict[str, Any]]:
    """$validate always answers 200 with an OperationOutcome."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return list(body["issue"])


def assert_all_ok(found: list[dict[str, Any]]) -> None:
    assert found == [{"severity": "information", "code": "informational",
                      "details": {"text": "Inga fel hittades."}, "diagnostics": "All OK"}]


def without_id(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in deep(resource).items() if k != "id"}


def parameters(resource: dict[str, Any] | None = None, **values: str) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    if resource is not None:
        params.append({"name": "resource", "resource": resource})
    if "mode" in values:
        params.append({"name": "mode", "valueCode": values["mode"]})
    if "profile" in values:
        params.append({"name": "profile", "valueUri": values["profile"]})
    return {"resourceType": "Parameters", "parameter": params}


def test_valid_resource_is_all_ok_and_nothing_is_stored(pk_client: TestClient,
                                                        agreement: list[dict[str, Any]]) -> None:
    before = versions_stored(pk_client)
    draft = {**without_id(agreement[-1]), "status": "draft"}
    assert_all_ok(outcome(pk_client.post("/fhir/CarePlan/$validate", json=draft)))
    assert_all_ok(outcome(pk_client.post("/fhir/CarePlan/$validate", json=parameters(draft))))
    assert_all_ok(outcome(pk_client.post("/fhir/CarePlan/$validate", json=parameters(draft, mode="create"))))
    assert versions_stored(pk_client) == before
    assert len(search(pk_client, "CarePlan")) == 1


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "parameters"])
def test_profile_violations_are_listed_with_expressions(pk_client: TestClient, wrapped: bool) -> None:
    plan = without_id(example("CarePlan-pk-example-patientkontrakt-tolvan"))
    del plan["category"], plan["author"]
    plan["activity"][2]["detail"]["performer"] = [{"reference": "PractitionerRole/pk-example-role-anna-vc-norr"}]
    found = outcome(pk_client.post("/fhir/CarePlan/$validate", json=parameters(plan) if wrapped else plan))
    assert_issue(found, code="required", expression="CarePlan.category", swedish="minst 1 krävs",
                 english="at least 1 required")
    assert_issue(found, code="required", expression="CarePlan.author", swedish="Ansvarig vårdenhet",
                 english="CarePlan.author: at least 1 required")
    assert_issue(found, code="invariant", expression="CarePlan.activity[2].detail",
                 swedish="minst en organisation som utförare", english="pk-patientkontrakt-1")
    assert len(found) == len({json.dumps(i, sort_keys=True) for i in found}), "each issue once"


def test_structurally_invalid_resource_is_reported_with_200(pk_client: TestClient) -> None:
    patient = {**example("Patient-pk-example-patient-tolvan"), "gender": "okänt", "favouriteColour": "blå"}
    found = outcome(pk_client.post("/fhir/Patient/$validate", json=patient))
    assert_issue(found, code="code-invalid", expression="Patient.gender", swedish="Koden 'okänt' är inte tillåten",
                 english="is not in the required value set")
    assert_issue(found, code="structure", expression="Patient.favouriteColour", swedish="Okänt element",
                 english="unknown element 'favouriteColour'")


def test_identifiers_are_checked_as_on_a_write(pk_client: TestClient) -> None:
    patient = without_id(example("Patient-pk-example-patient-tolvan"))
    del patient["generalPractitioner"]
    patient["identifier"] = [{"system": PERSONNUMMER, "value": "19121212-1212"}]
    assert_all_ok(outcome(pk_client.post("/fhir/Patient/$validate?mode=create", json=patient)))
    patient["identifier"] = [{"system": PERSONNUMMER, "value": "19121212-1213"}]
    found = outcome(pk_client.post("/fhir/Patient/$validate", json=patient))
    assert_issue(found, code="value", expression="Patient.identifier[0].value", swedish="Kontrollsiffran",
                 english="wrong check digit")
    assert search(pk_client, "Patient") == []


def test_mode_create_reports_a_second_active_agreement_but_stores_nothing(
        pk_client: TestClient, agreement: list[dict[str, Any]]) -> None:
    plan = agreement[-1]
    second = without_id(plan)
    before = versions_stored(pk_client)
    assert_all_ok(outcome(pk_client.post("/fhir/CarePlan/$validate", json=second)))  # no mode: no rules across
    for response in (pk_client.post("/fhir/CarePlan/$validate?mode=create", json=second),
                     pk_client.post("/fhir/CarePlan/$validate", json=parameters(second, mode="create"))):
        found = outcome(response)
        issue = assert_issue(found, code="conflict", expression="CarePlan.status",
                             swedish="redan ett gällande patientkontrakt",
                             english="already has an active Patientkontrakt")
        assert f"CarePlan/{plan['id']}" in issue["diagnostics"]
    assert versions_stored(pk_client) == before
    assert [p["id"] for p in search(pk_client, "CarePlan")] == [plan["id"]]


def test_mode_create_checks_references(pk_client: TestClient, agreement: list[dict[str, Any]]) -> None:
    goal = {**without_id(agreement[2]), "subject": {"reference": "Patient/nobody"},
            "expressedBy": {"reference": "Patient/nobody"}}
    found = outcome(pk_client.post("/fhir/Goal/$validate?mode=create", json=goal))
    assert_issue(found, code="not-found", expression="Goal.subject.reference", swedish="finns inte",
                 english="Patient/nobody does not exist")


def test_mode_update_on_an_instance(pk_client: TestClient, agreement: list[dict[str, Any]]) -> None:
    own, professional = agreement[2], agreement[3]
    url = f"/fhir/Goal/{own['id']}/$validate?mode=update"
    changed = {**deep(own), "expressedBy": professional["expressedBy"]}
    found = outcome(pk_client.post(url, json=changed))
    assert_issue(found, code="business-rule", expression="Goal.expressedBy", swedish="kan inte bli vårdens mål",
                 english="cannot become a professional goal")
    assert_all_ok(outcome(pk_client.post(url, json={**deep(own), "description": {"text": "Gå till affären"}})))
    assert read(pk_client, "Goal", own["id"])["meta"]["versionId"] == "1"
    mismatch = outcome(pk_client.post(url, json={**deep(own), "id": "another"}))
    assert_issue(mismatch, code="invalid", expression="Goal.id", swedish="felaktig", english="must be 'demo-goal")


def test_mode_update_tries_the_whole_write_and_rolls_it_back(pk_client: TestClient,
                                                             agreement: list[dict[str, Any]]) -> None:
    """A change of fast vårdkontakt passes, but neither the team's new version nor its Provenance stays."""
    team, plan = agreement[1], agreement[-1]
    gen = generator()
    old = members(team, codes.FAST_VARDKONTAKT)[-1]["member"]["reference"]
    new = next(f"PractitionerRole/{r['id']}" for r in gen.region.roles if role_code(r) == "nurse"
               and r["organization"]["reference"] == plan["author"]["reference"]
               and f"PractitionerRole/{r['id']}" != old)
    changed = deep(team)
    changed["participant"] = [p for p in changed["participant"] if p["member"]["reference"] != old]
    changed["participant"].append(participant(codes.FAST_VARDKONTAKT, new, TODAY.isoformat()))
    before = versions_stored(pk_client)
    assert_all_ok(outcome(pk_client.post(f"/fhir/CareTeam/{team['id']}/$validate?mode=update", json=changed)))
    assert versions_stored(pk_client) == before
    assert search(pk_client, "Provenance") == []
    assert read(pk_client, "CareTeam", team["id"])["participant"] == team["participant"]


def test_mode_delete_of_a_referenced_resource_reports_a_conflict(pk_client: TestClient,
                                                                 agreement: list[dict[str, Any]]) -> None:
    patient = agreement[0]
    found = outcome(pk_client.post(f"/fhir/Patient/{patient['id']}/$validate?mode=delete"))
    [issue] = found
    assert issue["severity"] == "error" and issue["code"] == "conflict"
    assert f"CarePlan/{agreement[-1]['id']}" in issue["diagnostics"]
    assert "kan inte tas bort" in issue["details"]["text"]
    assert read(pk_client, "Patient", patient["id"])["meta"]["versionId"] == "1"
    plan = agreement[-1]
    assert_all_ok(outcome(pk_client.post(f"/fhir/CarePlan/{plan['id']}/$validate",
                                         json=parameters(mode="delete"))))
    assert read(pk_client, "CarePlan", plan["id"])["meta"]["versionId"] == "1"


def test_known_profile(pk_client: TestClient) -> None:
    patient = without_id(example("Patient-pk-example-patient-tolvan"))
    del patient["generalPractitioner"]
    assert_all_ok(outcome(pk_client.post(f"/fhir/Patient/$validate?profile={PATIENT_PROFILE}", json=patient)))
    del patient["identifier"]
    found = outcome(pk_client.post("/fhir/Patient/$validate", json=parameters(patient, profile=PATIENT_PROFILE)))
    assert_issue(found, code="required", expression="Patient.identifier", swedish="minst 1 krävs",
                 english="at least 1 required")
    assert len(found) == 1, "the profile named and the type's own profile are the same: one issue"
    wrong_type = outcome(pk_client.post("/fhir/Patient/$validate", json=parameters(
        example("Patient-pk-example-patient-tolvan"), profile=codes.profile_url("pk-patientkontrakt"))))
    assert_issue(wrong_type, code="invalid", expression="Patient", swedish="Profilen gäller CarePlan",
                 english="is for CarePlan")


@pytest.mark.parametrize(("path", "query", "expression"), [
    ("/fhir/Patient/$validate", {"profile": "https://example.org/StructureDefinition/unknown"}, "profile"),
    ("/fhir/Patient/$validate", {"mode": "replace"}, "mode"),
    ("/fhir/Patient/$validate", {"mode": "update"}, "mode"),
], ids=["unknown-profile", "unknown-mode", "update-needs-instance"])
def test_malformed_requests_are_400(pk_client: TestClient, path: str, query: dict[str, str],
                                    expression: str) -> None:
    patient = example("Patient-pk-example-patient-tolvan")
    response = pk_client.post(path, params=query, json=patient)
    assert response.status_code == 400, response.text
    [issue] = response.json()["issue"]
    assert issue["code"] == "invalid" and issue["expression"] == [expression]
