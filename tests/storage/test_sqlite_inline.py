"""SQLite's short statements on the event loop's own connection (storage/sqlite_inline.py): the
read by id and the access log's append. They must never make the loop wait, never leave half a
transaction, and never let the WAL grow without a checkpoint."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from patientkontrakt.storage.sqlite_inline import InlineSQLite
from patientkontrakt.storage.tables import AUDIT_LOG, AUDIT_QUEUE

from .test_repository import T0, body


def _entry(n: int = 0) -> dict[str, Any]:
    return {"recorded": now_utc(), "user_id": "u", "user_name": None, "user_kind": "system", "role": None,
            "fhir_user": None, "care_unit": None, "care_unit_name": None, "care_provider": None, "client_id": "c",
            "interaction": "read", "request": f"Patient/p{n}", "resources": "[]", "patient_id": None,
            "outcome": "success", "status": 200, "purpose": "TREAT"}


def _file(url: str) -> str:
    database = make_url(url).database
    assert database is not None
    return database


def _other_process(url: str) -> sqlite3.Connection:
    """A connection as another process (the worker, the CLI) has one."""
    return sqlite3.connect(_file(url), isolation_level=None, check_same_thread=False)


async def _seqs(store: Store) -> list[int]:
    async with store.reading() as unit:
        return list((await unit.conn.execute(sa.select(AUDIT_LOG.c.seq).order_by(AUDIT_LOG.c.seq))).scalars())


async def _queued(store: Store) -> int:
    async with store.reading() as unit:
        return int((await unit.conn.execute(sa.select(sa.func.count()).select_from(AUDIT_QUEUE))).scalar_one())


async def test_reads_and_appends_take_the_loops_connection_and_agree_with_the_thread_path(sqlite_url: str) -> None:
    store = Store(create_engine(sqlite_url, pool_size=2))
    try:
        async with store.writing() as unit:
            await unit.insert("Patient", "p1", 1, T0, body("Patient", "p1"))
        assert store.inline is not None
        found, visible = await store.read_current("Patient", "p1")
        assert found is not None and (found.id, found.version_id, found.last_updated, visible) == ("p1", 1, T0, True)
        assert await store.read_current("Patient", "nobody") == (None, False)
        for n in range(3):
            await sql.append_committed(store, [_entry(n), _entry(n)])
        assert store.inline.commits == 3  # none took the thread path
        assert await _seqs(store) == [1, 2, 3, 4, 5, 6] and await _queued(store) == 6
    finally:
        await store.dispose()


async def test_an_append_while_another_process_writes_waits_off_the_loop(sqlite_url: str) -> None:
    """The loop's connection never waits for SQLite's lock: the append gives up there at once and
    waits on aiosqlite's thread, while the loop goes on serving others."""
    store = Store(create_engine(sqlite_url, pool_size=2))
    other = _other_process(sqlite_url)
    try:
        await sql.append_committed(store, [_entry()])
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO server_state (key, value) VALUES ('pk-test', 'held')")
        appending = asyncio.create_task(sql.append_committed(store, [_entry(1)]))
        loop = asyncio.get_running_loop()
        gaps = []
        for _ in range(40):  # 0.4 s of the loop serving other work while the lock is held
            before = loop.time()
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - before)
            assert not appending.done()
        other.execute("COMMIT")
        await asyncio.wait_for(appending, 10)
        assert max(gaps) < 0.5, "the loop waited for SQLite's lock"
        assert await _seqs(store) == [1, 2]
        found, _ = await store.read_current("Patient", "p1")  # reads meanwhile: never blocked by a writer
        assert found is None
    finally:
        other.close()
        await store.dispose()


