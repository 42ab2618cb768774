"""The consent rules on PostgreSQL and on SQLite alike: the SQL of ``_shared_condition`` (the
time of day each database gives, NULL handling) decides the same on both. The full matrix is
``test_consent_matrix.py`` (PostgreSQL)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.security.conftest import World, settings_on_each_database
from tests.security.test_consent_matrix import HOMECARE, TARGET, VC, consent

settings = settings_on_each_database  # every test here runs on PostgreSQL and on SQLite

CLINIC = "demo-org-med-lanssjukhuset"


def _status(app: TestClient, headers: dict[str, str], path: str) -> int:
    return app.get(path, headers=headers).status_code


def test_samtycke_spärr_and_their_periods(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    homecare = world.staff(world.role_at(HOMECARE, "nurse"))
    clinic = world.staff(world.role_at(CLINIC, "nurse"))
    vc = world.staff(world.role_at(VC, "nurse"))
    plan = f"/fhir/CarePlan/{target.plan}"
    assert _status(app, homecare, plan) == 404
    assert app.get(f"/fhir/CarePlan?_id={target.plan}&_summary=count", headers=homecare).json()["total"] == 0

    def record(headers: dict[str, str], body: dict[str, object]) -> str:
        response = app.post("/fhir/Consent", json=body, headers=headers)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    # a samtycke that has ended opens nothing; one in force does
    record(homecare, consent(target.patient, "samtycke", "IRCP", HOMECARE, "2023-06-30"))
    assert _status(app, homecare, plan) == 404
    current = record(homecare, consent(target.patient, "samtycke", "IRCP", HOMECARE))
    assert _status(app, homecare, plan) == 200
    assert app.get(f"/fhir/CarePlan?_id={target.plan}&_summary=count", headers=homecare).json()["total"] == 1
    # an inre spärr at the vårdcentral: hidden from the clinic and the kommun, not from the unit
    sparr = record(vc, consent(target.patient, "inre-sparr", "CST", VC))
    assert _status(app, clinic, plan) == 404
    assert _status(app, homecare, plan) == 404
    assert _status(app, vc, plan) == 200
    # lifted: all as before
    body = app.get(f"/fhir/Consent/{sparr}", headers=vc).json()
    assert app.put(f"/fhir/Consent/{sparr}", json={**body, "status": "inactive"}, headers=vc).status_code == 200
    assert _status(app, clinic, plan) == 200
    assert _status(app, homecare, plan) == 200
    body = app.get(f"/fhir/Consent/{current}", headers=homecare).json()
    assert app.put(f"/fhir/Consent/{current}", json={**body, "status": "inactive"}, headers=homecare).status_code == 200
    assert _status(app, homecare, plan) == 404
