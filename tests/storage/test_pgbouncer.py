"""The service through PgBouncer in transaction mode (Debian's pgbouncer 1.18: no prepared
statements across transactions), in front of a private cluster (tests/pgcluster.py): FHIR create, read, search and a
transaction Bundle, concurrent requests on fewer server connections than clients, the settings
that must come from the role or database, and workers that do not LISTEN through the pooler."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.storage.database import check_settings, create_engine, migrate
from patientkontrakt.storage.engines import open_store
from tests.conftest import BASE_URL, engine_token, make_settings
from tests.pgcluster import Cluster, PgBouncer

NAME = "pk"


@pytest.fixture(scope="module")
def bouncer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PgBouncer, str]]:
    cluster = Cluster.create(tmp_path_factory.mktemp("pgbouncer") / "pg")
    try:
        cluster.sql(f"CREATE DATABASE {NAME}")
        # What the service's connections set at startup when they are direct (storage/database.py)
        for setting in ("plan_cache_mode = force_generic_plan", "jit = off", "statement_timeout = '10s'"):
            cluster.sql(f"ALTER DATABASE {NAME} SET {setting}")
        migrate(cluster.url(NAME))
        pgbouncer = PgBouncer(cluster.port, pool_size=2)
        try:
            yield pgbouncer, cluster.url(NAME)
        finally:
            pgbouncer.stop()
    finally:
        cluster.destroy()


def _settings_missing(url: str) -> list[str]:
    async def check() -> list[str]:
        engine = create_engine(url, pool_size=1, pgbouncer=True)
        try:
            return await check_settings(engine, 10.0)
        finally:
            await engine.dispose()

    return asyncio.run(check())


def test_the_connection_settings_come_from_the_database_behind_pgbouncer(bouncer: tuple[PgBouncer, str]) -> None:
    pgbouncer, _ = bouncer
    # the postgres database lacks the settings: the check names each one missing
    missing = _settings_missing(pgbouncer.url("postgres"))
    assert any(m.startswith("statement_timeout = 10000") for m in missing)
    assert any(m.startswith("plan_cache_mode = force_generic_plan") for m in missing)
    assert _settings_missing(pgbouncer.url(NAME)) == []


@pytest.fixture(scope="module")
def http(bouncer: tuple[PgBouncer, str]) -> Iterator[tuple[TestClient, dict[str, str]]]:
    pgbouncer, _ = bouncer
    settings = make_settings(pgbouncer.url(NAME), database_pgbouncer=True, db_pool_size=8)
    with TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL) as client:
        yield client, {"content-type": "application/fhir+json", "authorization": f"Bearer {engine_token(settings)}"}


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def test_fhir_interactions_through_pgbouncer(http: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = http
    created = client.post("/fhir/Patient", json=_patient("Poolsson"), headers=headers)
    assert created.status_code == 201, created.text
    patient = created.json()["id"]
    assert client.get(f"/fhir/Patient/{patient}", headers=headers).json()["id"] == patient
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b0b0b0b-0000-4000-8000-000000000001", "resource": _patient("Poolsson"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Promenera"},
                      "subject": {"reference": f"Patient/{patient}"}},
         "request": {"method": "POST", "url": "Goal"}},
    ]}
    done = client.post("/fhir", json=bundle, headers=headers)
    assert done.status_code == 200, done.text
    assert [e["response"]["status"][:3] for e in done.json()["entry"]] == ["201", "201"]

    def search(n: int) -> tuple[int, int]:
        if n % 3 == 0:
            answer = client.post("/fhir/Patient", json=_patient(f"Poolsson{n}"), headers=headers)
            return answer.status_code, 1
        answer = client.get(f"/fhir/Goal?subject=Patient/{patient}&_include=Goal:subject",
                            headers=headers)
        return answer.status_code, len(answer.json().get("entry", []))

    # more requests at once than PgBouncer has server connections (2): statements of one client
    # land on whichever server connection is free
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(search, range(24)))
    assert all(status in (200, 201) for status, _ in results), results
    assert all(found == 2 for status, found in results if status == 200)
    total = client.get("/fhir/Patient?family=Poolsson&_total=accurate", headers=headers).json()["total"]
    assert total == 2 + 8


def test_workers_do_not_listen_through_pgbouncer(bouncer: tuple[PgBouncer, str]) -> None:
    pgbouncer, direct = bouncer

    async def listening(**overrides: Any) -> bool:
        store = await open_store(make_settings(pgbouncer.url(NAME), database_pgbouncer=True, **overrides), 1)
        try:
            if store.listen_engine is None:
                return False
            assert store.listen_engine.url.port != pgbouncer.port
            return True
        finally:
            await store.dispose()

    assert asyncio.run(listening()) is False
    assert asyncio.run(listening(database_listen_url=direct)) is True


def test_the_cli_checks_the_schema_through_pgbouncer(bouncer: tuple[PgBouncer, str]) -> None:
    """`patientkontrakt serve` checks the schema before it starts its workers: through PgBouncer
    that connection, too, must leave the startup settings PgBouncer refuses to the role."""
    from patientkontrakt.cli import _check_schema

    pgbouncer, _ = bouncer
    asyncio.run(_check_schema(pgbouncer.url(NAME), True))
    with pytest.raises(Exception):  # noqa: B017 - what PgBouncer answers a startup setting it does not know
        asyncio.run(_check_schema(pgbouncer.url(NAME), False))