async def test_a_read_while_another_process_writes_sees_what_was_committed(sqlite_url: str) -> None:
    store = Store(create_engine(sqlite_url, pool_size=2))
    other = _other_process(sqlite_url)
    try:
        async with store.writing() as unit:
            await unit.insert("Patient", "p1", 1, T0, body("Patient", "p1"))
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE resource SET version_id = 2 WHERE res_id = 'p1'")
        found, _ = await store.read_current("Patient", "p1")
        assert found is not None and found.version_id == 1
        other.execute("COMMIT")
        found, _ = await store.read_current("Patient", "p1")
        assert found is not None and found.version_id == 2
    finally:
        other.close()
        await store.dispose()


async def test_a_failed_append_raises_and_leaves_nothing_half_written(sqlite_url: str) -> None:
    """The entry's row goes in before its queue row: a failure at the second leaves neither (on
    the loop's connection, then on the thread path it falls back to), and the log goes on after."""
    store = Store(create_engine(sqlite_url, pool_size=2))
    other = _other_process(sqlite_url)
    try:
        await sql.append_committed(store, [_entry()])
        other.execute("CREATE TRIGGER pk_test_no_queue BEFORE INSERT ON audit_queue "
                      "BEGIN SELECT RAISE(ABORT, 'the queue is unavailable'); END")
        with pytest.raises(Exception, match="the queue is unavailable"):
            await sql.append_committed(store, [_entry(1), _entry(2)])
        assert await _seqs(store) == [1] and await _queued(store) == 1
        other.execute("DROP TRIGGER pk_test_no_queue")
        await sql.append_committed(store, [_entry(3)])
        assert await _seqs(store) == [1, 2] and await _queued(store) == 2
        assert other.execute("SELECT count(*) FROM audit_log").fetchone() == (2,)  # committed, for others too
    finally:
        other.close()
        await store.dispose()


async def _wal_after_appends(url: str, checkpoint_every: int, appends: int) -> int:
    store = Store(create_engine(url, pool_size=2))
    assert store.inline is not None
    store.inline.checkpoint_every = checkpoint_every
    try:
        for n in range(appends):
            await sql.append_committed(store, [_entry(n)])
            if store._checkpointing is not None:  # noqa: SLF001 - let each checkpoint finish before the next append
                await store._checkpointing  # noqa: SLF001
        assert store.inline.commits == appends
        return Path(f"{_file(url)}-wal").stat().st_size  # (the last connection to close removes it)
    finally:
        await store.dispose()


async def test_the_wal_is_checkpointed_under_a_load_of_appends_alone(sqlite_url: str, tmp_path: Path) -> None:
    """Only the loop's connection commits under a load of reads (their log entries), and it never
    checkpoints itself: the passive checkpoints after its commits keep the WAL from growing."""
    from patientkontrakt.storage.database import migrate

    unchecked = f"sqlite+aiosqlite:///{tmp_path / 'unchecked.db'}"
    await asyncio.to_thread(migrate, unchecked)
    checked_size = await _wal_after_appends(sqlite_url, 20, 600)
    unchecked_size = await _wal_after_appends(unchecked, 10**9, 600)
    assert unchecked_size > 600 * 4096  # at least a page per commit when nothing checkpoints
    assert checked_size * 10 < unchecked_size


def test_an_in_memory_database_or_a_file_not_in_wal_mode_stays_on_the_thread_path(tmp_path: Path) -> None:
    assert InlineSQLite(make_url("sqlite+aiosqlite://")).path is None
    assert InlineSQLite(make_url("sqlite+aiosqlite:///:memory:")).path is None
    assert InlineSQLite(make_url(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}?mode=ro")).path is None

    journal = tmp_path / "journal.db"
    conn = sqlite3.connect(journal)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.commit()
    conn.close()
    inline = InlineSQLite(make_url(f"sqlite+aiosqlite:///{journal}"))

    async def use() -> tuple[Any, bool]:
        return inline.read("SELECT count(*) FROM t", []), inline.write(lambda c: c.execute("INSERT INTO t VALUES (1)"))

    assert asyncio.run(use()) == (None, False)
    inline.close()
    check = sqlite3.connect(journal)
    assert check.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert check.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    check.close()
