"""``/readyz`` (patientkontrakt/health.py), each check both ways, on PostgreSQL; ``/healthz`` is
liveness only. The database check failing and recovering is in test_outage.py (through a proxy
that cuts the database off), with ``PK_READY_WORKER=false``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.health import Probe
from patientkontrakt.notify import heartbeat
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import BASE_URL, make_settings
from tests.faults import admin, wait_for
from tests.notify.delivery_tools import in_thread, worker_of

MAX_AGE = 30.0


@pytest.fixture(scope="module")
def service(pg_url: str) -> Iterator[TestClient]:
    settings = make_settings(pg_url, ready_worker=True, ready_worker_max_age=MAX_AGE,
                             worker_heartbeat_interval=0.1, worker_poll_interval=0.05)
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        yield client


@pytest.fixture
def http(service: TestClient, clean_pg: str) -> TestClient:
    """The module's service over the emptied database: no heartbeat, as if no worker ever ran,
    and nothing for the worker of a test to deliver."""
    return service


def _beat(url: str, age: float) -> None:
    async def run() -> None:
        store = Store(create_engine(url, pool_size=1))
        try:
            await heartbeat.beat(store, now_utc() - timedelta(seconds=age))
        finally:
            await store.dispose()
    asyncio.run(run())


def checks(http: TestClient, status: int) -> dict[str, str]:
    response = http.get("/readyz")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == ("ok" if status == 200 else "unavailable")
    found: dict[str, str] = body["checks"]
    return found


def test_the_worker_heartbeat_decides_readiness(http: TestClient, pg_url: str) -> None:
    assert checks(http, 503) == {"database": "ok", "migrations": "ok", "worker": "none"}
    _beat(pg_url, age=MAX_AGE + 5)
    assert checks(http, 503)["worker"] == "stale"
    _beat(pg_url, age=1)
    assert checks(http, 200) == {"database": "ok", "migrations": "ok", "worker": "ok"}
    assert http.get("/healthz").json() == {"status": "ok"}
    # this service has no PK_METRICS_TOKEN: /metrics is off, whatever is sent (test_metrics.py)
    assert http.get("/metrics", headers={"authorization": "Bearer "}).status_code == 404


def test_a_running_worker_beats(http: TestClient, pg_url: str) -> None:
    """A real worker loop (``Worker.run``) writes the heartbeat /readyz wants, and keeps writing
    it: the beat moves on while the loop turns."""
    settings = http.app.state.settings  # type: ignore[attr-defined]

    async def work(stop: threading.Event) -> None:
        async with worker_of(settings) as worker:
            stopping = asyncio.Event()
            running = asyncio.create_task(worker.run(stopping))
            while not stop.is_set():
                await asyncio.sleep(0.02)
            stopping.set()
            await running

    def newest() -> str | None:
        rows = admin(pg_url, "SELECT value FROM server_state WHERE key = $1", heartbeat.KEY)
        return str(rows[0]["value"]) if rows else None

    with in_thread(work):
        first = wait_for(newest, "the worker's first heartbeat")
        wait_for(lambda: checks(http, 200)["worker"] == "ok", "readiness")
        wait_for(lambda: (newest() or "") > first, "a later heartbeat")


@contextmanager
def _at_revision(pg_url: str, revision: str) -> Iterator[None]:
    """The database's Alembic revision set to ``revision`` for a while, then back."""
    current = admin(pg_url, "SELECT version_num FROM alembic_version")[0]["version_num"]
    try:
        admin(pg_url, "UPDATE alembic_version SET version_num = $1", revision)
        yield
    finally:
        admin(pg_url, "UPDATE alembic_version SET version_num = $1", current)


def test_a_database_at_an_older_schema_revision_is_not_ready(http: TestClient, pg_url: str) -> None:
    _beat(pg_url, age=0)
    with _at_revision(pg_url, "0011"):
        assert checks(http, 503) == {"database": "ok", "migrations": "not current", "worker": "ok"}
    assert checks(http, 200)["migrations"] == "ok"


def test_a_database_a_newer_release_migrated_is_ready_for_the_old_processes(http: TestClient, pg_url: str) -> None:
    """A rolling upgrade: the migration Job ran the new release's migrations; the old processes,
    which do not know that revision, keep serving until they are replaced."""
    _beat(pg_url, age=0)
    with _at_revision(pg_url, "9999_a_newer_release"):
        assert checks(http, 200) == {"database": "ok", "migrations": "ahead", "worker": "ok"}


@contextmanager
def _slow_pings(store: Store, seconds: float) -> Iterator[list[int]]:
    """``store.ping`` (the database check, still sent) counted and held for ``seconds`` first,
    so that a round of checks is still running when the next requests come."""
    calls: list[int] = []
    original = store.ping

    async def ping() -> None:
        calls.append(1)
        await asyncio.sleep(seconds)
        await original()

    store.ping = ping  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        del store.ping


def test_concurrent_probes_share_one_round_of_checks(http: TestClient, pg_url: str) -> None:
    """A flood of /readyz (no token needed) asks the database once per round, not once per
    request: sixteen requests at once get one round's answer; the next request, after it, a
    new round that sees what changed in between."""
    store = http.app.state.service.store  # type: ignore[attr-defined]
    together = threading.Barrier(16)

    def probe(_: int) -> tuple[int, dict[str, str]]:
        together.wait()
        response = http.get("/readyz")
        return response.status_code, response.json()["checks"]

    with _slow_pings(store, 1.5) as calls, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(probe, range(16)))
        assert len(calls) == 1
        assert answers == [(503, {"database": "ok", "migrations": "ok", "worker": "none"})] * 16
        _beat(pg_url, age=0)
        assert checks(http, 200) == {"database": "ok", "migrations": "ok", "worker": "ok"}
        assert len(calls) == 2


async def test_a_probe_that_goes_away_does_not_end_the_round_others_wait_for(pg_url: str) -> None:
    store = Store(create_engine(pg_url, pool_size=2))
    try:
        probe = Probe(store, make_settings(pg_url))
        with _slow_pings(store, 0.3) as calls:
            leaving = asyncio.create_task(probe.check())
            staying = asyncio.create_task(probe.check())
            await asyncio.sleep(0.05)
            leaving.cancel()
            found = await staying
            assert leaving.cancelled()
            assert found.ready and found.checks["database"] == "ok"
            assert len(calls) == 1
    finally:
        await store.dispose()


async def test_two_workers_beating_at_once_share_the_row(db_url: str) -> None:
    """The heartbeat is an upsert: beats never collide on the key, and the last one written is read."""
    store = Store(create_engine(db_url, pool_size=4))
    try:
        now = now_utc()
        await asyncio.gather(*(heartbeat.beat(store, now - timedelta(seconds=s)) for s in (3, 2, 1)))
        assert await heartbeat.last_beat(store) in {now - timedelta(seconds=s) for s in (3, 2, 1)}
        await heartbeat.beat(store, now)
        assert await heartbeat.last_beat(store) == now
    finally:
        await store.dispose()
