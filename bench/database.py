"""Benchmark databases: one pristine, loaded database per size, cloned for every run.

``pk_bench_<N>`` holds the migrated schema and the N loaded agreements and is never written by
a scenario (``--database-prefix`` names them otherwise, e.g. for a second checkout on the same
PostgreSQL). A run works on ``pk_bench_<N>_run``, a file copy of it (``CREATE DATABASE …
TEMPLATE … STRATEGY FILE_COPY``; a small one through the WAL), so the create/update/transaction
scenarios of one run cannot change what the next run reads and searches. The pristine database
carries a comment with a fingerprint of everything that decides what is stored (the generator,
the search parameters, the indexing and write code, the schema revision); a later run reuses it
only when the fingerprint matches.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.storage.database import head_revision

GENERATOR_VERSION = "3"

# What decides the stored bodies and index rows: a change here means a reload.
_FINGERPRINT_FILES = (
    "bench/synthetic.py",
    "bench/loader.py",
    "patientkontrakt/fhir/indexing.py",
    "patientkontrakt/fhir/paths.py",
    "patientkontrakt/fhir/writes.py",
    "patientkontrakt/storage/tables.py",
    "patientkontrakt/domain/rules.py",
    "patientkontrakt/domain/sharing.py",
    "patientkontrakt/domain/identifiers.py",
    "patientkontrakt/domain/profiles.py",
)


def fingerprint(agreements: int) -> str:
    digest = hashlib.sha256()
    paths = [PROJECT_ROOT / p for p in _FINGERPRINT_FILES]
    paths += sorted((PROJECT_ROOT / "patientkontrakt" / "storage" / "migrations" / "versions").glob("*.py"))
    paths += sorted((PROJECT_ROOT / "fhir_profiles" / "search").glob("*.json"))
    paths += sorted((PROJECT_ROOT / "fhir_profiles" / "profiles").glob("*.json"))
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    head = head_revision()
    return f"patientkontrakt-bench v{GENERATOR_VERSION} agreements={agreements} schema={head} {digest.hexdigest()[:16]}"


DEFAULT_PREFIX = "pk_bench"


def pristine_name(agreements: int, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}_{agreements}"


def run_name(agreements: int, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}_{agreements}_run"


def asyncpg_dsn(url: str, database: str | None = None) -> str:
    """A ``postgresql://`` DSN for asyncpg from an SQLAlchemy or plain URL."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def sqlalchemy_url(url: str, database: str) -> str:
    """The server's ``postgresql+asyncpg://`` URL for ``database`` on the same server."""
    return make_url(url).set(drivername="postgresql+asyncpg", database=database).render_as_string(hide_password=False)


WAL_LOG_BELOW = 256 * 2**20  # templates smaller than this are cloned through the WAL


class Admin:
    """Maintenance connection to the server (``CREATE/DROP DATABASE``, comments)."""

    def __init__(self, admin_url: str) -> None:
        self.url = admin_url

    async def _execute(self, sql: str, *args: object) -> str:
        conn = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            return await conn.execute(sql, *args)
        finally:
            await conn.close()

    async def comment(self, database: str) -> str | None:
        conn = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            value: str | None = await conn.fetchval(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", database
            )
            return value
        finally:
            await conn.close()

    async def set_comment(self, database: str, text: str | None) -> None:
        literal = "NULL" if text is None else "'" + text.replace("'", "''") + "'"
        await self._execute(f'COMMENT ON DATABASE "{database}" IS {literal}')

    async def drop(self, database: str) -> None:
        await self._execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    async def create(self, database: str, template: str | None = None) -> None:
        if template is None:
            await self._execute(f'CREATE DATABASE "{database}"')
        else:
            # A file copy needs a checkpoint first, which on a busy server takes longer than
            # copying a small database through the WAL (17 s against 1 s for 110 MB).
            strategy = "WAL_LOG" if await self.size(template) < WAL_LOG_BELOW else "FILE_COPY"
            await self._execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}" STRATEGY {strategy}')

    async def size(self, database: str) -> int:
        conn = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            value: int = await conn.fetchval("SELECT pg_database_size($1)", database)
            return value
        finally:
            await conn.close()


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
