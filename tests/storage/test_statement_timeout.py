"""``PK_STATEMENT_TIMEOUT`` at the storage layer, on both backends: a statement that runs longer
is cancelled and raises ``StatementTimeout``; the connection goes on working, a statement within
the time is not touched, and neither is a COMMIT that follows a long pause."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from patientkontrakt.storage.database import StatementTimeout, create_engine
from patientkontrakt.storage.repository import Store

# A statement that works for a long time, not one that waits: it counts to a hundred million.
EXPENSIVE = sa.text("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) "
                    "SELECT count(*) FROM n")


@pytest.fixture
async def timed(db_url: str) -> AsyncIterator[Store]:
    store = Store(create_engine(db_url, pool_size=1, statement_timeout=0.2))
    yield store
    await store.dispose()


async def test_a_statement_over_the_timeout_is_cancelled(timed: Store) -> None:
    async with timed.reading() as unit:
        with pytest.raises(StatementTimeout):
            await unit.conn.execute(EXPENSIVE)
    async with timed.reading() as unit:
        assert (await unit.conn.execute(sa.text("SELECT 1"))).scalar_one() == 1


async def test_a_write_transaction_over_the_timeout_leaves_nothing(timed: Store) -> None:
    with pytest.raises(StatementTimeout):
        async with timed.writing() as unit:
            await unit.set_state("before", "x")
            await unit.conn.execute(EXPENSIVE)
    async with timed.reading() as unit:
        assert await unit.state("before") is None


async def test_statements_within_the_timeout_and_commits_after_a_pause(timed: Store) -> None:
    async with timed.writing() as unit:
        await unit.set_state("key", "value")
        await asyncio.sleep(0.4)  # longer than the timeout, outside any statement
    async with timed.reading() as unit:
        assert await unit.state("key") == "value"


async def test_a_write_statement_sent_to_asyncpg_over_the_timeout_is_cancelled_and_leaves_nothing(
        clean_pg: str) -> None:
    """The write path sends its statements straight to the unit's asyncpg connection
    (``Unit.fetch``, the one-statement ``store_version``): over the timeout they raise
    ``StatementTimeout`` as SQLAlchemy's do, and the transaction leaves nothing."""
    store = Store(create_engine(clean_pg, pool_size=1, statement_timeout=0.2))
    try:
        with pytest.raises(StatementTimeout):
            async with store.writing() as unit:
                await unit.set_state("before", "x")
                await unit.fetch("SELECT count(*) FROM generate_series(1, 1000000000)")
        async with store.reading() as unit:
            assert await unit.state("before") is None
    finally:
        await store.dispose()
