"""History at instance, type and system level over HTTP (R4 http.html#history)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import care_plan, create, organization, patient

BASE = "http://testserver/fhir"


def history(client: TestClient, path: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{path}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "history"
    return body


def entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = body.get("entry", [])
    return found


def versions(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(fullUrl, etag) of every entry, in the order given."""
    return [(e["fullUrl"], e["response"]["etag"]) for e in entries(body)]


def links(body: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in body["link"]}


def tick() -> None:
    """lastUpdated has millisecond precision; keep versions apart in time."""
    time.sleep(0.01)


def put(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    tick()
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def lifecycle(client: TestClient) -> dict[str, Any]:
    """A patient created, updated twice and deleted; each version a little later than the last."""
    v1 = create(client, patient())
    pid = v1["id"]
    v2 = put(client, {**v1, "gender": "female"})
    v3 = put(client, {**v2, "gender": "other"})
    tick()
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    return {"id": pid, "versions": [v1, v2, v3]}


def test_instance_history_lists_every_version_newest_first(client: TestClient, lifecycle: dict[str, Any]) -> None:
    pid = lifecycle["id"]
    body = history(client, f"Patient/{pid}/_history")
    assert body["total"] == 4
    found = entries(body)
    assert [e["request"]["method"] for e in found] == ["DELETE", "PUT", "PUT", "POST"]
    assert [e["request"]["url"] for e in found] == [f"Patient/{pid}", f"Patient/{pid}", f"Patient/{pid}", "Patient"]
    assert [e["response"]["etag"] for e in found] == ['W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']
    assert [e["response"]["status"] for e in found] == ["204 No Content", "200 OK", "200 OK", "201 Created"]
    assert all(e["fullUrl"] == f"{BASE}/Patient/{pid}" for e in found)
    assert "resource" not in found[0]  # the deletion has no content
    v1, v2, v3 = lifecycle["versions"]
    assert [e["resource"] for e in found[1:]] == [v3, v2, v1]
    modified = [e["response"]["lastModified"] for e in found]
    assert modified == sorted(modified, reverse=True)
    assert modified[1:] == [v3["meta"]["lastUpdated"], v2["meta"]["lastUpdated"], v1["meta"]["lastUpdated"]]
    assert links(body)["self"].startswith(f"{BASE}/Patient/{pid}/_history")


def test_each_history_version_can_be_read_back(client: TestClient, lifecycle: dict[str, Any]) -> None:
    pid = lifecycle["id"]
    for entry in entries(history(client, f"Patient/{pid}/_history")):
        version = entry["response"]["etag"][3:-1]
        response = client.get(f"/fhir/Patient/{pid}/_history/{version}")
        if "resource" in entry:
            assert response.status_code == 200
            assert response.json() == entry["resource"]
        else:
            assert response.status_code == 410


def test_put_that_creates_is_201_in_history(client: TestClient) -> None:
    put(client, {**patient(), "id": "pat-1"})
    put(client, {**patient(), "id": "pat-1", "gender": "female"})
    found = entries(history(client, "Patient/pat-1/_history"))
    assert [(e["request"]["method"], e["response"]["status"]) for e in found] == [
        ("PUT", "200 OK"), ("PUT", "201 Created")]


def test_history_of_an_unknown_resource_is_404(client: TestClient) -> None:
    create(client, patient())
    response = client.get("/fhir/Patient/nobody/_history")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == "not-found"
    assert client.get("/fhir/Patient/nobody/_history", params={"_since": "2000-01-01T00:00:00Z"}).status_code == 404


@pytest.mark.parametrize("path", ["Observation/_history", "Observation/1/_history"])
def test_history_of_an_unknown_type_is_404(client: TestClient, path: str) -> None:
    response = client.get(f"/fhir/{path}")
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"


def test_history_of_a_deleted_resource_is_still_served(client: TestClient, lifecycle: dict[str, Any]) -> None:
    assert client.get(f"/fhir/Patient/{lifecycle['id']}").status_code == 410
    assert history(client, f"Patient/{lifecycle['id']}/_history")["total"] == 4


def test_type_history_holds_only_that_type(client: TestClient) -> None:
    first = create(client, patient())
    tick()
    org = create(client, organization())
    tick()
    second = create(client, patient(pnr="191111111111"))
    tick()
    put(client, {**first, "gender": "female"})
    body = history(client, "Patient/_history")
    assert body["total"] == 3
    assert versions(body) == [
        (f"{BASE}/Patient/{first['id']}", 'W/"2"'),
        (f"{BASE}/Patient/{second['id']}", 'W/"1"'),
        (f"{BASE}/Patient/{first['id']}", 'W/"1"'),
    ]
    assert history(client, "Organization/_history")["total"] == 1
    assert entries(history(client, "Organization/_history"))[0]["resource"] == org
    assert history(client, "CarePlan/_history")["total"] == 0
    assert "entry" not in history(client, "CarePlan/_history")


def test_system_history_holds_every_type_newest_first(client: TestClient) -> None:
    pat = create(client, patient())
    tick()
    org = create(client, organization())
    tick()
    plan = create(client, care_plan(pat["id"]))
    tick()
    assert client.delete(f"/fhir/CarePlan/{plan['id']}").status_code == 204
    body = history(client, "_history")
    assert body["total"] == 4
    assert [(e["request"]["method"], e["request"]["url"]) for e in entries(body)] == [
        ("DELETE", f"CarePlan/{plan['id']}"), ("POST", "CarePlan"), ("POST", "Organization"), ("POST", "Patient")]
    assert [e.get("resource", {}).get("id") for e in entries(body)] == [None, plan["id"], org["id"], pat["id"]]
    assert links(body)["self"].startswith(f"{BASE}/_history")


def test_empty_system_history(client: TestClient) -> None:
    body = history(client, "_history")
    assert body["total"] == 0
    assert "entry" not in body


def test_since_keeps_versions_at_or_after_the_instant(client: TestClient, lifecycle: dict[str, Any]) -> None:
    pid = lifecycle["id"]
    _, v2, _ = lifecycle["versions"]
    since = v2["meta"]["lastUpdated"]
    for path in (f"Patient/{pid}/_history", "Patient/_history", "_history"):
        body = history(client, path, _since=since)
        assert [e["response"]["etag"] for e in entries(body)] == ['W/"4"', 'W/"3"', 'W/"2"']
        assert body["total"] == 3
    assert entries(history(client, "_history", _since="2000-01-01T00:00:00Z"))[-1]["response"]["etag"] == 'W/"1"'
    assert history(client, "_history", _since="2999-01-01T00:00:00Z")["total"] == 0
    assert history(client, f"Patient/{pid}/_history", _since="2999-01-01T00:00:00Z")["total"] == 0


def test_since_with_a_zone_offset(client: TestClient, lifecycle: dict[str, Any]) -> None:
    _, v2, _ = lifecycle["versions"]
    utc = datetime.strptime(v2["meta"]["lastUpdated"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    local = utc.astimezone(timezone(timedelta(hours=2))).isoformat(timespec="milliseconds")
    assert local.endswith("+02:00")
    body = history(client, f"Patient/{lifecycle['id']}/_history", _since=local)
    assert [e["response"]["etag"] for e in entries(body)] == ['W/"4"', 'W/"3"', 'W/"2"']


def test_at_gives_the_versions_current_at_that_time(client: TestClient, lifecycle: dict[str, Any]) -> None:
    """R4: _at includes only versions that were current at some point during the given time."""
    pid = lifecycle["id"]
    v1, v2, v3 = lifecycle["versions"]
    path = f"Patient/{pid}/_history"
    for version in (v1, v2, v3):
        body = history(client, path, _at=version["meta"]["lastUpdated"])
        assert [e["resource"] for e in entries(body)] == [version]
        assert body["total"] == 1
    assert history(client, path, _at="2000-01-01")["total"] == 0  # before the resource existed: empty, not 404
    this_year = v1["meta"]["lastUpdated"][:4]
    assert history(client, path, _at=this_year)["total"] == 4  # all were current during the year


def test_at_on_system_history(client: TestClient) -> None:
    old = create(client, patient())
    tick()
    newer = put(client, {**old, "gender": "female"})
    tick()
    other = create(client, organization())
    body = history(client, "_history", _at=newer["meta"]["lastUpdated"])
    assert [e["resource"] for e in entries(body)] == [newer]  # the organization did not exist yet
    body = history(client, "_history", _at=other["meta"]["lastUpdated"])
    assert [e["resource"] for e in entries(body)] == [other, newer]


def test_count_and_next_links_page_through_every_version(client: TestClient) -> None:
    resources = [create(client, patient(pnr=f"19{n:02d}01019800")) for n in range(5)]
    for resource in resources[:3]:
        put(client, {**resource, "gender": "female"})
    full = history(client, "_history", _count="100")
    assert full["total"] == 8 and len(entries(full)) == 8
    seen: list[tuple[str, str]] = []
    page = history(client, "_history", _count="3")
    pages = 1
    while True:
        assert page["total"] == 8
        assert len(entries(page)) <= 3
        seen.extend(versions(page))
        nxt = links(page).get("next")
        if nxt is None:
            break
        assert nxt.startswith(f"{BASE}/_history?")
        response = client.get(nxt)
        assert response.status_code == 200, response.text
        page = response.json()
        assert "previous" in links(page)
        pages += 1
    assert pages == 3
    assert seen == versions(full)
    assert len(set(seen)) == 8


def test_paging_keeps_since(client: TestClient, lifecycle: dict[str, Any]) -> None:
    pid = lifecycle["id"]
    since = lifecycle["versions"][1]["meta"]["lastUpdated"]
    page = history(client, f"Patient/{pid}/_history", _since=since, _count="2")
    seen = versions(page)
    nxt = links(page)["next"]
    rest = client.get(nxt).json()
    seen += versions(rest)
    assert "next" not in links(rest)
    assert [etag for _, etag in seen] == ['W/"4"', 'W/"3"', 'W/"2"']


def test_count_on_instance_and_type_history(client: TestClient, lifecycle: dict[str, Any]) -> None:
    body = history(client, f"Patient/{lifecycle['id']}/_history", _count="1")
    assert [e["request"]["method"] for e in entries(body)] == ["DELETE"]
    assert body["total"] == 4
    assert "next" in links(body)
    body = history(client, "Patient/_history", _count="2")
    assert len(entries(body)) == 2 and "next" in links(body)


@pytest.mark.parametrize("params", [
    {"_since": "yesterday"},
    {"_since": "2024-13-01"},
    {"_since": "2024-01-01T25:00:00Z"},
    {"_at": "not-a-date"},
    {"_count": "many"},
    {"_count": "-1"},
])
@pytest.mark.parametrize("path", ["_history", "Patient/_history", "Patient/pat-1/_history"])
def test_bad_history_parameters_are_400(client: TestClient, params: dict[str, str], path: str) -> None:
    put(client, {**patient(), "id": "pat-1"})
    response = client.get(f"/fhir/{path}", params=params)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "invalid"
    assert outcome["issue"][0]["expression"] == [next(iter(params))]
    assert outcome["issue"][0]["details"]["text"]
