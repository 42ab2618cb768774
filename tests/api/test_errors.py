"""Every non-2xx answer is an OperationOutcome with the right status and issue.code (design §3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from api.app import create_app
from tests.conftest import BASE_URL, engine_token, make_settings
from tests.factories import care_plan, create, patient


def assert_outcome(response: Response, status: int, code: str, expression: list[str] | None = None
                   ) -> dict[str, Any]:
    """The response is ``status`` with an OperationOutcome whose first issue has ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"], outcome
    issue = outcome["issue"][0]
    assert issue["severity"] in ("error", "fatal")
    assert issue["code"] == code
    assert issue["diagnostics"]  # English, for the developer
    assert issue["details"]["text"]  # Swedish, for a person
    assert issue["details"]["text"] != issue["diagnostics"]
    if expression is not None:
        assert issue["expression"] == expression
    return outcome


# -- the body ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b'{"resourceType": "Patient",',
    b"{'resourceType': 'Patient'}",
    b'{"resourceType": "Patient"} trailing',
    b"\xff\xfe not utf-8",
])
def test_malformed_json_is_400(client: TestClient, raw: bytes) -> None:
    assert_outcome(client.post("/fhir/Patient", content=raw), 400, "invalid")
    assert_outcome(client.put("/fhir/Patient/pat-1", content=raw), 400, "invalid")
    assert_outcome(client.post("/fhir", content=raw), 400, "invalid")


@pytest.mark.parametrize("raw", [b"[]", b'[{"resourceType": "Patient"}]', b'"Patient"', b"42", b"null", b"true"])
def test_body_that_is_not_an_object_is_400(client: TestClient, raw: bytes) -> None:
    assert_outcome(client.post("/fhir/Patient", content=raw), 400, "invalid")
    assert_outcome(client.post("/fhir", content=raw), 400, "invalid")


@pytest.mark.parametrize("raw", [b"", b"   \n"])
def test_empty_body_is_400(client: TestClient, raw: bytes) -> None:
    assert_outcome(client.post("/fhir/Patient", content=raw), 400, "invalid")


def test_unknown_element_is_400_with_expression(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json={**patient(), "favouriteColour": "blå"})
    outcome = assert_outcome(response, 400, "structure", ["Patient.favouriteColour"])
    assert "favouriteColour" in outcome["issue"][0]["diagnostics"]


def test_unknown_nested_element_is_400_with_expression(client: TestClient) -> None:
    body = patient()
    body["name"][0]["nickname"] = "Tolle"
    assert_outcome(client.post("/fhir/Patient", json=body), 400, "structure", ["Patient.name[0].nickname"])


@pytest.mark.parametrize("element, value, expression", [
    ("active", "yes", "Patient.active"),
    ("active", 1, "Patient.active"),
    ("gender", 1, "Patient.gender"),
    ("birthDate", 19121212, "Patient.birthDate"),
    ("multipleBirthInteger", "2", "Patient.multipleBirthInteger"),
    ("multipleBirthInteger", True, "Patient.multipleBirthInteger"),
    ("deceasedBoolean", "false", "Patient.deceasedBoolean"),
])
def test_wrong_primitive_json_type_is_400(client: TestClient, element: str, value: Any, expression: str) -> None:
    response = client.post("/fhir/Patient", json={**patient(), element: value})
    assert_outcome(response, 400, "value", [expression])


@pytest.mark.parametrize("element, value, expression", [
    ("gender", None, "Patient.gender"),
    ("name", [], "Patient.name"),
    ("name", None, "Patient.name"),
    ("name", [None], "Patient.name[0]"),
    ("identifier", [{}], "Patient.identifier[0]"),
    ("maritalStatus", {}, "Patient.maritalStatus"),
    ("gender", ["male"], "Patient.gender"),
    ("name", {"family": "Tolvansson"}, "Patient.name"),
])
def test_null_empty_and_wrongly_shaped_values_are_400(client: TestClient, element: str, value: Any,
                                                       expression: str) -> None:
    response = client.post("/fhir/Patient", json={**patient(), element: value})
    assert_outcome(response, 400, "structure", [expression])


def test_empty_string_is_400(client: TestClient) -> None:
    assert_outcome(client.post("/fhir/Patient", json={**patient(), "gender": ""}), 400, "value", ["Patient.gender"])


