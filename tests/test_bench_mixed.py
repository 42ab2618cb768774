"""The benchmark's mixed workload (bench/mixed.py) end to end, as ``make soak`` runs it, on a tiny
database: ``python -m bench --soak`` loads 30 agreements, starts two server processes and the
notification worker, sends reads, searches, If-Match updates and transactions for a few seconds
with a line per window, and passes only with no error. And the bench's own PgBouncer
(bench/pooler.py) pools in transaction mode."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import orjson
import pytest
from sqlalchemy.engine import make_url

from bench import mixed, pooler, report, runner
from tests.conftest import TEST_URL

AGREEMENTS = 30


async def _drop(admin: str, prefix: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        for suffix in ("", "_run"):
            await conn.execute(f'DROP DATABASE IF EXISTS "{prefix}_{AGREEMENTS}{suffix}" WITH (FORCE)')
    finally:
        await conn.close()


def test_soak_of_the_mixed_workload_sends_every_kind_without_errors(tmp_path: Path) -> None:
    admin = make_url(TEST_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    prefix = f"pk_test_mixed_{os.getpid()}"
    args = runner.build_parser().parse_args([
        "--agreements", str(AGREEMENTS), "--soak", "2", "--soak-interval", "0.5", "--warmup", "0",
        "--connections", "4", "--quiet-wait", "0", "--client", "python", "--jobs", "1",
        "--database-url", admin, "--database-prefix", prefix, "--output", str(tmp_path)])
    try:
        results = asyncio.run(runner.run(args))
    finally:
        asyncio.run(_drop(admin, prefix))
    row = results["runs"][str(AGREEMENTS)]["mixed"]
    assert row["errors"] == 0, row["error_samples"]
    assert row["workers"] == 2
    for kind in mixed.KINDS:
        assert row["kinds"][kind]["requests"] > 0, kind
    # The updates and transactions notified the receiver through the worker beside the servers.
    assert row["notifications_received"] > 0 and row["outbox_depth_after_drain"] == 0
    soak = results["soak"]
    assert soak["failures"] == [] and soak["errors"] == 0
    assert len(soak["windows"]) >= 2
    assert soak["server_rss_mib"]["first"] > 0 and soak["db_connections"]["max"] > 0
    assert orjson.loads((tmp_path / "soak.json").read_bytes())["soak"]["requests"] == soak["requests"]


def test_soak_fails_on_errors_and_memory_growth() -> None:
    row = {"requests": 10, "errors": 1, "error_detail": {"update:412": 1}, "rps": 5.0, "p50_ms": 1.0, "p99_ms": 2.0}
    gauges = [{"elapsed_s": 1.0, "server_rss_mib": 100.0, "worker_rss_mib": 50.0, "db_connections": 3,
               "outbox_depth": 0},
              {"elapsed_s": 2.0, "server_rss_mib": 140.0, "worker_rss_mib": 51.0, "db_connections": 3,
               "outbox_depth": 0}]
    soak = report.soak_summary(row, [], gauges, 0.25)
    assert len(soak["failures"]) == 2
    assert "update:412" in soak["failures"][0] and "server rss grew 40%" in soak["failures"][1]
    assert soak["server_rss_mib"]["mib_per_minute"] == 2400.0
    assert report.soak_summary({**row, "errors": 0}, [], gauges[:1], 0.25)["failures"] == []


async def test_the_bench_pgbouncer_pools_transactions() -> None:
    binary = pooler.ensure_pgbouncer()
    assert binary, "Debian's pgbouncer is not installed and could not be installed"
    admin = make_url(TEST_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with pooler.PgBouncer(binary, admin, pool_size=1) as bouncer:
        dsn = bouncer.url("postgres", driver="postgresql")
        clients = [await asyncpg.connect(dsn, statement_cache_size=0) for _ in range(3)]
        try:
            # Three clients, one server connection between them: each transaction gets it in turn.
            pids = {await asyncio.wait_for(c.fetchval("SELECT pg_backend_pid()"), 10) for c in clients}
            assert len(pids) == 1
        finally:
            for client in clients:
                await client.close()
        port = bouncer.port
    with pytest.raises(OSError):  # stopped with the bench's run
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=2)
