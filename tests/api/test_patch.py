"""PATCH with JSON Patch (R4 http.html#patch, RFC 6902) over HTTP: an update by another route."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from patientkontrakt.fhir.errors import BadRequest
from patientkontrakt.fhir.json_patch import PatchFailed, apply_patch, check_patch
from patientkontrakt.fhir.limits import ContentLimitExceeded
from tests.factories import create, patient

PATCH = {"content-type": "application/json-patch+json"}
CRITERIA = "identifier=http://electronichealth.se/identifier/personnummer|191212121212"


def send(client: TestClient, url: str, operations: Any, **headers: str) -> Any:
    return client.patch(url, content=orjson.dumps(operations), headers={**PATCH, **headers})


def outcome(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    if code is not None:
        assert body["issue"][0]["code"] == code, body
    return body


def versions(client: TestClient, pid: str) -> int:
    return int(client.get(f"/fhir/Patient/{pid}/_history").json()["total"])


def test_patch_makes_a_new_version(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    response = send(client, f"/fhir/Patient/{pid}", [
        {"op": "test", "path": "/gender", "value": "male"},
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/name/0/given/-", "value": "Maria"},
    ])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["gender"] == "female" and body["name"][0]["given"][-1] == "Maria"
    assert body["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["location"].endswith(f"/Patient/{pid}/_history/2")
    assert client.get(f"/fhir/Patient/{pid}").json() == body


def test_prefer_return_like_an_update(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    minimal = send(client, f"/fhir/Patient/{pid}", ops, prefer="return=minimal")
    assert minimal.status_code == 200 and minimal.content == b""
    ops = [{"op": "replace", "path": "/gender", "value": "other"}]
    said = send(client, f"/fhir/Patient/{pid}", ops, prefer="return=OperationOutcome")
    assert said.json()["resourceType"] == "OperationOutcome"


def test_if_match(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    outcome(send(client, f"/fhir/Patient/{pid}", ops, **{"if-match": 'W/"2"'}), 412, "conflict")
    assert versions(client, pid) == 1
    assert send(client, f"/fhir/Patient/{pid}", ops, **{"if-match": 'W/"1"'}).status_code == 200


@pytest.mark.parametrize("ops", [
    [{"op": "test", "path": "/gender", "value": "female"}, {"op": "replace", "path": "/gender", "value": "other"}],
    [{"op": "replace", "path": "/birthDate", "value": "1950-01-01"}, {"op": "remove", "path": "/nothing"}],
    [{"op": "add", "path": "/name/7", "value": {"family": "X"}}],
    [{"op": "remove", "path": "/name/0/given/x"}],
    [{"op": "test", "path": "/active", "value": 1}],
])
def test_a_patch_that_cannot_apply_is_422_and_stores_nothing(client: TestClient, ops: list[Any]) -> None:
    pid = create(client, {**patient(), "active": True})["id"]
    outcome(send(client, f"/fhir/Patient/{pid}", ops), 422, "processing")
    assert versions(client, pid) == 1


@pytest.mark.parametrize("ops", [
    [{"op": "replace", "path": "/gender", "value": "not-a-gender"}],
    [{"op": "add", "path": "/unknownElement", "value": 1}],
    [{"op": "replace", "path": "/id", "value": "another"}],
    [{"op": "replace", "path": "/resourceType", "value": "Practitioner"}],
    [{"op": "remove", "path": "/id"}],
    [{"op": "replace", "path": "", "value": {"resourceType": "Patient"}}],
])
def test_an_invalid_result_is_422_and_stores_nothing(client: TestClient, ops: list[Any]) -> None:
    pid = create(client, patient())["id"]
    outcome(send(client, f"/fhir/Patient/{pid}", ops), 422)
    assert versions(client, pid) == 1


@pytest.mark.parametrize("raw", [
    b"{}", b"[]", b"not json", b'[{"op": "frobnicate", "path": "/a"}]', b'[{"op": "add", "path": "/a"}]',
    b'[{"op": "remove"}]', b'[{"op": "remove", "path": "gender"}]', b'[{"op": "move", "path": "/a"}]',
    b'[{"op": "remove", "path": "/a~2"}]', b'["remove"]',
])
def test_a_malformed_patch_is_400(client: TestClient, raw: bytes) -> None:
    pid = create(client, patient())["id"]
    outcome(client.patch(f"/fhir/Patient/{pid}", content=raw, headers=PATCH), 400, "invalid")
    assert versions(client, pid) == 1


@pytest.mark.parametrize("content_type", ["application/fhir+json", "application/json", "text/plain", ""])
def test_other_content_types_are_415(client: TestClient, content_type: str) -> None:
    pid = create(client, patient())["id"]
    response = client.patch(f"/fhir/Patient/{pid}", content=b"[]", headers={"content-type": content_type})
    body = outcome(response, 415, "not-supported")
    if content_type.startswith("application/"):
        assert "FHIRPath Patch" in body["issue"][0]["diagnostics"]


def test_absent_deleted_and_unknown_type(client: TestClient) -> None:
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    outcome(send(client, "/fhir/Patient/nobody", ops), 404, "not-found")
    outcome(send(client, "/fhir/Patient/not$valid", ops), 404, "not-found")
    outcome(send(client, "/fhir/Observation/x", ops), 404, "not-found")
    pid = create(client, patient())["id"]
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    outcome(send(client, f"/fhir/Patient/{pid}", ops), 410, "deleted")


def test_a_patch_that_changes_nothing_is_no_new_version(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    response = send(client, f"/fhir/Patient/{pid}", [{"op": "replace", "path": "/gender", "value": "male"}])
    assert response.status_code == 200 and response.json()["meta"]["versionId"] == "1"


def test_a_reference_to_nothing_is_422(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    ops = [{"op": "add", "path": "/managingOrganization", "value": {"reference": "Organization/nowhere"}}]
    outcome(send(client, f"/fhir/Patient/{pid}", ops), 422)
    assert versions(client, pid) == 1


def test_x_provenance_is_stored_with_the_new_version(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    provenance = {"resourceType": "Provenance", "agent": [{"who": {"display": "Test"}}]}
    response = send(client, f"/fhir/Patient/{pid}", [{"op": "replace", "path": "/gender", "value": "female"}],
                    **{"x-provenance": orjson.dumps(provenance).decode()})
    assert response.status_code == 200, response.text
    found = client.get("/fhir/Provenance", params={"target": f"Patient/{pid}"}).json()
    assert [e["resource"]["target"][0]["reference"] for e in found["entry"]] == [f"Patient/{pid}/_history/2"]


def test_conditional_patch(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    response = send(client, f"/fhir/Patient?{CRITERIA}", ops)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == pid and response.json()["gender"] == "female"
    outcome(send(client, "/fhir/Patient?identifier=nobody", ops), 404, "not-found")
    create(client, patient())
    outcome(send(client, f"/fhir/Patient?{CRITERIA}", ops), 412)


def test_too_deep_and_too_large(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    response = send(client, f"/fhir/Patient/{pid}", [{"op": "add", "path": "/extension", "value": deep}])
    assert response.status_code == 413, response.text


# -- the applier (RFC 6902 appendix A) ----------------------------------------------------------------


def apply(doc: Any, ops: list[dict[str, Any]]) -> Any:
    return apply_patch(doc, check_patch(ops), 10_000)


def test_rfc_6902_examples() -> None:
    assert apply({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}]) == {"foo": "bar", "baz": "qux"}
    assert apply({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}]) == \
        {"foo": ["bar", "qux", "baz"]}
    assert apply({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}]) == {"foo": "bar"}
    assert apply({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}]) == {"foo": ["bar", "baz"]}
    assert apply({"baz": "qux"}, [{"op": "replace", "path": "/baz", "value": "boo"}]) == {"baz": "boo"}
    moved = apply({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
                  [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}])
    assert moved == {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}
    assert apply({"foo": ["all", "grass", "cows", "eat"]}, [{"op": "move", "from": "/foo/1", "path": "/foo/3"}]) == \
        {"foo": ["all", "cows", "eat", "grass"]}
    assert apply({"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}]) == \
        {"foo": "bar", "child": {"grandchild": {}}}
    assert apply({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]) == \
        {"foo": ["bar", ["abc", "def"]]}
    assert apply({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}]) == {"/": 9, "~1": 10}
    assert apply({"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}]) == {"a": {"b": 1}, "c": {"b": 1}}
    assert apply({"a": [1, 2.0]}, [{"op": "test", "path": "/a", "value": [1.0, 2]}]) == {"a": [1, 2.0]}


@pytest.mark.parametrize("doc, ops", [
    ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}]),
    ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}]),
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}]),
    ({"a": True}, [{"op": "test", "path": "/a", "value": 1}]),
    ({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/c"}]),
    ({"a": [1]}, [{"op": "remove", "path": "/a/01"}]),
    ({"a": [1]}, [{"op": "replace", "path": "/a/1", "value": 2}]),
    ({"a": 1}, [{"op": "remove", "path": ""}]),
])
def test_what_cannot_apply(doc: Any, ops: list[dict[str, Any]]) -> None:
    with pytest.raises(PatchFailed):
        apply(doc, ops)


def test_the_input_is_not_changed() -> None:
    doc = {"a": [1, 2]}
    with pytest.raises(PatchFailed):
        apply(doc, [{"op": "remove", "path": "/a/0"}, {"op": "test", "path": "/a", "value": []}])
    assert doc == {"a": [1, 2]}


def test_copies_cannot_blow_up_the_document() -> None:
    ops = [{"op": "copy", "from": "", "path": f"/c{i}"} for i in range(40)]
    with pytest.raises(ContentLimitExceeded):
        apply({"a": "x" * 100}, ops)


def test_check_patch_refuses_what_is_not_a_patch() -> None:
    for document in ({}, [], [1], [{"op": "copy", "path": "/a"}], [{"op": "test", "path": "/a"}]):
        with pytest.raises(BadRequest):
            check_patch(document)
