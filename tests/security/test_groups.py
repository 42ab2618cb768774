"""Who may see, change and export a Group (a care unit's own list of patients: docs/api.md,
"Group"), with the service's real rules and tokens, on PostgreSQL and on SQLite: only the unit
that created it, through every door (read, vread, history, search, update, delete, a batch,
``$export``), another unit getting exactly what an unknown id gets; patients' tokens refused; its
members only patients the unit may read (a hidden one answered like an unknown one); in no
patient's compartment; and a Group-level export holds only the members the caller may still read
when it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.config import Settings
from patientkontrakt.domain.setup import build_service
from patientkontrakt.security.stored_access import bulk_export
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import BASE_URL
from tests.security.conftest import AUTHOR, OTHER_UNIT, World, settings_on_each_database

settings = settings_on_each_database  # every test here runs on PostgreSQL and on SQLite
ASYNC = {"prefer": "respond-async"}


def group(*patients: str, name: str = "Mina patienter med KOL") -> dict[str, Any]:
    return {"resourceType": "Group", "identifier": [{"system": "urn:x-test:lists", "value": "kol"}],
            "type": "person", "actual": True, "name": name,
            "member": [{"entity": {"reference": f"Patient/{p}"}} for p in patients]}


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") != "outcome"]


def _sql(settings: Settings, statement: str, **values: Any) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.text(statement), values)).all())
        finally:
            await engine.dispose()
    return asyncio.run(run())


def test_a_group_is_its_care_units_alone(app: TestClient, world: World, settings: Settings) -> None:
    owner = world.system(AUTHOR)
    colleague = world.staff(world.role_at(AUTHOR))
    other = world.system(OTHER_UNIT)
    members = [a.patient for a in world.by_author(AUTHOR)[:2]]
    created = app.post("/fhir/Group", json=group(*members), headers=owner)
    assert created.status_code == 201, created.text
    body = created.json()
    id_ = body["id"]
    unknown = "no-such-group"

    # the owner unit (its system, and its staff) reads and finds it by the R4 parameters
    for headers in (owner, colleague):
        assert app.get(f"/fhir/Group/{id_}", headers=headers).json()["member"] == body["member"]
        for query in (f"member=Patient/{members[1]}", "type=person", "actual=true", "identifier=urn:x-test:lists|kol",
                      f"_id={id_}"):
            assert _ids(app.get(f"/fhir/Group?{query}", headers=headers).json()) == [id_], query
    assert _ids(app.get("/fhir/Group?member=Patient/someone-else", headers=owner).json()) == []

    # another unit: exactly as for an id nobody uses, through every door
    for path in ("Group/{}", "Group/{}/_history", "Group/{}/_history/1", "Group/{}/$export"):
        hidden = app.get("/fhir/" + path.format(id_), headers={**other, **ASYNC})
        absent = app.get("/fhir/" + path.format(unknown), headers={**other, **ASYNC})
        assert hidden.status_code == absent.status_code == 404, (path, hidden.text)
        assert hidden.json()["issue"][0]["code"] == absent.json()["issue"][0]["code"]
    assert app.post(f"/fhir/Group/{id_}/$export", headers={**other, **ASYNC}).status_code == 404
    for search in ("/fhir/Group", f"/fhir/Group?_id={id_}", f"/fhir/Group?member=Patient/{members[0]}",
                   "/fhir/Group/_history", "/fhir/_history"):
        entries = app.get(search, headers=other).json().get("entry", [])
        assert id_ not in str(entries), search
    changed = {**body, "name": "Kapad", "member": body["member"][:1]}
    assert app.put(f"/fhir/Group/{id_}", json=changed, headers=other).status_code == 404
    assert app.delete(f"/fhir/Group/{id_}", headers=other).status_code == 404
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Group/{id_}"}},
        {"resource": changed, "request": {"method": "PUT", "url": f"Group/{id_}"}},
        {"request": {"method": "DELETE", "url": f"Group/{id_}"}}]}
    answers = app.post("/fhir", json=batch, headers=other).json()["entry"]
    assert [a["response"]["status"][:3] for a in answers] == ["404", "404", "404"]

    # a member's own token: Groups are not for patients at all
    patient = world.patient(members[0])
    for response in (app.get(f"/fhir/Group/{id_}", headers=patient), app.get("/fhir/Group", headers=patient),
                     app.post("/fhir/Group", json=group(members[0]), headers=patient)):
        assert response.status_code == 403, response.text
        assert response.json()["issue"][0]["code"] == "forbidden"

    # in no patient's compartment: no patient_id, not in the member's $everything
    assert _sql(settings, "SELECT patient_id, owner_unit FROM resource WHERE res_type = 'Group'") == [(None, AUTHOR)]
    everything = app.get(f"/fhir/Patient/{members[0]}/$everything", headers=owner)
    assert everything.status_code == 200, everything.text
    assert "Group" not in {e["resource"]["resourceType"] for e in everything.json()["entry"]}

    # nothing of it changed, and the owner may change and delete it
    kept = app.get(f"/fhir/Group/{id_}", headers=owner).json()
    assert kept["meta"]["versionId"] == "1" and kept["name"] == body["name"]
    renamed = app.put(f"/fhir/Group/{id_}", json={**kept, "name": "KOL-listan"}, headers=colleague)
    assert renamed.status_code == 200, renamed.text
    assert app.delete(f"/fhir/Group/{id_}", headers=owner).status_code == 204
    assert app.get(f"/fhir/Group/{id_}/$export", headers={**owner, **ASYNC}).status_code == 404


def test_members_are_patients_the_unit_may_read(app: TestClient, world: World) -> None:
    owner = world.system(AUTHOR)
    mine = world.by_author(AUTHOR)[0].patient
    others = world.not_involving(AUTHOR)[0].patient
    hidden = app.post("/fhir/Group", json=group(mine, others), headers=owner)
    absent = app.post("/fhir/Group", json=group(mine, "no-such-patient"), headers=owner)
    assert hidden.status_code == absent.status_code == 422, hidden.text
    for response, name in ((hidden, others), (absent, "no-such-patient")):
        [issue] = response.json()["issue"]
        assert issue["code"] == "not-found" and issue["expression"] == ["Group.member[1].entity.reference"]
        assert issue["diagnostics"] == f"Group.member[1].entity.reference: Patient/{name} does not exist on this server"
    created = app.post("/fhir/Group", json=group(mine), headers=owner)
    assert created.status_code == 201, created.text
    widened = {**created.json(), "member": [*created.json()["member"], {"entity": {"reference": f"Patient/{others}"}}]}
    assert app.put(f"/fhir/Group/{widened['id']}", json=widened, headers=owner).status_code == 422

    # a list of patients, and nothing else
    role = world.role_at(AUTHOR)
    for change, expression in (({"type": "device"}, "Group.type"), ({"actual": False}, "Group.actual"),
                               ({"member": [{"entity": {"reference": f"PractitionerRole/{role}"}}]},
                                "Group.member[0].entity"),
                               ({"member": [{"entity": {"display": "Någon"}}]}, "Group.member[0].entity")):
        response = app.post("/fhir/Group", json={**group(mine), **change}, headers=owner)
        assert response.status_code == 422, (change, response.text)
        assert expression in response.json()["issue"][0]["expression"], response.text
    malformed = app.post("/fhir/Group", json={**group(mine), "member": {"entity": "Patient/x"}}, headers=owner)
    assert malformed.status_code in (400, 422) and malformed.json()["resourceType"] == "OperationOutcome"


@pytest.fixture
def no_runner(settings: Settings) -> Iterator[TestClient]:
    """The service without its background export runner: the test runs the exports itself."""
    quiet = settings.model_copy(update={"export_poll_interval": 0})
    with TestClient(create_app(quiet), base_url=BASE_URL) as client:
        client.headers.update({"content-type": "application/fhir+json"})
        yield client


def _run_exports(settings: Settings) -> None:
    async def run() -> None:
        store = Store(create_engine(settings.database_url, pool_size=2))
        try:
            export = bulk_export(build_service(settings, store))
            while await export.work_once():
                pass
        finally:
            await store.dispose()
    asyncio.run(run())


def _files(app: TestClient, headers: dict[str, str], status_url: str) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    response = app.get(status_url, headers=headers)
    assert response.status_code == 200, response.text
    manifest = response.json()
    files: dict[str, list[Any]] = {}
    for output in manifest["output"]:
        ndjson = app.get(output["url"], headers=headers)
        assert ndjson.status_code == 200, ndjson.text
        files.setdefault(output["type"], []).extend(orjson.loads(line) for line in ndjson.text.splitlines())
    return manifest, files


def test_a_group_export_holds_the_members_the_caller_may_read_when_it_runs(
        no_runner: TestClient, world: World, settings: Settings) -> None:
    """The client's Patient scope is narrowed to active patients; one member stops being one
    between the kick-off and the run: nothing of theirs is exported, though the client may still
    read their agreement by itself."""
    app = no_runner
    full = world.system(AUTHOR)
    narrow = world.system(AUTHOR, "system/Group.rs system/Patient.rs?active=true system/CarePlan.rs system/Goal.rs")
    agreements = world.by_author(AUTHOR)[:3]
    kept, dropped, outside = (a.patient for a in agreements)
    created = app.post("/fhir/Group", json=group(kept, dropped), headers=full)
    assert created.status_code == 201, created.text
    id_ = created.json()["id"]

    kick_off = app.get(f"/fhir/Group/{id_}/$export", params={"_type": "Patient,CarePlan"},
                       headers={**narrow, **ASYNC})
    assert kick_off.status_code == 202, kick_off.text
    status_url = kick_off.headers["content-location"]
    patient = app.get(f"/fhir/Patient/{dropped}", headers=full).json()
    assert app.put(f"/fhir/Patient/{dropped}", json={**patient, "active": False}, headers=full).status_code == 200
    _run_exports(settings)

    manifest, files = _files(app, narrow, status_url)
    assert manifest["request"] == f"{BASE_URL}/fhir/Group/{id_}/$export?_type=Patient%2CCarePlan"
    assert set(files) == {"Patient", "CarePlan"}
    assert [p["id"] for p in files["Patient"]] == [kept]
    plans = {p["id"] for p in files["CarePlan"]}
    assert agreements[0].plan in plans
    assert {p["subject"]["reference"] for p in files["CarePlan"]} == {f"Patient/{kept}"}
    assert agreements[1].plan not in plans and agreements[2].plan not in plans
    assert app.get(f"/fhir/CarePlan/{agreements[1].plan}", headers=narrow).status_code == 200
    assert outside not in str(files)

    # the same client's export of everything it may read does hold the dropped member's agreement
    everything = app.get("/fhir/$export", params={"_type": "CarePlan"}, headers={**narrow, **ASYNC})
    _run_exports(settings)
    _, all_files = _files(app, narrow, everything.headers["content-location"])
    assert agreements[1].plan in {p["id"] for p in all_files["CarePlan"]}
