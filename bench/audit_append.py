"""Access-log appends per second with one and with two concurrent writers: the hash chain of
migrations 0002-0004 (``audit_append``, one lock for every append) against the appends of 0005
(plain INSERTs queued for the sealer), each on a fresh database of its own revision.

Each writer is a process with one connection appending batches of ``--batch`` entries, each
batch committed on its own as the read path's group commit does, for ``--seconds``; rounds
alternate between the designs. ``--seal N`` instead queues N entries, seals them, verifies the
log and reports the times and the bytes an entry takes. Not part of ``make bench``:

    .venv/bin/python -m bench.audit_append --seconds 10 --rounds 3
    .venv/bin/python -m bench.audit_append --seal 100000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from patientkontrakt.audit.checkpoint import AuditKeys, generate_key
from patientkontrakt.audit.log import _entry
from patientkontrakt.audit.sealer import Sealer
from patientkontrakt.audit.verify import verify
from patientkontrakt.fhir.access import Principal
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.database import create_engine, migrate
from patientkontrakt.storage.repository import Store

CHAIN = "SELECT audit_append($1::jsonb)"  # migrations 0002-0004
TREE = sql._APPEND_DRIVER  # migration 0005
NURSE = Principal(kind="staff", id="SE2321000016-P001", name="Test Sjuksköterska", role="Sjuksköterska",
                  fhir_user="PractitionerRole/r1", care_unit="SE2321000016-E001", care_unit_name="Vårdcentralen Test",
                  care_provider="SE2321000016-0001", client_id="pk-personal")


class _Caller:
    principal = NURSE
    logged = True


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _writer(dsn: str, statement: str, batch: int, seconds: float) -> int:
    entries = [_entry(_Caller(), "read", f"CarePlan/p{i}", [f"CarePlan/p{i}"], f"pat-{i}", 200,  # type: ignore[arg-type]
                      "success", datetime.now()) for i in range(batch)]
    payload = sql._as_json(entries)
    conn = await asyncpg.connect(dsn)
    try:
        done, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            await conn.execute(statement, payload)
            done += batch
        return done
    finally:
        await conn.close()


def _process(dsn: str, statement: str, batch: int, seconds: float, out: multiprocessing.Queue[int]) -> None:
    out.put(asyncio.run(_writer(dsn, statement, batch, seconds)))


def _round(dsn: str, statement: str, writers: int, batch: int, seconds: float) -> float:
    out: multiprocessing.Queue[int] = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_process, args=(dsn, statement, batch, seconds, out))
                 for _ in range(writers)]
    for p in processes:
        p.start()
    total = sum(out.get() for _ in processes)
    for p in processes:
        p.join()
    return total / seconds


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _seal(url: str, count: int, key: Path) -> None:
    store = Store(create_engine(url, pool_size=2))
    try:
        now = datetime.now()
        for start in range(0, count, 5000):
            await sql.append_committed(store, [
                _entry(_Caller(), "read", f"CarePlan/p{i}", [f"CarePlan/p{i}"], f"pat-{i}", 200,  # type: ignore[arg-type]
                       "success", now) for i in range(start, min(count, start + 5000))])
        keys = AuditKeys.load("bench.invalid/audit", generate_key(key))
        began = time.perf_counter()
        checkpoints = await Sealer(store, keys).seal()
        sealed = time.perf_counter() - began
        began = time.perf_counter()
        report = await verify(store, keys, checkpoints[-1].note)
        verified = time.perf_counter() - began
        conn = await asyncpg.connect(_dsn(url))
        try:
            leaf = await conn.fetchval("SELECT pg_total_relation_size('audit_leaf')::float / count(*) FROM audit_leaf")
            entry = await conn.fetchval("SELECT sum(pg_total_relation_size(inhrelid))::float / "
                                        "(SELECT count(*) FROM audit_log) FROM pg_inherits "
                                        "WHERE inhparent = 'audit_log'::regclass")
        finally:
            await conn.close()
        print(f"sealed {count} entries in {sealed:.2f} s ({len(checkpoints)} checkpoints); verified in "
              f"{verified:.2f} s ({'intact' if report.intact else 'BROKEN'}); bytes per entry: log {entry:.0f}, "
              f"leaf {leaf:.0f} (with indexes)")
    finally:
        await store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get(
        "PK_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seal", type=int, metavar="N", help="seal and verify N queued entries instead")
    args = parser.parse_args()
    base = make_url(args.database_url)
    if args.seal:
        name = f"pk_seal_{os.getpid()}"
        asyncio.run(_admin(args.database_url, f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
        try:
            migrate(url)
            with tempfile.TemporaryDirectory() as folder:
                asyncio.run(_seal(url, args.seal, Path(folder) / "audit.pem"))
        finally:
            asyncio.run(_admin(args.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    urls = {}
    for design, revision in (("chain", "0004"), ("tree", "head")):
        name = f"pk_append_{design}_{os.getpid()}"
        asyncio.run(_admin(args.database_url, f'DROP DATABASE IF EXISTS "{name}"'))
        asyncio.run(_admin(args.database_url, f'CREATE DATABASE "{name}"'))
        urls[design] = base.set(database=name).render_as_string(hide_password=False)
        migrate(urls[design], revision)
    try:
        for writers in (1, 2):
            for n in range(args.rounds):
                for design, statement in (("chain", CHAIN), ("tree", TREE)):
                    rate = _round(_dsn(urls[design]), statement, writers, args.batch, args.seconds)
                    print(f"{design:5}  writers {writers}  batch {args.batch}  round {n + 1}: {rate:8.0f} entries/s",
                          flush=True)
    finally:
        for url in urls.values():
            asyncio.run(_admin(args.database_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}"'))


if __name__ == "__main__":
    main()
