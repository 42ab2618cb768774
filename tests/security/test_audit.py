"""The access log of Patientdatalagen (design §6): what is logged, when, and that it cannot be
changed unnoticed.

Every request that reads or writes patient data leaves one entry per patient it touched (who,
for which care unit, through which client, what, which patient, outcome, purpose); writes log
in their own transaction, reads before the response leaves; refused attempts are logged too.
The entries are sealed into a Merkle tree under signed checkpoints that ``patientkontrakt audit
verify`` checks (the attacks on it: ``test_audit_tamper.py``), and the database itself refuses
UPDATE, DELETE and TRUNCATE on them. The log is served as read-only FHIR
``AuditEvent``: a patient sees the entries about themselves (the *loggutdrag*), a care unit its
own entries.

The HTTP tests run against the service as deployed (``app``) on the demo region in PostgreSQL
(``world``, loaded by the service itself, which is not logged, so the log starts empty); the
tests of the storage layer run on PostgreSQL and SQLite (``store``/``db_url``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from api.app import create_app
from patientkontrakt.audit.events import BALP_ENTITY_TYPE, render
from patientkontrakt.audit.log import AuditLog
from patientkontrakt.audit.sealer import Sealer
from patientkontrakt.audit.verify import Report, verify
from patientkontrakt.domain import codes
from patientkontrakt.domain.demo import ANGEN, sparr_on_vardcentral
from patientkontrakt.domain.identifiers import HSA_ID, PERSONNUMMER
from patientkontrakt.fhir.access import Principal
from patientkontrakt.logs import REQUEST_ID
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store, StoredResource
from patientkontrakt.storage.tables import AUDIT_CHECKPOINT, AUDIT_LEAF, AUDIT_LOG, AUDIT_QUEUE
from tests.conftest import BASE_URL, _dsn, make_settings
from tests.security import audit_tools
from tests.security.conftest import Agreement, World

AUTHOR = "demo-org-vc-bjorkbacken"  # responsible for agreements 2, 3, 7, 10
OTHER_UNIT = "demo-org-vc-strandvagen"  # responsible for 5, 8, 9, 13, 15; no part in agreement 2
CONTRIBUTOR = "demo-org-med-lanssjukhuset"  # a contributor to every agreement
TARGET = 2
SECOND = 3  # another active agreement of the same vårdcentral, another patient
FOREIGN = 8  # an active agreement of Strandvägen

# -- helpers ----------------------------------------------------------------------------------


async def _query(url: str, statement: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(_dsn(url))
    try:
        return [dict(r) for r in await conn.fetch(statement, *args)]
    finally:
        await conn.close()


def _log(world: World, after: int = 0) -> list[dict[str, Any]]:
    """The rows of the access log after ``after``, in order."""
    return asyncio.run(_query(world.settings.database_url, "SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq",
                              after))


def _mark(world: World) -> int:
    rows = asyncio.run(_query(world.settings.database_url, "SELECT coalesce(max(seq), 0) AS m FROM audit_log"))
    return int(rows[0]["m"])


def _tamper(url: str, statement: str, *args: Any) -> None:
    """Change the log as someone with the database's superuser would: triggers off, change, on."""
    audit_tools.tamper(url, (statement, args))


def _check(url: str) -> Report:
    return audit_tools.check(make_settings(url))


def _seal(url: str) -> None:
    audit_tools.seal(make_settings(url))


