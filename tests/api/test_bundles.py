"""Batch and transaction Bundles over HTTP (R4 http.html#transaction, #trules, #brules)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import PNR, care_plan, care_team, create, goal, organization, patient, practitioner

BASE = "http://testserver/fhir"
TYPES = ("Patient", "Practitioner", "Organization", "CarePlan", "CareTeam", "Goal")
TWIN_PNR = "194001019800"


# -- helpers -------------------------------------------------------------------------------


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict[str, Any], full_url: str | None = None, if_none_exist: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    if if_none_exist:
        entry["request"]["ifNoneExist"] = if_none_exist
    return entry


def put(url: str, resource: dict[str, Any], full_url: str | None = None, if_match: str | None = None
        ) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "PUT", "url": url}}
    if full_url:
        entry["fullUrl"] = full_url
    if if_match:
        entry["request"]["ifMatch"] = if_match
    return entry


def delete(url: str) -> dict[str, Any]:
    return {"request": {"method": "DELETE", "url": url}}


def get(url: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": url}}


def send(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/fhir", json=body)


def ok(client: TestClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = send(client, body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["resourceType"] == "Bundle"
    assert result["type"] == f"{body['type']}-response"
    entries: list[dict[str, Any]] = result.get("entry", [])
    assert len(entries) == len(body["entry"])
    return entries


def id_from_location(location: str) -> str:
    """``http://testserver/fhir/Patient/abc/_history/1`` → ``abc``."""
    parts = location.removeprefix(BASE + "/").split("/")
    assert len(parts) == 4 and parts[2] == "_history", location
    return parts[1]


