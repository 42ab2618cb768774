"""``python -m bench --database sqlite``: the embedded default, measured like the PostgreSQL mode.

N agreements (``--agreements``, 2,000 by default here) are built by the PostgreSQL loader's own
code (``bench.loader.build_chunk``: the server's prepare hook, ``versioned_body``, the indexer,
the owners of ``domain.sharing``) and inserted through SQLAlchemy into a migrated SQLite file, the
pristine copy (``<sqlite-dir>/pk_bench_<N>.sqlite``, reused while its fingerprint matches, as a
pristine PostgreSQL database is); agreement N/2 is then checked against the server's write path
(``bench.checks.verify_against_writer``, on SQLite). Every run works on a file copy of it, so the
create scenario of one run cannot change what the next run reads.

On the copy run, one at a time: the real service (``patientkontrakt serve``: tokens, access
rules, access log, its own SQLAlchemy/aiosqlite pool), the same app without authentication and
access log (``bench.noauth_app``), and the bare FastAPI route on the same file through aiosqlite
(``bench.baseline_app``). Read by id alternates between them in ``--rounds`` rounds; create is
measured on the real service last. Rows are reported as in the PostgreSQL mode, reads as a share
of the bare FastAPI route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import checks, loader, report, synthetic
from bench.database import fingerprint
from bench.scenarios import SCENARIOS
from bench.servers import Server, baseline_server, patientkontrakt_server
from patientkontrakt.storage.database import migrate
from patientkontrakt.storage.tables import CONSENT_RULE, INDEX_TABLES, RESOURCE, RESOURCE_VERSION

DEFAULT_AGREEMENTS = 2_000
DEFAULT_DIR = Path(tempfile.gettempdir()) / "pk-bench-sqlite"
SQLITE_SCENARIOS = ("read", "create")
_TABLES = {RESOURCE.name: RESOURCE, RESOURCE_VERSION.name: RESOURCE_VERSION, CONSENT_RULE.name: CONSENT_RULE,
           **{t.name: t for t in INDEX_TABLES.values()}}


def sqlite_url(path: Path) -> str:
    """The server's URL for the SQLite file ``path``."""
    return f"sqlite+aiosqlite:///{path}"


def sqlite_fingerprint(agreements: int) -> str:
    return f"sqlite {fingerprint(agreements)}"


def _columns(table: str) -> list[str]:
    if table == RESOURCE.name:
        return loader.RESOURCE_COLUMNS
    if table == RESOURCE_VERSION.name:
        return loader.VERSION_COLUMNS
    if table == CONSENT_RULE.name:
        return loader.CONSENT_RULE_COLUMNS
    return loader.INDEX_COLUMNS[next(name for name, t in INDEX_TABLES.items() if t.name == table)]


def _insert(conn: sa.Connection, records: loader.Records) -> None:
    for table, rows in records.items():
        if rows:
            columns = _columns(table)
            conn.execute(_TABLES[table].insert(), [dict(zip(columns, row, strict=True)) for row in rows])


def load_file(path: Path, agreements: int, jobs: int) -> dict[str, Any]:
    """Migrate a new SQLite file at ``path`` and load agreements ``0..agreements-1`` into it;
    counts and seconds."""
    path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    started = time.perf_counter()
    migrate(sqlite_url(path))
    migrated = time.perf_counter()
    engine = sa.create_engine(f"sqlite:///{path}")
    resources = index_rows = 0
    try:
        with engine.begin() as conn:
            chunks = list(loader._chunks(agreements))
            if jobs > 1 and len(chunks) > 1:
                context = multiprocessing.get_context("spawn")
                with context.Pool(jobs, initializer=loader._init_worker, initargs=(loader.local_base(),)) as pool:
                    built = list(pool.imap(loader.build_chunk, chunks))
            else:
                loader._init_worker(loader.local_base())
                built = [loader.build_chunk(chunk) for chunk in chunks]
            for records in built:
                _insert(conn, records)
                resources += len(records[RESOURCE.name])
                index_rows += sum(len(r) for t, r in records.items() if t.startswith("idx_"))
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    _checkpoint(path)
    return {"resources": resources, "index_rows": index_rows, "migrate_seconds": round(migrated - started, 1),
            "load_seconds": round(time.perf_counter() - migrated, 1)}


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the file, so that a file copy is the whole database."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def count_rows(path: Path, table: str, where: str = "") -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0])
    finally:
        conn.close()


