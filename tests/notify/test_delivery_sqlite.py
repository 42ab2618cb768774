"""Delivery on SQLite, the embedded default (``make run``): a real worker process beside the
database file delivers a subscription's handshake and changes, in order, as the subscriber reads
them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from patientkontrakt.domain.demo import DemoGenerator, load_demo
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.notify.delivery_tools import (
    announce,
    delivery_settings,
    principal,
    receiving,
    state,
    subscribe,
    worker_process,
)
from tests.security.conftest import World, _agreements
from tests.security.test_consent_matrix import TARGET, VC


def test_a_worker_process_delivers_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    settings = delivery_settings(sqlite_url)

    async def load() -> None:
        store = Store(create_engine(sqlite_url, pool_size=2))
        try:
            await load_demo(BundleProcessor(build_service(settings, store)), TARGET + 1)
        finally:
            await store.dispose()

    asyncio.run(load())
    generator = DemoGenerator(seed=1)
    world = World(settings, generator, _agreements(generator)[:TARGET + 1])
    target = world.agreements[TARGET]
    with receiving() as receiver:
        pk = subscribe(settings, "s-sqlite", receiver.url("/hook"), principal(settings, world.system(VC)))
        announce(settings, pk, [("CarePlan", target.plan, 1), ("CareTeam", target.team, 1)])
        with worker_process(settings, tmp_path, "sqlite-worker"):
            got = receiver.wait_for("/hook", 3, timeout=60)
        assert [(r.method, r.path, r.event_number) for r in got] == [
            ("POST", "/hook", None), ("PUT", f"/hook/CarePlan/{target.plan}", 1),
            ("PUT", f"/hook/CareTeam/{target.team}", 2)]
        assert got[1].json()["id"] == target.plan
    row, rows = state(settings, pk)
    assert row.status == "active" and all(r.delivered is not None for r in rows)
