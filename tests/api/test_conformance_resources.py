"""The conformance resources (patientkontrakt/fhir/conformance.py): every canonical URL the
CapabilityStatement names can be read and searched on the server; public like /metadata,
read-only, not logged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

from patientkontrakt.config import Settings
from patientkontrakt.fhir.conformance import CONFORMANCE_TYPES
from tests.security.audit_tools import query

PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"
BASE = "http://testserver/fhir"
NO_TOKEN = {"authorization": ""}
OURS = "https://patientkontrakt.se/fhir"


def _file(name: str) -> dict[str, Any]:
    for folder in ("core", "profiles", "search"):
        if (PROFILES / folder / name).exists():
            data: dict[str, Any] = json.loads((PROFILES / folder / name).read_text())
            return data
    raise AssertionError(name)


def _searchset(client: TestClient, url: str, **kwargs: Any) -> dict[str, Any]:
    response = client.get(url, headers=NO_TOKEN, **kwargs)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert isinstance(bundle["total"], int)
    for entry in bundle.get("entry", []):
        if entry["search"]["mode"] == "match":
            resource = entry["resource"]
            assert entry["fullUrl"] == f"{BASE}/{resource['resourceType']}/{resource['id']}"
    return bundle


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


@pytest.mark.parametrize("type_,id_", [
    ("StructureDefinition", "pk-patientkontrakt"), ("StructureDefinition", "CarePlan"),
    ("SearchParameter", "CarePlan-category"), ("SearchParameter", "pk-CarePlan-author"),
    ("SearchParameter", "conformance-url"), ("OperationDefinition", "patientkontrakt"),
    ("OperationDefinition", "Resource-validate"), ("ValueSet", "pk-careplan-category"),
    ("ValueSet", "administrative-gender"), ("CodeSystem", "pk-careplan-category"),
])
def test_read_without_a_token_answers_the_definition(pk_client: TestClient, type_: str, id_: str) -> None:
    response = pk_client.get(f"/fhir/{type_}/{id_}", headers=NO_TOKEN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.json() == _file(f"{type_}-{id_}.json")


def test_an_unknown_id_is_404(pk_client: TestClient) -> None:
    response = pk_client.get("/fhir/StructureDefinition/no-such-profile", headers=NO_TOKEN)
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"
    # what the engine stores is not among them, and the other way round
    assert pk_client.get("/fhir/StructureDefinition/Patient-pk-example-patient-tolvan").status_code == 404
    assert pk_client.get("/fhir/Patient/pk-patient").status_code == 404


def test_search_by_url_name_id_and_version(pk_client: TestClient) -> None:
    url = f"{OURS}/StructureDefinition/pk-patientkontrakt"
    assert _ids(_searchset(pk_client, "/fhir/StructureDefinition", params={"url": url})) == ["pk-patientkontrakt"]
    assert _ids(_searchset(pk_client, "/fhir/StructureDefinition", params={"url": f"{url}|0.1.0"})) \
        == ["pk-patientkontrakt"]
    assert _searchset(pk_client, "/fhir/StructureDefinition", params={"url": f"{url}|9.9"})["total"] == 0
    assert _searchset(pk_client, "/fhir/ValueSet", params={"url": url})["total"] == 0  # another type's URL

    by_name = _searchset(pk_client, "/fhir/StructureDefinition", params={"name": "pkpatient"})
    assert _ids(by_name) == ["pk-patient", "pk-patientkontrakt"] and by_name["total"] == 2
    assert _ids(_searchset(pk_client, "/fhir/StructureDefinition", params={"name:exact": "PKPatient"})) \
        == ["pk-patient"]
    assert _searchset(pk_client, "/fhir/StructureDefinition", params={"name:exact": "pkpatient"})["total"] == 0
    assert "pk-sparr" in _ids(_searchset(pk_client, "/fhir/StructureDefinition", params={"name:contains": "sparr"}))

    assert _ids(_searchset(pk_client, "/fhir/CodeSystem", params={"_id": "pk-huvudman,pk-staff-role"})) \
        == ["pk-huvudman", "pk-staff-role"]
    ours = _searchset(pk_client, "/fhir/CodeSystem", params=[("version", "0.1.0"), ("_count", "100")])
    assert ours["total"] == len(list((PROFILES / "profiles").glob("CodeSystem-*.json")))
    both = _searchset(pk_client, "/fhir/CodeSystem", params=[("version", "0.1.0"), ("name", "PKHuvudman")])
    assert _ids(both) == ["pk-huvudman"]  # repeated parameters are ANDed


def test_search_pages_with_a_total(pk_client: TestClient) -> None:
    first = _searchset(pk_client, "/fhir/SearchParameter", params={"_count": "10"})
    total = len(list((PROFILES / "search").glob("SearchParameter-*.json"))) \
        + len(list((PROFILES / "core").glob("SearchParameter-*.json")))
    assert first["total"] == total and len(_ids(first)) == 10
    seen, page = [], first
    while True:
        seen += _ids(page)
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        parts = urlsplit(following[0])
        page = _searchset(pk_client, parts.path, params=parse_qsl(parts.query))
    assert len(seen) == total == len(set(seen))
    counted = _searchset(pk_client, "/fhir/SearchParameter", params={"_summary": "count"})
    assert counted["total"] == total and "entry" not in counted


def test_search_by_post(pk_client: TestClient) -> None:
    response = pk_client.post("/fhir/OperationDefinition/_search", content="name=Patientkontrakt",
                              headers={**NO_TOKEN, "content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    assert _ids(response.json()) == ["patientkontrakt"]


def test_unknown_parameters_and_bad_values(pk_client: TestClient) -> None:
    lenient = _searchset(pk_client, "/fhir/ValueSet", params={"status": "active", "_id": "pk-huvudman"})
    assert _ids(lenient) == ["pk-huvudman"]
    [outcome] = [e["resource"] for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["issue"][0]["expression"] == ["status"]
    strict = pk_client.get("/fhir/ValueSet?status=active", headers={**NO_TOKEN, "prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json()["issue"][0]["expression"] == ["status"]
    for bad in ("url:below=x", "name:missing=true", "_count=-1", "_summary=true", "_id="):
        response = pk_client.get(f"/fhir/ValueSet?{bad}", headers=NO_TOKEN)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("type_", sorted(CONFORMANCE_TYPES))
def test_they_are_read_only(pk_client: TestClient, type_: str) -> None:
    body = _file("StructureDefinition-pk-patient.json") if type_ == "StructureDefinition" else \
        {"resourceType": type_, "id": "x"}
    for method, url in (("POST", f"/fhir/{type_}"), ("PUT", f"/fhir/{type_}/x"), ("DELETE", f"/fhir/{type_}/x"),
                        ("PATCH", f"/fhir/{type_}/x"), ("PUT", f"/fhir/{type_}?url=x"),
                        ("DELETE", f"/fhir/{type_}?url=x"), ("POST", f"/fhir/{type_}/x"),
                        ("GET", f"/fhir/{type_}/x/_history"), ("GET", f"/fhir/{type_}/x/_history/1"),
                        ("POST", f"/fhir/{type_}/$validate")):
        response = pk_client.request(method, url, content=json.dumps(body))
        assert response.status_code == 405, (method, url, response.text)
        [issue] = response.json()["issue"]
        assert issue["code"] == "not-supported" and "read-only" in issue["diagnostics"], issue
    # in a Bundle too: only read and search, by their own routes
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": body, "request": {"method": "POST", "url": type_}}]}
    [entry] = pk_client.post("/fhir", json=bundle).json()["entry"]
    assert entry["response"]["status"].startswith("405")
    # only reading and searching is public: anything else without a token is refused before all else
    assert pk_client.post(f"/fhir/{type_}", content=json.dumps(body), headers=NO_TOKEN).status_code == 401
    assert pk_client.put(f"/fhir/{type_}/x", content=json.dumps(body), headers=NO_TOKEN).status_code == 401
    assert pk_client.get(f"/fhir/{type_}/x/_history", headers=NO_TOKEN).status_code == 401


def test_reading_them_is_not_logged(pk_client: TestClient, settings: Settings) -> None:
    def count() -> int:
        return int(query(settings.database_url, "SELECT count(*) AS n FROM audit_log")[0]["n"])
    before = count()
    pk_client.get("/fhir/StructureDefinition/pk-patient")
    pk_client.get("/fhir/ValueSet?name=PK")
    pk_client.get("/fhir/CodeSystem/nothing-here")
    assert count() == before


def test_the_capability_statement_lists_them_read_and_search_only(pk_client: TestClient) -> None:
    statement = pk_client.get("/fhir/metadata", headers=NO_TOKEN).json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    for type_ in CONFORMANCE_TYPES:
        assert [i["code"] for i in resources[type_]["interaction"]] == ["read", "search-type"]
        assert {p["name"] for p in resources[type_]["searchParam"]} == {"_id", "url", "name", "version"}


def _named_canonicals(statement: dict[str, Any]) -> set[str]:
    urls: set[str] = set()
    for resource in statement["rest"][0]["resource"]:
        urls.update(filter(None, [resource.get("profile")]))
        urls.update(resource.get("supportedProfile", []))
        urls.update(p["definition"] for p in resource.get("searchParam", []) if "definition" in p)
        urls.update(o["definition"] for o in resource.get("operation", []))
    urls.update(p["definition"] for p in statement["rest"][0].get("searchParam", []) if "definition" in p)
    urls.update(o["definition"] for o in statement["rest"][0].get("operation", []))
    return urls


@pytest.mark.parametrize("fixture", ["pk_client", "client"])
def test_every_canonical_url_the_capability_statement_names_resolves(request: pytest.FixtureRequest,
                                                                     fixture: str) -> None:
    client: TestClient = request.getfixturevalue(fixture)
    statement = client.get("/fhir/metadata", headers=NO_TOKEN).json()
    urls = _named_canonicals(statement)
    assert len(urls) > 50, len(urls)
    if fixture == "pk_client":
        assert f"{OURS}/OperationDefinition/patientkontrakt" in urls
        assert f"{OURS}/StructureDefinition/pk-patientkontrakt" in urls
    for url in sorted(urls):
        type_ = url.split("/")[-2]
        assert type_ in CONFORMANCE_TYPES, url
        found = _searchset(client, f"/fhir/{type_}", params={"url": url})
        assert found["total"] == 1, url
        [entry] = found["entry"]
        read = client.get(urlsplit(entry["fullUrl"]).path, headers=NO_TOKEN)
        assert read.status_code == 200 and read.json()["url"] == url
