"""The safe point of history (``Store.safe_point``) against transactions in flight, on both databases."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.history_sql import floor_ms
from patientkontrakt.storage.repository import Store
from tests.conftest import _dsn


async def test_a_transaction_with_an_id_holds_the_safe_point_at_its_start(clean_pg: str) -> None:
    """Any transaction of the database that holds an id (here one that took it and did nothing
    else, as a write does before its first stamp) keeps S at its start until it ends."""
    store = Store(create_engine(clean_pg, pool_size=2))
    other = await asyncpg.connect(_dsn(clean_pg))
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.execute("SELECT pg_current_xact_id()")
        started: datetime = await other.fetchval("SELECT now() AT TIME ZONE 'UTC'")
        await asyncio.sleep(0.02)
        held = await store.safe_point()
        assert held == floor_ms(started)
        assert await store.safe_point() == held, "it stays while the transaction is open"
        await transaction.rollback()
        assert await store.safe_point() > held
    finally:
        await other.close()
        await store.dispose()


async def test_a_transaction_whose_start_the_role_cannot_see_holds_everything(clean_pg: str) -> None:
    """Another role's transaction shows its id but not its start (without pg_read_all_stats):
    S is then the beginning of time, a history of nothing, until it ends (docs/api.md)."""
    role = f"pk_other_{os.getpid()}"
    admin = await asyncpg.connect(_dsn(clean_pg))
    await admin.execute(f"CREATE ROLE {role} LOGIN")
    as_role = make_url(clean_pg).set(username=role).render_as_string(hide_password=False)
    store = Store(create_engine(as_role, pool_size=1))
    try:
        transaction = admin.transaction()
        await transaction.start()
        await admin.execute("SELECT pg_current_xact_id()")
        assert await store.safe_point() == datetime.min
        await transaction.rollback()
        assert await store.safe_point() > datetime(2020, 1, 1)
    finally:
        await store.dispose()
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_on_sqlite_the_safe_point_waits_for_the_write_in_flight(store: Store) -> None:
    async with store.writing() as unit:
        stamp = await unit.stamp()
        waiting = asyncio.create_task(store.safe_point())
        await asyncio.sleep(0.2)
        assert not waiting.done()
    point = await waiting
    assert point >= stamp
