"""Access-log appends per second with one and with two concurrent writers: the hash chain of
migrations 0002-0004 (``audit_append``, one lock for every append) against the appends of 0005
(plain INSERTs queued for the sealer), each on a fresh database of its own revision.

Each writer is a process with one connection appending batches of ``--batch`` entries, each
batch committed on its own as the read path's group commit does, for ``--seconds``; rounds
alternate between the designs. Not part of ``make bench``:

    .venv/bin/python -m bench.audit_append --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from datetime import datetime

import asyncpg
from sqlalchemy.engine import make_url

from patientkontrakt.audit.log import _entry
from patientkontrakt.fhir.access import Principal
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.database import migrate

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get(
        "PK_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    base = make_url(args.database_url)
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