async def prepare(args: argparse.Namespace, n: int, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The run file (a copy of the pristine, loaded one) and the load info for the report."""
    directory = Path(args.sqlite_dir)
    directory.mkdir(parents=True, exist_ok=True)
    pristine = directory / f"{args.database_prefix}_{n}.sqlite"
    stamp = pristine.with_name(pristine.name + ".fingerprint")
    expected = sqlite_fingerprint(n)
    info: dict[str, Any] = {"database": str(pristine), "fingerprint": expected}
    if not args.reload and pristine.exists() and stamp.exists() and stamp.read_text() == expected:
        print(f"[{n:,}] reusing loaded SQLite file {pristine}", flush=True)
        info["reused"] = True
    else:
        stamp.unlink(missing_ok=True)
        print(f"[{n:,}] creating and loading {pristine}", flush=True)
        info.update(await asyncio.to_thread(load_file, pristine, n, args.jobs), reused=False)
        print(f"[{n:,}] loaded {info['resources']:,} resources and {info['index_rows']:,} index rows in "
              f"{info['load_seconds']} s", flush=True)
        compared = await checks.verify_against_writer(sqlite_url(pristine), n // 2)
        owned = await checks.check_owners(sqlite_url(pristine), n // 2)
        _checkpoint(pristine)
        info["writer_equivalence_index_rows"] = compared
        print(f"[{n:,}] agreement {n // 2} matches the server's write path on SQLite ({compared} index rows and "
              f"owners compared; {owned} resources owned)", flush=True)
        stamp.write_text(expected)
    run = workdir / f"{args.database_prefix}_{n}_run.sqlite"
    shutil.copyfile(pristine, run)
    info["size_bytes"] = run.stat().st_size
    return run, info


async def run_size(bench: Any, n: int) -> dict[str, Any]:
    """Read by id (interleaved with the no-auth app and the bare FastAPI route), then create, on a
    copy of the loaded file. ``bench``: the ``runner.Bench`` (its measuring and tokens)."""
    args = bench.args
    path, info = await prepare(args, n, bench.workdir)
    url = sqlite_url(path)
    out: dict[str, Any] = {"agreements": n, "resources": n * synthetic.RESOURCES_PER_AGREEMENT,
                           "database": {**info, "engine": "sqlite", "sqlite": sqlite3.sqlite_version},
                           "scenarios": {}, "baselines": {}}
    names = [name for name in SQLITE_SCENARIOS if name in args.scenarios]
    files = {name: bench._request_file(n, SCENARIOS[name]) for name in names}
    root = Path(args.server_root)
    before = count_rows(path, RESOURCE.name, "WHERE res_type = 'CarePlan'")
    print(f"[{n:,}] SQLite: patientkontrakt serve, the same without authentication and access log "
          f"(bench/noauth_app.py) and the bare FastAPI route on aiosqlite (bench/baseline_app.py), all on "
          f"{path.name}, all idle but the one measured", flush=True)
    with contextlib.ExitStack() as stack:
        ours = patientkontrakt_server(url, args.workers, bench.signing_key, root)
        base = baseline_server(f"sqlite:///{path}", args.workers, args.connections)
        noauth = patientkontrakt_server(url, args.workers, bench.signing_key, root, auth=False)
        _start(stack, [ours, base, noauth] if "read" in names else [ours])
        if "read" in names:
            first = _first_line(files["read"])
            SCENARIOS["read"].preflight(ours.url, first, bench.token(ours))
            SCENARIOS["read"].preflight(base.url, first)
            SCENARIOS["read"].preflight(noauth.url, first)
            sides = [("fastapi_read", base, "baseline: bare FastAPI read"),
                     ("read_noauth", noauth, "read CarePlan by id, no auth/log"),
                     ("read", ours, SCENARIOS["read"].title)]
            rounds: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in sides}
            for number in range(1, args.rounds + 1):
                for key, server, title in sides:
                    rounds[key].append(bench.measure_http(server, files["read"], "random", f"{title} [{number}]"))
            out["baselines"]["fastapi_read"] = _best(rounds["fastapi_read"])
            out["scenarios"]["read_noauth"] = _best(rounds["read_noauth"])
            out["scenarios"]["read"] = _best(rounds["read"])
            logged = count_rows(path, "audit_log")
            out["access_events_after_reads"] = logged
            print(f"[{n:,}] access log: {logged:,} entries after the reads", flush=True)
        if "create" in names:
            SCENARIOS["create"].preflight(ours.url, _first_line(files["create"]), bench.token(ours))
            out["scenarios"]["create"] = bench.measure_http(ours, files["create"], "random",
                                                            SCENARIOS["create"].title)
    out["created_careplans"] = count_rows(path, RESOURCE.name, "WHERE res_type = 'CarePlan'") - before
    out["ratios"] = report.ratios(out)
    if not args.keep:
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    return out


def _start(stack: contextlib.ExitStack, servers: list[Server]) -> None:
    """Start ``servers`` at once (each imports the service for seconds), stopped with ``stack``."""
    for server in servers:
        stack.push(server.__exit__)
    stack.callback(_stop, servers)
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(Server.start, servers))


def _stop(servers: list[Server]) -> None:
    """Stop ``servers`` at once: SIGINT to all, then wait for each (``Server.stop`` one by one
    waits for every shutdown in turn)."""
    running = [s.process for s in servers if s.process is not None and s.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 15
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _first_line(path: Path) -> tuple[str, str, str]:
    method, target, body = path.read_text(encoding="utf-8").split("\n", 1)[0].split("\t", 2)
    return method, target, body


def _best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    best = dict(max(rounds, key=lambda r: r["rps"]))
    best["rounds"] = [{k: r[k] for k in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req")} for r in rounds]
    return best
