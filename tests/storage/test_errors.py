"""Database errors at the storage boundary (storage/errors.py, storage/database.py, Store).

* An engine's errors never carry the statement's parameters (patient data) in their text.
* Unreachable, refusing, restarting: every unit of work raises ``DatabaseUnavailable``, and works
  again when the database is back, on the same engine.
* A connection lost under a statement makes the pool drop every connection it made before (a
  restart ended them all), and a read by id is tried again once on a fresh one.
* A close the event loop has not read yet is seen at checkout (it waits in the socket); one that
  has not reached this machine yet fails a write's BEGIN, and the write is done on a fresh
  connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.errors import DatabaseUnavailable
from patientkontrakt.storage.repository import Store
from tests.conftest import _dsn
from tests.faults import PostgresProxy

NUMBER = "194303050068"


async def test_an_engines_errors_never_carry_the_parameters(db_url: str) -> None:
    engine = create_engine(db_url, pool_size=1)
    try:
        with pytest.raises(sa.exc.DBAPIError) as raised:
            async with engine.connect() as conn:
                await conn.execute(sa.text("INSERT INTO no_such_table VALUES (:number, :name)"),
                                   {"number": NUMBER, "name": "fiktivsson%"})
    finally:
        await engine.dispose()
    assert "no_such_table" in str(raised.value)
    assert NUMBER not in str(raised.value) and "fiktivsson" not in str(raised.value)


# -- the database is unavailable ---------------------------------------------------------------


def _entry() -> dict[str, Any]:
    return {"recorded": now_utc(), "user_id": "u", "user_name": None, "user_kind": "system", "role": None,
            "fhir_user": None, "care_unit": None, "care_unit_name": None, "care_provider": None, "client_id": "c",
            "interaction": "read", "request": "Patient/p", "resources": "[]", "patient_id": None,
            "outcome": "success", "status": 200, "purpose": "TREAT"}


def _every_unit_of_work(store: Store) -> dict[str, Callable[[], Awaitable[Any]]]:
    async def reading() -> None:
        async with store.reading() as unit:
            await unit.get("Patient", "p")

    async def writing() -> None:
        async with store.writing() as unit:
            await unit.set_state("pk-test", "1")

    async def trial() -> None:
        async with store.trial() as unit:
            await unit.get("Patient", "p")

    return {"reading": reading, "writing": writing, "trial": trial,
            "read_current": lambda: store.read_current("Patient", "p"),
            "log": lambda: sql.append_committed(store, [_entry()]), "ping": store.ping}


@pytest.fixture
async def proxied(clean_pg: str) -> AsyncIterator[tuple[Store, PostgresProxy]]:
    proxy = PostgresProxy(clean_pg)
    store = Store(create_engine(proxy.url(), pool_size=3, connect_timeout=5))
    try:
        yield store, proxy
    finally:
        await store.dispose()
        proxy.close()


async def test_an_unreachable_database_is_unavailable_and_usable_again_when_it_is_back(
        proxied: tuple[Store, PostgresProxy]) -> None:
    store, proxy = proxied
    work = _every_unit_of_work(store)
    for step in work.values():
        await step()
    proxy.down()
    for step in work.values():
        with pytest.raises(DatabaseUnavailable):
            await step()
    proxy.accept()
    for step in work.values():
        await step()


async def test_connections_the_server_closed_while_pooled_are_never_handed_out(
        proxied: tuple[Store, PostgresProxy], clean_pg: str) -> None:
    store, proxy = proxied
    work = _every_unit_of_work(store)
    admin = await asyncpg.connect(_dsn(clean_pg))
    database = clean_pg.rsplit("/", 1)[1]
    try:
        others = await _pids(admin, database)  # connections this test did not make
        await asyncio.gather(*(step() for step in work.values()))  # several connections in the pool
        assert proxy.cut() >= 2
        await _until(lambda: _only(admin, database, others), "the server to see them gone")
    finally:
        await admin.close()
    for step in work.values():
        await step()


async def test_a_close_that_waits_unread_in_the_socket_is_seen_when_the_connection_is_checked_out(
        proxied: tuple[Store, PostgresProxy]) -> None:
    """The server (here the proxy) closes every pooled connection, and the unit of work checks one
    out before the event loop has had a turn to read that: the end of stream waits in the socket,
    asyncpg still calls the connection open. Each kind of unit of work succeeds on a fresh one."""
    store, proxy = proxied
    work = _every_unit_of_work(store)
    for name, step in work.items():
        await asyncio.gather(*(other() for other in work.values()))  # several connections in the pool
        assert proxy.cut() >= 2  # returns once the proxy has closed them: nothing awaited since
        try:
            await step()
        except DatabaseUnavailable as exc:
            raise AssertionError(f"{name} was handed a connection the server had closed") from exc


async def test_a_write_whose_connection_turns_out_closed_at_begin_is_done_on_a_fresh_one(
        proxied: tuple[Store, PostgresProxy], clean_pg: str) -> None:
    """The server has closed every pooled connection, but this machine cannot know yet (the proxy
    holds the service's ends open until it sends on them, as a pooler or network relaying the
    close late): the write's BEGIN finds its connection closed before anything of the write was
    sent, and the write is done on a fresh connection, once. A read whose statement finds its
    connection closed is refused as an outage (503; a read by id is tried again), and the next
    one works."""
    store, proxy = proxied
    work = _every_unit_of_work(store)
    admin = await asyncpg.connect(_dsn(clean_pg))
    database = clean_pg.rsplit("/", 1)[1]

    async def severed() -> None:
        await asyncio.gather(*(step() for step in work.values()))  # several connections in the pool
        assert proxy.sever() >= 2
        await _until(lambda: _only(admin, database, others), "the server to see them gone")

    try:
        others = await _pids(admin, database)  # connections this test did not make
        for value in ("written", "again"):
            await severed()
            async with store.writing() as unit:
                await unit.set_state("pk-severed", value)
            async with store.reading() as unit:
                assert await unit.state("pk-severed") == value
        await severed()
        await work["trial"]()
        await severed()
        with pytest.raises(DatabaseUnavailable):
            await work["reading"]()
        await work["reading"]()
    finally:
        await admin.close()


# -- a connection lost under a statement ------------------------------------------------------


async def _pids(conn: Any, database: str, where: str = "true") -> set[int]:
    rows = await conn.fetch(f"SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() "
                            f"AND backend_type = 'client backend' AND ({where})", database)
    return {int(r["pid"]) for r in rows}


async def _until(probe: Callable[[], Awaitable[Any]], what: str) -> Any:
    for _ in range(1500):
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what}")


async def test_a_read_whose_connection_is_ended_is_tried_again_on_a_new_connection_and_the_pool_renewed(
        clean_pg: str) -> None:
    """Two pooled connections; the read by id waits for a lock on one of them and that one is
    terminated (a restart ends them all, one by one): the other is not used again, and the read
    is answered on a new connection."""
    database = clean_pg.rsplit("/", 1)[1]
    store = Store(create_engine(clean_pg, pool_size=2))
    admin = await asyncpg.connect(_dsn(clean_pg))
    try:
        others = await _pids(admin, database)  # connections this test did not make
        async with store.reading() as one, store.reading() as two:
            await one.get("Patient", "p")
            await two.get("Patient", "p")
        pooled = await _pids(admin, database) - others
        assert len(pooled) == 2
        locker = await asyncpg.connect(_dsn(clean_pg))
        await locker.execute("BEGIN; LOCK TABLE resource IN ACCESS EXCLUSIVE MODE")
        read = asyncio.create_task(store.read_current("Patient", "p"))
        [first] = await _until(lambda: _pids(admin, database, "wait_event_type = 'Lock'"), "the read to wait")
        assert first in pooled
        await admin.execute("SELECT pg_terminate_backend($1)", first)
        [second] = await _until(lambda: _pids(admin, database, f"wait_event_type = 'Lock' AND pid <> {first}"),
                                "the read again")
        assert second not in pooled
        await locker.execute("COMMIT")
        await locker.close()
        assert await read == (None, False)
        # the other connection the pool made before the failure is closed, not handed out
        await asyncio.gather(store.ping(), store.ping())
        await _until(lambda: _absent(admin, database, pooled), "the old connections to be closed")
    finally:
        await admin.close()
        await store.dispose()


async def _absent(conn: Any, database: str, pids: set[int]) -> bool:
    return not (await _pids(conn, database)) & pids


async def _only(conn: Any, database: str, others: set[int]) -> bool:
    """No connection to ``database`` is left but (some of) ``others``, those the test did not make."""
    return not (await _pids(conn, database)) - others


async def test_a_failure_that_left_the_driver_connection_closed_is_an_outage(clean_pg: str) -> None:
    """When PostgreSQL shuts down under a statement sent without SQLAlchemy (the access log's
    append of a read), asyncpg may report an ``InternalClientError`` of its protocol instead of the
    server's message; the connection is closed by then, and that decides, as SQLAlchemy decides for
    its own statements (tests/api/test_crashes.py met it: the read was answered 500, not 503). The
    same error on a connection still open stays what it is."""
    store = Store(create_engine(clean_pg, pool_size=1))
    try:
        with pytest.raises(DatabaseUnavailable) as raised:
            async with store.driver() as conn:
                conn.terminate()
                raise asyncpg.exceptions.InternalClientError("waiter is not done while handling protocol error")
        assert raised.value.disconnected
        with pytest.raises(asyncpg.exceptions.InternalClientError):
            async with store.driver() as conn:
                raise asyncpg.exceptions.InternalClientError("no binary format encoder")
        async with store.driver() as conn:  # a fresh connection from the pool
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await store.dispose()


async def test_a_write_whose_connection_a_failure_left_closed_is_an_outage(clean_pg: str) -> None:
    """The same for a write unit, whose statements go to its asyncpg connection (``Unit.fetch``)
    and through SQLAlchemy: a failure that left that connection closed is an outage (503, the
    crash test met a 500), the same failure on an open one stays what it is."""
    store = Store(create_engine(clean_pg, pool_size=1))
    try:
        with pytest.raises(DatabaseUnavailable) as raised:
            async with store.writing() as unit:
                (await unit.driver()).terminate()
                raise asyncpg.exceptions.InternalClientError("waiter is not done while handling protocol error")
        assert raised.value.disconnected
        with pytest.raises(asyncpg.exceptions.InternalClientError):
            async with store.writing() as unit:
                await unit.driver()
                raise asyncpg.exceptions.InternalClientError("no binary format encoder")
        async with store.writing() as unit:
            await unit.set_state("after", "x")
        with pytest.raises(DatabaseUnavailable):  # a read through SQLAlchemy alike
            async with store.reading() as unit:
                (await unit.conn.get_raw_connection()).driver_connection.terminate()
                raise asyncpg.exceptions.InternalClientError("waiter is not done while handling protocol error")
        async with store.reading() as unit:
            assert await unit.state("after") == "x"
    finally:
        await store.dispose()

