"""No answer tells a resource the caller may not see from one that does not exist.

Every interaction that takes an id is tried twice by a unit that takes no part in agreement 2:
once on agreement 2's resources (hidden from it) and once on ids nobody uses. The status, the
OperationOutcome (with the id written as ``X``) and what the unit's own access log then shows
must be the same. Update as create is not offered for patient data under the care-unit rules
(a PUT of an unknown id would answer 201 where a hidden one answers 404): the
CapabilityStatement says so, and new resources are created with POST.

Runs on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from patientkontrakt.config import Settings
from patientkontrakt.domain import codes
from tests.conftest import make_settings
from tests.security.conftest import World

AUTHOR = "demo-org-vc-bjorkbacken"
OTHER_UNIT = "demo-org-vc-strandvagen"
TARGET = 2
PATIENT_DATA = ("Patient", "CarePlan", "CareTeam", "Goal")


@pytest.fixture(params=["postgresql", "sqlite"])
def settings(request: pytest.FixtureRequest) -> Settings:
    url = request.getfixturevalue("clean_pg" if request.param == "postgresql" else "sqlite_url")
    return make_settings(str(url))


def _shape(response: Response, id_: str) -> tuple[int, Any]:
    """Status and body with the id written as X (and the Bundle/outcome ids that always vary removed)."""
    text = response.text.replace(id_, "X")
    body = json.loads(text) if text else None
    if isinstance(body, dict):
        body.pop("id", None)
        body.get("meta", {}).pop("lastUpdated", None)
    return response.status_code, body


def _hidden(world: World, app: TestClient) -> dict[str, dict[str, Any]]:
    """Agreement 2's resources as the responsible unit reads them."""
    target = world.agreements[TARGET]
    author = world.staff(world.role_at(AUTHOR, "nurse"))
    out = {}
    for type_, id_ in (("Patient", target.patient), ("CarePlan", target.plan), ("CareTeam", target.team),
                       ("Goal", target.goals[1])):
        response = app.get(f"/fhir/{type_}/{id_}", headers=author)
        assert response.status_code == 200
        out[type_] = {k: v for k, v in response.json().items() if k != "meta"}
    return out


def _probes(type_: str, id_: str, body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, url, keyword arguments) of every interaction on Type/id."""
    params = {"mode": "update"}
    return [
        ("GET", f"/fhir/{type_}/{id_}", {}),
        ("GET", f"/fhir/{type_}/{id_}/_history/1", {}),
        ("GET", f"/fhir/{type_}/{id_}/_history", {}),
        ("PUT", f"/fhir/{type_}/{id_}", {"json": body}),
        ("PUT", f"/fhir/{type_}/{id_}", {"json": body, "headers": {"if-match": 'W/"1"'}}),
        ("PUT", f"/fhir/{type_}/{id_}", {"json": body, "headers": {"if-match": 'W/"999"'}}),
        ("PUT", f"/fhir/{type_}", {"json": body, "params": {"_id": "nothing-matches"}}),
        ("DELETE", f"/fhir/{type_}/{id_}", {}),
        ("DELETE", f"/fhir/{type_}/{id_}", {"headers": {"if-match": 'W/"1"'}}),
        ("POST", f"/fhir/{type_}/{id_}/$validate", {"json": body, "params": params}),
        ("POST", f"/fhir/{type_}/{id_}/$validate", {"params": {"mode": "delete"}}),
        # conditional read: never 304 for what the caller may not see
        ("GET", f"/fhir/{type_}/{id_}", {"headers": {"if-none-match": "*"}}),
        ("GET", f"/fhir/{type_}/{id_}/_history/1", {"headers": {"if-none-match": 'W/"1"'}}),
        ("GET", f"/fhir/{type_}/{id_}", {"headers": {"if-modified-since": "Fri, 31 Dec 9998 23:59:59 GMT"}}),
        # patch: not a 412, a failed test or an invalid result either
        *(("PATCH", f"/fhir/{type_}/{id_}", {"content": json.dumps(ops), "headers": {**_JSON_PATCH, **extra}})
          for ops, extra in _PATCHES),
        ("PATCH", f"/fhir/{type_}", {"content": json.dumps(_PATCHES[0][0]), "headers": _JSON_PATCH,
                                     "params": {"_id": id_}}),
    ]


_JSON_PATCH = {"content-type": "application/json-patch+json"}
_PATCHES: list[tuple[list[dict[str, Any]], dict[str, str]]] = [
    ([{"op": "add", "path": "/language", "value": "sv"}], {}),
    ([{"op": "add", "path": "/language", "value": "sv"}], {"if-match": 'W/"999"'}),
    ([{"op": "test", "path": "/id", "value": "something else"}], {}),
    ([{"op": "remove", "path": "/resourceType"}], {}),
]


def _bundle_probes(type_: str, id_: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The same interactions as entries of a transaction and of a batch."""
    entries = [
        {"request": {"method": "GET", "url": f"{type_}/{id_}"}},
        {"request": {"method": "GET", "url": f"{type_}/{id_}/_history/1"}},
        {"resource": body, "request": {"method": "PUT", "url": f"{type_}/{id_}"}},
        {"resource": body, "request": {"method": "PUT", "url": f"{type_}/{id_}", "ifMatch": 'W/"1"'}},
        {"resource": body, "request": {"method": "PUT", "url": f"{type_}?_id=nothing-matches"}},
        {"request": {"method": "DELETE", "url": f"{type_}/{id_}"}},
        *({"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                        "data": base64.b64encode(json.dumps(ops).encode()).decode()},
           "request": {"method": "PATCH", "url": f"{type_}/{id_}", **({"ifMatch": extra["if-match"]} if extra else {})}}
          for ops, extra in _PATCHES),
    ]
    return [{"resourceType": "Bundle", "type": kind, "entry": [entry]} for entry in entries
            for kind in ("transaction", "batch")]