def test_code_outside_required_value_set_is_400(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json={**patient(), "gender": "okänd"})
    outcome = assert_outcome(response, 400, "code-invalid", ["Patient.gender"])
    assert "female" in outcome["issue"][0]["diagnostics"]


def test_invalid_resource_changes_nothing(client: TestClient) -> None:
    created = create(client, patient())
    response = client.put(f"/fhir/Patient/{created['id']}", json={**created, "active": "yes"})
    assert_outcome(response, 400, "value")
    assert client.get(f"/fhir/Patient/{created['id']}").json() == created
    assert client.get("/fhir/_history").json()["total"] == 1


def test_resource_type_must_match_the_url(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json={**patient(), "resourceType": "Practitioner"})
    assert_outcome(response, 400, "invalid", ["resourceType"])
    assert_outcome(client.post("/fhir/Patient", json={"gender": "male"}), 400, "invalid", ["resourceType"])


# -- routes, methods and types -------------------------------------------------------------


@pytest.mark.parametrize("method, path", [
    ("GET", "/fhir/Observation"),
    ("GET", "/fhir/Observation/1"),
    ("GET", "/fhir/Observation/1/_history"),
    ("GET", "/fhir/Observation/1/_history/1"),
    ("GET", "/fhir/Observation/_history"),
    ("POST", "/fhir/Observation"),
    ("PUT", "/fhir/Observation/1"),
    ("DELETE", "/fhir/Observation/1"),
    ("POST", "/fhir/Observation/_search"),
    ("GET", "/fhir/patient/1"),
    ("GET", "/fhir/AuditEvent/1/_history/1"),
])
def test_unknown_type_is_404(client: TestClient, method: str, path: str) -> None:
    body = {"resourceType": "Observation", "id": "1", "status": "final", "code": {"text": "x"}}
    response = client.request(method, path, json=body if method in ("POST", "PUT") and "_search" not in path else None)
    outcome = assert_outcome(response, 404, "not-found")
    assert "type" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("path", [
    "/fhir/Patient/1/_history/1/extra",
    "/fhir/Patient/1/everything",
    "/fhir/Patient/1/_history/1/_history",
    "/fhir/a/b/c/d/e",
])
def test_unknown_route_under_fhir_is_404(client: TestClient, path: str) -> None:
    assert_outcome(client.get(path), 404, "not-found")


def test_unknown_id_and_invalid_id_are_404(client: TestClient) -> None:
    assert_outcome(client.get("/fhir/Patient/nobody"), 404, "not-found")
    assert_outcome(client.get("/fhir/Patient/not$an$id"), 404, "not-found")
    assert_outcome(client.get("/fhir/Patient/" + "x" * 65), 404, "not-found")
    assert_outcome(client.get("/fhir/Patient/nobody/_history/1"), 404, "not-found")
    pid = create(client, patient())["id"]
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/2"), 404, "not-found")
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/one"), 404, "not-found")


def test_put_with_an_invalid_id_is_400(client: TestClient) -> None:
    assert_outcome(client.put("/fhir/Patient/not$an$id", json={**patient(), "id": "not$an$id"}), 400, "invalid")


@pytest.mark.parametrize("method, path, allowed", [
    ("PATCH", "/fhir/Patient/pat-1/_history/1", {"GET"}),
    ("PATCH", "/fhir", {"POST"}),
    ("PUT", "/fhir", {"POST"}),
    ("DELETE", "/fhir", {"POST"}),
    ("GET", "/fhir", {"POST"}),
    ("PUT", "/fhir/Patient/pat-1/_history/1", {"GET", "HEAD"}),
])
def test_unsupported_method_is_405_with_allow(client: TestClient, method: str, path: str, allowed: set[str]) -> None:
    create(client, patient())
    response = client.request(method, path, content=b"{}")
    assert_outcome(response, 405, "not-supported")
    assert allowed <= {m.strip() for m in response.headers["allow"].split(",")}
    assert method not in response.headers["allow"]


# -- content negotiation -------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [
    "application/fhir+xml", "application/xml", "text/plain", "application/x-www-form-urlencoded", "",
])
def test_wrong_content_type_is_415(client: TestClient, content_type: str) -> None:
    raw = b'{"resourceType": "Patient"}'
    headers = {"content-type": content_type}
    assert_outcome(client.post("/fhir/Patient", content=raw, headers=headers), 415, "not-supported")
    assert_outcome(client.put("/fhir/Patient/a", content=raw, headers=headers), 415, "not-supported")
    assert_outcome(client.post("/fhir", content=raw, headers=headers), 415, "not-supported")
    assert client.get("/fhir/_history").json()["total"] == 0


