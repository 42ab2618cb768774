"""The HTTP surface of api/rest.py under the access rules, on the demo region: ``HEAD`` is the
``GET`` (the same refusals, a hidden resource the same 404 as one nobody has, the same entry in
the access log), the trailing slash opens nothing, and nothing the server writes (the
CapabilityStatement, a searchset, a batch and a transaction response, ``$patientkontrakt``)
holds an empty array or object (invalid FHIR JSON: R4 json.html)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import orjson
from fastapi.testclient import TestClient

from patientkontrakt.domain import codes
from tests.conftest import _dsn
from tests.security.conftest import AUTHOR, OTHER_UNIT, TARGET, World

ABSENT = "no-such-id"


def _log(world: World, after: int = 0) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(_dsn(world.settings.database_url))
        try:
            return [dict(r) for r in await conn.fetch("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq", after)]
        finally:
            await conn.close()
    return asyncio.run(fetch())


def _mark(world: World) -> int:
    rows = _log(world)
    return int(rows[-1]["seq"]) if rows else 0


def _entry(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["interaction"], row["outcome"], row["status"], row["patient_id"], row["request"],
            orjson.loads(row["resources"]))


def _headers(response: httpx.Response) -> dict[str, str]:
    """The headers but those that differ between any two requests (the time, the request's id)."""
    return {k: v for k, v in response.headers.items() if k not in ("date", "x-request-id")}


def test_head_of_a_read_is_logged_as_the_get_is(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    own = world.staff(world.role_at(AUTHOR, "nurse"))
    url = f"/fhir/CarePlan/{target.plan}"
    start = _mark(world)
    get = app.get(url, headers=own)
    middle = _mark(world)
    head = app.head(url, headers=own)
    assert (get.status_code, head.status_code, head.content) == (200, 200, b"")
    assert _headers(head) == _headers(get)
    [got] = _log(world, start)[:1]
    [headed] = _log(world, middle)
    assert _entry(headed) == _entry(got) == ("read", "success", 200, target.patient, f"CarePlan/{target.plan}",
                                             [f"CarePlan/{target.plan}"])


def test_head_of_a_hidden_resource_is_404_as_if_absent_and_logged_as_refused(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    for hidden in (f"/fhir/CarePlan/{target.plan}", f"/fhir/Goal/{target.goals[1]}/_history/1",
                        f"/fhir/Patient/{target.patient}/$patientkontrakt", f"/fhir/CarePlan/{target.plan}/"):
        id_ = hidden.split("/")[3]
        absent = hidden.replace(id_, "z" * len(id_))  # the same length: the messages name the id
        start = _mark(world)
        seen, unseen = app.head(hidden, headers=other), app.head(absent, headers=other)
        assert (seen.status_code, unseen.status_code) == (404, 404), hidden
        assert seen.content == b"" and _headers(seen) == _headers(unseen), hidden
        assert _headers(seen) == _headers(app.get(hidden, headers=other)), hidden
        refused = [row for row in _log(world, start) if row["patient_id"] == target.patient]
        assert refused and {row["outcome"] for row in refused} == {"refused"}, hidden
    search = app.head("/fhir/CarePlan", params={"subject": f"Patient/{target.patient}", "_total": "accurate"},
                      headers=other)
    assert search.status_code == 200 and search.content == b""
    shown = app.get("/fhir/CarePlan", params={"subject": f"Patient/{target.patient}", "_total": "accurate"},
                    headers=other)
    assert shown.json()["total"] == 0 and search.headers["content-length"] == shown.headers["content-length"]


def test_head_without_the_scope_is_refused_as_get_is(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    no_read = world.staff(world.role_at(AUTHOR, "nurse"), "openid fhirUser user/Goal.cruds")
    url = f"/fhir/CarePlan/{target.plan}"
    head, get = app.head(url, headers=no_read), app.get(url, headers=no_read)
    assert (head.status_code, get.status_code) == (403, 403) and head.content == b""
    assert app.head(url).status_code == 401


def _empty_anywhere(value: Any, where: str = "") -> list[str]:
    """The paths of every ``[]`` and ``{}`` inside ``value``."""
    if isinstance(value, dict):
        found = [where or "(root)"] if not value else []
        for key, inner in value.items():
            found += _empty_anywhere(inner, f"{where}.{key}" if where else key)
        return found
    if isinstance(value, list):
        found = [where] if not value else []
        for index, inner in enumerate(value):
            found += _empty_anywhere(inner, f"{where}[{index}]")
        return found
    return []


def _goal(patient: str, expressed_by: str) -> dict[str, Any]:
    return {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Orka gå till affären"},
            "subject": {"reference": f"Patient/{patient}"}, "expressedBy": {"reference": expressed_by},
            "meta": {"tag": [dict(codes.TEST_DATA_TAG)]}}


def _answers(world: World, app: TestClient) -> Iterator[tuple[str, httpx.Response]]:
    target = world.agreements[TARGET]
    own = world.staff(world.role_at(AUTHOR, "nurse"))
    yield "metadata", app.get("/fhir/metadata")
    yield "search", app.get("/fhir/CarePlan", params={"subject": f"Patient/{target.patient}", "_total": "accurate",
                                                      "_include": "CarePlan:care-team",
                                                      "_revinclude": "Provenance:target"}, headers=own)
    yield "empty search", app.get("/fhir/CarePlan", params={"subject": f"Patient/{ABSENT}"}, headers=own)
    reads = [{"request": {"method": "GET", "url": url}} for url in (
        f"CarePlan/{target.plan}", f"Goal/{target.goals[1]}/_history/1", f"Goal?subject=Patient/{target.patient}",
        f"Goal/{ABSENT}")]
    yield "batch", app.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": reads}, headers=own)
    write = {"fullUrl": "urn:uuid:7d4f0000-0000-4000-8000-000000000001",
             "resource": _goal(target.patient, f"PractitionerRole/{target.staff_roles[0]}"),
             "request": {"method": "POST", "url": "Goal"}}
    yield "transaction", app.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                                 "entry": [write, *reads[:3]]}, headers=own)
    yield "$patientkontrakt", app.get(f"/fhir/Patient/{target.patient}/$patientkontrakt", headers=own)
    yield "$patientkontrakt of the plan", app.get(f"/fhir/CarePlan/{target.plan}/$patientkontrakt", headers=own)


def test_nothing_the_server_writes_holds_an_empty_array_or_object(world: World, app: TestClient) -> None:
    for name, response in _answers(world, app):
        assert response.status_code == 200, (name, response.text)
        assert _empty_anywhere(response.json()) == [], name


def test_total_accurate_with_includes_counts_only_the_visible_matches(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    params = {"subject": f"Patient/{target.patient}", "_total": "accurate", "_include": "CarePlan:care-team",
              "_count": "1"}
    own = app.get("/fhir/CarePlan", params=params, headers=world.staff(world.role_at(AUTHOR, "nurse"))).json()
    matches = [e for e in own["entry"] if e["search"]["mode"] == "match"]
    assert own["total"] >= len(matches) == 1
    assert any(e["search"]["mode"] == "include" for e in own["entry"])
    other = app.get("/fhir/CarePlan", params=params, headers=world.staff(world.role_at(OTHER_UNIT, "nurse"))).json()
    assert other["total"] == 0 and "entry" not in other
