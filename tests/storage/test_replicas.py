"""Reads on a hot standby, read-your-writes, and a failover drill (docs/operations.md, "Replicas,
PgBouncer, failover"), on a private primary and synchronous standby (tests/pgcluster.py).

The standby's replay is paused (``pg_wal_replay_pause``) to make it visibly behind: what a search
then finds tells where it ran. The drill crashes the primary, promotes the standby, and checks that
the service (one multi-host ``PK_DATABASE_URL``) writes again without a restart and that every
write it acknowledged is there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.security.tokens import Grant
from patientkontrakt.storage.database import migrate
from patientkontrakt.storage.replica import SESSION, ReadSession
from tests.conftest import BASE_URL, ENGINE_SCOPES, issue_token, make_settings
from tests.pgcluster import Cluster, module_pair_fixture

pg_pair = module_pair_fixture(synchronous=True)
DB = "pk"


@pytest.fixture(scope="module")
def pair(pg_pair: tuple[Cluster, Cluster]) -> tuple[Cluster, Cluster]:
    primary, standby = pg_pair
    primary.sql(f"CREATE DATABASE {DB}")
    migrate(primary.url(DB))
    standby.wait_replayed(primary)
    return primary, standby


def _client(http: TestClient, settings: Any, sub: str) -> dict[str, str]:
    token = issue_token(settings, Grant(kind="system", sub=sub, name=sub), ENGINE_SCOPES, client_id=sub)
    return {"authorization": f"Bearer {token}", "content-type": "application/fhir+json"}


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def _found(http: TestClient, headers: dict[str, str], family: str) -> int:
    response = http.get(f"/fhir/Patient?family={family}", headers=headers)
    assert response.status_code == 200, response.text
    return len(response.json().get("entry", []))


async def _store_finds(http: TestClient, patient: str, in_session: bool) -> bool:
    store = http.app.state.service.store  # type: ignore[attr-defined]
    token = SESSION.set(ReadSession()) if in_session else None
    try:
        async with store.replica_reading() as unit:
            return await unit.get("Patient", patient) is not None
    finally:
        if token is not None:
            SESSION.reset(token)


@pytest.fixture(scope="module")
def service(pair: tuple[Cluster, Cluster]) -> Iterator[tuple[TestClient, Any]]:
    primary, standby = pair
    # A lag bound far beyond the tests: the replica answers however far behind its paused replay is
    # (test_a_read_on_the_replica_is_never_staler_than_the_bound has a bound of its own).
    settings = make_settings(primary.url(DB), database_replica_url=standby.url(DB), replica_wait=0.05,
                             replica_max_lag=3600)
    with TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL) as http:
        _found(http, _client(http, settings, "warm-up"), "Replikasson")  # the primary's position sampled
        yield http, settings


def test_searches_run_on_the_replica_and_a_writer_reads_its_own_write(
        pair: tuple[Cluster, Cluster], service: tuple[TestClient, Any]) -> None:
    primary, standby = pair
    http, settings = service
    writer, other = _client(http, settings, "writer"), _client(http, settings, "other")
    standby.sql("SELECT pg_wal_replay_pause()")
    try:
        created = http.post("/fhir/Patient", json=_patient("Replikasson"), headers=writer)
        assert created.status_code == 201, created.text
        position = created.headers["X-PK-LSN"]
        assert primary.sql(f"SELECT pg_current_wal_lsn() >= '{position}'::pg_lsn") == "t"
        # the replica has not replayed the write: another client's search runs there and misses it
        assert _found(http, other, "Replikasson") == 0
        # the writer's own search and read wait for the replica, then go to the primary
        assert _found(http, writer, "Replikasson") == 1
        assert http.get(created.headers["Location"].split("/_history")[0], headers=writer).status_code == 200
        # the read's access log entry is written on the primary (the replica refuses writes)
        assert int(primary.sql("SELECT count(*) FROM audit_log", DB)) > 0
        # reads without a read session (the pages, the service's own work) stay on the primary
        patient = created.json()["id"]
        assert http.portal.call(_store_finds, http, patient, False) is True
        assert http.portal.call(_store_finds, http, patient, True) is False
        # another client (or this one through another process) sending the position back sees it too
        assert _found(http, {**other, "X-PK-LSN": position}, "Replikasson") == 1
    finally:
        standby.sql("SELECT pg_wal_replay_resume()")
    standby.wait_replayed(primary)
    assert _found(http, other, "Replikasson") == 1


def test_a_version_the_primary_counts_is_found_when_the_replica_is_behind_it(
        pair: tuple[Cluster, Cluster], service: tuple[TestClient, Any]) -> None:
    """A vread reads the current row, then the version, in two statements that may each go to
    the replica or the primary. When the primary answered the first (the replica was behind for
    that statement, then caught up with what the reader needs) and the replica the second, the
    version the primary counts as current is still found: 200, not 404."""
    primary, standby = pair
    http, settings = service
    writer, reader = _client(http, settings, "writer"), _client(http, settings, "version-reader")
    created = http.post("/fhir/Patient", json=_patient("Versionsson"), headers=writer)
    assert created.status_code == 201, created.text
    patient = created.json()["id"]
    standby.wait_replayed(primary)
    store = http.app.state.service.store  # type: ignore[attr-defined]
    standby.sql("SELECT pg_wal_replay_pause()")
    try:
        updated = http.put(f"/fhir/Patient/{patient}", json={**_patient("Versionsson"), "id": patient,
                                                              "gender": "female"}, headers=writer)
        assert updated.status_code == 200, updated.text
        # the reader wrote nothing: the replica may answer it (the lag bound is far), and does
        assert http.get(f"/fhir/Patient/{patient}/_history/2", headers=reader).status_code == 404

        async def behind(sql: str, args: list[Any]) -> bool:
            return False  # what _replica_fetchrow answers when the replica is behind the reader's need

        store._replica_fetchrow = behind  # type: ignore[method-assign]
        try:
            version = http.get(f"/fhir/Patient/{patient}/_history/2", headers=reader)
        finally:
            del store._replica_fetchrow
        assert version.status_code == 200, version.text
        assert version.json()["gender"] == "female" and version.json()["meta"]["versionId"] == "2"
        # a version the current row does not count is still 404, wherever it was looked for
        store._replica_fetchrow = behind  # type: ignore[method-assign]
        try:
            assert http.get(f"/fhir/Patient/{patient}/_history/3", headers=reader).status_code == 404
        finally:
            del store._replica_fetchrow
    finally:
        standby.sql("SELECT pg_wal_replay_resume()")
    standby.wait_replayed(primary)


def test_a_read_on_the_replica_is_never_staler_than_the_bound(pair: tuple[Cluster, Cluster]) -> None:
    """With ``PK_REPLICA_MAX_LAG`` 0 every replica read needs what the primary has written: a
    client that did not write (a spärr set by someone else, say) still sees the newest state, from
    the primary while the replica's replay is paused. And a position a client forges in X-PK-LSN
    counts only up to the primary's own."""
    primary, standby = pair
    settings = make_settings(primary.url(DB), database_replica_url=standby.url(DB), replica_wait=0.05,
                             replica_max_lag=0)
    with TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL) as http:
        writer, other = _client(http, settings, "writer"), _client(http, settings, "other")
        standby.sql("SELECT pg_wal_replay_pause()")
        try:
            created = http.post("/fhir/Patient", json=_patient("Gransson"), headers=writer)
            assert created.status_code == 201, created.text
            assert _found(http, other, "Gransson") == 1
            forged = {**other, "X-PK-LSN": "FFFFFFFF/FFFFFFFF"}
            assert _found(http, forged, "Gransson") == 1
            floor = http.portal.call(_floor_of, http, ReadSession(after=(1 << 64) - 1))
            assert floor <= int(primary.sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
        finally:
            standby.sql("SELECT pg_wal_replay_resume()")
        standby.wait_replayed(primary)


async def _floor_of(http: TestClient, session: ReadSession) -> int:
    store = http.app.state.service.store  # type: ignore[attr-defined]
    token = SESSION.set(session)
    try:
        floor: int = await store._replica_floor()
        return floor
    finally:
        SESSION.reset(token)


def test_reads_go_to_the_primary_while_the_replica_is_down(
        pair: tuple[Cluster, Cluster], service: tuple[TestClient, Any]) -> None:
    primary, standby = pair
    http, settings = service
    reader = _client(http, settings, "reader")
    # (a synchronous standby that is down stops every commit on the primary, the read's access
    # log entry among them: docs/operations.md says to run two standbys for that reason)
    primary.configure(synchronous_standby_names="")
    standby.stop()
    try:
        assert _found(http, reader, "Replikasson") == 1
    finally:
        standby.start()
        primary.configure(synchronous_standby_names=standby.name)


def test_failover_drill_promoted_standby_has_every_acknowledged_write(pair: tuple[Cluster, Cluster]) -> None:
    """Synchronous replication: a commit is acknowledged once the standby has it, so promoting the
    standby after a crash of the primary loses no acknowledged write."""
    primary, standby = pair
    url = (f"postgresql+asyncpg://postgres@/{DB}?host=127.0.0.1:{primary.port}&host=127.0.0.1:{standby.port}"
           "&target_session_attrs=read-write")
    settings = make_settings(url, db_connect_timeout=2, retry_after=1)
    acknowledged: list[str] = []
    with TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL) as http:
        headers = _client(http, settings, "drill")

        def write(n: int) -> int:
            response = http.post("/fhir/Patient", json=_patient(f"Drill{n}"), headers=headers)
            if response.status_code == 201:
                acknowledged.append(response.headers["Location"].split("/_history")[0])
            else:
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "1"
            return response.status_code

        for n in range(10):
            assert write(n) == 201
        primary.stop("immediate")  # a crash
        assert write(10) == 503  # the primary is gone; the standby refuses read-write sessions
        standby.promote()
        deadline = time.monotonic() + 20
        n = 11
        while write(n) != 201:  # reconnects to the promoted standby, no restart
            assert time.monotonic() < deadline, "the service did not write to the promoted standby"
            n += 1
        for location in acknowledged:
            assert http.get(location, headers=headers).status_code == 200, location
    assert len(acknowledged) == 11
    ids = set(standby.sql("SELECT res_id FROM resource WHERE res_type = 'Patient'", DB).split())
    assert {location.rsplit("/", 1)[1] for location in acknowledged} <= ids
