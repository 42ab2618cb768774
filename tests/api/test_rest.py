"""The HTTP surface every URL shares (api/rest.py; R4 http.html, RFC 9110): HEAD, the base and
type URLs with a trailing slash, ``application/json`` echoed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.routing import Match

from api.fhir import READ_FIRST, WRITE_FIRST
from api.rest import wants_plain_json
from tests.factories import create, patient

# -- HEAD -------------------------------------------------------------------------------------------


def _same_but_body(get: httpx.Response, head: httpx.Response) -> None:
    assert head.status_code == get.status_code, head.text
    assert head.content == b""
    varying = {"date", "x-request-id"}
    assert {k: v for k, v in head.headers.items() if k not in varying} == \
        {k: v for k, v in get.headers.items() if k not in varying}


def test_head_of_a_read_is_the_get_without_its_body(client: TestClient) -> None:
    created = create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    get, head = client.get(url), client.head(url)
    assert get.status_code == 200 and get.content
    _same_but_body(get, head)
    assert head.headers["etag"] == 'W/"1"'
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers["content-type"].startswith("application/fhir+json")


@pytest.mark.parametrize("path", ["/fhir/Patient/{id}/_history/1", "/fhir/Patient/{id}/_history", "/fhir/metadata",
                                  "/fhir/Patient/does-not-exist", "/fhir/Observation/1", "/fhir/.well-known/"
                                  "smart-configuration", "/", "/healthz", "/static/site.css", "/no-such-page"])
def test_head_answers_as_get_on_every_kind_of_url(client: TestClient, path: str) -> None:
    created = create(client, patient())
    url = path.format(id=created["id"])
    _same_but_body(client.get(url), client.head(url))


def test_head_of_a_search_counts_but_sends_nothing(client: TestClient) -> None:
    create(client, patient())
    head = client.head("/fhir/Patient", params={"_total": "accurate"})
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0


def test_head_needs_the_token_a_get_needs(client: TestClient) -> None:
    created = create(client, patient())
    response = client.head(f"/fhir/Patient/{created['id']}", headers={"authorization": ""})
    assert response.status_code == 401 and response.content == b""
    assert "www-authenticate" in response.headers


def test_head_is_in_allow_where_get_is(client: TestClient) -> None:
    response = client.request("TRACE", "/healthz")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


# -- the trailing slash -------------------------------------------------------------------------------


def test_a_transaction_posted_to_the_base_with_a_slash_is_served(client: TestClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5a0c1c5e-0000-4000-8000-000000000001", "resource": patient(),
         "request": {"method": "POST", "url": "Patient"}}]}
    response = client.post("/fhir/", json=bundle, follow_redirects=False)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "transaction-response"


def test_a_type_with_a_slash_is_served(client: TestClient) -> None:
    created = create(client, patient())
    search = client.get("/fhir/Patient/", follow_redirects=False)
    assert search.status_code == 200, search.text
    assert [e["resource"]["id"] for e in search.json()["entry"]] == [created["id"]]
    made = client.post("/fhir/Patient/", json=patient(pnr="191111111111"), follow_redirects=False)
    assert made.status_code == 201, made.text
    read = client.get(f"/fhir/Patient/{created['id']}/", follow_redirects=False)
    assert read.status_code == 200 and read.json()["id"] == created["id"]


def test_the_slash_does_not_open_the_public_urls_wider(client: TestClient) -> None:
    assert client.get("/fhir/metadata/", headers={"authorization": ""}).status_code == 200
    assert client.get("/fhir/Patient/", headers={"authorization": ""}).status_code == 401


def test_other_redirects_are_kept(client: TestClient) -> None:
    slashed = client.get("/personal/", follow_redirects=False)
    assert slashed.status_code == 307 and slashed.headers["location"] == "http://testserver/personal"
    response = client.get("/lang", params={"to": "en", "next": "/personal"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/personal"


# -- application/json -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "accept", "plain"), [
    (b"", None, False),
    (b"", "application/json", True),
    (b"", "application/fhir+json", False),
    (b"", "application/fhir+json, application/json", False),
    (b"", "application/fhir+json;q=0.5, application/json", True),
    (b"", "application/json;q=0, application/fhir+json", False),
    (b"", "*/*", False),
    (b"", "application/json, */*;q=0.8", True),
    (b"_format=json", None, True),
    (b"_format=application%2Fjson", "application/fhir+json", True),
    (b"_format=application%2Ffhir%2Bjson", "application/json", False),
])
def test_which_json_the_client_wants(query: bytes, accept: str | None, plain: bool) -> None:
    assert wants_plain_json(query, accept) is plain


def test_accept_application_json_is_echoed(client: TestClient) -> None:
    created = create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    plain = client.get(url, headers={"accept": "application/json"})
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "application/json; charset=utf-8"
    assert plain.json() == created
    assert client.get(url, params={"_format": "json"}).headers["content-type"].startswith("application/json")
    assert client.get(url).headers["content-type"].startswith("application/fhir+json")
    assert client.get("/fhir/Patient", headers={"accept": "application/json"}).headers["content-type"] \
        .startswith("application/json")
    missing = client.get("/fhir/Patient/nobody", headers={"accept": "application/json"})
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/json")
    assert missing.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("ask", [{"headers": {"accept": "application/fhir+xml"}}, {"params": {"_format": "xml"}}])
def test_xml_is_a_406_operation_outcome(client: TestClient, ask: dict[str, Any]) -> None:
    created = create(client, patient())
    response = client.get(f"/fhir/Patient/{created['id']}", **ask)
    assert response.status_code == 406
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.json()["resourceType"] == "OperationOutcome"


# -- read by id first in the route table ---------------------------------------------------------


def _reached(routes: list[Any], method: str, path: str) -> tuple[Any, ...]:
    """What the router does with ``method path``: the endpoint of the first route that matches
    fully, else the methods of the first that matches the path only (its 405's Allow)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return ("endpoint", getattr(route, "endpoint", route))
        if match == Match.PARTIAL and partial is None:
            partial = ("allow", frozenset(route.methods))
    return partial or ("no route",)


def test_the_first_route_changes_nothing_that_answers(client: TestClient) -> None:
    """``fhir.READ_FIRST`` heads the route table for speed; every request reaches what it reached
    through the table without it (api/fhir.py)."""
    routes = list(client.app.router.routes)  # type: ignore[attr-defined]
    first = [READ_FIRST, *WRITE_FIRST]
    assert routes[:3] == first
    without = routes[3:]
    types = ["CarePlan", "Patient", "Group", "AuditEvent", "StructureDefinition", "ValueSet", "CodeSystem",
             "SearchParameter", "OperationDefinition", "Subscription", "metadata", ".well-known", "$export",
             "$export-status", "_history", "careplan", "Care_Plan", ""]
    ids = ["x1", "a.b-C9", "A" * 64, "A" * 65, "_history", "$export", "$validate", "$everything", "bad_id",
           "smart-configuration", "_search", "%24export", ""]
    paths = [f"/fhir/{t}/{i}" for t in types for i in ids] + [f"/fhir/{t}" for t in types] + \
        [f"/fhir/{t}/{i}/_history/1" for t in types[:3] for i in ids] + ["/fhir", "/fhir/", "/oauth/token", "/"]
    reached_first: dict[str, int] = {}
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        for path in paths:
            assert _reached(routes, method, path) == _reached(without, method, path), (method, path)
            for route in first:
                if route.matches({"type": "http", "method": method, "path": path})[0] == Match.FULL:
                    reached_first[method] = reached_first.get(method, 0) + 1
    # GET (HEAD is a GET by then, api/rest.py) and PUT: CarePlan, Patient, Group, Subscription; x1,
    # a.b-C9, 64 letters, smart-configuration. POST: the same four types, without an id.
    assert reached_first == {"GET": 4 * 4, "PUT": 4 * 4, "POST": 4}


def test_a_read_through_the_first_route_and_through_the_table_is_the_same(client: TestClient) -> None:
    created = create(client, patient())
    first = client.get(f"/fhir/Patient/{created['id']}")
    through_table = client.get(f"/fhir/Patient/{created['id']}/")  # the slash: not the first route's pattern
    assert first.status_code == through_table.status_code == 200
    assert first.json() == through_table.json() == created
    assert first.headers["etag"] == through_table.headers["etag"]