@pytest.mark.parametrize("content_type", ["application/fhir+json", "application/json",
                                          "application/fhir+json; charset=utf-8", "application/json+fhir"])
def test_json_content_types_are_accepted(client: TestClient, content_type: str) -> None:
    response = client.post("/fhir/Patient", json=patient(), headers={"content-type": content_type})
    assert response.status_code == 201


def test_search_post_with_a_json_body_is_415(client: TestClient) -> None:
    response = client.post("/fhir/Patient/_search", json={"gender": "male"})
    assert_outcome(response, 415, "not-supported")


@pytest.mark.parametrize("accept", ["application/fhir+xml", "application/xml", "text/html", "text/turtle"])
def test_accept_xml_is_406(client: TestClient, accept: str) -> None:
    pid = create(client, patient())["id"]
    headers = {"accept": accept}
    for path in ("/fhir/metadata", "/fhir/Patient", f"/fhir/Patient/{pid}", f"/fhir/Patient/{pid}/_history",
                 f"/fhir/Patient/{pid}/_history/1", "/fhir/_history"):
        assert_outcome(client.get(path, headers=headers), 406, "not-supported")
    assert_outcome(client.post("/fhir/Patient", json=patient(), headers=headers), 406, "not-supported")
    assert len(client.get("/fhir/Patient").json()["entry"]) == 1


@pytest.mark.parametrize("fmt", ["xml", "application/fhir+xml", "text/xml", "ttl", "html"])
def test_format_xml_is_406(client: TestClient, fmt: str) -> None:
    pid = create(client, patient())["id"]
    for path in ("/fhir/metadata", "/fhir/Patient", f"/fhir/Patient/{pid}", "/fhir/_history"):
        outcome = assert_outcome(client.get(path, params={"_format": fmt}), 406, "not-supported")
        assert outcome["issue"][0]["expression"] == ["_format"]