def test_a_hidden_resource_and_an_absent_one_get_the_same_answers(world: World, app: TestClient) -> None:
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    hidden = _hidden(world, app)
    for type_, body in hidden.items():
        id_ = body["id"]
        absent_id = f"no-such-{type_.lower()}"
        absent_body = {**body, "id": absent_id}
        for (method, url, kwargs), (_, absent_url, absent_kwargs) in zip(
                _probes(type_, id_, body), _probes(type_, absent_id, absent_body), strict=True):
            seen = _shape(app.request(method, url, **{**kwargs, "headers": {**other, **kwargs.get("headers", {})}}),
                          id_)
            unseen = _shape(app.request(method, absent_url, **{**absent_kwargs, "headers": {
                **other, **absent_kwargs.get("headers", {})}}), absent_id)
            assert seen == unseen, (method, url, kwargs.get("headers"), seen, unseen)
            assert seen[0] in (200, 404), (method, url, seen)  # $validate answers 200 with its outcome
        for bundle, absent_bundle in zip(_bundle_probes(type_, id_, body),
                                         _bundle_probes(type_, absent_id, absent_body), strict=True):
            seen = _shape(app.post("/fhir", json=bundle, headers=other), id_)
            unseen = _shape(app.post("/fhir", json=absent_bundle, headers=other), absent_id)
            assert seen == unseen, (bundle["type"], bundle["entry"][0]["request"], seen, unseen)
        # the operation on the patient and on the agreement
        for path, absent in ((f"Patient/{world.agreements[TARGET].patient}/$patientkontrakt",
                              "Patient/no-such-patient/$patientkontrakt"),
                             (f"CarePlan/{world.agreements[TARGET].plan}/$patientkontrakt",
                              "CarePlan/no-such-careplan/$patientkontrakt")):
            seen = _shape(app.get(f"/fhir/{path}", headers=other), path.split("/")[1])
            unseen = _shape(app.get(f"/fhir/{absent}", headers=other), absent.split("/")[1])
            assert seen == unseen and seen[0] == 404, (path, seen, unseen)
    # nothing was written by any of it
    for type_, body in hidden.items():
        response = app.get(f"/fhir/{type_}/{body['id']}", headers=world.staff(world.role_at(AUTHOR, "nurse")))
        assert response.json()["meta"]["versionId"] == "1" or type_ != "Goal"
        assert {k: v for k, v in response.json().items() if k != "meta"} == body


