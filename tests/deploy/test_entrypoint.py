"""deploy/entrypoint.sh, the image's entrypoint, run directly (as the container runs it, with the
service's venv first on PATH) against a fresh PostgreSQL database: migrate, then serve."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.storage.database import head_revision
from tests.conftest import SERVER_LOGS, _dsn, audit_key_file, drop_database, new_database
from tests.processes import free_port, stop

ENTRYPOINT = PROJECT_ROOT / "deploy" / "entrypoint.sh"


def environment(**settings: str) -> dict[str, str]:
    """A container's environment: the venv's bin first on PATH, no PK_* but ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(settings)
    return env


def image_healthcheck() -> list[str]:
    """The command of deploy/Dockerfile's HEALTHCHECK (its exec form)."""
    text = re.sub(r"\\\n", " ", (PROJECT_ROOT / "deploy" / "Dockerfile").read_text())
    [command] = re.findall(r"^HEALTHCHECK .*? CMD (\[.*\])$", text, re.M)
    words: list[str] = json.loads(command)
    return words


def run(*args: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ENTRYPOINT), *args], cwd=cwd, env=environment(**settings), capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"pk_entrypoint_{os.getpid()}"
    yield new_database(name)
    drop_database(name)


@pytest.fixture(scope="module")
def settings(database: str, signing_key: Path) -> dict[str, str]:
    return {"PK_DATABASE_URL": database, "PK_BASE_URL": "http://127.0.0.1", "PK_SIGNING_KEY": str(signing_key),
            "PK_AUDIT_KEY": str(audit_key_file())}


@pytest.fixture(scope="module")
def first_start(database: str, settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[
        subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """On the fresh database, as a careless release would: the API first (it must refuse), then
    the migration."""
    folder = tmp_path_factory.mktemp("first-start")
    refused = run("api", cwd=folder, **settings, PK_BIND=f"127.0.0.1:{free_port()}", PK_WORKERS="1")
    log = folder / "unmigrated-api.log"
    log.write_text(refused.stdout + refused.stderr)
    SERVER_LOGS.append(log)
    return refused, run("migrate", cwd=folder, PK_DATABASE_URL=database)


@pytest.fixture(scope="module")
def migrated(first_start: tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]
             ) -> subprocess.CompletedProcess[str]:
    return first_start[1]


def test_api_refuses_a_database_that_is_not_migrated(
        first_start: tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]) -> None:
    refused = first_start[0]
    assert refused.returncode != 0
    assert "has no schema" in refused.stderr and "Run `patientkontrakt migrate`" in refused.stderr


def test_migrate_brings_a_fresh_database_to_the_current_revision(
        migrated: subprocess.CompletedProcess[str], database: str) -> None:
    assert migrated.returncode == 0, migrated.stderr
    assert "database is up to date" in migrated.stdout

    async def revision() -> str:
        conn = await asyncpg.connect(_dsn(database))
        try:
            return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
        finally:
            await conn.close()

    assert asyncio.run(revision()) == head_revision()


def test_api_serves_with_gunicorn_and_stops_on_sigterm(
        migrated: subprocess.CompletedProcess[str], settings: dict[str, str], tmp_path: Path) -> None:
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    log_path = tmp_path / "entrypoint-api.log"
    SERVER_LOGS.append(log_path)
    env = environment(**{**settings, "PK_BASE_URL": f"http://127.0.0.1:{port}"}, PK_BIND=f"127.0.0.1:{port}",
                      PK_WORKERS="1", PK_AUDIT_SEAL_INTERVAL="0")
    with log_path.open("wb") as log:
        # from another directory than the checkout: the script finds deploy/gunicorn.conf.py itself
        process = subprocess.Popen([str(ENTRYPOINT), "api"], cwd=tmp_path, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the server exited:\n{log_path.read_text()}"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"the server did not start:\n{log_path.read_text()}"
                time.sleep(0.2)
        assert health.status_code == 200
        metadata = httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=10)
        assert metadata.status_code == 200
        assert metadata.json()["resourceType"] == "CapabilityStatement"
        assert "gunicorn" in log_path.read_text().lower()
        healthcheck = image_healthcheck()
        assert subprocess.run(healthcheck, env=env, timeout=30, check=False).returncode == 0

        # the script exec'd gunicorn: the process started is the server, and SIGTERM stops it cleanly
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0, log_path.read_text()
        failed = subprocess.run(healthcheck, env=env, capture_output=True, timeout=30, check=False)
        assert failed.returncode != 0, "the health check fails once the server is gone"
    finally:
        if process.poll() is None:
            stop(process)


def test_missing_settings_are_named_and_nothing_starts(settings: dict[str, str], tmp_path: Path) -> None:
    without = {k: v for k, v in settings.items() if k not in ("PK_DATABASE_URL", "PK_BASE_URL")}
    result = run("api", cwd=tmp_path, **{**without, "PK_SIGNING_KEY": str(tmp_path / "absent.pem")})
    assert result.returncode == 78
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "entrypoint: refusing to start api; missing settings:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["PK_DATABASE_URL", "PK_BASE_URL", "PK_SIGNING_KEY"]
    assert f"cannot read {tmp_path / 'absent.pem'}" in result.stderr

    worker = run("worker", cwd=tmp_path, PK_DATABASE_URL=settings["PK_DATABASE_URL"])
    assert worker.returncode == 78
    assert "refusing to start worker" in worker.stderr and "PK_BASE_URL: not set" in worker.stderr

    migrate = run("migrate", cwd=tmp_path, PK_DATABASE_URL="")
    assert migrate.returncode == 78 and "PK_DATABASE_URL: not set" in migrate.stderr
    assert list(tmp_path.iterdir()) == [], "no SQLite file or key made in the working directory"


def test_anything_else_is_run_as_given(tmp_path: Path) -> None:
    result = run("python", "-c", "import sys; print(sys.prefix, sys.argv[1:])", "one", "two", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{sys.prefix} ['one', 'two']\n"  # the venv's Python, with the arguments
    failed = run("sh", "-c", "exit 3", cwd=tmp_path)
    assert failed.returncode == 3
