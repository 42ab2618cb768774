"""read, vread, create, update, delete over HTTP (R4 http.html), valid and invalid input."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import care_plan, create, patient


def test_create_assigns_id_version_and_headers(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json={**patient(), "id": "client-chosen"})
    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "client-chosen"  # R4: the server ignores an id on create
    assert body["meta"]["versionId"] == "1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in response.headers


def test_read_returns_what_was_stored(client: TestClient) -> None:
    created = create(client, patient())
    response = client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'


def test_read_unknown_is_404_operation_outcome(client: TestClient) -> None:
    response = client.get("/fhir/Patient/does-not-exist")
    assert response.status_code == 404
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-found"
    assert outcome["issue"][0]["details"]["text"]


def test_unknown_type_is_404(client: TestClient) -> None:
    assert client.get("/fhir/Observation/1").status_code == 404
    assert client.post("/fhir/Observation", json={"resourceType": "Observation"}).status_code == 404


def test_update_makes_a_new_version_and_vread_keeps_the_old(client: TestClient) -> None:
    created = create(client, patient())
    pid = created["id"]
    changed = {**created, "gender": "female"}
    response = client.put(f"/fhir/Patient/{pid}", json=changed)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").json()["gender"] == "male"
    assert client.get(f"/fhir/Patient/{pid}/_history/2").json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 404


def test_update_with_same_content_is_not_a_new_version(client: TestClient) -> None:
    created = create(client, patient())
    response = client.put(f"/fhir/Patient/{created['id']}", json=created)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "1"


def test_update_creates_with_client_id(client: TestClient) -> None:
    response = client.put("/fhir/Patient/pat-1", json={**patient(), "id": "pat-1"})
    assert response.status_code == 201
    assert response.json()["id"] == "pat-1"
    assert client.get("/fhir/Patient/pat-1").status_code == 200


def test_update_id_must_match_url(client: TestClient) -> None:
    assert client.put("/fhir/Patient/a", json={**patient(), "id": "b"}).status_code == 400
    assert client.put("/fhir/Patient/a", json=patient()).status_code == 400
    wrong_type = {**patient(), "resourceType": "Practitioner", "id": "a"}
    assert client.put("/fhir/Patient/a", json=wrong_type).status_code == 400


def test_if_match_mismatch_is_412_and_changes_nothing(client: TestClient) -> None:
    created = create(client, patient())
    pid = created["id"]
    stale = client.put(f"/fhir/Patient/{pid}", json={**created, "gender": "female"}, headers={"If-Match": 'W/"0"'})
    assert stale.status_code == 412
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"
    fresh = client.put(f"/fhir/Patient/{pid}", json={**created, "gender": "female"}, headers={"If-Match": 'W/"1"'})
    assert fresh.status_code == 200


def test_delete_then_read_is_410_and_history_keeps_it(client: TestClient) -> None:
    created = create(client, patient())
    pid = created["id"]
    response = client.delete(f"/fhir/Patient/{pid}")
    assert response.status_code == 204
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204  # idempotent, no new version
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]


def test_delete_unknown_is_404(client: TestClient) -> None:
    assert client.delete("/fhir/Patient/nobody").status_code == 404


def test_delete_of_referenced_resource_is_409(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    plan = create(client, care_plan(pid))
    response = client.delete(f"/fhir/Patient/{pid}")
    assert response.status_code == 409
    assert f"CarePlan/{plan['id']}" in response.json()["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200


def test_reference_to_missing_resource_is_422_with_expression(client: TestClient) -> None:
    response = client.post("/fhir/CarePlan", json=care_plan("no-such-patient"))
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["CarePlan.subject.reference"]


def test_conditional_create(client: TestClient) -> None:
    criteria = "identifier=http://electronichealth.se/identifier/personnummer|191212121212"
    first = client.post("/fhir/Patient", json=patient(), headers={"If-None-Exist": criteria})
    assert first.status_code == 201
    again = client.post("/fhir/Patient", json=patient(), headers={"If-None-Exist": criteria})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    create(client, patient(family="Dubblett"))  # a second patient with the same number
    assert client.post("/fhir/Patient", json=patient(), headers={"If-None-Exist": criteria}).status_code == 412


def test_conditional_update(client: TestClient) -> None:
    url = "/fhir/Patient?identifier=http://electronichealth.se/identifier/personnummer|191212121212"
    created = client.put(url, json=patient())
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = client.put(url, json={**patient(), "gender": "female"})
    assert updated.status_code == 200
    assert updated.json()["id"] == pid and updated.json()["meta"]["versionId"] == "2"
    assert client.put(url, json={**patient(), "id": "other"}).status_code == 400


def test_prefer_return(client: TestClient) -> None:
    minimal = client.post("/fhir/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"]
    outcome = client.post("/fhir/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.json()["resourceType"] == "OperationOutcome"


def test_invalid_resource_is_400_with_expression(client: TestClient) -> None:
    response = client.post("/fhir/CarePlan", json={**care_plan("x"), "status": "bogus"})
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["code"] == "code-invalid"
    assert issue["expression"] == ["CarePlan.status"]


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post("/fhir/Patient", content=b'{"resourceType": "Patient",')
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post("/fhir/Patient", content=b"<Patient/>", headers={"content-type": "application/fhir+xml"})
    assert response.status_code == 415


def test_xml_accept_is_406(client: TestClient) -> None:
    created = create(client, patient())
    response = client.get(f"/fhir/Patient/{created['id']}", headers={"accept": "application/fhir+xml"})
    assert response.status_code == 406
    assert client.get("/fhir/metadata?_format=xml").status_code == 406
