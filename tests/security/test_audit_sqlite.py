"""The access log on the embedded default, SQLite, whose read by id and log append run on the
event loop's own connection (storage/sqlite_inline.py): a log that cannot be written still stops
every read and write, and a writer in another process delays a read without failing it."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.config import Settings
from tests.conftest import BASE_URL, make_settings
from tests.security.conftest import World
from tests.security.test_audit import AUTHOR, TARGET, nothing_without_the_log


@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    return make_settings(sqlite_url)


@pytest.fixture
def failing_app(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=BASE_URL, raise_server_exceptions=False) as client:
        client.headers.update({"content-type": "application/fhir+json"})
        yield client


def _sqlite(world: World) -> sqlite3.Connection:
    return sqlite3.connect(world.settings.database_url.split("///", 1)[1], isolation_level=None,
                           check_same_thread=False)


def _entries_after(world: World, seq: int) -> list[tuple[str, str]]:
    conn = _sqlite(world)
    try:
        return conn.execute("SELECT request, patient_id FROM audit_log WHERE seq > ? ORDER BY seq", [seq]).fetchall()
    finally:
        conn.close()


def _last_seq(world: World) -> int:
    conn = _sqlite(world)
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM audit_log").fetchone()[0])
    finally:
        conn.close()


def test_on_sqlite_no_write_and_no_read_without_its_log_entry(world: World, failing_app: TestClient) -> None:
    conn = _sqlite(world)

    def break_log() -> None:
        conn.execute("CREATE TRIGGER pk_test_no_log BEFORE INSERT ON audit_log "
                     "BEGIN SELECT RAISE(ABORT, 'the log is unavailable'); END")

    try:
        nothing_without_the_log(world, failing_app, break_log, lambda: conn.execute("DROP TRIGGER pk_test_no_log"))
    finally:
        conn.close()


def test_on_sqlite_a_read_waits_for_another_processs_write_and_is_logged(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    headers = world.staff(world.role_at(AUTHOR, "nurse"))
    start = _last_seq(world)
    other = _sqlite(world)
    other.execute("BEGIN IMMEDIATE")  # as the worker or the CLI writing
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    began = time.monotonic()
    release.start()
    try:
        response = app.get(f"/fhir/CarePlan/{target.plan}", headers=headers)
        answered = time.monotonic()
    finally:
        release.join()
        other.close()
    assert response.status_code == 200, response.text
    assert answered - began >= 0.5  # shown once its entry was written, after the lock was free
    assert _entries_after(world, start) == [(f"CarePlan/{target.plan}", target.patient)]
