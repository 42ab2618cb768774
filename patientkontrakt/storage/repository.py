"""Repository: the SQL behind the FHIR interactions.

A ``Store`` owns the engine and hands out units of work: ``reading()`` (autocommit on
PostgreSQL: a read by id is a single round trip, no BEGIN/ROLLBACK) and ``writing()`` (one
transaction; on SQLite ``BEGIN IMMEDIATE``). A ``Unit`` exposes the primitive operations the
FHIR engine composes into interactions; it knows tables and SQL, not FHIR rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from patientkontrakt.storage.tables import INDEX_TABLES, RESOURCE, RESOURCE_VERSION

R = RESOURCE.c
V = RESOURCE_VERSION.c
REF = INDEX_TABLES["reference"].c


@dataclass(frozen=True)
class StoredResource:
    pk: int
    type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    body: str


@dataclass(frozen=True)
class StoredVersion:
    type: str
    id: str
    version_id: int
    last_updated: datetime
    method: str
    deleted: bool
    body: str | None


_CURRENT_COLUMNS = (R.pk, R.res_type, R.res_id, R.version_id, R.last_updated, R.deleted, R.body)
_VERSION_COLUMNS = (V.res_type, V.res_id, V.version_id, V.last_updated, V.method, V.deleted, V.body)
# Read by id is the hottest statement: built once, so a call only binds values instead of
# constructing a Select and generating its cache key every time (docs/performance.md).
_GET = sa.select(*_CURRENT_COLUMNS).where(R.res_type == sa.bindparam("type_"), R.res_id == sa.bindparam("id_"))
_GET_LOCKED = _GET.with_for_update()


def _current(row: Sequence[Any]) -> StoredResource:
    return StoredResource(*row)


def _version(row: Sequence[Any]) -> StoredVersion:
    return StoredVersion(*row)


def _current_during(at: datetime | tuple[datetime, datetime]) -> tuple[sa.ColumnElement[bool], ...]:
    """Versions current at some time in [low, high]: written by its end, not replaced by its start."""
    low, high = at if isinstance(at, tuple) else (at, at)
    later = RESOURCE_VERSION.alias("later")
    replaced = sa.exists().where(
        later.c.res_type == V.res_type, later.c.res_id == V.res_id,
        later.c.version_id > V.version_id, later.c.last_updated <= low,
    )
    return V.last_updated <= high, ~replaced


class Unit:
    """Primitive storage operations on one connection (and, when writing, one transaction)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    # -- current resources -----------------------------------------------------------------

    async def get(self, type_: str, id_: str, *, lock: bool = False) -> StoredResource | None:
        query = _GET_LOCKED if lock else _GET
        row = (await self.conn.execute(query, {"type_": type_, "id_": id_})).first()
        return _current(row) if row else None

    async def get_many(self, keys: Iterable[tuple[str, str]]) -> list[StoredResource]:
        """Current, not deleted resources for (type, id) keys, in no particular order."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return []
        query = sa.select(*_CURRENT_COLUMNS).where(
            sa.tuple_(R.res_type, R.res_id).in_(wanted), R.deleted.is_(False)
        )
        return [_current(r) for r in (await self.conn.execute(query)).all()]

    async def get_by_pks(self, pks: Sequence[int]) -> list[StoredResource]:
        if not pks:
            return []
        query = sa.select(*_CURRENT_COLUMNS).where(R.pk.in_(list(pks)))
        by_pk = {r[0]: _current(r) for r in (await self.conn.execute(query)).all()}
        return [by_pk[pk] for pk in pks if pk in by_pk]

    async def existing(self, keys: Iterable[tuple[str, str]], *, share_lock: bool = False) -> set[tuple[str, str]]:
        """Which of the keys exist and are not deleted; optionally FOR SHARE (writes)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        query = sa.select(R.res_type, R.res_id).where(
            sa.tuple_(R.res_type, R.res_id).in_(wanted), R.deleted.is_(False)
        )
        if share_lock:
            query = query.with_for_update(read=True)
        return {(str(t), str(i)) for t, i in (await self.conn.execute(query)).all()}

    async def insert(
        self, type_: str, id_: str, version_id: int, last_updated: datetime, body: str
    ) -> int:
        result = await self.conn.execute(
            sa.insert(RESOURCE)
            .values(res_type=type_, res_id=id_, version_id=version_id, last_updated=last_updated,
                    deleted=False, body=body)
            .returning(R.pk)
        )
        pk: int = result.scalar_one()
        return pk

    async def update(
        self, pk: int, version_id: int, last_updated: datetime, body: str, *, deleted: bool = False
    ) -> None:
        await self.conn.execute(
            sa.update(RESOURCE)
            .where(R.pk == pk)
            .values(version_id=version_id, last_updated=last_updated, body=body, deleted=deleted)
        )

    # -- versions --------------------------------------------------------------------------

    async def add_version(
        self, type_: str, id_: str, version_id: int, last_updated: datetime, method: str, body: str | None
    ) -> None:
        await self.conn.execute(
            sa.insert(RESOURCE_VERSION).values(
                res_type=type_, res_id=id_, version_id=version_id, last_updated=last_updated,
                method=method, deleted=body is None, body=body,
            )
        )

    async def get_version(self, type_: str, id_: str, version_id: int) -> StoredVersion | None:
        query = sa.select(*_VERSION_COLUMNS).where(
            V.res_type == type_, V.res_id == id_, V.version_id == version_id
        )
        row = (await self.conn.execute(query)).first()
        return _version(row) if row else None

    async def history(
        self,
        *,
        type_: str | None,
        id_: str | None,
        since: datetime | None,
        at: datetime | tuple[datetime, datetime] | None,
        offset: int,
        count: int,
    ) -> list[StoredVersion]:
        """Versions newest first (R4 http.html#history), ``count + 1`` rows to detect a next page.

        ``at`` is an instant or an inclusive period: only versions current at some time in it.
        """
        query = sa.select(*_VERSION_COLUMNS)
        if type_ is not None:
            query = query.where(V.res_type == type_)
        if id_ is not None:
            query = query.where(V.res_id == id_)
        if since is not None:
            query = query.where(V.last_updated >= since)
        if at is not None:
            query = query.where(*_current_during(at))
        query = query.order_by(V.last_updated.desc(), V.seq.desc()).offset(offset).limit(count + 1)
        return [_version(r) for r in (await self.conn.execute(query)).all()]

    async def history_count(
        self, *, type_: str | None, id_: str | None, since: datetime | None,
        at: datetime | tuple[datetime, datetime] | None
    ) -> int:
        query = sa.select(sa.func.count()).select_from(RESOURCE_VERSION)
        if type_ is not None:
            query = query.where(V.res_type == type_)
        if id_ is not None:
            query = query.where(V.res_id == id_)
        if since is not None:
            query = query.where(V.last_updated >= since)
        if at is not None:
            query = query.where(*_current_during(at))
        total: int = (await self.conn.execute(query)).scalar_one()
        return total

    # -- search index ----------------------------------------------------------------------

    async def write_index(self, pk: int, type_: str, tables: Iterable[tuple[str, list[dict[str, Any]]]],
                          *, replace: bool) -> None:
        """Write a resource's index rows, replacing what it had when ``replace``."""
        if replace:
            await self.clear_index(pk)
        for name, rows in tables:
            if rows:
                await self.conn.execute(
                    sa.insert(INDEX_TABLES[name]),
                    [{**row, "resource_pk": pk, "res_type": type_} for row in rows],
                )

    async def clear_index(self, pk: int) -> None:
        for table in INDEX_TABLES.values():
            await self.conn.execute(sa.delete(table).where(table.c.resource_pk == pk))

    async def referrers(self, type_: str, id_: str, *, exclude_pk: int, limit: int = 10) -> list[tuple[str, str]]:
        """Current resources whose indexed references point at Type/id (for delete)."""
        query = (
            sa.select(R.res_type, R.res_id)
            .distinct()
            .select_from(INDEX_TABLES["reference"].join(RESOURCE, R.pk == REF.resource_pk))
            .where(REF.target_type == type_, REF.target_id == id_, REF.resource_pk != exclude_pk)
            .limit(limit)
        )
        return [(str(t), str(i)) for t, i in (await self.conn.execute(query)).all()]

    async def references_from(self, pks: Sequence[int], params: Sequence[tuple[str, str]] | None,
                              target_type: str | None = None) -> list[tuple[str, str]]:
        """Targets (type, id) referenced by the given resources through (res_type, param)."""
        if not pks:
            return []
        query = sa.select(REF.target_type, REF.target_id).distinct().where(
            REF.resource_pk.in_(list(pks)), REF.target_id.is_not(None)
        )
        if params is not None:
            query = query.where(sa.tuple_(REF.res_type, REF.param).in_(list(params)))
        if target_type is not None:
            query = query.where(REF.target_type == target_type)
        return [(str(t), str(i)) for t, i in (await self.conn.execute(query)).all()]

    async def referencing(self, source_type: str, param: str | None, targets: Sequence[tuple[str, str]],
                          limit: int) -> list[int]:
        """pks of current resources of ``source_type`` whose ``param`` points at the targets."""
        if not targets:
            return []
        query = (
            sa.select(REF.resource_pk).distinct()
            .where(REF.res_type == source_type, sa.tuple_(REF.target_type, REF.target_id).in_(list(targets)))
            .limit(limit)
        )
        if param is not None:
            query = query.where(REF.param == param)
        pks: list[int] = list((await self.conn.execute(query)).scalars())
        return pks

    # -- search ----------------------------------------------------------------------------

    async def search(self, query: sa.Select[Any]) -> list[StoredResource]:
        return [_current(r) for r in (await self.conn.execute(query)).all()]

    async def scalar(self, query: sa.Select[Any]) -> Any:
        return (await self.conn.execute(query)).scalar_one()

    async def lock_key(self, key: str) -> None:
        """Serialise writers on ``key`` until the transaction ends (conditional create/update).

        PostgreSQL: a transaction-scoped advisory lock. SQLite: write transactions already
        start with BEGIN IMMEDIATE, so writers are serialised.
        """
        if self.dialect == "postgresql":
            await self.conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})


