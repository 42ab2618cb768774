"""The CapabilityStatement at /fhir/metadata says what the server really does (R4 http.html#capabilities)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B import get_fhir_model_class

from patientkontrakt.fhir.conformance import CONFORMANCE_TYPES
from patientkontrakt.fhir.definitions import SearchParam
from patientkontrakt.fhir.indexing import COLUMN_PARAMS
from patientkontrakt.fhir.service import RESOURCE_TYPES, FhirService
from tests.factories import care_plan, care_team, create, goal, organization, patient, practitioner

TYPE_INTERACTIONS = {"read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                     "search-type"}
STRICT = {"Prefer": "handling=strict"}


def metadata(client: TestClient) -> dict[str, Any]:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    return body


def service(client: TestClient) -> FhirService:
    found: FhirService = client.app.state.service  # type: ignore[attr-defined]
    return found


def rest_resources(client: TestClient) -> dict[str, dict[str, Any]]:
    statement = metadata(client)
    assert len(statement["rest"]) == 1
    return {r["type"]: r for r in statement["rest"][0]["resource"]}


def engine_resources(client: TestClient) -> dict[str, dict[str, Any]]:
    """The types the FHIR engine stores (AuditEvent is served from the access log)."""
    return {t: r for t, r in rest_resources(client).items() if t in service(client).types}


def test_statement_basics(client: TestClient) -> None:
    statement = metadata(client)
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["status"] == "active"
    assert statement["kind"] == "instance"
    assert statement["date"]
    assert statement["implementation"]["url"] == "http://testserver/fhir"
    assert "application/fhir+json" in statement["format"]
    assert not any("xml" in f for f in statement["format"])  # we answer XML with 406
    rest = statement["rest"][0]
    assert rest["mode"] == "server"
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}


def test_statement_is_a_valid_resource(client: TestClient) -> None:
    statement = metadata(client)
    model = get_fhir_model_class("CapabilityStatement").model_validate(statement)
    assert model.fhirVersion == "4.0.1"


def test_every_served_type_is_listed_once_with_its_interactions(client: TestClient) -> None:
    resources = rest_resources(client)
    statement = metadata(client)
    assert len(statement["rest"][0]["resource"]) == len(resources)  # no duplicates
    assert set(resources) == set(service(client).types) | {"AuditEvent"} | CONFORMANCE_TYPES
    for type_ in CONFORMANCE_TYPES:  # read-only (test_conformance_resources.py)
        assert [i["code"] for i in resources.pop(type_)["interaction"]] == ["read", "search-type"]
    audit = resources.pop("AuditEvent")
    assert {i["code"] for i in audit["interaction"]} == {"read", "search-type"}  # the log is read-only
    assert {p["name"] for p in audit["searchParam"]} == {"patient", "agent", "entity", "date"}
    for type_, resource in resources.items():
        assert {i["code"] for i in resource["interaction"]} == TYPE_INTERACTIONS, type_
        assert resource["versioning"] == "versioned-update"
        assert resource["readHistory"] is True
        assert resource["updateCreate"] is True
        assert resource["conditionalCreate"] is True
        assert resource["conditionalUpdate"] is True
        assert resource["conditionalDelete"] == "single"
        assert resource["profile"] == f"http://hl7.org/fhir/StructureDefinition/{type_}"


def test_every_type_lists_exactly_the_search_parameters_it_implements(client: TestClient) -> None:
    defs = service(client).defs
    for type_, resource in engine_resources(client).items():
        implemented: dict[str, SearchParam] = defs.params_for(type_)
        listed = {p["name"]: p for p in resource["searchParam"]}
        assert set(listed) == set(implemented), type_
        for code, param in implemented.items():
            assert listed[code]["type"] == param.type, (type_, code)
            assert listed[code]["definition"] == param.url, (type_, code)
        for common in ("_id", "_lastUpdated"):
            assert common in listed, (type_, common)


def test_includes_are_the_reference_parameters(client: TestClient) -> None:
    defs = service(client).defs
    resources = engine_resources(client)
    for type_, resource in resources.items():
        references = {code for code, p in defs.params_for(type_).items() if p.type == "reference"}
        assert set(resource["searchInclude"]) == {f"{type_}:{code}" for code in references} | {"*"}
        for revinclude in resource["searchRevInclude"]:
            source, _, code = revinclude.partition(":")
            assert source in resources
            assert defs.params_for(source)[code].type == "reference"
    assert "CarePlan:subject" in resources["Patient"]["searchRevInclude"]
    assert "CarePlan:care-team" in resources["CareTeam"]["searchRevInclude"]
    assert "CarePlan:care-team" not in resources["Patient"]["searchRevInclude"]


# -- what is advertised works --------------------------------------------------------------

MINIMAL: dict[str, dict[str, Any]] = {
    "Patient": patient(),
    "Practitioner": practitioner(),
    "PractitionerRole": {"resourceType": "PractitionerRole", "active": True},
    "Organization": organization(),
    "CarePlan": {"resourceType": "CarePlan", "status": "draft", "intent": "plan",
                 "subject": {"reference": "Patient/{patient}"}},
    "CareTeam": {"resourceType": "CareTeam", "status": "active", "name": "Team Norr"},
    "Goal": {"resourceType": "Goal", "lifecycleStatus": "proposed", "description": {"text": "Gå ut varje dag"},
             "subject": {"reference": "Patient/{patient}"}},
    "Appointment": {"resourceType": "Appointment", "status": "proposed",
                    "participant": [{"actor": {"reference": "Patient/{patient}"}, "status": "needs-action"}]},
    "Provenance": {"resourceType": "Provenance", "target": [{"reference": "Patient/{patient}"}],
                   "recorded": "2024-03-01T10:00:00Z", "agent": [{"who": {"display": "Lisa Läkare"}}]},
    "Consent": {"resourceType": "Consent", "status": "active",
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                      "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                "patient": {"reference": "Patient/{patient}"},
                "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                           "code": "OPTIN"}]}},
    "Subscription": {"resourceType": "Subscription", "status": "off", "reason": "Journalen", "criteria": "Goal",
                     "channel": {"type": "rest-hook", "endpoint": "https://ehr.example.org/hook"}},
    "Group": {"resourceType": "Group", "type": "person", "actual": True,
              "member": [{"entity": {"reference": "Patient/{patient}"}}]},
}


def _minimal(type_: str, patient_id: str) -> dict[str, Any]:
    return dict(orjson.loads(orjson.dumps(MINIMAL[type_]).replace(b"{patient}", patient_id.encode())))


def test_minimal_resources_cover_every_served_type(client: TestClient) -> None:
    assert set(MINIMAL) == set(service(client).types)


@pytest.mark.parametrize("type_", sorted(MINIMAL))
def test_every_advertised_interaction_works(client: TestClient, type_: str) -> None:
    pid = create(client, patient(pnr="195001011234"))["id"]
    body = _minimal(type_, pid)
    created = client.post(f"/fhir/{type_}", json=body)  # create
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert client.get(f"/fhir/{type_}/{rid}").status_code == 200  # read
    assert client.get(f"/fhir/{type_}/{rid}/_history/1").status_code == 200  # vread
    updated = client.put(f"/fhir/{type_}/{rid}", json={**created.json(), "meta": {"tag": [{"code": "x"}]}})
    assert updated.status_code == 200, updated.text  # update
    assert updated.json()["meta"]["versionId"] == "2"
    assert client.put(f"/fhir/{type_}/client-{type_.lower()}", json={**body, "id": f"client-{type_.lower()}"}
                      ).status_code == 201  # updateCreate
    tag = b'[{"op": "add", "path": "/meta/tag/-", "value": {"code": "y"}}]'
    patched = client.patch(f"/fhir/{type_}/{rid}", content=tag, headers={"content-type": "application/json-patch+json"})
    assert patched.status_code == 200, patched.text  # patch
    assert patched.json()["meta"]["versionId"] == "3"
    assert client.get(f"/fhir/{type_}/{rid}", headers={"if-none-match": 'W/"3"'}).status_code == 304  # conditionalRead
    assert client.get(f"/fhir/{type_}/{rid}/_history").json()["total"] == 3  # history-instance
    assert client.get(f"/fhir/{type_}/_history").json()["total"] == 4 + (type_ == "Patient")  # history-type
    found = client.get(f"/fhir/{type_}", params={"_id": rid})  # search-type
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [rid]
    assert client.delete(f"/fhir/{type_}/{rid}").status_code == 204  # delete
    assert client.get(f"/fhir/{type_}/{rid}").status_code == 410


def test_conditional_interactions_work(client: TestClient) -> None:
    criteria = "identifier=http://electronichealth.se/identifier/personnummer|191212121212"
    first = client.post("/fhir/Patient", json=patient(), headers={"If-None-Exist": criteria})
    assert first.status_code == 201
    assert client.post("/fhir/Patient", json=patient(), headers={"If-None-Exist": criteria}).status_code == 200
    updated = client.put(f"/fhir/Patient?{criteria}", json={**patient(), "gender": "female"})
    assert updated.status_code == 200 and updated.json()["id"] == first.json()["id"]
    assert client.delete(f"/fhir/Patient?{criteria}").status_code == 204
    assert client.get(f"/fhir/Patient/{first.json()['id']}").status_code == 410


def test_system_interactions_work(client: TestClient) -> None:
    for kind in ("transaction", "batch"):
        response = client.post("/fhir", json={"resourceType": "Bundle", "type": kind, "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}}]})
        assert response.status_code == 200, response.text
        assert response.json()["type"] == f"{kind}-response"
    history = client.get("/fhir/_history")
    assert history.status_code == 200
    assert history.json()["total"] == 2


# A well-formed value for a parameter of each type that takes the same value whatever the parameter.
_PLAIN_VALUES = {"string": "Tolv", "date": "ge2024-01-01", "uri": "http://hl7.org/fhir/StructureDefinition/Patient"}


def _value(client: TestClient, type_: str, code: str, param: SearchParam) -> str:
    """A well-formed value for a parameter of this type."""
    if param.type == "token":
        return "http://example.org/codes|x" if code != "_id" else "x"
    if param.type in _PLAIN_VALUES:
        return _PLAIN_VALUES[param.type]
    assert param.type == "reference", (type_, code, param.type)
    served = [t for t in param.targets if t in service(client).types]
    return f"{served[0]}/x" if served else "x"


def _seed(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    team = create(client, care_team(pid, [f"Practitioner/{create(client, practitioner())['id']}"]))
    create(client, care_plan(pid, team["id"]))
    create(client, goal(pid))
    create(client, organization())


@pytest.mark.parametrize("type_", RESOURCE_TYPES)
def test_every_advertised_search_parameter_is_understood(client: TestClient, type_: str) -> None:
    """Under ``handling=strict`` an unknown parameter is a 400; none of the advertised ones is."""
    _seed(client)
    listed = [p["name"] for p in rest_resources(client)[type_]["searchParam"]]
    params = service(client).defs.params_for(type_)
    assert listed
    for code in listed:
        value = _value(client, type_, code, params[code])
        # Every resource has an id and a lastUpdated: :missing is only offered on indexed parameters.
        missing = () if code in COLUMN_PARAMS else ((f"{code}:missing", "true"), (f"{code}:missing", "false"))
        for name, given in ((code, value), *missing):
            response = client.get(f"/fhir/{type_}", params={name: given}, headers=STRICT)
            assert response.status_code == 200, (name, given, response.text)
            body = response.json()
            assert body["type"] == "searchset"
            assert all(e["search"]["mode"] == "match" for e in body.get("entry", []))
        posted = client.post(f"/fhir/{type_}/_search", data={code: value},
                             headers={**STRICT, "content-type": "application/x-www-form-urlencoded"})
        assert posted.status_code == 200, (code, posted.text)


def test_missing_splits_every_search(client: TestClient) -> None:
    """:missing=true and :missing=false partition the resources of a type, for every parameter."""
    _seed(client)
    svc = service(client)
    for type_ in ("Patient", "CarePlan", "CareTeam", "Goal", "Organization", "Practitioner"):
        everything = client.get(f"/fhir/{type_}", params={"_count": "100"}).json()["total"]
        for code in set(svc.defs.params_for(type_)) - COLUMN_PARAMS:
            counts = [client.get(f"/fhir/{type_}", params={f"{code}:missing": flag}, headers=STRICT).json()["total"]
                      for flag in ("true", "false")]
            assert sum(counts) == everything, (type_, code, counts)


@pytest.mark.parametrize("type_", sorted(MINIMAL))
def test_every_advertised_include_is_understood(client: TestClient, type_: str) -> None:
    _seed(client)
    resource = rest_resources(client)[type_]
    for include in resource["searchInclude"]:
        response = client.get(f"/fhir/{type_}", params={"_include": include}, headers=STRICT)
        assert response.status_code == 200, (include, response.text)
    for revinclude in resource["searchRevInclude"]:
        response = client.get(f"/fhir/{type_}", params={"_revinclude": revinclude}, headers=STRICT)
        assert response.status_code == 200, (revinclude, response.text)


def test_documented_result_parameters_are_understood(client: TestClient) -> None:
    _seed(client)
    documentation = metadata(client)["rest"][0]["documentation"]
    checks = {
        "_count": ("Patient", {"_count": "1"}),
        "_offset": ("Patient", {"_count": "1", "_offset": "1"}),
        "_sort": ("Patient", {"_sort": "-_lastUpdated,family"}),
        "_include": ("CarePlan", {"_include": "CarePlan:subject"}),
        "_revinclude": ("Patient", {"_revinclude": "CarePlan:subject"}),
        "_total": ("Patient", {"_total": "accurate"}),
        "_summary": ("Patient", {"_summary": "count"}),
        "_elements": ("Patient", {"_elements": "identifier"}),
    }
    for name, (type_, params) in checks.items():
        assert name in documentation
        response = client.get(f"/fhir/{type_}", params=params, headers=STRICT)
        assert response.status_code == 200, (name, response.text)
    iterate = client.get("/fhir/CarePlan", params={"_include": "CarePlan:care-team",
                                                   "_include:iterate": "CareTeam:participant"}, headers=STRICT)
    assert iterate.status_code == 200, iterate.text
    assert {e["resource"]["resourceType"] for e in iterate.json()["entry"]} == {"CarePlan", "CareTeam", "Practitioner"}
    included = client.get("/fhir/Patient", params={"_revinclude": "CarePlan:subject"}).json()
    assert {e["search"]["mode"] for e in included["entry"]} == {"match", "include"}
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 1


def test_security_names_smart_and_the_oauth_endpoints(client: TestClient) -> None:
    security = metadata(client)["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    [uris] = [e for e in security["extension"]
              if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"]
    urls = {e["url"]: e["valueUri"] for e in uris["extension"]}
    assert urls["token"].endswith("/oauth/token") and urls["authorize"].endswith("/oauth/authorize")
    assert set(urls) == {"token", "authorize", "introspect", "revoke"}


def test_patient_declares_everything_with_the_core_definition(client: TestClient) -> None:
    """``Patient/$everything`` is the FHIR engine's own: declared with the core R4 definition
    whatever else the server registers (patientkontrakt/fhir/everything.py)."""
    resources = rest_resources(client)
    operations = {o["name"]: o["definition"] for o in resources["Patient"]["operation"]}
    assert operations["everything"] == "http://hl7.org/fhir/OperationDefinition/Patient-everything"
    assert operations["validate"] == "http://hl7.org/fhir/OperationDefinition/Resource-validate"
    for type_, resource in resources.items():
        if type_ != "Patient":
            assert "everything" not in {o["name"] for o in resource.get("operation", [])}, type_


def test_export_is_declared_at_each_level(client: TestClient) -> None:
    """Bulk Data $export (patientkontrakt/fhir/export.py): system, Patient and Group level, each
    with the OperationDefinition the server serves."""
    statement = metadata(client)
    resources = rest_resources(client)
    system = {o["name"]: o["definition"] for o in statement["rest"][0]["operation"]}
    assert system["export"] == "https://patientkontrakt.se/fhir/OperationDefinition/export"
    for type_, name in (("Patient", "patient-export"), ("Group", "group-export")):
        operations = {o["name"]: o["definition"] for o in resources[type_]["operation"]}
        assert operations["export"] == f"https://patientkontrakt.se/fhir/OperationDefinition/{name}"
        served = client.get(f"/fhir/OperationDefinition/{name}")
        assert served.status_code == 200 and served.json()["url"] == operations["export"]
    assert {"Group-member", "Group-type", "Group-identifier", "Group-actual", "Group-code"} <= {
        p["definition"].rsplit("/", 1)[1] for p in resources["Group"]["searchParam"]}