def _cli_verify(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return audit_tools.cli(make_settings(url), "audit", "verify", cwd=cwd)


def _region_role(world: World, role_id: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The PractitionerRole ``role_id`` with its Practitioner and Organization, as loaded."""
    region = world.generator.region
    role = next(r for r in region.roles if r["id"] == role_id)
    practitioner = next(p for p in region.practitioners
                        if f"Practitioner/{p['id']}" == role["practitioner"]["reference"])
    org = next(o for o in region.organizations if f"Organization/{o['id']}" == role["organization"]["reference"])
    return role, practitioner, org


def _hsa(resource: dict[str, Any]) -> str:
    return str(next(i["value"] for i in resource["identifier"] if i["system"] == HSA_ID))


def _get(app: TestClient, headers: dict[str, str], path: str, **params: str) -> dict[str, Any]:
    response = app.get(path, params=params or None, headers=headers)  # params={} would drop the path's query
    assert response.status_code == 200, response.text
    return dict(response.json())


def _event_ids(bundle: dict[str, Any]) -> set[int]:
    return {int(e["resource"]["id"]) for e in bundle.get("entry", [])}


def _patients_of(event: dict[str, Any]) -> set[str]:
    return {e["what"]["reference"] for e in event["entity"]
            if e.get("role", {}).get("code") == "1" and "what" in e}


def _plain(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def _new_goal(patient: str, expressed_by: str) -> dict[str, Any]:
    return {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Orka gå till affären"},
            "subject": {"reference": f"Patient/{patient}"}, "expressedBy": {"reference": expressed_by},
            "meta": {"tag": [dict(codes.TEST_DATA_TAG)]}}


@dataclass(frozen=True)
class _Caller:
    """An ``Access`` as far as the log needs one: who acts, and that it is logged."""

    principal: Principal
    logged: bool = True


NURSE = Principal(kind="staff", id="SE2321000016-P001", name="Test Sjuksköterska", role="Sjuksköterska",
                  fhir_user="PractitionerRole/r1", care_unit="SE2321000016-E001", care_unit_name="Vårdcentralen Test",
                  care_provider="SE2321000016-0001", client_id="pk-personal")


def _resource(type_: str, id_: str, patient: str | None) -> StoredResource:
    return StoredResource(pk=0, type=type_, id=id_, version_id=1, last_updated=datetime(2026, 1, 1),
                          deleted=False, body="{}", patient_id=patient)


async def _all(store: Store) -> list[sql.AuditRow]:
    return await audit_tools.entries(store)


@pytest.fixture
def failing_app(settings: Any) -> Iterator[TestClient]:
    """The service as deployed, answering unexpected errors with a 500 instead of raising them
    into the test."""
    with TestClient(create_app(settings), base_url=BASE_URL, raise_server_exceptions=False) as client:
        client.headers.update({"content-type": "application/fhir+json"})
        yield client


# -- 1. reads ---------------------------------------------------------------------------------


def test_a_staff_read_writes_one_entry_saying_who_for_what_and_why(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    role_id = world.role_at(AUTHOR, "nurse")
    headers = world.staff(role_id)
    role, practitioner, org = _region_role(world, role_id)
    start = _mark(world)

    rid = "4f2b9c1d7e3a4b5c8d9e0f1a2b3c4d5e"  # an EHR's request id (a UUID's hex digits)
    response = app.get(f"/fhir/CarePlan/{target.plan}", headers={**headers, "x-request-id": rid})

    assert response.status_code == 200, response.text
    [entry] = _log(world, start)
    assert entry["request_id"] == response.headers["x-request-id"] == rid
    event = app.get(f"/fhir/AuditEvent/{entry['seq']}", headers=headers).json()
    assert {"what": {"identifier": {"value": rid}},
            "type": {"system": BALP_ENTITY_TYPE, "code": "XrequestId"}} in event["entity"]
    name = practitioner["name"][0]
    assert entry["user_id"] == _hsa(practitioner)  # the person's HSA-id
    assert entry["user_name"] == " ".join([*name["given"], name["family"]])
    assert entry["user_kind"] == "staff"
    assert entry["role"] == role["code"][0]["text"] == "Sjuksköterska"
    assert entry["fhir_user"] == f"PractitionerRole/{role_id}"
    assert entry["care_unit"] == _hsa(org) and entry["care_unit_name"] == org["name"] == "Vårdcentralen Björkbacken"
    assert entry["client_id"] == "pk-personal"
    assert entry["interaction"] == "read" and entry["request"] == f"CarePlan/{target.plan}"
    assert orjson.loads(entry["resources"]) == [f"CarePlan/{target.plan}"]
    assert entry["patient_id"] == target.patient
    assert (entry["outcome"], entry["status"], entry["purpose"]) == ("success", 200, "TREAT")
    recorded = entry["recorded"]
    assert abs(recorded - datetime.now(UTC).replace(tzinfo=None)) < timedelta(seconds=30)


def test_a_patient_reading_their_own_agreement_is_logged_as_the_patient(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    number = _get(app, world.system(AUTHOR), f"/fhir/Patient/{target.patient}")["identifier"][0]["value"]
    start = _mark(world)
    assert app.get(f"/fhir/Goal/{target.patient_goal}", headers=world.patient(target.patient)).status_code == 200
    [entry] = _log(world, start)
    assert (entry["user_id"], entry["user_kind"]) == (number, "patient")
    assert entry["fhir_user"] == f"Patient/{target.patient}"
    assert entry["care_unit"] is None and entry["client_id"] == "pk-mitt"
    assert entry["patient_id"] == target.patient and entry["purpose"] == "PATRQT"
    assert orjson.loads(entry["resources"]) == [f"Goal/{target.patient_goal}"]


def test_a_search_writes_one_entry_per_patient_in_the_result(world: World, app: TestClient) -> None:
    headers = world.staff(world.role_at(AUTHOR, "nurse"))
    start = _mark(world)
    bundle = _get(app, headers, "/fhir/CarePlan", author=f"Organization/{AUTHOR}",
                  _include="CarePlan:care-team", _count="100")

    found: dict[str, set[str]] = {}
    for e in bundle["entry"]:
        resource = e["resource"]
        patient = resource["subject"]["reference"].split("/")[1]
        found.setdefault(patient, set()).add(f"{resource['resourceType']}/{resource['id']}")
    assert len(found) == len(world.by_author(AUTHOR)) > 1
    entries = _log(world, start)
    assert len(entries) == len(found), "one entry per patient, not per resource or per request"
    assert {e["patient_id"]: set(orjson.loads(e["resources"])) for e in entries} == found
    for e in entries:
        assert e["interaction"] == "search-type" and e["outcome"] == "success"
        assert e["request"].startswith("CarePlan?") and "author=" in e["request"]
    # every CarePlan and its CareTeam are in the entry of their own patient
    for agreement in world.by_author(AUTHOR):
        assert {f"CarePlan/{agreement.plan}", f"CareTeam/{agreement.team}"} <= found[agreement.patient]


def test_reading_directory_data_writes_no_entry(world: World, app: TestClient) -> None:
    role_id = world.role_at(AUTHOR, "nurse")
    headers = world.staff(role_id)
    _, practitioner, _ = _region_role(world, role_id)
    start = _mark(world)
    for path in (f"/fhir/Organization/{AUTHOR}", f"/fhir/PractitionerRole/{role_id}",
                 f"/fhir/Practitioner/{practitioner['id']}"):
        assert app.get(path, headers=headers).status_code == 200
    assert _get(app, headers, "/fhir/Organization", _count="50")["total"] > 0
    assert _get(app, headers, "/fhir/PractitionerRole", organization=f"Organization/{AUTHOR}")["total"] > 0
    assert _get(app, headers, "/fhir/metadata")["resourceType"] == "CapabilityStatement"
    assert _log(world, start) == []
    # while the same caller's read of patient data is logged
    app.get(f"/fhir/Patient/{world.agreements[TARGET].patient}", headers=headers)
    assert [e["patient_id"] for e in _log(world, start)] == [world.agreements[TARGET].patient]


def test_the_patientkontrakt_operation_logs_the_whole_agreement(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    start = _mark(world)
    response = app.get(f"/fhir/Patient/{target.patient}/$patientkontrakt",
                       headers=world.staff(world.role_at(AUTHOR, "nurse")))
    assert response.status_code == 200, response.text
    [entry] = _log(world, start)
    assert entry["interaction"] == "operation" and entry["patient_id"] == target.patient
    logged = set(orjson.loads(entry["resources"]))
    assert {f"Patient/{target.patient}", f"CarePlan/{target.plan}", f"CareTeam/{target.team}",
            *(f"Goal/{g}" for g in target.goals)} <= logged


# -- 2. writes --------------------------------------------------------------------------------


def test_a_successful_write_leaves_one_entry_per_patient(world: World, app: TestClient) -> None:
    target, second = world.agreements[TARGET], world.agreements[SECOND]
    headers = world.staff(world.role_at(AUTHOR, "nurse"))
    start = _mark(world)

    created = app.post("/fhir/Goal", json=_new_goal(target.patient, f"PractitionerRole/{target.staff_roles[0]}"),
                       headers=headers)
    assert created.status_code == 201, created.text
    goal_id = created.json()["id"]
    [create] = _log(world, start)
    assert (create["interaction"], create["outcome"], create["patient_id"]) == ("create", "success", target.patient)
    assert orjson.loads(create["resources"]) == [f"Goal/{goal_id}"]
    assert create["user_kind"] == "staff" and create["care_unit_name"] == "Vårdcentralen Björkbacken"

    after_create = _mark(world)
    plan = _plain(_get(app, world.system(AUTHOR), f"/fhir/CarePlan/{target.plan}"))
    after_setup = _mark(world)
    assert after_setup > after_create  # the system's read is logged too
    updated = app.put(f"/fhir/CarePlan/{target.plan}", json={**plan, "description": "Reviderad plan"},
                      headers=headers)
    assert updated.status_code == 200, updated.text
    [update] = _log(world, after_setup)
    assert (update["interaction"], update["patient_id"]) == ("update", target.patient)
    assert orjson.loads(update["resources"]) == [f"CarePlan/{target.plan}"]

    # a transaction that writes for two patients: one entry for each
    goals = [_plain(_get(app, world.system(AUTHOR), f"/fhir/Goal/{a.goals[1]}")) for a in (target, second)]
    before = _mark(world)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**g, "description": {"text": "Nytt mål"}}, "request": {"method": "PUT", "url": f"Goal/{g['id']}"}}
        for g in goals]}
    response = app.post("/fhir", json=bundle, headers=headers)
    assert response.status_code == 200, response.text
    entries = _log(world, before)
    assert {e["patient_id"]: orjson.loads(e["resources"]) for e in entries} == {
        target.patient: [f"Goal/{target.goals[1]}"], second.patient: [f"Goal/{second.goals[1]}"]}
    assert {e["interaction"] for e in entries} == {"transaction"}


def test_a_refused_write_leaves_no_entry(world: World, app: TestClient) -> None:
    target, foreign = world.agreements[TARGET], world.agreements[FOREIGN]
    headers = world.staff(world.role_at(AUTHOR, "nurse"))
    goal = _plain(_get(app, world.system(AUTHOR), f"/fhir/Goal/{target.goals[1]}"))
    foreign_goal = _plain(_get(app, world.system(OTHER_UNIT), f"/fhir/Goal/{foreign.goals[1]}"))
    start = _mark(world)

    # not a valid resource
    invalid = app.post("/fhir/Goal", json={**_new_goal(target.patient, f"Patient/{target.patient}"),
                                           "lifecycleStatus": "nonsense"}, headers=headers)
    assert invalid.status_code in (400, 422), invalid.text
    # the agreement profile's rules: a goal for a patient the unit has no agreement with
    stranger = app.post("/fhir/Goal", json=_new_goal(foreign.patient, f"Patient/{foreign.patient}"),
                        headers=headers)
    assert stranger.status_code in (403, 404, 422), stranger.text
    # another unit's goal
    assert app.put(f"/fhir/Goal/{foreign_goal['id']}", json=foreign_goal, headers=headers).status_code == 404
    # a transaction whose first entry would succeed and whose second fails: nothing is written
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**goal, "description": {"text": "Aldrig sparad"}},
         "request": {"method": "PUT", "url": f"Goal/{goal['id']}"}},
        {"resource": {**goal, "id": "x", "lifecycleStatus": "nonsense"}, "request": {"method": "PUT", "url": "Goal/x"}},
    ]}
    refused = app.post("/fhir", json=bundle, headers=headers)
    assert refused.status_code >= 400, refused.text

    written = [e for e in _log(world, start) if e["outcome"] == "success"]
    assert written == [], "a write that did not happen is not logged as one"
    assert _get(app, world.system(AUTHOR), f"/fhir/Goal/{goal['id']}")["description"] == goal["description"]


def test_no_write_and_no_read_without_its_log_entry(world: World, failing_app: TestClient) -> None:
    """If the log cannot be written, neither the write nor the read happens (design §6)."""
    url = world.settings.database_url

    def break_log() -> None:
        asyncio.run(_query(url, """
            CREATE OR REPLACE FUNCTION pk_test_no_log() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the log is unavailable'; END $$"""))
        asyncio.run(_query(url, "CREATE TRIGGER pk_test_no_log BEFORE INSERT ON audit_log "
                                "FOR EACH ROW EXECUTE FUNCTION pk_test_no_log()"))

    def mend_log() -> None:
        asyncio.run(_query(url, "DROP TRIGGER pk_test_no_log ON audit_log"))
        asyncio.run(_query(url, "DROP FUNCTION pk_test_no_log()"))

    nothing_without_the_log(world, failing_app, break_log, mend_log)


def nothing_without_the_log(world: World, app: TestClient, break_log: Callable[[], None],
                            mend_log: Callable[[], None]) -> None:
    """A read, a write and a search while ``break_log`` has made the log fail: 500s that show
    nothing, and nothing written; after ``mend_log``, the log still verifies."""
    target = world.agreements[TARGET]
    headers = world.staff(world.role_at(AUTHOR, "nurse"))
    goal = _plain(_get(app, world.system(AUTHOR), f"/fhir/Goal/{target.goals[1]}"))
    version = _get(app, world.system(AUTHOR), f"/fhir/Goal/{goal['id']}")["meta"]["versionId"]
    break_log()
    try:
        read = app.get(f"/fhir/CarePlan/{target.plan}", headers=headers)
        assert read.status_code == 500
        assert read.json()["resourceType"] == "OperationOutcome" and target.plan not in read.text
        write = app.put(f"/fhir/Goal/{goal['id']}", json={**goal, "description": {"text": "Utan logg"}},
                        headers=headers)
        assert write.status_code == 500, write.text
        search = app.get("/fhir/Goal", params={"patient": target.patient}, headers=headers)
        assert search.status_code == 500 and target.patient not in search.text
    finally:
        mend_log()
    after = _get(app, world.system(AUTHOR), f"/fhir/Goal/{goal['id']}")
    assert after["meta"]["versionId"] == version and after["description"] == goal["description"]
    assert _check(world.settings.database_url).intact


def _created_and_deleted_goal(world: World, app: TestClient) -> str:
    target = world.agreements[TARGET]
    headers = world.staff(world.role_at(AUTHOR, "nurse"))
    created = app.post("/fhir/Goal", json=_new_goal(target.patient, f"Patient/{target.patient}"), headers=headers)
    assert created.status_code == 201, created.text
    assert app.delete(f"/fhir/Goal/{created.json()['id']}", headers=headers).status_code == 204
    return str(created.json()["id"])


def test_a_write_is_logged_with_the_status_it_answered(world: World, app: TestClient) -> None:
    goal = _created_and_deleted_goal(world, app)
    entries = _log(world)
    assert [(e["interaction"], e["status"]) for e in entries] == [("create", 201), ("delete", 204)]
    assert {e["request"].split("/")[0] for e in entries} == {"Goal"} and goal in entries[1]["request"]


def test_reading_the_history_of_a_deleted_resource_is_logged(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    goal = _created_and_deleted_goal(world, app)
    start = _mark(world)
    history = _get(app, world.staff(world.role_at(AUTHOR, "nurse")), f"/fhir/Goal/{goal}/_history")
    assert any(e.get("resource", {}).get("subject") for e in history["entry"])  # patient data was shown
    [entry] = _log(world, start)
    assert entry["patient_id"] == target.patient and entry["interaction"] == "history-instance"


# -- 3. refused attempts ----------------------------------------------------------------------


def test_a_read_of_another_units_agreement_is_logged_as_refused(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    role_id = world.role_at(OTHER_UNIT, "nurse")
    _, _, org = _region_role(world, role_id)
    start = _mark(world)

    response = app.get(f"/fhir/CarePlan/{target.plan}", headers=world.staff(role_id))

    assert response.status_code == 404
    [entry] = _log(world, start)
    assert (entry["outcome"], entry["status"], entry["interaction"]) == ("refused", 404, "read")
    assert entry["patient_id"] == target.patient
    assert orjson.loads(entry["resources"]) == [f"CarePlan/{target.plan}"]
    assert entry["care_unit"] == _hsa(org) and entry["fhir_user"] == f"PractitionerRole/{role_id}"
    # a read of something that does not exist is logged alike (so the unit's own log does not
    # tell the two apart: test_existence_oracles), but concerns no patient
    assert app.get("/fhir/CarePlan/no-such-plan", headers=world.staff(role_id)).status_code == 404
    _, absent = _log(world, start)
    assert (absent["outcome"], absent["status"], absent["interaction"]) == ("refused", 404, "read")
    assert absent["patient_id"] is None and orjson.loads(absent["resources"]) == []
    assert absent["request"] == "CarePlan/no-such-plan"


def test_a_write_to_another_units_agreement_is_logged_as_refused(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    plan = _plain(_get(app, world.system(AUTHOR), f"/fhir/CarePlan/{target.plan}"))
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    start = _mark(world)
    assert app.put(f"/fhir/CarePlan/{target.plan}", json=plan, headers=other).status_code == 404
    assert app.delete(f"/fhir/Goal/{target.goals[1]}", headers=other).status_code == 404
    entries = _log(world, start)
    assert [(e["interaction"], e["outcome"], e["status"], e["patient_id"]) for e in entries] == [
        ("update", "refused", 404, target.patient), ("delete", "refused", 404, target.patient)]


def test_a_request_without_a_valid_token_is_logged_as_anonymous_and_refused(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    start = _mark(world)
    assert app.get(f"/fhir/CarePlan/{target.plan}").status_code == 401
    forged = {"authorization": "Bearer not-a-token"}
    assert app.get(f"/fhir/Patient/{target.patient}", headers=forged).status_code == 401
    assert app.get("/fhir/metadata").status_code == 200  # public: not a refusal

    first, second = _log(world, start)
    for entry in (first, second):
        assert (entry["user_kind"], entry["user_id"], entry["outcome"], entry["status"]) == (
            "anonymous", "anonymous", "refused", 401)
        assert entry["care_unit"] is None and entry["client_id"] is None
    assert first["request"] == f"GET /fhir/CarePlan/{target.plan}"
    assert second["request"] == f"GET /fhir/Patient/{target.patient}"


# -- 4. the Merkle tree -----------------------------------------------------------------------


def _activity(world: World, app: TestClient) -> None:
    """Reads, searches, a write and a refusal by several people: a log of some length."""
    target = world.agreements[TARGET]
    staff = world.staff(world.role_at(AUTHOR, "nurse"))
    for agreement in world.by_author(AUTHOR):
        assert app.get(f"/fhir/CarePlan/{agreement.plan}", headers=staff).status_code == 200
    assert app.get("/fhir/Goal", params={"_count": "100"}, headers=staff).status_code == 200
    assert app.get(f"/fhir/CareTeam/{target.team}", headers=world.patient(target.patient)).status_code == 200
    assert app.get(f"/fhir/CarePlan/{target.plan}", headers=world.staff(world.role_at(OTHER_UNIT))).status_code == 404
    assert app.post("/fhir/Goal", json=_new_goal(target.patient, f"Patient/{target.patient}"),
                    headers=world.patient(target.patient)).status_code == 201
    assert app.get(f"/fhir/Patient/{target.patient}").status_code == 401


def test_the_tree_verifies_and_tampering_is_found_where_it_is(world: World, app: TestClient,
                                                              tmp_path: Path) -> None:
    url = world.settings.database_url
    _activity(world, app)
    rows = _log(world)
    n = len(rows)
    assert n >= 10 and [r["seq"] for r in rows] == list(range(1, n + 1))
    before = _check(url)
    assert before.intact and (before.entries, before.leaves, before.unsealed) == (n, 0, n)
    _seal(url)
    report = _check(url)
    assert report.intact, report.problems
    assert (report.entries, report.leaves, report.unsealed, report.checkpoints) == (n, n, 0, 1)
    leaves = asyncio.run(_query(url, "SELECT position, seq FROM audit_leaf ORDER BY position"))
    assert [(r["position"], r["seq"]) for r in leaves] == [(s - 1, s) for s in range(1, n + 1)]  # the order kept
    ok = _cli_verify(url, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"intact: {n} entries" in ok.stdout

    k = next(r["seq"] for r in rows[n // 2:] if r["user_name"])
    original = rows[k - 1]
    assert k < n
    # someone hides who read: the entry no longer matches its leaf
    _tamper(url, "UPDATE audit_log SET user_name = 'Någon annan' WHERE seq = $1", k)
    assert [p for p in _check(url).problems if f"entry {k} " in p and "does not match its leaf" in p]
    broken = _cli_verify(url, tmp_path)
    assert broken.returncode == 1
    assert "BROKEN" in broken.stdout and f"entry {k} (position {k - 1}) does not match its leaf" in broken.stdout
    # undone exactly, the log is whole again
    _tamper(url, "UPDATE audit_log SET user_name = $1 WHERE seq = $2", original["user_name"], k)
    assert _check(url).intact

    # an entry removed from the middle: its leaf is still there
    _tamper(url, "DELETE FROM audit_log WHERE seq = $1", k)
    assert _check(url).problems == [f"entry {k} (position {k - 1}) is missing: removed after it was sealed"]
    assert _cli_verify(url, tmp_path).returncode == 1


def test_the_leaves_of_the_storage_layer_match_on_both_backends(db_url: str) -> None:
    """PostgreSQL computes each entry's leaf hash in the INSERT itself, SQLite in Python: both are
    ``leaf_of`` of the entry as stored, including NULLs, non-ASCII and odd characters, and the
    sealed tree verifies."""
    async def run() -> None:
        store = Store(create_engine(db_url, pool_size=2))
        try:
            log = AuditLog(store)
            odd = Principal(kind="patient", id="191212121212", name="Åsa Öberg | ~ 3:x \\ \"q\"", role=None,
                            fhir_user=None, purpose="PATRQT")
            await log.record(_Caller(NURSE), "read", "CarePlan/p1", [_resource("CarePlan", "p1", "pat-1")])
            current = REQUEST_ID.set("req-1.x_Y")  # a request's id: covered by the leaf (migration 0012)
            await log.record(_Caller(odd), "search-type", "Goal?x=y&z=\x00", [_resource("Goal", "g1", "pat-1"),
                                                                              _resource("Goal", "g2", "pat-2")])
            REQUEST_ID.reset(current)
            await log.refused(_Caller(odd), "read", "CarePlan/p9", 404, _resource("CarePlan", "p9", "pat-9"))
            async with store.writing() as unit:
                await log.record(_Caller(NURSE), "update", "CarePlan/p1", [_resource("CarePlan", "p1", "pat-1")],
                                 unit=unit)
            rows = await _all(store)
            assert [r.patient_id for r in rows] == ["pat-1", "pat-1", "pat-2", "pat-9", "pat-1"]
            assert rows[1].user_name == odd.name and rows[1].role is None
            assert [r.request_id for r in rows] == [None, "req-1.x_Y", "req-1.x_Y", None, None]
            async with store.reading() as unit:
                queued = dict((await unit.conn.execute(sa.select(AUDIT_QUEUE.c.seq, AUDIT_QUEUE.c.leaf_hash))).all())
            assert {seq: bytes(h) for seq, h in queued.items()} == {
                r.seq: sql.leaf_of({name: getattr(r, name) for name in sql.FIELDS}) for r in rows}
            keys = audit_tools.keys(make_settings(db_url))
            [checkpoint] = await Sealer(store, keys).seal()
            assert checkpoint.size == 5
            report = await verify(store, keys, checkpoint.note)
            assert report.intact and (report.entries, report.leaves, report.unsealed) == (5, 5, 0)
        finally:
            await store.dispose()
    asyncio.run(run())


def test_tampering_is_found_on_sqlite_too(sqlite_url: str) -> None:
    async def fill() -> None:
        store = Store(create_engine(sqlite_url))
        try:
            log = AuditLog(store)
            for i in range(6):
                await log.record(_Caller(NURSE), "read", f"CarePlan/p{i}", [_resource("CarePlan", f"p{i}", f"pat-{i}")])
        finally:
            await store.dispose()
    asyncio.run(fill())
    _seal(sqlite_url)
    assert _check(sqlite_url).intact
    audit_tools.tamper(sqlite_url, "UPDATE audit_log SET patient_id = 'pat-x' WHERE seq = 4")
    assert _check(sqlite_url).problems == ["entry 4 (position 3) does not match its leaf in the tree: changed "
                                           "after it was sealed"]
    audit_tools.tamper(sqlite_url, "UPDATE audit_log SET patient_id = 'pat-3' WHERE seq = 4",
                       "DELETE FROM audit_log WHERE seq = 2")
    assert _check(sqlite_url).problems == ["entry 2 (position 1) is missing: removed after it was sealed"]


# -- 5. append-only ---------------------------------------------------------------------------


async def test_the_database_refuses_update_and_delete_of_the_log(store: Store, db_url: str) -> None:
    log = AuditLog(store)
    for i in range(3):
        await log.record(_Caller(NURSE), "read", f"CarePlan/p{i}", [_resource("CarePlan", f"p{i}", f"pat-{i}")])
    await Sealer(store, audit_tools.keys(make_settings(db_url))).seal()
    await log.record(_Caller(NURSE), "read", "CarePlan/p3", [_resource("CarePlan", "p3", "pat-3")])  # queued
    for statement in (sa.update(AUDIT_LOG).values(user_name="Någon annan").where(AUDIT_LOG.c.seq == 2),
                      sa.update(AUDIT_LOG).values(patient_id=None),
                      sa.delete(AUDIT_LOG).where(AUDIT_LOG.c.seq == 3),
                      sa.delete(AUDIT_LOG),
                      sa.update(AUDIT_LEAF).values(leaf_hash=bytes(32)),
                      sa.update(AUDIT_LEAF).values(position=AUDIT_LEAF.c.position + 1),
                      sa.delete(AUDIT_LEAF).where(AUDIT_LEAF.c.position == 2),
                      sa.update(AUDIT_CHECKPOINT).values(note=""),
                      sa.delete(AUDIT_CHECKPOINT),
                      sa.update(AUDIT_QUEUE).values(leaf_hash=bytes(32))):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            async with store.writing() as unit:
                await unit.conn.execute(statement)
    rows = await _all(store)
    assert [(r.seq, r.user_name) for r in rows] == [(1, NURSE.name), (2, NURSE.name), (3, NURSE.name),
                                                    (4, NURSE.name)]
    report = await verify(store, audit_tools.keys(make_settings(db_url)))
    assert report.intact and (report.leaves, report.unsealed) == (3, 1)


def test_the_database_refuses_changes_whoever_connects(world: World, app: TestClient, sqlite_url: str) -> None:
    """Not only the service's own statements: the superuser's plain SQL is refused too (the
    triggers are the database's), on PostgreSQL and SQLite."""
    _activity(world, app)
    url = world.settings.database_url

    async def pg() -> None:
        conn = await asyncpg.connect(_dsn(url))
        try:
            for statement in ("UPDATE audit_log SET outcome = 'success' WHERE outcome = 'refused'",
                              "DELETE FROM audit_log WHERE seq = 1"):
                with pytest.raises(asyncpg.RaiseError, match="append-only"):
                    await conn.execute(statement)
        finally:
            await conn.close()
    before = _log(world)
    asyncio.run(pg())
    assert _log(world) == before

    async def fill() -> None:
        store = Store(create_engine(sqlite_url))
        try:
            await AuditLog(store).record(_Caller(NURSE), "read", "CarePlan/p", [_resource("CarePlan", "p", "pat")])
        finally:
            await store.dispose()
    asyncio.run(fill())
    with sqlite3.connect(sqlite_url.split("///", 1)[1]) as conn:
        for statement in ("UPDATE audit_log SET user_id = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT count(*), min(user_id) FROM audit_log").fetchone() == (1, NURSE.id)


# -- 6. concurrency ---------------------------------------------------------------------------


def _of_the_region(world: World) -> list[Agreement]:
    """The agreements the hospital clinic reads as a unit of the same provider: not those of the
    private vårdcentral (another provider, whose part needs the patient's samtycke) nor those
    with an inre spärr on the vårdcentral's part."""
    return [a for a in world.agreements
            if a.author != ANGEN and sparr_on_vardcentral(a.number) != codes.INRE_SPARR]


def test_concurrent_reads_each_leave_one_entry_and_one_leaf(world: World, app: TestClient) -> None:
    staff = world.staff(world.role_at(CONTRIBUTOR, "nurse"))
    patients = {a.plan: a.patient for a in _of_the_region(world)}
    plans = list(patients) * 2  # 28 reads, of 14 patients
    start = _mark(world)

    def read(plan: str) -> int:
        return app.get(f"/fhir/CarePlan/{plan}", headers=staff).status_code

    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        statuses = list(pool.map(read, plans))

    assert statuses == [200] * len(plans)
    entries = _log(world, start)
    assert len({e["seq"] for e in entries}) == len(entries) == len(plans)
    assert sorted(e["request"] for e in entries) == sorted(f"CarePlan/{p}" for p in plans)
    assert all(e["patient_id"] == patients[e["request"].split("/")[1]] for e in entries)
    url = world.settings.database_url
    _seal(url)
    report = _check(url)
    assert report.intact and report.leaves == report.entries == start + len(plans)


async def test_concurrent_reads_and_writes_form_one_tree(store: Store, db_url: str) -> None:
    """Group-committed reads and in-transaction writes interleave: every entry once, every entry
    sealed once, at positions without gaps."""
    log = AuditLog(store)

    async def read(i: int) -> None:
        await log.record(_Caller(NURSE), "read", f"CarePlan/r{i}", [_resource("CarePlan", f"r{i}", f"pat-r{i}")])

    async def write(i: int) -> None:
        async with store.writing() as unit:
            await log.record(_Caller(NURSE), "update", f"Goal/w{i}", [_resource("Goal", f"w{i}", f"pat-w{i}")],
                             unit=unit)

    async def refused(i: int) -> None:
        await log.refused(_Caller(NURSE), "read", f"CarePlan/x{i}", 404, _resource("CarePlan", f"x{i}", f"pat-x{i}"))

    keys = audit_tools.keys(make_settings(db_url))
    sealer = Sealer(store, keys, batch=7)  # small batches: many checkpoints, sealed while entries arrive
    await asyncio.gather(*(read(i) for i in range(40)), *(write(i) for i in range(10)),
                         *(refused(i) for i in range(10)), sealer.seal(), sealer.seal())
    await sealer.seal()
    rows = await _all(store)
    assert len({r.seq for r in rows}) == len(rows) == 60
    assert sorted(r.patient_id or "" for r in rows) == sorted(
        [f"pat-r{i}" for i in range(40)] + [f"pat-w{i}" for i in range(10)] + [f"pat-x{i}" for i in range(10)])
    assert sum(r.outcome == "refused" for r in rows) == 10
    report = await verify(store, keys)
    assert report.intact, report.problems
    assert (report.entries, report.leaves, report.unsealed) == (60, 60, 0) and report.checkpoints >= 60 // 7


async def test_several_processes_append_and_seal_one_tree(clean_pg: str) -> None:
    """Each API process has its own log writer, pool and sealer (design §9: nothing assumes a
    single process): appends from every process, and sealers racing in all of them, give one
    tree whose positions are each taken once."""
    stores = [Store(create_engine(clean_pg, pool_size=4)) for _ in range(3)]
    keys = audit_tools.keys(make_settings(clean_pg))
    try:
        logs = [AuditLog(s) for s in stores]
        sealers = [Sealer(s, keys, batch=5) for s in stores]

        async def read(n: int) -> None:
            log = logs[n % len(logs)]
            await log.record(_Caller(NURSE), "read", f"CarePlan/p{n}", [_resource("CarePlan", f"p{n}", f"pat-{n}")])

        async def write(n: int) -> None:
            store = stores[n % len(stores)]
            async with store.writing() as unit:
                await logs[n % len(logs)].record(_Caller(NURSE), "create", "Goal",
                                                 [_resource("Goal", f"g{n}", f"pat-{n}")], unit=unit)

        async def seal(n: int) -> None:
            await asyncio.sleep(0.001 * n)
            await sealers[n % len(sealers)].seal()

        await asyncio.gather(*(read(n) for n in range(60)), *(write(n) for n in range(60, 75)),
                             *(seal(n) for n in range(12)))
        await sealers[0].seal()
        rows = await _all(stores[0])
        assert len({r.seq for r in rows}) == len(rows) == 75
        assert {r.patient_id for r in rows} == {f"pat-{n}" for n in range(75)}
        report = await verify(stores[0], keys)
        assert report.intact, report.problems
        assert (report.entries, report.leaves) == (75, 75)
    finally:
        for s in stores:
            await s.dispose()


async def test_an_open_write_does_not_hold_up_other_appends(clean_pg: str) -> None:
    """Appends take no lock that another writer holds: while one write transaction has logged
    and not yet committed, a read's entry in another transaction commits (with the chain of
    0002-0004 it waited for the chain lock until the write ended)."""
    store = Store(create_engine(clean_pg, pool_size=4))
    log = AuditLog(store)
    logged, finish = asyncio.Event(), asyncio.Event()

    async def long_write() -> None:
        async with store.writing() as unit:
            await log.record(_Caller(NURSE), "update", "Goal/w", [_resource("Goal", "w", "pat-w")], unit=unit)
            logged.set()
            await finish.wait()

    monitor = await asyncpg.connect(_dsn(clean_pg))
    writer = asyncio.create_task(long_write())
    try:
        await logged.wait()
        read = asyncio.create_task(log.record(_Caller(NURSE), "read", "CarePlan/r",
                                              [_resource("CarePlan", "r", "pat-r")]))
        while not read.done():
            waiting = await monitor.fetch("SELECT wait_event FROM pg_stat_activity WHERE datname = current_database() "
                                          "AND wait_event_type = 'Lock'")
            assert waiting == [], f"the read's append waits for the open write: {waiting}"
            await asyncio.sleep(0.01)
        await read
        committed = await monitor.fetch("SELECT patient_id FROM audit_log")
        assert [r["patient_id"] for r in committed] == ["pat-r"]  # the write's entry is not yet visible
        finish.set()
        await writer
        assert {r["patient_id"] for r in await monitor.fetch("SELECT patient_id FROM audit_log")} == {"pat-r", "pat-w"}
    finally:
        finish.set()
        await writer
        await monitor.close()
        await store.dispose()


async def test_a_rolled_back_write_leaves_no_entry_and_no_gap_in_the_tree(store: Store, db_url: str) -> None:
    log = AuditLog(store)
    await log.record(_Caller(NURSE), "read", "CarePlan/a", [_resource("CarePlan", "a", "pat-a")])
    with pytest.raises(RuntimeError):
        async with store.writing() as unit:
            await log.record(_Caller(NURSE), "update", "Goal/b", [_resource("Goal", "b", "pat-b")], unit=unit)
            raise RuntimeError("the write fails after it was logged")
    await log.record(_Caller(NURSE), "read", "CarePlan/c", [_resource("CarePlan", "c", "pat-c")])
    rows = await _all(store)
    assert [r.patient_id for r in rows] == ["pat-a", "pat-c"] and rows[0].seq < rows[1].seq
    keys = audit_tools.keys(make_settings(db_url))
    await Sealer(store, keys).seal()
    async with store.reading() as unit:
        leaves = (await unit.conn.execute(sa.select(AUDIT_LEAF.c.position, AUDIT_LEAF.c.seq)
                                          .order_by(AUDIT_LEAF.c.position))).all()
    assert [tuple(leaf) for leaf in leaves] == [(0, rows[0].seq), (1, rows[1].seq)]
    report = await verify(store, keys)
    assert report.intact and (report.entries, report.leaves) == (2, 2)


# -- 7. AuditEvent --------------------------------------------------------------------------


async def test_the_log_search_of_the_storage_layer_on_both_backends(store: Store) -> None:
    """The filters behind AuditEvent search, as SQL on PostgreSQL and SQLite: wildcards in a
    value are literal, ``Patient/id`` finds the entries about the patient, groups are ANDed."""
    log = AuditLog(store)
    await log.record(_Caller(NURSE), "read", "CarePlan/p1", [_resource("CarePlan", "p1", "pat-1")])
    await log.record(_Caller(NURSE), "read", "Patient/pat-2", [_resource("Patient", "pat-2", "pat-2")])
    await log.record(_Caller(NURSE), "search-type", "Goal?", [_resource("Goal", "g1", "pat-1"),
                                                               _resource("Goal", "g2", "pat-3")])
    rows = await _all(store)
    middle = rows[1].recorded

    async def seqs(**filters: Any) -> list[int]:
        found, total = await sql.search(store, sql.AuditQuery(**filters), 0, 50)
        assert total == len(found)
        return sorted(r.seq for r in found)

    assert await seqs(entity=[["CarePlan/p1"]]) == [1]
    assert await seqs(entity=[["CarePlan/p%"]]) == [] and await seqs(entity=[["CarePlan/_1"]]) == []
    assert await seqs(entity=[["Patient/pat-1"]]) == [1, 3]  # about pat-1, the Patient itself unread
    assert await seqs(entity=[["Patient/pat-2"]]) == [2]
    assert await seqs(entity=[["Goal/g1", "Goal/g2"]]) == [3, 4]
    assert await seqs(entity=[["Goal/g1"], ["Goal/g2"]]) == []  # one entry per patient: never both
    assert await seqs(agents=[[NURSE.id]], patient_ids=["pat-3"]) == [4]
    assert await seqs(agents=[["PractitionerRole/r1"], ["pk-personal"]]) == [1, 2, 3, 4]
    assert await seqs(agents=[["PractitionerRole/r1"], ["someone-else"]]) == []
    assert await seqs(care_unit="SE2321000016-E999") == []
    assert await seqs(since=middle) == [r.seq for r in rows if r.recorded >= middle]
    assert await seqs(until=middle) == [r.seq for r in rows if r.recorded < middle]
    assert await seqs(seq=3) == [3]


def test_a_patient_sees_only_the_entries_about_themselves(world: World, app: TestClient) -> None:
    target, foreign = world.agreements[TARGET], world.agreements[FOREIGN]
    staff = world.staff(world.role_at(CONTRIBUTOR, "nurse"))  # takes part in both agreements
    for agreement in (target, foreign):
        assert app.get(f"/fhir/CarePlan/{agreement.plan}", headers=staff).status_code == 200
    app.get(f"/fhir/CarePlan/{target.plan}", headers=world.staff(world.role_at(OTHER_UNIT)))  # refused, about target
    assert app.get(f"/fhir/Goal/{foreign.patient_goal}", headers=world.patient(foreign.patient)).status_code == 200
    me = world.patient(target.patient)

    mine = {r["seq"] for r in _log(world) if r["patient_id"] == target.patient}
    theirs = {r["seq"] for r in _log(world) if r["patient_id"] == foreign.patient}
    assert len(mine) == 2 and len(theirs) == 2
    bundle = _get(app, me, "/fhir/AuditEvent")
    assert _event_ids(bundle) == mine and bundle["total"] == len(mine)
    for e in bundle["entry"]:
        assert _patients_of(e["resource"]) == {f"Patient/{target.patient}"}
    # the loggutdrag shows which care unit looked
    units = {a["who"].get("display") for e in bundle["entry"] for a in e["resource"]["agent"]
             if a["type"].get("text") == "vårdenhet"}
    assert units == {_region_role(world, world.role_at(org, "nurse"))[2]["name"] for org in (CONTRIBUTOR, OTHER_UNIT)}

    assert _event_ids(_get(app, me, "/fhir/AuditEvent", patient=f"Patient/{target.patient}")) == mine
    assert _event_ids(_get(app, me, "/fhir/AuditEvent", patient=target.patient)) == mine
    other = _get(app, me, "/fhir/AuditEvent", patient=f"Patient/{foreign.patient}")
    assert other["total"] == 0 and "entry" not in other
    assert _event_ids(_get(app, me, "/fhir/AuditEvent",
                           patient=f"{foreign.patient},{target.patient}")) == mine
    # search by POST: the same rules
    form = {**me, "content-type": "application/x-www-form-urlencoded"}
    posted = app.post("/fhir/AuditEvent/_search", content=f"patient={foreign.patient}", headers=form)
    assert posted.status_code == 200, posted.text
    assert posted.json()["total"] == 0
    assert _event_ids(app.post("/fhir/AuditEvent/_search", content="", headers=form).json()) == mine
    for seq in mine:
        assert app.get(f"/fhir/AuditEvent/{seq}", headers=me).status_code == 200
    for seq in theirs:
        refused = app.get(f"/fhir/AuditEvent/{seq}", headers=me)
        assert refused.status_code == 404 and refused.json()["resourceType"] == "OperationOutcome"
    for bad in ("0", "999999", "abc", "1.0", "-1"):
        assert app.get(f"/fhir/AuditEvent/{bad}", headers=me).status_code == 404


def test_staff_see_the_entries_of_their_own_unit_only(world: World, app: TestClient) -> None:
    target, foreign = world.agreements[TARGET], world.agreements[FOREIGN]
    author = world.staff(world.role_at(AUTHOR, "nurse"))
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    assert app.get(f"/fhir/CarePlan/{target.plan}", headers=author).status_code == 200
    assert app.get(f"/fhir/CarePlan/{foreign.plan}", headers=other).status_code == 200
    assert app.get(f"/fhir/CarePlan/{target.plan}", headers=other).status_code == 404
    assert app.get(f"/fhir/Goal/{target.patient_goal}", headers=world.patient(target.patient)).status_code == 200
    rows = _log(world)
    _, _, author_org = _region_role(world, world.role_at(AUTHOR, "nurse"))
    _, _, other_org = _region_role(world, world.role_at(OTHER_UNIT, "nurse"))
    ours = {r["seq"] for r in rows if r["care_unit"] == _hsa(author_org)}
    theirs = {r["seq"] for r in rows if r["care_unit"] == _hsa(other_org)}
    assert len(ours) == 1 and len(theirs) == 2

    assert _event_ids(_get(app, author, "/fhir/AuditEvent")) == ours
    assert _event_ids(_get(app, other, "/fhir/AuditEvent")) == theirs
    # about the target's patient, each unit sees only its own entries; Strandvägen's refusal is
    # not found through the patient it may not see, and shows no patient (test_existence_oracles)
    assert _event_ids(_get(app, author, "/fhir/AuditEvent", patient=target.patient)) == ours
    assert _get(app, other, "/fhir/AuditEvent", patient=target.patient)["total"] == 0
    refusal = [e["resource"] for e in _get(app, other, "/fhir/AuditEvent")["entry"] if e["resource"]["outcome"] == "4"]
    assert len(refusal) == 1 and target.patient not in json.dumps(refusal)
    # a system acting for the unit sees the unit's entries too
    assert _event_ids(_get(app, world.system(AUTHOR), "/fhir/AuditEvent")) == ours
    [own] = ours
    assert app.get(f"/fhir/AuditEvent/{own}", headers=author).status_code == 200
    for seq in theirs:
        assert app.get(f"/fhir/AuditEvent/{seq}", headers=author).status_code == 404
    assert app.get(f"/fhir/AuditEvent/{own}", headers=other).status_code == 404


def test_search_by_agent_entity_and_date(world: World, app: TestClient) -> None:
    target, second = world.agreements[TARGET], world.agreements[SECOND]
    nurse_id, doctor_id = world.role_at(AUTHOR, "nurse"), world.role_at(AUTHOR, "doctor")
    nurse, doctor = world.staff(nurse_id), world.staff(doctor_id)
    _, nurse_person, _ = _region_role(world, nurse_id)
    assert app.get(f"/fhir/CarePlan/{target.plan}", headers=nurse).status_code == 200
    assert app.get(f"/fhir/CareTeam/{second.team}", headers=doctor).status_code == 200
    first_phase = _log(world)
    assert len(first_phase) == 2
    boundary = max(r["recorded"] for r in first_phase) + timedelta(milliseconds=1)
    while datetime.now(UTC).replace(tzinfo=None) < boundary + timedelta(milliseconds=5):
        time.sleep(0.005)
    assert app.get(f"/fhir/CarePlan/{second.plan}", headers=nurse).status_code == 200
    assert app.get(f"/fhir/Goal/{target.goals[1]}", headers=doctor).status_code == 200
    rows = _log(world)
    assert len(rows) == 4
    seqs = [r["seq"] for r in rows]

    def ids(**params: str) -> set[int]:
        return _event_ids(_get(app, nurse, "/fhir/AuditEvent", **params))

    by_nurse = {seqs[0], seqs[2]}
    assert ids(agent=_hsa(nurse_person)) == by_nurse
    assert ids(agent=f"{HSA_ID}|{_hsa(nurse_person)}") == by_nurse
    assert ids(agent=f"PractitionerRole/{nurse_id}") == by_nurse
    assert ids(agent=f"PractitionerRole/{doctor_id}") == {seqs[1], seqs[3]}
    assert ids(agent=f"{BASE_URL}/fhir/PractitionerRole/{doctor_id}") == {seqs[1], seqs[3]}
    assert ids(agent="pk-personal") == set(seqs)
    assert ids(agent="SE2321000016-NOONE") == set()

    assert ids(entity=f"CarePlan/{target.plan}") == {seqs[0]}
    assert ids(entity=f"{BASE_URL}/fhir/CarePlan/{target.plan}") == {seqs[0]}
    assert ids(entity=f"CarePlan/{target.plan},CareTeam/{second.team}") == {seqs[0], seqs[1]}
    assert ids(entity=f"Goal/{target.goals[1]}") == {seqs[3]}
    assert ids(entity="CarePlan/demo-plan-0000") == set(), "a prefix of an id is not the id"
    # the rendered entity lists the patient, so a search for it finds the entry
    assert ids(entity=f"Patient/{target.patient}") == {seqs[0], seqs[3]}

    instant = boundary.strftime("%Y-%m-%dT%H:%M:%S.") + f"{boundary.microsecond // 1000:03d}"
    assert ids(date=f"ge{instant}Z") == {seqs[2], seqs[3]}
    assert ids(date=f"lt{instant}Z") == {seqs[0], seqs[1]}
    local = boundary + timedelta(hours=2)
    as_local = local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}+02:00"
    assert ids(date=f"ge{as_local}") == {seqs[2], seqs[3]}
    assert ids(date=f"lt{as_local}") == {seqs[0], seqs[1]}
    today = boundary.date().isoformat()
    assert ids(date=today) == set(seqs)
    assert ids(date=f"gt{today}") == set()
    assert ids(date=f"ge{instant}Z", agent=f"PractitionerRole/{nurse_id}") == {seqs[2]}
    # two date parameters: both hold (a range)
    assert ids(**{"date": f"ge{instant}Z"}) & ids(date=f"lt{instant}Z") == set()
    both = _event_ids(_get(app, nurse, f"/fhir/AuditEvent?date=ge{today}&date=lt{instant}Z"))
    assert both == {seqs[0], seqs[1]}
    # a comma-separated list is any of them, every one counted
    assert ids(date=f"lt{instant}Z,gt{today}") == {seqs[0], seqs[1]}
    assert ids(date=f"gt{today},lt{instant}Z") == {seqs[0], seqs[1]}
    # repeated parameters are all applied (AND), not the last one only
    assert _event_ids(_get(app, nurse, f"/fhir/AuditEvent?agent=PractitionerRole/{nurse_id}"
                                       f"&agent=PractitionerRole/{doctor_id}")) == set()

    bad = app.get("/fhir/AuditEvent", params={"date": "yesterday"}, headers=nurse)
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    unknown = app.get("/fhir/AuditEvent", params={"altid": "x"}, headers=nurse)
    assert unknown.status_code == 400


def test_paging_through_the_log(world: World, app: TestClient) -> None:
    staff = world.staff(world.role_at(CONTRIBUTOR, "nurse"))
    for agreement in _of_the_region(world)[:7]:
        assert app.get(f"/fhir/CarePlan/{agreement.plan}", headers=staff).status_code == 200
    seqs = [r["seq"] for r in _log(world)]
    first = _get(app, staff, "/fhir/AuditEvent", _count="3")
    assert first["total"] == 7
    assert [int(e["resource"]["id"]) for e in first["entry"]] == sorted(seqs, reverse=True)[:3]  # newest first
    seen: list[int] = []
    page: dict[str, Any] | None = first
    while page is not None:
        seen += [int(e["resource"]["id"]) for e in page["entry"]]
        links = {link["relation"]: link["url"] for link in page["link"]}
        page = _get(app, staff, links["next"].removeprefix(BASE_URL)) if "next" in links else None
    assert seen == sorted(seqs, reverse=True)
    assert app.get("/fhir/AuditEvent", params={"_count": "x"}, headers=staff).status_code == 400
    # _count=0: the total only, and no next page that would be this page again
    total_only = _get(app, staff, "/fhir/AuditEvent", _count="0")
    assert total_only["total"] == 7 and "entry" not in total_only
    assert [link["relation"] for link in total_only["link"]] == ["self"]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/fhir/AuditEvent"), ("PUT", "/fhir/AuditEvent"), ("DELETE", "/fhir/AuditEvent"),
    ("PUT", "/fhir/AuditEvent/1"), ("DELETE", "/fhir/AuditEvent/1"), ("PATCH", "/fhir/AuditEvent/1"),
    ("PATCH", "/fhir/AuditEvent"),
])
def test_the_log_cannot_be_written_through_the_api(world: World, app: TestClient, method: str, path: str) -> None:
    target = world.agreements[TARGET]
    staff = world.system(AUTHOR)
    assert app.get(f"/fhir/CarePlan/{target.plan}", headers=staff).status_code == 200
    before = _log(world)
    event = _get(app, staff, "/fhir/AuditEvent/1")
    response = app.request(method, path, json={**event, "outcome": "0"}, headers=staff)
    assert response.status_code == 405, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.headers["allow"] == "GET"
    assert _log(world) == before


def test_reading_the_log_needs_an_audit_event_scope(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    assert app.get(f"/fhir/CarePlan/{target.plan}", headers=world.system(AUTHOR)).status_code == 200
    for headers in (world.staff(world.role_at(AUTHOR, "nurse"), scope="openid fhirUser user/CarePlan.rs"),
                    world.patient(target.patient, scope="openid fhirUser launch/patient patient/CarePlan.rs"),
                    world.system(AUTHOR, scope="system/CarePlan.rs system/Goal.cruds")):
        for path in ("/fhir/AuditEvent", "/fhir/AuditEvent/1"):
            response = app.get(path, headers=headers)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["resourceType"] == "OperationOutcome"
    # a read scope alone allows read but not search
    read_only = world.system(AUTHOR, scope="system/AuditEvent.r")
    assert app.get("/fhir/AuditEvent/1", headers=read_only).status_code == 200
    assert app.get("/fhir/AuditEvent", headers=read_only).status_code == 403


def test_every_entry_renders_as_a_valid_r4_audit_event(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    _activity(world, app)
    app.get(f"/fhir/Patient/{target.patient}/$patientkontrakt", headers=world.system(AUTHOR))
    app.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Goal/{target.goals[1]}"}}]}, headers=world.system(AUTHOR))
    app.get(f"/fhir/CarePlan/{target.plan}/_history", headers=world.staff(world.role_at(AUTHOR, "nurse")))

    async def rows() -> list[sql.AuditRow]:
        store = Store(create_engine(world.settings.database_url, pool_size=1))
        try:
            return await _all(store)
        finally:
            await store.dispose()
    every = asyncio.run(rows())
    kinds = {(r.user_kind, r.interaction, r.outcome) for r in every}
    assert {("anonymous", "request", "refused"), ("staff", "read", "refused"), ("patient", "create", "success"),
            ("system", "operation", "success"), ("staff", "search-type", "success")} <= kinds
    for row in every:
        event = render(row, f"{BASE_URL}/fhir")
        model = AuditEvent.model_validate(event)
        assert model.id == str(row.seq)
        assert event["outcome"] == ("0" if row.outcome == "success" else "4")
        who = event["agent"][0]["who"]["identifier"]
        assert who["value"] == row.user_id
        if row.user_kind == "staff":
            assert who["system"] == HSA_ID
        if row.user_kind == "patient":
            assert who["system"] == PERSONNUMMER
        if row.patient_id:
            assert _patients_of(event) == {f"Patient/{row.patient_id}"}
        assert {e["what"]["reference"] for e in event["entity"] if "reference" in e.get("what", {})} \
            >= set(orjson.loads(row.resources))
        request_ids = [e["what"]["identifier"]["value"] for e in event["entity"]
                       if e.get("type", {}).get("code") == "XrequestId"]
        assert request_ids == ([row.request_id] if row.request_id else [])

    # and as served: a read and a searchset
    staff = world.staff(world.role_at(AUTHOR, "nurse"))
    bundle = _get(app, staff, "/fhir/AuditEvent")
    assert bundle["entry"]
    Bundle.model_validate(bundle)
    one = app.get(bundle["entry"][0]["fullUrl"].removeprefix(BASE_URL), headers=staff)
    assert one.status_code == 200 and one.headers["content-type"].startswith("application/fhir+json")
    event = AuditEvent.model_validate(one.json())
    assert event.purposeOfEvent[0].coding[0].code == "TREAT"
    assert event.agent[1].who.identifier.value == _hsa(_region_role(world, world.role_at(AUTHOR, "nurse"))[2])


def test_the_audit_event_routes_are_not_a_way_around_authentication(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    app.get(f"/fhir/CarePlan/{target.plan}", headers=world.system(AUTHOR))
    for response in (app.get("/fhir/AuditEvent"), app.get("/fhir/AuditEvent/1"),
                     app.get("/fhir/AuditEvent", headers={"authorization": f"Bearer {uuid.uuid4()}"})):
        assert response.status_code == 401
        assert "www-authenticate" in response.headers

