"""Valid FHIR R4 resources for tests, Swedish-flavoured, and small HTTP helpers.

Personnummer here are Skatteverket-style test numbers (the 19121212-1212 family), not people.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

PNR = "http://electronichealth.se/identifier/personnummer"
HSA = "urn:oid:1.2.752.29.4.19"


def patient(
    pnr: str = "191212121212", family: str = "Tolvansson", given: str = "Tolvan", **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": PNR, "value": pnr}],
        "name": [{"family": family, "given": [given]}],
        "gender": "male",
        "birthDate": f"{pnr[:4]}-{pnr[4:6]}-{pnr[6:8]}",
        **extra,
    }


def organization(hsa: str = "SE2321000016-1001", name: str = "Vårdcentralen Norr", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Organization", "identifier": [{"system": HSA, "value": hsa}], "name": name, **extra}


def practitioner(hsa: str = "SE2321000016-2001", family: str = "Läkare", given: str = "Lisa") -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": HSA, "value": hsa}],
        "name": [{"family": family, "given": [given]}],
    }


def care_team(patient_id: str, member_refs: list[str] | None = None) -> dict[str, Any]:
    team: dict[str, Any] = {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if member_refs:
        team["participant"] = [{"member": {"reference": ref}} for ref in member_refs]
    return team


def care_plan(patient_id: str, team_id: str | None = None, **extra: Any) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "title": "Patientkontrakt",
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": "2024-03-01"},
    }
    if team_id:
        plan["careTeam"] = [{"reference": f"CareTeam/{team_id}"}]
    plan.update(extra)
    return plan


def goal(patient_id: str, text: str = "Kunna gå till affären själv", due: str = "2025-06-01") -> dict[str, Any]:
    return {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": text},
        "subject": {"reference": f"Patient/{patient_id}"},
        "target": [{"dueDate": due}],
    }


def create(client: TestClient, resource: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