def read(client: TestClient, ref: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{ref}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def search_ids(client: TestClient, query: str) -> list[str]:
    response = client.get(f"/fhir/{query}")
    assert response.status_code == 200, response.text
    return sorted(e["resource"]["id"] for e in response.json().get("entry", []))


def db_state(client: TestClient) -> dict[str, Any]:
    """Everything a client can see: the full system history and a search of every type."""
    history = client.get("/fhir/_history", params={"_count": "1000"})
    assert history.status_code == 200, history.text
    body = history.json()
    assert "next" not in {link["relation"] for link in body["link"]}
    searches = {}
    for type_ in TYPES:
        found = client.get(f"/fhir/{type_}", params={"_count": "1000"})
        assert found.status_code == 200, found.text
        searches[type_] = sorted((e["resource"] for e in found.json().get("entry", [])), key=lambda r: r["id"])
    return {
        "total": body["total"],
        "versions": [(e["fullUrl"], e["request"]["method"], e["response"]["etag"], e.get("resource"))
                     for e in body.get("entry", [])],
        "searches": searches,
    }


def assert_outcome(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["severity"] == "error"
    if code is not None:
        assert issue["code"] == code
    assert issue["details"]["text"]
    assert issue["diagnostics"]
    return outcome


@pytest.fixture
def seeded(client: TestClient) -> dict[str, str]:
    """Some data for a failing transaction to leave alone."""
    tolvan = create(client, patient())
    twin_a = create(client, patient(pnr=TWIN_PNR, family="Dubblett"))
    twin_b = create(client, patient(pnr=TWIN_PNR, family="Dubblett"))
    org = create(client, organization())
    doctor = create(client, practitioner())
    plan = create(client, care_plan(tolvan["id"]))
    team = create(client, care_team(tolvan["id"], [f"Practitioner/{doctor['id']}"]))
    return {"patient": tolvan["id"], "twin_a": twin_a["id"], "twin_b": twin_b["id"], "org": org["id"],
            "doctor": doctor["id"], "plan": plan["id"], "team": team["id"]}


# -- transaction: all or nothing -----------------------------------------------------------

FailingEntry = Callable[[dict[str, str]], dict[str, Any]]

FAILING: dict[str, tuple[FailingEntry, int, str, str]] = {
    # name: (entry factory, status, issue code, expression relative to the entry)
    "invalid resource": (lambda s: post({**patient(pnr="197001012394"), "gender": "bogus"}),
                         400, "code-invalid", "resource.gender"),
    "unknown element": (lambda s: post({**patient(pnr="197001012394"), "favouriteColour": "blå"}),
                        400, "structure", "resource.favouriteColour"),
    "reference to a missing resource": (lambda s: post(care_plan("no-such-patient")),
                                        422, "not-found", "resource.subject.reference"),
    "If-Match mismatch": (lambda s: put(f"Patient/{s['patient']}", {**patient(), "id": s["patient"]},
                                        if_match='W/"7"'),
                          412, "conflict", ""),
    "conditional create with two matches": (lambda s: post(patient(pnr=TWIN_PNR),
                                                           if_none_exist=f"identifier={PNR}|{TWIN_PNR}"),
                                            412, "conflict", ""),
    "conditional update with two matches": (lambda s: put(f"Patient?identifier={PNR}|{TWIN_PNR}",
                                                          patient(pnr=TWIN_PNR)),
                                            412, "conflict", ""),
    "GET of a missing resource": (lambda s: get("Patient/no-such-patient"), 404, "not-found", ""),
    "DELETE of a missing resource": (lambda s: delete("Organization/no-such-org"), 404, "not-found", ""),
    "DELETE of a referenced resource": (lambda s: delete(f"Practitioner/{s['doctor']}"), 409, "conflict", ""),
    "unresolved urn:uuid reference": (
        lambda s: post(care_plan("x") | {"subject": {"reference": "urn:uuid:8d6e4f5c-5a3b-4f0e-9b7c-000000000000"}}),
        404, "not-found", "resource.subject.reference"),
    "conditional reference without a match": (
        lambda s: post(care_plan("x") | {"subject": {"reference": f"Patient?identifier={PNR}|190001019876"}}),
        404, "not-found", "resource.subject.reference"),
    "conditional reference with two matches": (
        lambda s: post(care_plan("x") | {"subject": {"reference": f"Patient?identifier={PNR}|{TWIN_PNR}"}}),
        412, "conflict", ""),
}


def _valid_entries(s: dict[str, str]) -> list[dict[str, Any]]:
    """Entries that succeed on their own: one of each kind of write, and a read."""
    return [
        post(patient(pnr="199001019802", family="Ny"), full_url="urn:uuid:0c7a1f9e-1111-4d3c-9a55-5d1a1b2c3d4e"),
        post(goal("x") | {"subject": {"reference": "urn:uuid:0c7a1f9e-1111-4d3c-9a55-5d1a1b2c3d4e"}}),
        put(f"Patient/{s['twin_a']}", {**patient(pnr=TWIN_PNR, family="Ändrad"), "id": s["twin_a"]}),
        put("Patient/client-chosen", {**patient(pnr="198001019810"), "id": "client-chosen"}),
        delete(f"Organization/{s['org']}"),
        get(f"Patient/{s['patient']}"),
    ]


@pytest.mark.parametrize("position", ["first", "last"])
@pytest.mark.parametrize("case", list(FAILING))
def test_failing_transaction_changes_nothing(client: TestClient, seeded: dict[str, str], case: str,
                                             position: str) -> None:
    make_entry, status, code, expression = FAILING[case]
    valid = _valid_entries(seeded)
    before = db_state(client)
    failing = make_entry(seeded)
    entries = [failing, *valid] if position == "first" else [*valid, failing]
    index = 0 if position == "first" else len(valid)

    response = send(client, bundle("transaction", *entries))

    outcome = assert_outcome(response, status, code)
    where = f"Bundle.entry[{index}]"
    expressions = [e for issue in outcome["issue"] for e in issue.get("expression", [])]
    assert expressions and all(e.startswith(where) for e in expressions), expressions
    assert f"{where}.{expression}" in expressions if expression else where in expressions
    assert outcome["issue"][0]["diagnostics"].startswith(where)
    assert db_state(client) == before


def test_the_valid_entries_alone_succeed(client: TestClient, seeded: dict[str, str]) -> None:
    """The control for the test above: without the failing entry the same transaction commits."""
    entries = ok(client, bundle("transaction", *_valid_entries(seeded)))
    assert [e["response"]["status"] for e in entries] == [
        "201 Created", "201 Created", "200 OK", "201 Created", "204 No Content", "200 OK"]
    new_patient = id_from_location(entries[0]["response"]["location"])
    goal_id = id_from_location(entries[1]["response"]["location"])
    assert read(client, f"Goal/{goal_id}")["subject"]["reference"] == f"Patient/{new_patient}"
    assert read(client, f"Patient/{seeded['twin_a']}")["name"][0]["family"] == "Ändrad"
    assert client.get("/fhir/Patient/client-chosen").status_code == 200
    assert client.get(f"/fhir/Organization/{seeded['org']}").status_code == 410


def test_failing_transaction_in_an_empty_database_leaves_it_empty(client: TestClient) -> None:
    response = send(client, bundle("transaction", post(patient()), post(care_plan("missing"))))
    assert_outcome(response, 422, "not-found")
    assert client.get("/fhir/_history").json()["total"] == 0
    assert search_ids(client, "Patient") == []


# -- transaction: references between entries -----------------------------------------------

P_URN = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"
T_URN = "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059"
Q_URN = "urn:uuid:4a3c1d2e-0f9b-4e8d-a7c6-b5a4f3e2d1c0"


@pytest.mark.parametrize("patient_first", [True, False])
def test_urn_uuid_references_are_rewritten_in_either_order(client: TestClient, patient_first: bool) -> None:
    pat = post(patient(), full_url=P_URN)
    team = post(care_team("x") | {"subject": {"reference": P_URN}}, full_url=T_URN)
    plan = post(care_plan("x") | {"subject": {"reference": P_URN}, "careTeam": [{"reference": T_URN}]})
    entries = ok(client, bundle("transaction", *([pat, team, plan] if patient_first else [plan, team, pat])))
    by_type = {e["resource"]["resourceType"]: e for e in entries}
    pid = id_from_location(by_type["Patient"]["response"]["location"])
    tid = id_from_location(by_type["CareTeam"]["response"]["location"])
    plan_id = id_from_location(by_type["CarePlan"]["response"]["location"])
    stored = read(client, f"CarePlan/{plan_id}")
    assert stored["subject"] == {"reference": f"Patient/{pid}"}
    assert stored["careTeam"] == [{"reference": f"CareTeam/{tid}"}]
    assert read(client, f"CareTeam/{tid}")["subject"] == {"reference": f"Patient/{pid}"}
    assert by_type["CarePlan"]["resource"] == stored  # the response carries the rewritten resource
    assert pid != P_URN.removeprefix("urn:uuid:")  # the server assigns ids on POST
    assert search_ids(client, f"CarePlan?subject=Patient/{pid}") == [plan_id]


def test_circular_references_between_posted_entries(client: TestClient) -> None:
    one = post(patient(pnr="191212121212") | {"link": [{"other": {"reference": Q_URN}, "type": "seealso"}]},
               full_url=P_URN)
    two = post(patient(pnr="191111111111") | {"link": [{"other": {"reference": P_URN}, "type": "seealso"}]},
               full_url=Q_URN)
    entries = ok(client, bundle("transaction", one, two))
    first, second = (id_from_location(e["response"]["location"]) for e in entries)
    assert read(client, f"Patient/{first}")["link"][0]["other"] == {"reference": f"Patient/{second}"}
    assert read(client, f"Patient/{second}")["link"][0]["other"] == {"reference": f"Patient/{first}"}


def test_urn_uuid_of_a_put_entry_resolves_to_its_url_and_put_resources_are_rewritten(client: TestClient) -> None:
    pat = put("Patient/pat-q", {**patient(), "id": "pat-q"}, full_url=Q_URN)
    org = post(organization(), full_url=P_URN)
    plan = put("CarePlan/plan-1", {**care_plan("x"), "id": "plan-1", "subject": {"reference": Q_URN},
                                   "author": {"reference": P_URN}})
    entries = ok(client, bundle("transaction", plan, org, pat))
    assert [e["response"]["status"] for e in entries] == ["201 Created", "201 Created", "201 Created"]
    org_id = id_from_location(entries[1]["response"]["location"])
    stored = read(client, "CarePlan/plan-1")
    assert stored["subject"] == {"reference": "Patient/pat-q"}
    assert stored["author"] == {"reference": f"Organization/{org_id}"}
    assert entries[0]["response"]["location"] == f"{BASE}/CarePlan/plan-1/_history/1"


def test_references_in_nested_and_repeating_elements_are_rewritten(client: TestClient) -> None:
    doctor_urn, nurse_urn = P_URN, Q_URN
    team = post(care_team("x") | {"subject": {"reference": T_URN}, "participant": [
        {"member": {"reference": doctor_urn}}, {"member": {"reference": nurse_urn}}]})
    entries = ok(client, bundle(
        "transaction", team, post(patient(), full_url=T_URN),
        post(practitioner(), full_url=doctor_urn), post(practitioner(hsa="SE2321000016-2002"), full_url=nurse_urn)))
    ids = [id_from_location(e["response"]["location"]) for e in entries]
    stored = read(client, f"CareTeam/{ids[0]}")
    assert stored["subject"]["reference"] == f"Patient/{ids[1]}"
    assert [p["member"]["reference"] for p in stored["participant"]] == [f"Practitioner/{ids[2]}",
                                                                       f"Practitioner/{ids[3]}"]


def test_conditional_create_in_a_transaction(client: TestClient) -> None:
    existing = create(client, patient())
    criteria = f"identifier={PNR}|191212121212"
    entries = ok(client, bundle(
        "transaction",
        post(care_plan("x") | {"subject": {"reference": P_URN}}),
        post(patient(family="Annat namn"), full_url=P_URN, if_none_exist=criteria),
        post(patient(pnr="191111111111"), full_url=Q_URN, if_none_exist=f"identifier={PNR}|191111111111"),
        post(goal("x") | {"subject": {"reference": Q_URN}}),
    ))
    plan_entry, matched, created, goal_entry = entries
    assert matched["response"]["status"] == "200 OK"
    assert matched["response"]["etag"] == 'W/"1"'
    assert matched["resource"] == existing  # the stored resource, not the submitted one
    assert created["response"]["status"] == "201 Created"
    new_id = id_from_location(created["response"]["location"])
    plan = read(client, f"CarePlan/{id_from_location(plan_entry['response']['location'])}")
    assert plan["subject"] == {"reference": f"Patient/{existing['id']}"}
    assert read(client, f"Goal/{id_from_location(goal_entry['response']['location'])}")["subject"] == {
        "reference": f"Patient/{new_id}"}
    assert search_ids(client, "Patient") == sorted([existing["id"], new_id])
    assert read(client, f"Patient/{existing['id']}")["meta"]["versionId"] == "1"


def test_conditional_references_are_resolved(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    org_id = create(client, organization())["id"]
    plan = care_plan("x") | {
        "subject": {"reference": f"Patient?identifier={PNR}|191212121212"},
        "author": {"reference": "Organization?identifier=urn:oid:1.2.752.29.4.19|SE2321000016-1001"},
    }
    entries = ok(client, bundle("transaction", post(plan)))
    stored = read(client, f"CarePlan/{id_from_location(entries[0]['response']['location'])}")
    assert stored["subject"] == {"reference": f"Patient/{pid}"}
    assert stored["author"] == {"reference": f"Organization/{org_id}"}
    assert entries[0]["resource"] == stored


def test_conditional_reference_with_an_encoded_query(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    plan = care_plan("x") | {
        "subject": {"reference": "Patient?identifier=http%3A%2F%2Felectronichealth.se%2Fidentifier%2Fpersonnummer"
                                 "%7C191212121212"}}
    entries = ok(client, bundle("transaction", post(plan)))
    assert entries[0]["resource"]["subject"] == {"reference": f"Patient/{pid}"}


# -- transaction: processing order ---------------------------------------------------------


def test_get_sees_what_post_and_put_in_the_same_bundle_wrote(client: TestClient) -> None:
    entries = ok(client, bundle(
        "transaction",
        get(f"Patient?identifier={PNR}|191212121212"),
        get("Patient/pat-1"),
        post(patient()),
        put("Patient/pat-1", {**patient(pnr="191111111111"), "id": "pat-1"}),
    ))
    found, read_back, posted, _ = entries
    assert found["response"]["status"] == "200 OK"
    assert found["resource"]["type"] == "searchset"
    assert [e["resource"]["id"] for e in found["resource"]["entry"]] == [
        id_from_location(posted["response"]["location"])]
    assert read_back["resource"]["id"] == "pat-1"
    assert read_back["response"]["etag"] == 'W/"1"'


def test_delete_runs_before_post(client: TestClient) -> None:
    """A conditional create no longer matches a resource the same transaction deletes."""
    old = create(client, patient())["id"]
    criteria = f"identifier={PNR}|191212121212"
    entries = ok(client, bundle("transaction", post(patient(), if_none_exist=criteria),
                                delete(f"Patient/{old}")))
    assert entries[0]["response"]["status"] == "201 Created"
    assert id_from_location(entries[0]["response"]["location"]) != old
    assert entries[1]["response"]["status"] == "204 No Content"
    assert client.get(f"/fhir/Patient/{old}").status_code == 410


def test_delete_runs_before_get(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    before = db_state(client)
    response = send(client, bundle("transaction", get(f"Patient/{pid}"), delete(f"Patient/{pid}")))
    outcome = assert_outcome(response, 410, "deleted")
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert db_state(client) == before


def test_post_referencing_a_resource_deleted_in_the_same_transaction_fails(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    before = db_state(client)
    response = send(client, bundle("transaction", post(care_plan(pid)), delete(f"Patient/{pid}")))
    outcome = assert_outcome(response, 422, "not-found")
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0].resource.subject.reference"]
    assert db_state(client) == before


@pytest.mark.parametrize("patient_first", [True, False])
def test_deleting_a_resource_and_its_referrers_together(client: TestClient, patient_first: bool) -> None:
    """The outcome SHALL NOT depend on the order of the entries (R4 http.html#trules)."""
    pid = create(client, patient())["id"]
    plan_id = create(client, care_plan(pid))["id"]
    goal_id = create(client, goal(pid))["id"]
    deletes = [delete(f"Patient/{pid}"), delete(f"CarePlan/{plan_id}"), delete(f"Goal/{goal_id}")]
    entries = ok(client, bundle("transaction", *(deletes if patient_first else deletes[::-1])))
    assert [e["response"]["status"] for e in entries] == ["204 No Content"] * 3
    for ref in (f"Patient/{pid}", f"CarePlan/{plan_id}", f"Goal/{goal_id}"):
        assert client.get(f"/fhir/{ref}").status_code == 410


def test_deleting_a_resource_that_stays_referenced_fails(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    plan_id = create(client, care_plan(pid))["id"]
    goal_id = create(client, goal(pid))["id"]
    before = db_state(client)
    response = send(client, bundle("transaction", delete(f"CarePlan/{plan_id}"), delete(f"Patient/{pid}")))
    outcome = assert_outcome(response, 409, "conflict")
    assert f"Goal/{goal_id}" in outcome["issue"][0]["diagnostics"]
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert db_state(client) == before


def test_delete_and_update_moving_the_reference_away(client: TestClient) -> None:
    """The reference check sees the state after every entry, not the order they ran in."""
    old = create(client, patient())["id"]
    new = create(client, patient(pnr="191111111111"))["id"]
    plan = create(client, care_plan(old))
    entries = ok(client, bundle("transaction", delete(f"Patient/{old}"),
                                put(f"CarePlan/{plan['id']}", {**plan, "subject": {"reference": f"Patient/{new}"}})))
    assert [e["response"]["status"] for e in entries] == ["204 No Content", "200 OK"]
    assert read(client, f"CarePlan/{plan['id']}")["subject"]["reference"] == f"Patient/{new}"


def test_conditional_delete_in_a_transaction(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    entries = ok(client, bundle("transaction", delete(f"Patient?identifier={PNR}|191212121212")))
    assert entries[0]["response"]["status"] == "204 No Content"
    assert entries[0]["response"]["etag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410


# -- transaction: a resource only once -----------------------------------------------------


def _twice(s: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    pid = s["patient"]
    body = {**patient(), "id": pid}
    return {
        "PUT twice": [put(f"Patient/{pid}", body), put(f"Patient/{pid}", {**body, "gender": "female"})],
        "PUT and DELETE": [put(f"Patient/{s['twin_a']}", {**patient(pnr=TWIN_PNR), "id": s["twin_a"]}),
                           delete(f"Patient/{s['twin_a']}")],
        "DELETE twice": [delete(f"Organization/{s['org']}"), delete(f"Organization/{s['org']}")],
        "same fullUrl": [post(patient(pnr="191111111111"), full_url=P_URN), post(organization(), full_url=P_URN)],
        "conditional PUT resolving to a PUT": [
            put(f"Patient?identifier={PNR}|191212121212", {**patient(), "gender": "female"}),
            put(f"Patient/{pid}", body | {"gender": "other"})],
        "conditional DELETE resolving to a PUT": [
            delete("Organization?identifier=urn:oid:1.2.752.29.4.19|SE2321000016-1001"),
            put(f"Organization/{s['org']}", {**organization(name="Ny"), "id": s["org"]})],
    }


@pytest.mark.parametrize("case", ["PUT twice", "PUT and DELETE", "DELETE twice", "same fullUrl",
                                  "conditional PUT resolving to a PUT", "conditional DELETE resolving to a PUT"])
def test_a_resource_appearing_twice_is_400(client: TestClient, seeded: dict[str, str], case: str) -> None:
    before = db_state(client)
    response = send(client, bundle("transaction", post(patient(pnr="199001019802")), *_twice(seeded)[case]))
    outcome = assert_outcome(response, 400, "invalid")
    assert outcome["issue"][0]["expression"][0] in ("Bundle.entry[1]", "Bundle.entry[2]")
    assert db_state(client) == before


# -- transaction: the response -------------------------------------------------------------


def test_transaction_response_entries_follow_request_order(client: TestClient) -> None:
    existing = create(client, patient())
    org = create(client, organization())
    entries = ok(client, bundle(
        "transaction",
        get(f"Patient/{existing['id']}"),
        delete(f"Organization/{org['id']}"),
        put(f"Patient/{existing['id']}", {**existing, "gender": "female"}),
        put("Practitioner/doc-1", {**practitioner(), "id": "doc-1"}),
        post(patient(pnr="191111111111"), full_url=P_URN),
    ))
    statuses = [e["response"]["status"] for e in entries]
    assert statuses == ["200 OK", "204 No Content", "200 OK", "201 Created", "201 Created"]
    got, deleted, updated, put_created, posted = entries
    assert got["resource"]["gender"] == "female"  # GET runs after the PUT
    assert got["response"]["etag"] == 'W/"2"'
    assert "resource" not in deleted and deleted["response"]["etag"] == 'W/"2"'
    assert updated["resource"]["meta"]["versionId"] == "2"
    assert updated["response"]["etag"] == 'W/"2"'
    assert put_created["response"]["location"] == f"{BASE}/Practitioner/doc-1/_history/1"
    assert put_created["response"]["etag"] == 'W/"1"'
    new_id = id_from_location(posted["response"]["location"])
    assert posted["response"]["location"] == f"{BASE}/Patient/{new_id}/_history/1"
    assert posted["resource"] == read(client, f"Patient/{new_id}")
    assert posted["resource"]["meta"]["versionId"] == "1"


def test_if_match_in_a_transaction(client: TestClient) -> None:
    existing = create(client, patient())
    entries = ok(client, bundle("transaction", put(f"Patient/{existing['id']}", {**existing, "gender": "female"},
                                                   if_match='W/"1"')))
    assert entries[0]["response"]["etag"] == 'W/"2"'


def test_prefer_return_minimal_in_a_transaction(client: TestClient) -> None:
    response = client.post("/fhir", json=bundle("transaction", post(patient())),
                           headers={"Prefer": "return=minimal"})
    assert response.status_code == 200
    entry = response.json()["entry"][0]
    assert "resource" not in entry
    assert entry["response"]["status"] == "201 Created"
    assert client.get(entry["response"]["location"]).status_code == 200


def test_empty_transaction_is_an_empty_response(client: TestClient) -> None:
    response = send(client, {"resourceType": "Bundle", "type": "transaction"})
    assert response.status_code == 200
    assert response.json()["type"] == "transaction-response"
    assert response.json().get("entry", []) == []


def test_full_request_urls_on_this_server_are_accepted(client: TestClient) -> None:
    entries = ok(client, bundle("transaction", put(f"{BASE}/Patient/pat-9", {**patient(), "id": "pat-9"})))
    assert entries[0]["response"]["location"] == f"{BASE}/Patient/pat-9/_history/1"


# -- batch ---------------------------------------------------------------------------------


def test_batch_entries_are_independent(client: TestClient) -> None:
    existing = create(client, patient())
    entries = ok(client, bundle(
        "batch",
        post(patient(pnr="191111111111")),
        post({**patient(pnr="191010101010"), "gender": "bogus"}),
        get("Patient/no-such-patient"),
        put("Patient/pat-2", {**patient(pnr="190101010101"), "id": "pat-2"}),
        put(f"Patient/{existing['id']}", {**existing, "gender": "female"}, if_match='W/"5"'),
        post(care_plan("no-such-patient")),
        get(f"Patient/{existing['id']}"),
    ))
    statuses = [e["response"]["status"] for e in entries]
    assert [s[:3] for s in statuses] == ["201", "400", "404", "201", "412", "422", "200"]
    for failed in (entries[1], entries[2], entries[4], entries[5]):
        outcome = failed["response"]["outcome"]
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["details"]["text"]
        assert "resource" not in failed
    assert entries[1]["response"]["outcome"]["issue"][0]["code"] == "code-invalid"
    assert entries[2]["response"]["outcome"]["issue"][0]["code"] == "not-found"
    assert entries[5]["response"]["outcome"]["issue"][0]["expression"] == ["CarePlan.subject.reference"]
    new_id = id_from_location(entries[0]["response"]["location"])
    assert read(client, f"Patient/{new_id}")["identifier"][0]["value"] == "191111111111"
    assert read(client, "Patient/pat-2")["meta"]["versionId"] == "1"
    assert entries[6]["resource"]["gender"] == "male"
    assert search_ids(client, "CarePlan") == []
    assert len(search_ids(client, "Patient")) == 3


def test_batch_refuses_urn_uuid_references(client: TestClient) -> None:
    entries = ok(client, bundle(
        "batch",
        post(patient(), full_url=P_URN),
        post(care_plan("x") | {"subject": {"reference": P_URN}}),
    ))
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"].startswith("400")
    assert entries[1]["response"]["outcome"]["issue"][0]["code"] == "invalid"
    assert search_ids(client, "CarePlan") == []
    assert len(search_ids(client, "Patient")) == 1


def test_batch_conditional_create_and_delete(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    criteria = f"identifier={PNR}|191212121212"
    entries = ok(client, bundle("batch", post(patient(), if_none_exist=criteria),
                                delete("Organization/none")))
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["resource"]["id"] == pid
    assert entries[1]["response"]["status"].startswith("404")
    entries = ok(client, bundle("batch", delete(f"Patient/{pid}")))
    assert entries[0]["response"]["status"] == "204 No Content"


def test_batch_entry_without_request_fails_alone(client: TestClient) -> None:
    entries = ok(client, bundle("batch", {"resource": patient()}, post(patient())))
    assert entries[0]["response"]["status"].startswith("400")
    assert entries[1]["response"]["status"] == "201 Created"


# -- malformed bundles ---------------------------------------------------------------------


@pytest.mark.parametrize("body, expression", [
    ({"resourceType": "Bundle", "type": "collection", "entry": []}, "Bundle.type"),
    ({"resourceType": "Bundle", "type": "transaction-response", "entry": []}, "Bundle.type"),
    ({"resourceType": "Bundle", "entry": []}, "Bundle.type"),
    ({"resourceType": "Bundle", "type": "transaction", "entry": {"request": {}}}, "Bundle.entry"),
    (patient(), "resourceType"),
    ({"type": "transaction", "entry": []}, "resourceType"),
])
def test_malformed_bundle_is_400(client: TestClient, body: dict[str, Any], expression: str) -> None:
    outcome = assert_outcome(send(client, body), 400, "invalid")
    assert outcome["issue"][0]["expression"] == [expression]


@pytest.mark.parametrize("entry, expression", [
    ({"resource": patient()}, "Bundle.entry[1].request"),
    ({"resource": patient(), "request": {"method": "POST"}}, "Bundle.entry[1].request"),
    ({"resource": patient(), "request": {"url": "Patient"}}, "Bundle.entry[1].request"),
    ({"resource": patient(), "request": {"method": "TRACE", "url": "Patient/x"}}, "Bundle.entry[1].request.method"),
    ({"resource": patient(), "request": {"method": "PATCH", "url": "Patient/x"}}, "Bundle.entry[1].resource"),
    ({"request": {"method": "POST", "url": "Patient"}}, "Bundle.entry[1].resource"),
    ({"request": {"method": "GET", "url": ""}}, "Bundle.entry[1].request.url"),
    ("not an object", "Bundle.entry[1]"),
])
def test_malformed_transaction_entry_is_400(client: TestClient, entry: Any, expression: str) -> None:
    response = send(client, bundle("transaction", post(patient()), entry))
    outcome = assert_outcome(response, 400, "invalid")
    assert outcome["issue"][0]["expression"] == [expression]
    assert client.get("/fhir/_history").json()["total"] == 0


def test_transaction_entry_of_an_unknown_type_is_404(client: TestClient) -> None:
    response = send(client, bundle("transaction", post(patient()), post({"resourceType": "Observation"})))
    assert_outcome(response, 404, "not-found")
    assert client.get("/fhir/_history").json()["total"] == 0


def test_transaction_put_id_must_match_url(client: TestClient) -> None:
    response = send(client, bundle("transaction", put("Patient/a", {**patient(), "id": "b"})))
    outcome = assert_outcome(response, 400, "invalid")
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0].resource.id"]


# -- fullUrl in batch and transaction responses ------------------------------------------------------------


def test_every_transaction_entry_with_a_resource_or_location_has_a_full_url(client: TestClient) -> None:
    existing = create(client, patient())
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5a0c1c5e-0000-4000-8000-000000000002", "resource": patient(pnr="191111111111"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**existing, "gender": "female"},
         "request": {"method": "PUT", "url": f"Patient/{existing['id']}"}},
        {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
        {"request": {"method": "GET", "url": "Patient?gender=female"}},
    ]}
    response = client.post("/fhir", json=bundle, headers={"prefer": "return=minimal"})
    assert response.status_code == 200, response.text
    created, updated, read, searched = response.json()["entry"]
    new_id = created["response"]["location"].split("/")[5]
    assert created["fullUrl"] == f"http://testserver/fhir/Patient/{new_id}"
    assert updated["fullUrl"] == read["fullUrl"] == f"http://testserver/fhir/Patient/{existing['id']}"
    assert read["resource"]["id"] == existing["id"]
    assert searched["fullUrl"] == f"urn:uuid:{searched['resource']['id']}"


def test_every_batch_entry_with_a_resource_has_a_full_url_and_failures_have_none(client: TestClient) -> None:
    existing = create(client, patient())
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient(pnr="191111111111"), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": f"Patient/{existing['id']}/_history/1"}},
        {"request": {"method": "GET", "url": "Patient/nobody"}},
        {"request": {"method": "DELETE", "url": f"Patient/{existing['id']}"}},
    ]}
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    created, vread, missing, deleted = response.json()["entry"]
    assert created["fullUrl"] == f"http://testserver/fhir/Patient/{created['resource']['id']}"
    assert vread["fullUrl"] == f"http://testserver/fhir/Patient/{existing['id']}"
    assert "fullUrl" not in missing and missing["response"]["status"].startswith("404")
    assert "fullUrl" not in deleted and "resource" not in deleted


# -- PATCH entries: a JSON Patch in a Binary (R4 http.html#patch) ---------------------------------------


def patch(url: str, operations: Any, if_match: str | None = None) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(operations).encode()).decode()
    entry: dict[str, Any] = {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                                          "data": data}, "request": {"method": "PATCH", "url": url}}
    if if_match:
        entry["request"]["ifMatch"] = if_match
    return entry


FEMALE = [{"op": "replace", "path": "/gender", "value": "female"}]
FAILS = [{"op": "test", "path": "/gender", "value": "other"}]


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_patch_entries(client: TestClient, kind: str) -> None:
    pid = create(client, patient())["id"]
    entries = ok(client, bundle(kind, patch(f"Patient/{pid}", FEMALE), post(organization())))
    assert entries[0]["response"]["status"].startswith("200")
    assert entries[0]["response"]["etag"] == 'W/"2"'
    assert entries[0]["resource"]["gender"] == "female"
    assert read(client, f"Patient/{pid}")["gender"] == "female"


def test_conditional_patch_entry(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    ok(client, bundle("transaction", patch(f"Patient?identifier={PNR}|191212121212", FEMALE)))
    assert read(client, f"Patient/{pid}")["gender"] == "female"


def test_a_failing_patch_fails_the_transaction(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    before = db_state(client)
    response = send(client, bundle("transaction", post(organization()), patch(f"Patient/{pid}", FAILS)))
    outcome = assert_outcome(response, 422, "processing")
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert db_state(client) == before
    stale = send(client, bundle("transaction", patch(f"Patient/{pid}", FEMALE, if_match='W/"2"')))
    assert_outcome(stale, 412)
    assert_outcome(send(client, bundle("transaction", patch("Patient/nobody", FEMALE))), 404, "not-found")
    assert db_state(client) == before


def test_a_failing_patch_entry_of_a_batch_fails_alone(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    entries = ok(client, bundle("batch", patch(f"Patient/{pid}", FAILS), patch(f"Patient/{pid}", FEMALE),
                                patch(f"Patient/{pid}", [{"op": "replace", "path": "/id", "value": "x"}])))
    assert [e["response"]["status"].split()[0] for e in entries] == ["422", "200", "422"]
    assert entries[0]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert read(client, f"Patient/{pid}")["meta"]["versionId"] == "2"


def test_a_patch_and_a_put_of_the_same_resource_are_refused(client: TestClient) -> None:
    created = create(client, patient())
    response = send(client, bundle("transaction", patch(f"Patient/{created['id']}", FEMALE),
                                   put(f"Patient/{created['id']}", created)))
    assert_outcome(response, 400, "invalid")


def test_fhirpath_patch_entries_are_415(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    entry = {"resource": {"resourceType": "Parameters", "parameter": []},
             "request": {"method": "PATCH", "url": f"Patient/{pid}"}}
    entries = ok(client, bundle("batch", entry))
    assert entries[0]["response"]["status"].startswith("415")
    assert "FHIRPath Patch" in entries[0]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert_outcome(send(client, bundle("transaction", entry)), 415, "not-supported")


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_conditional_read_entries(client: TestClient, kind: str) -> None:
    pid = create(client, patient())["id"]
    reads = [{"request": {"method": "GET", "url": f"Patient/{pid}", "ifNoneMatch": 'W/"1"'}},
             {"request": {"method": "GET", "url": f"Patient/{pid}", "ifNoneMatch": 'W/"7"'}},
             {"request": {"method": "GET", "url": f"Patient/{pid}/_history/1",
                          "ifModifiedSince": "Fri, 31 Dec 9998 23:59:59 GMT"}}]
    entries = ok(client, bundle(kind, *reads))
    assert [e["response"]["status"].split()[0] for e in entries] == ["304", "200", "304"]
    assert "resource" not in entries[0] and entries[0]["response"]["etag"] == 'W/"1"'
    assert entries[1]["resource"]["id"] == pid
    absent = {"request": {"method": "GET", "url": "Patient/nobody", "ifNoneMatch": "*"}}
    if kind == "batch":
        assert ok(client, bundle(kind, absent))[0]["response"]["status"].startswith("404")
    else:
        assert_outcome(send(client, bundle(kind, absent)), 404, "not-found")