def test_the_units_own_log_shows_a_refused_read_of_a_hidden_resource_like_one_of_nothing(
        world: World, app: TestClient) -> None:
    """The red team's finding: after a refused read of another unit's Goal, the unit's
    ``AuditEvent?entity=Goal/<id>`` returned the entry with that Goal's patient."""
    target = world.agreements[TARGET]
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    goal, absent = f"Goal/{target.goals[1]}", "Goal/no-such-goal"
    for name in (goal, absent):
        assert app.get(f"/fhir/{name}", headers=other).status_code == 404
    log = app.get("/fhir/AuditEvent", params={"_count": "50"}, headers=other).json()
    refused = [e["resource"] for e in log["entry"] if e["resource"]["outcome"] != "0"]
    by_request = {next(x["description"] for x in r["entity"] if x.get("name") == "request"): r for r in refused}
    assert set(by_request) >= {goal, absent}

    def shown(event: dict[str, Any], name: str) -> Any:
        text = json.dumps(event).replace(name, "X")
        event = json.loads(text)
        for key in ("id", "recorded", "meta"):
            event.pop(key, None)
        # each request's own id (IHE BALP's XrequestId entity) differs between any two requests
        event["entity"] = [e for e in event["entity"] if e.get("type", {}).get("code") != "XrequestId"]
        return event

    assert shown(by_request[goal], goal) == shown(by_request[absent], absent)
    assert f"Patient/{target.patient}" not in json.dumps(log)
    for params in ({"entity": goal}, {"patient": target.patient}, {"entity": f"Patient/{target.patient}"}):
        found = app.get("/fhir/AuditEvent", params=params, headers=other).json()
        assert found["total"] == 0, (params, found)
    assert app.get("/fhir/AuditEvent", params={"entity": absent}, headers=other).json()["total"] == 0
    # the patient's log extract shows the attempt, with who tried
    extract = app.get("/fhir/AuditEvent", params={"entity": goal}, headers=world.patient(target.patient)).json()
    assert extract["total"] == 1
    assert extract["entry"][0]["resource"]["outcome"] == "4"
    # the unit's successful reads keep their names in its own log review
    own = world.by_author(OTHER_UNIT)[0]
    assert app.get(f"/fhir/CarePlan/{own.plan}", headers=other).status_code == 200
    mine = app.get("/fhir/AuditEvent", params={"entity": f"CarePlan/{own.plan}"}, headers=other).json()
    assert mine["total"] == 1
    assert f"Patient/{own.patient}" in json.dumps(mine)


def test_patient_data_is_created_with_post_not_by_update(world: World, app: TestClient) -> None:
    """The other side: a unit updates what it may see, creates with POST and by a conditional
    update without an id, and the CapabilityStatement says where update as create is offered."""
    own = world.by_author(OTHER_UNIT)[0]
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    plan = {k: v for k, v in app.get(f"/fhir/CarePlan/{own.plan}", headers=other).json().items() if k != "meta"}
    assert app.put(f"/fhir/CarePlan/{own.plan}", json={**plan, "title": "Ny titel"}, headers=other).status_code == 200
    goal = {"resourceType": "Goal", "lifecycleStatus": "proposed", "description": {"text": "Nytt mål"},
            "subject": {"reference": f"Patient/{own.patient}"},
            "expressedBy": {"reference": f"PractitionerRole/{world.role_at(OTHER_UNIT, 'nurse')}"}}
    assert app.put("/fhir/Goal/my-own-id", json={**goal, "id": "my-own-id"}, headers=other).status_code == 404
    created = app.put("/fhir/Goal", params={"identifier": "http://example.org/goals|1"},
                      json={**goal, "identifier": [{"system": "http://example.org/goals", "value": "1"}]},
                      headers=other)
    assert created.status_code == 201, created.text
    assert app.post("/fhir/Goal", json=goal, headers=other).status_code == 201
    statement = app.get("/fhir/metadata").json()
    update_create = {r["type"]: r["updateCreate"] for r in statement["rest"][0]["resource"] if "updateCreate" in r}
    assert all(update_create[t] is False for t in PATIENT_DATA)
    assert update_create["Organization"] is True and update_create["PractitionerRole"] is True
    # the directory client still keeps the directory with the HSA-ids as resource ids
    org = {"resourceType": "Organization", "id": "new-unit", "active": True, "name": "Ny enhet",
           "identifier": [{"system": "urn:oid:1.2.752.29.4.19", "value": "SE2321000016-NY01"}],
           "type": [{"coding": [{"system": codes.ORGANIZATION_KIND, "code": "region"}]}]}
    assert app.put("/fhir/Organization/new-unit", json=org, headers=world.directory()).status_code == 201
