"""The migration gate and the Alembic history, on fresh databases of both backends."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from patientkontrakt.audit.checkpoint import AuditKeys, generate_key
from patientkontrakt.audit.sealer import Sealer
from patientkontrakt.audit.verify import verify
from patientkontrakt.storage import tables
from patientkontrakt.storage.audit import append_committed, leaf_of
from patientkontrakt.storage.database import (
    DatabaseNotMigrated,
    alembic_config,
    create_engine,
    current_revision,
    ensure_migrated,
    head_revision,
    migrate,
)
from patientkontrakt.storage.repository import Store
from tests.conftest import drop_database, make_settings, new_database
from tests.security.audit_tools import entries as _all_entries

APP_TABLES = {"resource", "resource_version", "idx_token", "idx_string", "idx_date", "idx_reference", "idx_uri"}


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database that nothing has migrated: a throwaway PostgreSQL database or a new file."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"pk_migr_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = new_database(name)
    try:
        yield url
    finally:
        drop_database(name)


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



# -- the access log through migration 0005 ---------------------------------------------------------

_FIELDS = ("seq", "recorded", "user_id", "user_name", "user_kind", "role", "fhir_user", "care_unit",
           "care_unit_name", "care_provider", "client_id", "interaction", "request", "resources",
           "patient_id", "outcome", "status", "purpose")


def _chain_link(prev: str, row: dict[str, Any]) -> str:
    """A link of the hash chain of 0002-0004, as its `audit verify` computed it."""
    parts = []
    for name in _FIELDS:
        value = row[name]
        text = None if value is None else value.isoformat(timespec="microseconds") if isinstance(value, datetime) \
            else str(value)
        parts.append("~" if text is None else f"{len(text)}:{text}")
    return hashlib.sha256(f"{prev}\n{'|'.join(parts)}".encode()).hexdigest()


def _old_log(count: int) -> list[dict[str, Any]]:
    rows, prev = [], "0" * 64
    for seq in range(1, count + 1):
        row = {"seq": seq, "recorded": datetime(2025, 11, 3, 8, 0) + timedelta(days=10 * seq, microseconds=seq * 1000),
               "user_id": f"SE2321000016-P{seq:03d}", "user_name": "Åsa Öberg | ~ 3:x" if seq % 2 else None,
               "user_kind": "staff", "role": "Sjuksköterska", "fhir_user": "PractitionerRole/r1",
               "care_unit": "SE2321000016-E001", "care_unit_name": "Vårdcentralen Test", "care_provider": None,
               "client_id": "pk-personal", "interaction": "read", "request": f"CarePlan/p{seq}",
               "resources": f'["CarePlan/p{seq}"]', "patient_id": f"pat-{seq}", "outcome": "success",
               "status": 200, "purpose": "TREAT", "prev_hash": prev}
        row["hash"] = prev = _chain_link(prev, row)
        rows.append(row)
    return rows


def _write_old_log(url: str, rows: list[dict[str, Any]]) -> None:
    table = sa.table("audit_log", *(sa.column(n, sa.DateTime() if n == "recorded" else None)
                                    for n in (*_FIELDS, "prev_hash", "hash")))
    asyncio.run(_on_connection(url, lambda conn: conn.execute(sa.insert(table), rows)))


def _entries_now(conn: Connection) -> list[dict[str, Any]]:
    query = sa.text(f"SELECT {', '.join(_FIELDS)} FROM audit_log ORDER BY seq").columns(recorded=sa.DateTime())
    return [dict(r) for r in conn.execute(query).mappings()]


def test_an_existing_log_keeps_its_ids_and_order_and_is_sealed(fresh_url: str, tmp_path: Path) -> None:
    migrate(fresh_url, "0004")
    old = _old_log(7)  # from November 2025 on: months without a partition yet on PostgreSQL
    _write_old_log(fresh_url, old)
    migrate(fresh_url)

    moved = asyncio.run(_on_connection(fresh_url, _entries_now))
    assert moved == [{k: v for k, v in row.items() if k not in ("prev_hash", "hash")} for row in old]
    queued = asyncio.run(_on_connection(fresh_url, lambda c: c.execute(
        sa.text("SELECT seq, leaf_hash FROM audit_queue ORDER BY seq")).all()))
    assert [(seq, bytes(h)) for seq, h in queued] == [(r["seq"], leaf_of(r)) for r in moved]
    if fresh_url.startswith("postgresql"):
        parts = asyncio.run(_on_connection(fresh_url, lambda c: c.execute(
            sa.text("SELECT tableoid::regclass::text FROM audit_log ORDER BY seq")).scalars().all()))
        assert parts[0] == "audit_log_y2025m11" and "audit_log_default" not in parts

    settings = make_settings(fresh_url, audit_key=generate_key(tmp_path / "audit.pem"))
    keys = AuditKeys.load(settings.audit_log_origin, settings.audit_key)

    async def seal_and_append() -> tuple[Any, int]:
        store = Store(create_engine(fresh_url, pool_size=2))
        try:
            await Sealer(store, keys).seal()
            entry = {k: v for k, v in old[0].items() if k not in ("seq", "prev_hash", "hash")}
            await append_committed(store, [{**entry, "recorded": datetime(2026, 1, 2)}])
            report = await verify(store, keys)
            return report, max(r.seq for r in await _all_entries(store))
        finally:
            await store.dispose()
    report, last = asyncio.run(seal_and_append())
    assert report.intact and (report.entries, report.leaves, report.unsealed) == (8, 7, 1)
    assert last == 8  # new entries go on after the old ids
    leaves = asyncio.run(_on_connection(fresh_url, lambda c: c.execute(
        sa.text("SELECT position, seq FROM audit_leaf ORDER BY position")).all()))
    assert [tuple(leaf) for leaf in leaves] == [(seq - 1, seq) for seq in range(1, 8)]

    # and back: the chain of 0004 over the same entries, which its audit_append goes on with
    command.downgrade(alembic_config(fresh_url), "0004")
    rows = asyncio.run(_on_connection(fresh_url, lambda c: [dict(r) for r in c.execute(sa.text(
        "SELECT * FROM audit_log ORDER BY seq").columns(recorded=sa.DateTime())).mappings()]))
    prev = "0" * 64
    for seq, row in enumerate(rows, start=1):
        assert (row["seq"], row["prev_hash"], row["hash"]) == (seq, prev, _chain_link(prev, row))
        prev = row["hash"]
    assert [r["patient_id"] for r in rows] == [r["patient_id"] for r in old] + ["pat-1"]
    migrate(fresh_url)
    asyncio.run(_gate(fresh_url))


def test_a_broken_chain_stops_the_migration_until_someone_has_looked(fresh_url: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    migrate(fresh_url, "0004")
    old = _old_log(5)
    old[2]["patient_id"] = "pat-someone-else"  # entry 3 changed after it was linked
    _write_old_log(fresh_url, old)
    with pytest.raises(RuntimeError, match="hash chain is broken at entry 3: the entry's content does not match "
                                           "its hash. Nothing was migrated"):
        migrate(fresh_url)
    with pytest.raises(DatabaseNotMigrated, match="revision 0004"):
        asyncio.run(_gate(fresh_url))
    monkeypatch.setenv("PK_AUDIT_ACCEPT_BROKEN_CHAIN", "true")
    migrate(fresh_url)
    assert [r["patient_id"] for r in asyncio.run(_on_connection(fresh_url, _entries_now))] == [
        r["patient_id"] for r in old]
