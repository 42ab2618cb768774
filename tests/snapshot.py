"""A database's rows, kept in memory and put back: for fixtures that load the same data before
many tests (tests/security/conftest.py's demo region), which then load it through the full write
path once per process and restore its rows before every other test.

On PostgreSQL the rows of every table the tests empty (``tests.conftest.TABLES``) are copied out
in COPY's binary format with the sequences' positions, and copied back into the emptied tables;
on SQLite the whole database is copied page by page into memory and back with SQLite's backup
API, which is safe while an app of the test already has the file open.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from io import BytesIO

import asyncpg
from sqlalchemy.engine import make_url

from tests.conftest import TABLES, _dsn


@dataclass(frozen=True)
class Snapshot:
    tables: dict[str, bytes]  # PostgreSQL: table -> its rows in COPY binary format
    sequences: dict[str, tuple[int, bool]]  # PostgreSQL: sequence -> (last_value, is_called)
    sqlite: sqlite3.Connection | None = None  # SQLite: a copy of the whole database, in memory


def take(url: str) -> Snapshot:
    """The rows of the database at ``url`` as they are now."""
    if _is_sqlite(url):
        source = sqlite3.connect(_sqlite_path(url))
        copy = sqlite3.connect(":memory:")
        try:  # through the backup API, which reads what the write-ahead log holds too
            source.backup(copy)
        finally:
            source.close()
        return Snapshot({}, {}, copy)
    return asyncio.run(_take_pg(url))


def restore(snapshot: Snapshot, url: str) -> None:
    """Put ``snapshot``'s rows into the database at ``url``, whose tables the test's fixtures
    have just emptied (PostgreSQL) or whose file is freshly migrated (SQLite)."""
    if snapshot.sqlite is not None:
        target = sqlite3.connect(_sqlite_path(url))
        try:
            snapshot.sqlite.backup(target)
        finally:
            target.close()
        return
    asyncio.run(_restore_pg(snapshot, url))


def _is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_path(url: str) -> str:
    return str(make_url(url).database)


async def _take_pg(url: str) -> Snapshot:
    conn = await asyncpg.connect(_dsn(url))
    try:
        tables = {}
        for table in TABLES:
            if not await conn.fetchval(f"SELECT EXISTS (SELECT FROM {table})"):
                continue  # nothing to put back
            out = BytesIO()
            # a query, not the table: COPY TO refuses a partitioned table (the access log)
            await conn.copy_from_query(f"SELECT * FROM {table}", output=out, format="binary")
            tables[table] = out.getvalue()
        sequences = {row["name"]: (row["last_value"], row["is_called"]) for row in await conn.fetch(
            "SELECT format('%I.%I', schemaname, sequencename) AS name, "
            "coalesce(last_value, start_value) AS last_value, last_value IS NOT NULL AS is_called "
            "FROM pg_sequences WHERE schemaname = 'public'")}
        return Snapshot(tables, sequences)
    finally:
        await conn.close()


async def _restore_pg(snapshot: Snapshot, url: str) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        async with conn.transaction():
            # TEST ONLY, as in tests/conftest.py's emptying: the access log's triggers and the
            # foreign keys' checks do not fire under the replication role; the rows are the ones
            # the service wrote when the snapshot was taken, in the same order.
            await conn.execute("SET LOCAL session_replication_role = replica")
            for table, rows in snapshot.tables.items():
                await conn.copy_to_table(table, source=BytesIO(rows), format="binary")
            for name, (value, called) in snapshot.sequences.items():
                await conn.execute("SELECT setval($1::regclass, $2, $3)", name, value, called)
    finally:
        await conn.close()
