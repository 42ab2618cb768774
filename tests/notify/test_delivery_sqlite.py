"""Delivery on SQLite, the embedded default (``make run``): a real worker process beside the
database file delivers a subscription's handshake and changes, in order, as the subscriber reads
them."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.config import Settings
from patientkontrakt.domain.demo import DemoGenerator, load_demo
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import BASE_URL
from tests.notify.delivery_tools import (
    announce,
    delivery_settings,
    receiving,
    state,
    subscribe,
    worker_process,
)
from tests.security.conftest import World, _agreements
from tests.security.test_consent_matrix import TARGET, VC


def _demo_world(settings: Settings) -> World:
    """The demo region's first agreements, loaded into the SQLite file of ``settings``."""
    async def load() -> None:
        store = Store(create_engine(settings.database_url, pool_size=2))
        try:
            await load_demo(BundleProcessor(build_service(settings, store)), TARGET + 1)
        finally:
            await store.dispose()

    asyncio.run(load())
    generator = DemoGenerator(seed=1)
    return World(settings, generator, _agreements(generator)[:TARGET + 1])


def test_a_worker_process_delivers_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    settings = delivery_settings(sqlite_url)

    world = _demo_world(settings)
    target = world.agreements[TARGET]
    with receiving() as receiver, TestClient(create_app(settings), base_url=BASE_URL) as app:
        app.headers.update({"content-type": "application/fhir+json"})
        pk = subscribe(app, world.system(VC), receiver.url("/hook"))
        announce(settings, pk, [("CarePlan", target.plan, 1), ("CareTeam", target.team, 1)])
        with worker_process(settings, tmp_path, "sqlite-worker", log_format="json"):
            got = receiver.wait_for("/hook", 3, timeout=60)
        assert [(r.method, r.path, r.event_number) for r in got] == [
            ("POST", "/hook", None), ("PUT", f"/hook/CarePlan/{target.plan}", 1),
            ("PUT", f"/hook/CareTeam/{target.team}", 2)]
        assert got[1].json()["id"] == target.plan
    # each delivery has a request id of its own: sent with it, and on the worker's log line of it
    ids = [r.headers["x-request-id"] for r in got]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ids) and len(set(ids)) == 3, ids
    records = [json.loads(line) for line in (tmp_path / "sqlite-worker.log").read_text().splitlines()]
    delivered = {r["request_id"] for r in records if r["message"].endswith("delivered, status 200")}
    assert delivered == set(ids), records
    row, rows = state(settings, pk)
    assert row.status == "active" and all(r.delivered is not None for r in rows)


def test_the_worker_process_runs_export_jobs(sqlite_url: str, tmp_path: Path) -> None:
    """``patientkontrakt worker`` runs Bulk Data export jobs too: with the API processes' own
    runner off (PK_EXPORT_POLL_INTERVAL=0), a kicked-off job completes only once a worker runs."""
    settings = delivery_settings(sqlite_url, export_poll_interval=0)

    world = _demo_world(settings)
    caller = {**world.system(VC), "accept": "application/fhir+json", "prefer": "respond-async"}
    with TestClient(create_app(settings), base_url=BASE_URL) as app:
        kicked = app.get("/fhir/$export?_type=CarePlan", headers=caller)
        assert kicked.status_code == 202, kicked.text
        status_url = kicked.headers["content-location"]
        assert app.get(status_url, headers=caller).status_code == 202  # nobody runs it yet
        with worker_process(settings, tmp_path, "export-worker"):
            deadline = time.monotonic() + 60
            while (done := app.get(status_url, headers=caller)).status_code == 202:
                assert time.monotonic() < deadline, "the worker did not run the export"
                time.sleep(0.2)
        assert done.status_code == 200, done.text
        output = done.json()["output"]
        assert [o["type"] for o in output] == ["CarePlan"] and sum(o["count"] for o in output) >= 1
        search = app.get("/fhir/CarePlan?_total=accurate&_count=0", headers=world.system(VC)).json()
        assert sum(o["count"] for o in output) == search["total"]
