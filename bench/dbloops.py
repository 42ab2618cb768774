"""The database limit: raw asyncpg loops with the benchmark's concurrency, no HTTP.

``select`` runs the read-by-id lookup (the same statement as the bare FastAPI baseline) for
random CarePlan ids; ``insert`` inserts one CarePlan body per statement (autocommit, so one
commit each, like a create) into ``bench_insert``, a copy of the ``resource`` table with its
indexes, dropped afterwards. ``connections`` tasks share a pool of as many connections.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from collections.abc import Awaitable, Callable

import asyncpg

from bench.load import LoadResult, summarize
from patientkontrakt.fhir.dates import now_utc

SELECT = "SELECT body FROM resource WHERE res_type = $1 AND res_id = $2"
INSERT = ("INSERT INTO bench_insert (res_type, res_id, version_id, last_updated, deleted, body) "
          "VALUES ('CarePlan', $1, 1, $2, false, $3)")


async def _loop(dsn: str, connections: int, duration: float,
                operation: Callable[[asyncpg.Connection, int, int], Awaitable[object]]) -> LoadResult:
    pool = await asyncpg.create_pool(dsn, min_size=connections, max_size=connections)
    latencies: list[float] = []
    errors = {"database": 0}
    try:
        started = time.perf_counter()
        deadline = started + duration

        async def worker(number: int) -> None:
            counter = 0
            async with pool.acquire() as conn:
                while time.perf_counter() < deadline:
                    counter += 1
                    begin = time.perf_counter()
                    try:
                        await operation(conn, number, counter)
                    except asyncpg.PostgresError:
                        errors["database"] += 1
                        continue
                    latencies.append(time.perf_counter() - begin)

        before = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(worker(n) for n in range(connections)))
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await pool.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summarize(latencies, seconds, errors, cpu)


async def select_loop(dsn: str, ids: list[str], connections: int, duration: float) -> LoadResult:
    rng = random.Random(7)

    async def select(conn: asyncpg.Connection, _n: int, _c: int) -> object:
        return await conn.fetchval(SELECT, "CarePlan", rng.choice(ids))

    return await _loop(dsn, connections, duration, select)


async def insert_loop(dsn: str, bodies: list[str], connections: int, duration: float) -> LoadResult:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_insert")
        await conn.execute("CREATE TABLE bench_insert (LIKE resource INCLUDING ALL)")
    finally:
        await conn.close()
    rng = random.Random(11)

    async def insert(conn: asyncpg.Connection, number: int, counter: int) -> object:
        return await conn.execute(INSERT, f"raw-{number}-{counter}", now_utc(), rng.choice(bodies))

    try:
        return await _loop(dsn, connections, duration, insert)
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DROP TABLE IF EXISTS bench_insert")
        finally:
            await conn.close()