@pytest.mark.parametrize("accept", ["application/fhir+json", "application/json", "*/*",
                                    "application/fhir+xml;q=0.9, application/fhir+json",
                                    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"])
def test_json_or_anything_is_acceptable(client: TestClient, accept: str) -> None:
    pid = create(client, patient())["id"]
    response = client.get(f"/fhir/Patient/{pid}", headers={"accept": accept})
    assert response.status_code == 200
    # application/json asked for is echoed (api/rest.py, tests/api/test_rest.py)
    expected = "application/json" if accept == "application/json" else "application/fhir+json"
    assert response.headers["content-type"].startswith(expected)
    assert client.get("/fhir/metadata", params={"_format": "json"}).status_code == 200
    assert client.get("/fhir/metadata", params={"_format": "application/fhir+json"}).status_code == 200


# -- body size -----------------------------------------------------------------------------


LIMIT = 2000


@pytest.fixture
def small_client(clean_pg: str) -> Iterator[TestClient]:
    """The app with a 2000-byte body limit."""
    settings = make_settings(clean_pg, max_body_bytes=LIMIT)
    with TestClient(create_app(settings, care_unit_rules=False), base_url=BASE_URL) as test_client:
        test_client.headers.update({"content-type": "application/fhir+json",
                                    "authorization": f"Bearer {engine_token(settings)}"})
        yield test_client


def _big_patient() -> bytes:
    body = patient()
    body["name"][0]["given"] = ["Tolvan"] * 400
    raw = orjson.dumps(body)
    assert len(raw) > LIMIT
    return raw


def test_body_within_the_limit_is_accepted(small_client: TestClient) -> None:
    assert small_client.post("/fhir/Patient", json=patient()).status_code == 201


def test_content_length_over_the_limit_is_413(small_client: TestClient) -> None:
    raw = _big_patient()
    response = small_client.post("/fhir/Patient", content=raw)
    assert response.request.headers["content-length"] == str(len(raw))
    outcome = assert_outcome(response, 413, "too-long")
    assert str(LIMIT) in outcome["issue"][0]["diagnostics"]
    assert_outcome(small_client.post("/fhir", content=raw), 413, "too-long")
    assert small_client.get("/fhir/_history").json()["total"] == 0


def test_chunked_body_over_the_limit_is_413(small_client: TestClient) -> None:
    raw = _big_patient()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(raw), 500):
            yield raw[start:start + 500]

    response = small_client.post("/fhir/Patient", content=chunks())
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_outcome(response, 413, "too-long")
    assert small_client.get("/fhir/_history").json()["total"] == 0


def test_chunked_body_within_the_limit_is_accepted(small_client: TestClient) -> None:
    raw = orjson.dumps(patient())

    def chunks() -> Iterator[bytes]:
        yield raw[:50]
        yield raw[50:]

    response = small_client.post("/fhir/Patient", content=chunks())
    assert response.status_code == 201, response.text


def test_bad_content_length_is_400(small_client: TestClient) -> None:
    response = small_client.post("/fhir/Patient", content=b"{}", headers={"content-length": "abc"})
    assert_outcome(response, 400, "invalid")


# -- version and state conflicts -----------------------------------------------------------


def test_if_match_mismatch_is_412(client: TestClient) -> None:
    created = create(client, patient())
    pid = created["id"]
    for etag in ('W/"2"', 'W/"0"', '"9"', "W/\"x\""):
        assert_outcome(client.put(f"/fhir/Patient/{pid}", json={**created, "gender": "female"},
                                  headers={"If-Match": etag}), 412, "conflict")
        assert_outcome(client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": etag}), 412, "conflict")
    assert client.get(f"/fhir/Patient/{pid}").json() == created
    assert_outcome(client.put("/fhir/Patient/new-one", json={**patient(), "id": "new-one"},
                              headers={"If-Match": 'W/"1"'}), 412, "conflict")
    assert client.get("/fhir/Patient/new-one").status_code == 404


def test_conditional_create_matching_several_is_412(client: TestClient) -> None:
    create(client, patient())
    create(client, patient())
    criteria = "identifier=http://electronichealth.se/identifier/personnummer|191212121212"
    response = client.post("/fhir/Patient", json=patient(), headers={"If-None-Exist": criteria})
    assert_outcome(response, 412, "conflict")


def test_read_of_deleted_is_410(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    response = client.get(f"/fhir/Patient/{pid}")
    assert_outcome(response, 410, "deleted")
    assert response.headers["etag"] == 'W/"2"'
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/2"), 410, "deleted")
    assert_outcome(client.get(f"/fhir/Patient/{pid}", params={"_summary": "true"}), 410, "deleted")


def test_delete_of_referenced_resource_is_409(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    plan_id = create(client, care_plan(pid))["id"]
    outcome = assert_outcome(client.delete(f"/fhir/Patient/{pid}"), 409, "conflict")
    assert f"CarePlan/{plan_id}" in outcome["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200


def test_reference_to_missing_resource_is_422(client: TestClient) -> None:
    assert_outcome(client.post("/fhir/CarePlan", json=care_plan("nobody")), 422, "not-found",
                   ["CarePlan.subject.reference"])


@pytest.mark.parametrize("reference", ["urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
                                       "Patient?identifier=x|y", "not a reference", "Patient/not$an$id"])
def test_unresolvable_reference_outside_a_transaction_is_400(client: TestClient, reference: str) -> None:
    body = {**care_plan("x"), "subject": {"reference": reference}}
    assert_outcome(client.post("/fhir/CarePlan", json=body), 400, "invalid", ["CarePlan.subject.reference"])


# -- search --------------------------------------------------------------------------------


def test_unknown_search_parameter_is_400_only_when_strict(client: TestClient) -> None:
    response = client.get("/fhir/Patient", params={"shoe-size": "42"}, headers={"Prefer": "handling=strict"})
    assert_outcome(response, 400, "invalid", ["shoe-size"])
    lenient = client.get("/fhir/Patient", params={"shoe-size": "42"})
    assert lenient.status_code == 200
    warnings = [e["resource"] for e in lenient.json()["entry"] if e["search"]["mode"] == "outcome"]
    assert warnings[0]["issue"][0]["severity"] == "warning"


@pytest.mark.parametrize("params, expression", [
    ({"birthdate": "yesterday"}, "birthdate"), ({"_count": "many"}, "_count"), ({"_sort": "shoe-size"}, "_sort"),
])
def test_bad_search_values_are_400(client: TestClient, params: dict[str, str], expression: str) -> None:
    assert_outcome(client.get("/fhir/Patient", params=params), 400, "invalid", [expression])
