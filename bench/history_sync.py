"""History sync on PostgreSQL: the plans of the history statements and what ``Unit.stamp`` costs.

    python -m bench.history_sync [--versions 60000] [--transactions 2000]
        [--server postgresql://postgres@127.0.0.1:5432]

Works in a scratch database ``pk_history_bench`` on that server (created and migrated if
absent; its ``resource_version`` filled with ``--versions`` synthetic rows: six types, one to five
versions per resource, ten per millisecond). Prints:

- ``EXPLAIN (ANALYZE)`` of the statement ``Unit.history`` runs (``history_query``) for system,
  type and instance history, first pages and pages by cursor, newest and oldest first, without
  access restrictions (bench/explain.py shows the care unit's restrictions on searches);
- the cost of the transaction id a write takes before it stamps (``TAKE_XID``): write
  transactions of one version INSERT with and without it, interleaved, best and median of five
  rounds, and the statement alone inside one transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from patientkontrakt.storage.database import create_engine, migrate
from patientkontrakt.storage.history_sql import TAKE_XID, HistoryWindow, history_query
from patientkontrakt.storage.repository import Store

DATABASE = "pk_history_bench"


async def _prepare(server: str, versions: int) -> asyncpg.Connection:
    admin = await asyncpg.connect(f"{server}/postgres")
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await admin.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await admin.close()
    await asyncio.to_thread(migrate, f"{server.replace('postgresql://', 'postgresql+asyncpg://')}/{DATABASE}")
    conn = await asyncpg.connect(f"{server}/{DATABASE}")
    if await conn.fetchval("SELECT count(*) FROM resource_version WHERE res_type <> 'Bench'") != versions:
        await conn.execute("TRUNCATE resource_version, resource CASCADE")
        await conn.execute("""
            INSERT INTO resource_version (res_type, res_id, version_id, last_updated, method, deleted, body)
            SELECT (ARRAY['Patient','Organization','CarePlan','CareTeam','Goal','Practitioner'])[1 + (g / 5) % 6],
                   'r' || (g / 5), 1 + g % 5, timestamp '2026-01-01' + (g / 10) * interval '1 millisecond',
                   CASE WHEN g % 5 = 0 THEN 'POST' ELSE 'PUT' END, false, '{"resourceType":"X"}'
            FROM generate_series(0, $1 - 1) g""", versions)
        await conn.execute("ANALYZE resource_version")
    return conn


async def plans(conn: asyncpg.Connection) -> None:
    end: datetime = await conn.fetchval("SELECT max(last_updated) FROM resource_version")
    count = await conn.fetchval("SELECT count(*) FROM resource_version")
    until = end + timedelta(milliseconds=1)
    middle = await conn.fetchrow("SELECT last_updated, seq FROM resource_version ORDER BY seq OFFSET $1 LIMIT 1",
                                 count // 2)
    cursor = (middle[0], middle[1])
    cases: dict[str, Any] = {
        "system, first page": history_query(None, None, None, None, 0, 20, HistoryWindow(until)),
        "system, _since 3 s back": history_query(None, None, end - timedelta(seconds=3), None, 0, 20,
                                                 HistoryWindow(until)),
        "system, by cursor half-way": history_query(None, None, None, None, 0, 20, HistoryWindow(until, cursor)),
        "system, oldest first, by cursor half-way": history_query(None, None, None, None, 0, 20,
                                                                  HistoryWindow(until, cursor, ascending=True)),
        "type, by cursor half-way": history_query("Goal", None, None, None, 0, 20, HistoryWindow(until, cursor)),
        "type, _since 1 s back": history_query("Goal", None, end - timedelta(seconds=1), None, 0, 20,
                                               HistoryWindow(until)),
        "instance": history_query("Patient", "r30", None, None, 0, 20, HistoryWindow(until)),
    }
    print(f"{count} versions")
    for name, query in cases.items():
        sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        await conn.fetch(sql)  # warm
        print(f"--- {name}")
        for row in await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + sql):
            print("   ", row[0])


async def stamp_cost(server: str, transactions: int) -> None:
    store = Store(create_engine(f"{server.replace('postgresql://', 'postgresql+asyncpg://')}/{DATABASE}",
                                pool_size=2))

    async def clear() -> None:
        async with store.writing() as unit:
            await unit.conn.execute(sa.text("DELETE FROM resource_version WHERE res_type = 'Bench'"))

    async def round_(take: bool) -> float:
        start = time.perf_counter()
        for n in range(transactions):
            async with store.writing() as unit:
                if take:
                    await unit.conn.execute(TAKE_XID)
                await unit.add_version("Bench", f"b{n}", 1, datetime(2020, 1, 1), "PUT", "{}")
        return (time.perf_counter() - start) / transactions * 1e6

    try:
        without, with_id, alone = [], [], []
        for _ in range(5):
            for take, into in ((False, without), (True, with_id)):
                await clear()
                into.append(await round_(take))
        await clear()
        async with store.writing() as unit:
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(transactions):
                    await unit.conn.execute(TAKE_XID)
                alone.append((time.perf_counter() - start) / transactions * 1e6)
        for name, values in (("write transaction", without), ("with the transaction id", with_id),
                             ("the statement alone", alone)):
            print(f"{name:>26}: best {min(values):7.0f} µs, median {statistics.median(values):7.0f} µs")
    finally:
        await store.dispose()


async def main(args: argparse.Namespace) -> None:
    conn = await _prepare(args.server, args.versions)
    try:
        await plans(conn)
    finally:
        await conn.close()
    await stamp_cost(args.server, args.transactions)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=60000)
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    asyncio.run(main(parser.parse_args()))