class Store:
    """The engine plus the unit-of-work factories."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._read_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.dialect == "postgresql" else engine
        )
        self._get_sql = str(_GET.compile(dialect=engine.dialect)) if self.dialect == "postgresql" else None

    async def read_current(self, type_: str, id_: str) -> StoredResource | None:
        """The current row of Type/id for the read interaction: ``Unit.get`` without a unit.

        On PostgreSQL the same statement, compiled once, goes straight to the pooled asyncpg
        connection, outside any transaction as in ``reading()``. On a read by id SQLAlchemy's
        per-execution work (connection wrapper, autobegin/rollback, execution context, result
        metadata) costs about twice the CPU of the driver call itself (docs/performance.md).
        """
        if self._get_sql is None:
            async with self.reading() as unit:
                return await unit.get(type_, id_)
        pooled = await self.engine.raw_connection()
        driver: Any = pooled.driver_connection
        try:
            row = await driver.fetchrow(self._get_sql, type_, id_)
        except BaseException:
            pooled.invalidate()  # a failed or cancelled query leaves the connection unusable
            raise
        pooled.close()
        return _current(row) if row else None

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Unit]:
        async with self._read_engine.connect() as conn:
            yield Unit(conn)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[Unit]:
        async with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
            async with conn.begin():
                yield Unit(conn)

    @asynccontextmanager
    async def trial(self) -> AsyncIterator[Unit]:
        """A write transaction that is always rolled back: ``$validate`` tries the real write."""
        async with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
            transaction = await conn.begin()
            try:
                yield Unit(conn)
            finally:
                await transaction.rollback()

    async def ping(self) -> None:
        """Raise if the database cannot answer (health checks)."""
        async with self.reading() as unit:
            await unit.conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
