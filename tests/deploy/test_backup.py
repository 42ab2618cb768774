"""Back up and restore as docs/operations.md says: ``pg_dump -Fc`` of a database with the demo
region and a sealed access log, ``pg_restore`` into a new database, and the copy serves the same
resources, accepts writes, and its access log verifies against the checkpoint exported before
the backup."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.config import Settings
from tests.conftest import BASE_URL, _dsn, demo_database, drop_database, engine_token, make_settings, new_database
from tests.security.audit_tools import cli, seal

COUNTS = """
    SELECT 'resource ' || res_type, count(*) FROM resource GROUP BY res_type
    UNION ALL SELECT 'resource_version', count(*) FROM resource_version
    UNION ALL SELECT 'idx_token', count(*) FROM idx_token
    UNION ALL SELECT 'audit_log', count(*) FROM audit_log
    UNION ALL SELECT 'oauth_client', count(*) FROM oauth_client
"""


def counts(url: str) -> dict[str, int]:
    async def run() -> dict[str, int]:
        conn = await asyncpg.connect(_dsn(url))
        try:
            return {name: count for name, count in await conn.fetch(COUNTS)}
        finally:
            await conn.close()
    return asyncio.run(run())


def client(settings: Settings, **rules: bool) -> TestClient:
    test_client = TestClient(create_app(settings, **(rules or {"care_unit_rules": False})), base_url=BASE_URL)
    test_client.headers.update({"content-type": "application/fhir+json",
                                "authorization": f"Bearer {engine_token(settings)}"})
    return test_client


def reads(settings: Settings) -> dict[str, Any]:
    """What a client sees: a page of agreements, one of them and its patient by id, and totals."""
    with client(settings) as api:
        page = api.get("/fhir/CarePlan", params={"_count": 3, "_sort": "_id"})
        assert page.status_code == 200, page.text
        plan = page.json()["entry"][0]["resource"]
        patient = plan["subject"]["reference"]
        seen = {"page": [e["fullUrl"] for e in page.json()["entry"]],
                "plan": api.get(f"/fhir/CarePlan/{plan['id']}").json(),
                "patient": api.get(f"/fhir/{patient}").json()}
        for kind in ("Patient", "CarePlan", "Goal", "Organization"):
            seen[kind] = api.get(f"/fhir/{kind}", params={"_summary": "count"}).json()["total"]
    return seen


@pytest.fixture(scope="module")
def backup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path, Path, dict[str, Any]]]:
    """The demo region (3 agreements) read through the API, its access log sealed with the
    checkpoint exported to a file, and a custom-format dump of it all."""
    folder = tmp_path_factory.mktemp("backup")
    with demo_database(f"pk_backup_{os.getpid()}", agreements=3) as url:
        settings = make_settings(url)
        seen = reads(settings)
        exported = folder / "checkpoints"
        assert seal(settings, exported)[-1].size > 0
        dump = folder / "patientkontrakt.dump"
        subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", _dsn(url)], check=True, timeout=60)
        yield settings, dump, exported, {"reads": seen, "counts": counts(url)}


@pytest.fixture(scope="module")
def restored(backup: tuple[Settings, Path, Path, dict[str, Any]]) -> Iterator[Settings]:
    settings, dump, _, _ = backup
    name = f"pk_restored_{os.getpid()}"
    url = new_database(name)
    result = subprocess.run(["pg_restore", "--exit-on-error", "--single-transaction", f"--dbname={_dsn(url)}",
                             str(dump)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    yield make_settings(url)
    drop_database(name)


def test_the_restored_database_holds_the_same_data(backup: tuple[Settings, Path, Path, dict[str, Any]],
                                                   restored: Settings) -> None:
    before = backup[3]["counts"]
    assert before["resource CarePlan"] >= 3 and before["audit_log"] > 0
    assert counts(restored.database_url) == before


def test_the_restored_database_serves_the_same_resources(backup: tuple[Settings, Path, Path, dict[str, Any]],
                                                         restored: Settings) -> None:
    assert reads(restored) == backup[3]["reads"]


def test_the_restored_access_log_verifies_against_the_checkpoint_exported_before(
        backup: tuple[Settings, Path, Path, dict[str, Any]], restored: Settings, tmp_path: Path) -> None:
    exported = backup[2]
    result = cli(restored, "audit", "verify", "--checkpoint", str(exported), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "access log intact" in result.stdout


def test_the_restored_database_takes_new_writes_and_goes_on_with_its_log(restored: Settings, tmp_path: Path) -> None:
    """The sequences came back with the rows: a new resource and new log entries do not collide."""
    before = counts(restored.database_url)
    with client(restored, domain_rules=False) as engine:  # the bare FHIR engine: any Organization
        created = engine.post("/fhir/Organization", json={"resourceType": "Organization", "name": "After the restore"})
    assert created.status_code == 201, created.text
    with client(restored) as api:  # the service, which logs the reads of patient data
        assert api.get(f"/fhir/Organization/{created.json()['id']}").json()["name"] == "After the restore"
        assert api.get("/fhir/CarePlan", params={"_count": 1}).status_code == 200
    assert seal(restored, tmp_path / "checkpoints")[-1].size > before["audit_log"]
    assert counts(restored.database_url)["resource Organization"] == before["resource Organization"] + 1
