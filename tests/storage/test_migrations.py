"""The migration gate and the Alembic history, on fresh databases of both backends."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, make_url
from sqlmodel import SQLModel

from patientkontrakt.storage import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from patientkontrakt.storage.database import (
    DatabaseNotMigrated,
    alembic_config,
    create_engine,
    current_revision,
    ensure_migrated,
    head_revision,
    migrate,
)

TEST_URL = os.environ.get("PK_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
APP_TABLES = {"resource", "resource_version", "idx_token", "idx_string", "idx_date", "idx_reference", "idx_uri"}


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_dsn(TEST_URL))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database that nothing has migrated: a throwaway PostgreSQL database or a new file."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"pk_migr_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(TEST_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _gate(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        await ensure_migrated(engine)
    finally:
        await engine.dispose()


async def _on_connection(url: str, work: Any) -> Any:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            result = await conn.run_sync(work)
            await conn.commit()
            return result
    finally:
        await engine.dispose()


def _table_names(conn: Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True,
                                                     "include_name": tables.in_models})
    diff: list[Any] = compare_metadata(context, SQLModel.metadata)
    return diff


def test_there_is_one_head() -> None:
    assert head_revision() is not None


def test_a_fresh_database_is_refused_with_the_command_to_run(fresh_url: str) -> None:
    with pytest.raises(DatabaseNotMigrated) as caught:
        asyncio.run(_gate(fresh_url))
    message = str(caught.value)
    assert "has no schema" in message
    assert "`patientkontrakt migrate`" in message
    assert str(head_revision()) in message
    assert "PK_DATABASE_URL" in message


def test_migrate_creates_the_schema_and_the_gate_opens(fresh_url: str) -> None:
    migrate(fresh_url)
    asyncio.run(_gate(fresh_url))
    assert APP_TABLES <= asyncio.run(_on_connection(fresh_url, _table_names))

    async def revision() -> str | None:
        engine = create_engine(fresh_url, pool_size=1)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(revision()) == head_revision()
    migrate(fresh_url)  # running it again changes nothing
    asyncio.run(_gate(fresh_url))


def test_the_migrations_match_the_sqlmodel_tables(fresh_url: str) -> None:
    """``alembic revision --autogenerate`` would find nothing to write."""
    migrate(fresh_url)
    assert asyncio.run(_on_connection(fresh_url, _diff)) == []


def test_a_database_at_another_revision_is_refused(fresh_url: str) -> None:
    migrate(fresh_url)

    def stamp_other(conn: Connection) -> None:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000'"))

    asyncio.run(_on_connection(fresh_url, stamp_other))
    with pytest.raises(DatabaseNotMigrated, match="is at schema revision 0000.*`patientkontrakt migrate`"):
        asyncio.run(_gate(fresh_url))


def test_downgrade_to_base_removes_the_schema(fresh_url: str) -> None:
    migrate(fresh_url)
    command.downgrade(alembic_config(fresh_url), "base")
    assert not APP_TABLES & asyncio.run(_on_connection(fresh_url, _table_names))
    with pytest.raises(DatabaseNotMigrated):
        asyncio.run(_gate(fresh_url))
    migrate(fresh_url)
    asyncio.run(_gate(fresh_url))


def test_an_unreachable_database_is_reported_by_the_gate() -> None:
    with pytest.raises(DatabaseNotMigrated, match="cannot open the database"):
        asyncio.run(_gate("postgresql+asyncpg://postgres@127.0.0.1:1/nothing"))

