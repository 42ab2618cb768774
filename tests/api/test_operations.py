"""Operations by POST (R4 operations.html#request: servers SHALL support POST for every operation),
and by GET only where the operation allows it: ``$patientkontrakt`` both ways, ``$validate`` by POST."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.domain.support import generator, store_agreement

PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"


def _entries(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    return list(bundle["entry"])


@pytest.fixture
def agreement(pk_client: TestClient) -> dict[str, str]:
    patient, _team, *_goals, plan = store_agreement(pk_client, generator(), 0)
    return {"Patient": patient["id"], "CarePlan": plan["id"]}


@pytest.mark.parametrize("type_", ["Patient", "CarePlan"])
@pytest.mark.parametrize("body", [None, {"resourceType": "Parameters"}, {"resourceType": "Parameters", "id": "x"}])
def test_patientkontrakt_by_post_answers_as_by_get(pk_client: TestClient, agreement: dict[str, str], type_: str,
                                                   body: dict[str, Any] | None) -> None:
    url = f"/fhir/{type_}/{agreement[type_]}/$patientkontrakt"
    by_get = _entries(pk_client.get(url))
    if body is None:
        by_post = _entries(pk_client.post(url))
    else:
        by_post = _entries(pk_client.post(url, content=json.dumps(body),
                                          headers={"content-type": "application/fhir+json"}))
    assert by_post == by_get


@pytest.mark.parametrize("type_", ["Patient", "CarePlan"])
def test_patientkontrakt_by_post_takes_no_parameters(pk_client: TestClient, agreement: dict[str, str],
                                                     type_: str) -> None:
    url = f"/fhir/{type_}/{agreement[type_]}/$patientkontrakt"
    response = pk_client.post(url, json={"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDate": "2026-01-01"}, {"name": "_since", "valueInstant": "2026-01-01T00:00:00Z"}]})
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["expression"] for i in outcome["issue"]] == [["Parameters.parameter[0]"], ["Parameters.parameter[1]"]]
    assert "start" in outcome["issue"][0]["diagnostics"] and "_since" in outcome["issue"][1]["diagnostics"]

    response = pk_client.post(url, json={"resourceType": "Patient"})
    assert response.status_code == 400 and response.json()["issue"][0]["expression"] == ["resourceType"]
    response = pk_client.post(url, content=b"{not json", headers={"content-type": "application/fhir+json"})
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"
    response = pk_client.post(url, content=b"<Parameters/>", headers={"content-type": "application/fhir+xml"})
    assert response.status_code == 415 and response.json()["resourceType"] == "OperationOutcome"
    response = pk_client.post(url, json={"resourceType": "Parameters", "parameter": {"name": "x"}})
    assert response.status_code == 400, response.text


def test_patientkontrakt_by_post_of_an_unknown_resource_is_404(pk_client: TestClient) -> None:
    for type_ in ("Patient", "CarePlan"):
        response = pk_client.post(f"/fhir/{type_}/nobody/$patientkontrakt", json={"resourceType": "Parameters"})
        assert response.status_code == 404
        assert response.json()["issue"][0]["code"] == "not-found"


def test_patientkontrakt_by_post_needs_a_token(pk_client: TestClient, agreement: dict[str, str]) -> None:
    answer = pk_client.post(f"/fhir/Patient/{agreement['Patient']}/$patientkontrakt",
                            json={"resourceType": "Parameters"}, headers={"authorization": ""})
    assert answer.status_code == 401


@pytest.mark.parametrize("url", ["/fhir/Goal/$validate", "/fhir/Goal/some-goal/$validate",
                                 "/fhir/Patient/$validate?mode=create"])
def test_validate_by_get_is_405_saying_to_post(pk_client: TestClient, url: str) -> None:
    response = pk_client.get(url)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"
    [issue] = response.json()["issue"]
    assert issue["code"] == "not-supported" and "POST" in issue["diagnostics"]


def test_the_operation_definition_says_it_changes_nothing(pk_client: TestClient) -> None:
    definition = json.loads((PROFILES / "profiles" / "OperationDefinition-patientkontrakt.json").read_text())
    assert definition["affectsState"] is False  # so GET may invoke it too (R4 operations.html#request)
    assert definition["instance"] is True and sorted(definition["resource"]) == ["CarePlan", "Patient"]
    assert [p["use"] for p in definition["parameter"]] == ["out"]  # no in-parameters: POST takes none
    statement = pk_client.get("/fhir/metadata").json()
    for resource in statement["rest"][0]["resource"]:
        names = {o["name"]: o["definition"] for o in resource.get("operation", [])}
        if resource["type"] in ("Patient", "CarePlan"):
            assert names["patientkontrakt"] == definition["url"]
        else:
            assert "patientkontrakt" not in names


@pytest.mark.parametrize("id_", ["a%2500", "a%00", "x" * 65, "a%20b"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_patientkontrakt_of_an_id_that_is_no_fhir_id_is_404_like_an_unknown_one(
        pk_client: TestClient, id_: str, method: str) -> None:
    """An id that cannot be a FHIR id (a NUL byte among them, which PostgreSQL refuses in a
    string) gets the answer of an unknown resource, not a 500 from the database."""
    for type_ in ("Patient", "CarePlan"):
        url = f"/fhir/{type_}/{id_}/$patientkontrakt"
        response = pk_client.get(url) if method == "get" else pk_client.post(url, json={"resourceType": "Parameters"})
        assert response.status_code == 404, response.text
        assert response.json()["issue"][0]["code"] == "not-found"
