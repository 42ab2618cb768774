"""What the access-log tests do to the log: seal it, verify it (in-process and through the
command), and tamper with it as someone with the database's superuser would."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from patientkontrakt.audit.checkpoint import AuditKeys, Checkpoint
from patientkontrakt.audit.sealer import Sealer
from patientkontrakt.audit.verify import Report, verify
from patientkontrakt.config import Settings
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import _dsn
from tests.faults import admin

T = TypeVar("T")
_SCRIPT = Path(sys.executable).parent / "patientkontrakt"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "patientkontrakt.cli"]


def keys(settings: Settings) -> AuditKeys:
    return AuditKeys.load(settings.audit_log_origin, settings.audit_key, settings.previous_audit_keys)


def with_store(url: str, work: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = Store(create_engine(url, pool_size=2))
        try:
            return await work(store)
        finally:
            await store.dispose()
    return asyncio.run(run())


def seal(settings: Settings, export_to: Path | None = None, at: float | None = None) -> list[Checkpoint]:
    """Seal what is queued; ``at``: the time to sign the checkpoints at (POSIX seconds), not now."""
    clock = (lambda: at) if at is not None else time.time
    return with_store(settings.database_url, lambda store: Sealer(store, keys(settings), export_to, clock=clock).seal())


def check(settings: Settings, exported: Checkpoint | str | None = None) -> Report:
    note = exported.note if isinstance(exported, Checkpoint) else exported
    return with_store(settings.database_url, lambda store: verify(store, keys(settings), note))


async def entries(store: Store) -> list[sql.AuditRow]:
    """Every entry in ``seq`` order."""
    async with sql.snapshot(store) as conn:
        return [sql.AuditRow(**row._mapping) async for row in sql.walk_entries(conn)]


def environment(settings: Settings) -> dict[str, str]:
    """The PK_* variables of ``settings`` that the audit commands read, and nothing of ours else."""
    values = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    values.update({"PK_DATABASE_URL": settings.database_url, "PK_BASE_URL": settings.base_url,
                   "PK_AUDIT_KEY": str(settings.audit_key)})
    if settings.audit_keys_previous:
        values["PK_AUDIT_KEYS_PREVIOUS"] = settings.audit_keys_previous
    return values


def cli(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``patientkontrakt <args>`` as an operator runs it, configured by PK_* variables only."""
    return subprocess.run([*COMMAND, *args], cwd=cwd, env=environment(settings), capture_output=True, text=True,
                          timeout=300, check=False)


def tamper(url: str, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
    """Run ``statements`` with every trigger off, as the database's superuser can (PostgreSQL: the
    replication role, under which no ordinary trigger fires, TRUNCATE's included; SQLite: the
    triggers dropped and made again)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]
        with sqlite3.connect(path) as conn:
            triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
            for name, _ in triggers:
                conn.execute(f"DROP TRIGGER {name}")
            for statement in statements:
                text, args = statement if isinstance(statement, tuple) else (statement, ())
                conn.execute(text, args)
            for _, definition in triggers:
                conn.execute(definition)
        return

    async def run() -> None:
        conn = await asyncpg.connect(_dsn(url))
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                for statement in statements:
                    text, args = statement if isinstance(statement, tuple) else (statement, ())
                    await conn.execute(text, *args)
        finally:
            await conn.close()
    asyncio.run(run())


def query(url: str, statement: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of ``statement`` on PostgreSQL."""
    return admin(url, statement, *args)
