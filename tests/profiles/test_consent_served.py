"""Consent is a served resource type: the bare R4 engine creates, reads and searches it with the
core search parameters extracted into ``fhir_profiles/search`` (``make fhir-core``); a SIP is found
from its Patientkontrakt with ``CarePlan?part-of``."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

CONSENT_CATEGORY = "https://patientkontrakt.se/fhir/CodeSystem/pk-consent-category"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def _put(client: TestClient, resource: dict[str, Any]) -> None:
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text


def _found(client: TestClient, query: str) -> set[str]:
    response = client.get(f"/fhir/Consent?{query}")
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}


def _consent(id_: str, code: str, provision: str, role: str, org: str, start: str) -> dict[str, Any]:
    return {
        "resourceType": "Consent", "id": id_, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": CONSENT_CATEGORY, "code": code}]}],
        "patient": {"reference": "Patient/p1"}, "dateTime": f"{start}T10:00:00+01:00",
        "performer": [{"reference": "Patient/p1"}], "organization": [{"reference": "Organization/o1"}],
        "provision": {"type": provision, "period": {"start": start},
                      "actor": [{"role": {"coding": [{"system": PARTICIPATION, "code": role}]},
                                 "reference": {"reference": f"Organization/{org}"}}]},
    }


def test_consent_is_created_read_and_searched(client: TestClient) -> None:
    _put(client, {"resourceType": "Patient", "id": "p1"})
    for org in ("o1", "o2", "o3"):
        _put(client, {"resourceType": "Organization", "id": org, "name": org})
    _put(client, _consent("c-samtycke", "samtycke", "permit", "IRCP", "o2", "2026-11-01"))
    _put(client, _consent("c-sparr", "yttre-sparr", "deny", "CST", "o3", "2026-12-01"))
    read = client.get("/fhir/Consent/c-sparr")
    assert read.status_code == 200, read.text
    assert read.json()["provision"]["type"] == "deny"

    assert _found(client, "patient=Patient/p1") == {"c-samtycke", "c-sparr"}
    assert _found(client, "status=active") == {"c-samtycke", "c-sparr"}
    assert _found(client, f"category={CONSENT_CATEGORY}|samtycke") == {"c-samtycke"}
    assert _found(client, "scope=patient-privacy") == {"c-samtycke", "c-sparr"}
    assert _found(client, "actor=Organization/o3") == {"c-sparr"}
    assert _found(client, "organization=Organization/o1") == {"c-samtycke", "c-sparr"}
    assert _found(client, "consentor=Patient/p1") == {"c-samtycke", "c-sparr"}
    assert _found(client, "period=ge2026-11-15") == {"c-samtycke", "c-sparr"}  # open-ended periods
    assert _found(client, "date=lt2026-11-15") == {"c-samtycke"}
    assert _found(client, "_include=Consent:actor&_id=c-sparr") == {"c-sparr"}


def test_careplan_part_of_finds_the_plans_of_an_agreement(client: TestClient) -> None:
    _put(client, {"resourceType": "Patient", "id": "p1"})
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p1"}}
    _put(client, {**plan, "id": "agreement"})
    _put(client, {**plan, "id": "sip", "partOf": [{"reference": "CarePlan/agreement"}]})
    response = client.get("/fhir/CarePlan?part-of=CarePlan/agreement")
    assert response.status_code == 200, response.text
    assert [e["resource"]["id"] for e in response.json()["entry"]] == ["sip"]
