"""Repository: the SQL behind the FHIR interactions.

A ``Store`` owns the engine and hands out units of work: ``reading()`` (autocommit on
PostgreSQL: a read by id is a single round trip, no BEGIN/ROLLBACK) and ``writing()`` (one
transaction; on SQLite ``BEGIN IMMEDIATE``). A ``Unit`` exposes the primitive operations the
FHIR engine composes into interactions; it knows tables and SQL, not FHIR rules.

When the database is unavailable (down, restarting, refusing connections, the pool exhausted)
every unit of work raises ``DatabaseUnavailable`` (storage/errors.py) instead of the driver's
error, whichever statement met it.

Its length (over 400 lines) is one interface: the unit of work's primitive operations on the
resource, version and index tables, which every interaction composes inside one transaction;
the SQL that builds searches, access rules and history pages lives beside it (``search_sql.py``,
``access_sql.py``, ``history_sql.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.logs import describe
from patientkontrakt.storage.access_sql import Restriction, care_plan_of, reached_count
from patientkontrakt.storage.database import (
    SQLITE_BUSY_TIMEOUT,
    StatementTimeout,
    is_statement_timeout,
    sqlite_deadline,
)
from patientkontrakt.storage.errors import DatabaseUnavailable, is_disconnect, unavailable
from patientkontrakt.storage.history_sql import (
    SAFE_POINT,
    TAKE_XID,
    VERSION_COLUMNS,
    HistoryWindow,
    floor_ms,
    history_filter,
    history_query,
)
from patientkontrakt.storage.replica import SESSION, RecentWrites, format_lsn, parse_lsn
from patientkontrakt.storage.sqlite_inline import InlineSQLite
from patientkontrakt.storage.tables import CONSENT_RULE, INDEX_TABLES, RESOURCE, RESOURCE_VERSION, SERVER_STATE
from patientkontrakt.storage.write_sql import STORE_NEW, STORE_NEXT, store_arguments

log = logging.getLogger("patientkontrakt.storage")
R = RESOURCE.c
V = RESOURCE_VERSION.c
# Whether a replica has replayed the primary's WAL up to a position; a server that is not in
# recovery (a replica URL that names a primary, or a promoted standby) has everything it has.
_CAUGHT_UP = "SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= $1::text::pg_lsn"
_REPLICA_POLL = 0.005  # seconds between two looks at the replica's replay position
_FRESH_MARK = 0.02  # seconds: how old the primary's position may be when a client's X-PK-LSN is beyond it
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
    patient_id: str | None = None  # the Patient compartment it is in (see tables.Resource)
    owner_unit: str | None = None  # the care unit (Organization id) that created it (tables.Resource)
    owner_provider: str | None = None  # that unit's care provider (HSA-id)


@dataclass(frozen=True)
class StoredVersion:
    type: str
    id: str
    version_id: int
    last_updated: datetime
    method: str
    deleted: bool
    body: str | None
    seq: int | None = None  # its place in the server's history (history pages' cursors)


CURRENT_COLUMNS = (R.pk, R.res_type, R.res_id, R.version_id, R.last_updated, R.deleted, R.body, R.patient_id,
                   R.owner_unit, R.owner_provider)
# Read by id is the hottest statement: built once, so a call only binds values instead of
# constructing a Select and generating its cache key every time (docs/performance.md).
_GET = sa.select(*CURRENT_COLUMNS).where(R.res_type == sa.bindparam("type_"), R.res_id == sa.bindparam("id_"))
_GET_LOCKED = _GET.with_for_update()
# The look-ups of a search's includes (get_many, get_by_pks, references_from), built once with
# expanding parameters: building them per call, the IN coercing every key, was more than a
# quarter of the benchmark search's CPU time (6.3 -> 4.5 ms per search, docs/performance.md).
_KEYS = sa.tuple_(R.res_type, R.res_id).in_(sa.bindparam("keys", expanding=True))
_GET_MANY = sa.select(*CURRENT_COLUMNS).where(_KEYS, R.deleted.is_(False))
_GET_MANY_WITH_DELETED = sa.select(*CURRENT_COLUMNS).where(_KEYS)
_GET_BY_PKS = sa.select(*CURRENT_COLUMNS).where(R.pk.in_(sa.bindparam("pks", expanding=True)))

# The write path's look-ups on PostgreSQL, sent on the unit's asyncpg connection (``Unit.driver``):
# through SQLAlchemy each cost about 0.2 ms of CPU more (docs/performance.md, "Writes"). Keys go
# as two arrays, pks as one, so that the text is the same whatever their number.
_PKS = sa.bindparam("pks", type_=postgresql.ARRAY(sa.BigInteger()))
_KEYS_ANY = sa.tuple_(R.res_type, R.res_id).in_(sa.select(
    sa.func.unnest(sa.bindparam("types", type_=postgresql.ARRAY(sa.Text()))),
    sa.func.unnest(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Text())))))
_PG_KEYS = "(res_type, res_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
_PG_CURRENT = "SELECT " + ", ".join(c.name for c in CURRENT_COLUMNS) + " FROM resource WHERE " + _PG_KEYS
_PG_GET = "SELECT " + ", ".join(c.name for c in CURRENT_COLUMNS) + " FROM resource WHERE res_type = $1 AND res_id = $2"
_PG_GET_LOCKED = _PG_GET + " FOR UPDATE"
_PG_GET_BY_PKS = "SELECT " + ", ".join(c.name for c in CURRENT_COLUMNS) + " FROM resource WHERE pk = ANY($1::bigint[])"
_PG_REFERENCES_TO = ("SELECT DISTINCT resource_pk FROM idx_reference WHERE res_type = $1 AND (target_type, target_id) "
                     "IN (SELECT * FROM unnest($2::text[], $3::text[]))")
_PG_REFERENCING = _PG_REFERENCES_TO + " LIMIT $4"
_PG_REFERENCING_PARAM = _PG_REFERENCES_TO + " AND param = $5 LIMIT $4"
_PG_REFERENCING_ROWS = ("SELECT " + ", ".join(c.name for c in CURRENT_COLUMNS) + " FROM resource WHERE pk IN ("
                        + _PG_REFERENCING_PARAM + ") ORDER BY pk")
_PG_GET_MANY = _PG_CURRENT + " AND NOT deleted"
_PG_GET_MANY_WITH_DELETED = _PG_CURRENT
_PG_EXISTING = "SELECT res_type, res_id FROM resource WHERE " + _PG_KEYS + " AND NOT deleted"
_PG_EXISTING_SHARED = _PG_EXISTING + " FOR SHARE"
MAX_DRIVER_STATEMENTS = 4096  # statements kept compiled for the driver (shapes x care units)
_driver_compiled: dict[Any, _Compiled] = {}
_driver_statements: dict[Any, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
# Statements kept by identity (below): the shared rule conditions are a few dozen; a condition
# built per request (a narrowed scope) only passes through, so few are held at a time.
MAX_BUILT_STATEMENTS = 256
_driver_shapes: dict[int, tuple[Any, _Compiled]] = {}
_built: dict[Any, tuple[tuple[Any, ...], Any]] = {}


def _built_once(kind: str, conditions: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """The statement ``build`` makes around ``conditions``, made once per kind and conditions.

    The access rules' conditions are shared objects (security/rules.py builds each once and passes
    the caller's values at execution), so a statement around them is the same for every request:
    keyed by their identity, checked on a hit (the entry holds them, so no id is reused while it
    is kept). A write's reference check and its visibility check built theirs per request, and
    SQLAlchemy's cache key of each: about a tenth of a create's CPU."""
    key = (kind, tuple(id(c) for c in conditions))
    hit = _built.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], conditions, strict=True)):
        return hit[1]
    statement = build()
    if len(_built) >= MAX_BUILT_STATEMENTS:
        _built.clear()
    _built[key] = (conditions, statement)
    return statement


def _driver_statement(statement: sa.Select[Any], values: Mapping[str, Any], dialect: Any
                      ) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """``statement`` as PostgreSQL text with the names of its positional parameters and the values
    it carries itself, compiled once per shape and values of its own (SQLAlchemy's cache key,
    cheap to compute for the access rules' shared conditions), per value of the parameters
    rendered into its text (``literal_execute``: a care unit's id) and per number of values of
    its expanding ones (an ``IN`` list)."""
    known = _driver_shapes.get(id(statement))
    if known is not None and known[0] is statement:
        entry = known[1]
    else:
        cache_key = statement._generate_cache_key()
        if cache_key is None:
            raise ValueError("a statement SQLAlchemy cannot cache cannot be compiled once")
        # A large statement's shape (the access rules') is a deep tuple that takes tens of
        # microseconds to hash: looked up here, once per statement object, not on every call.
        shape = (cache_key.key, tuple(_frozen(b.effective_value) for b in cache_key.bindparams))
        found = _driver_compiled.get(shape)
        if found is None:
            if len(_driver_compiled) >= MAX_DRIVER_STATEMENTS:
                _driver_compiled.clear()
            found = _driver_compiled[shape] = _Compiled.of(statement.compile(dialect=dialect))
        entry = found
        if len(_driver_shapes) >= MAX_BUILT_STATEMENTS:
            _driver_shapes.clear()
        _driver_shapes[id(statement)] = (statement, entry)  # held: its id is not reused meanwhile
    compiled = entry.compiled
    key = (entry, tuple(values.get(name) for name in entry.literal_keys),
           tuple(len(values.get(p.key, p.value) or ()) for p in entry.expanding))
    prepared = _driver_statements.get(key)
    if prepared is None:
        expanded = compiled.construct_expanded_state(dict(values))
        prepared = (expanded.statement, tuple(expanded.positiontup or ()), dict(expanded.parameters))
        if len(_driver_statements) >= MAX_DRIVER_STATEMENTS:
            _driver_statements.clear()
        _driver_statements[key] = prepared
    return prepared


@dataclass(frozen=True, eq=False)  # hashed by identity: a key of _driver_statements
class _Compiled:
    """A statement compiled for the driver, with the parameters its text depends on: those
    rendered into it (``literal_execute``) and the expanding ones (their number of values)."""

    compiled: Any
    literal_keys: tuple[str, ...]
    expanding: tuple[Any, ...]

    @classmethod
    def of(cls, compiled: Any) -> _Compiled:
        return cls(compiled, tuple(p.key for p in compiled.literal_execute_params),
                   tuple(p for p in compiled.binds.values() if p.expanding))


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _references_from(by_param: bool, of_type: bool) -> sa.Select[Any]:
    query = sa.select(REF.target_type, REF.target_id).distinct().where(
        REF.resource_pk.in_(sa.bindparam("pks", expanding=True)), REF.target_id.is_not(None))
    if by_param:
        query = query.where(sa.tuple_(REF.res_type, REF.param).in_(sa.bindparam("params", expanding=True)))
    if of_type:
        query = query.where(REF.target_type == sa.bindparam("target_type"))
    return query


_REFERENCES_FROM = {(by_param, of_type): _references_from(by_param, of_type)
                    for by_param in (False, True) for of_type in (False, True)}


def current(row: Sequence[Any]) -> StoredResource:
    """A row of ``CURRENT_COLUMNS`` as a ``StoredResource``."""
    return StoredResource(*row)


def _version(row: Sequence[Any]) -> StoredVersion:
    return StoredVersion(*row)


class Unit:
    """Primitive storage operations on one connection (and, when writing, one transaction).

    ``access`` is whoever the work is done for (``patientkontrakt.fhir.access``): the storage
    layer only carries it, so that every step of an interaction that is handed the unit also
    knows on whose behalf it runs. ``touched`` collects what the unit read or wrote for the
    access log.
    """

    def __init__(self, conn: AsyncConnection, access: Any = None) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.access = access
        self.touched: list[StoredResource] = []
        self.written: list[StoredResource] = []
        # The values of the access rules' named parameters, passed with every statement that
        # may hold a restriction (``Restriction``).
        self.parameters: dict[str, Any] = dict(getattr(access, "parameters", None) or {})
        self._stamp_floor: datetime | None = None
        self._driver: Any = None

    async def driver(self) -> Any:
        """The unit's asyncpg connection (PostgreSQL), for a statement sent without SQLAlchemy's
        per-execution work (``write_sql``), inside the unit's transaction. SQLAlchemy begins the
        transaction with the unit's first statement; if none has been sent yet, it is begun
        here as SQLAlchemy would."""
        if self._driver is None:
            adapted: Any = (await self.conn.get_raw_connection()).dbapi_connection
            if self.conn.in_transaction():
                await _begin_now(adapted)
            self._driver = adapted.driver_connection
        return self._driver

    async def fetch(self, sql: str, *arguments: Any) -> list[Any]:
        """The rows of ``sql`` (PostgreSQL text, ``$n`` parameters) run on ``driver()``; a
        statement cancelled at the statement timeout raises ``StatementTimeout``, as through
        SQLAlchemy."""
        try:
            rows: list[Any] = await (await self.driver()).fetch(sql, *arguments)
        except Exception as exc:
            if is_statement_timeout(exc):
                raise StatementTimeout() from exc
            raise
        return rows

    async def fetch_compiled(self, statement: sa.Select[Any], values: dict[str, Any]) -> list[Any]:
        """``statement`` run on ``driver()`` (PostgreSQL), compiled once per shape and per value of
        the parameters rendered into its text (``literal_execute``: a care unit's id)."""
        sql, names, fixed = _driver_statement(statement, values, self.conn.dialect)
        return await self.fetch(sql, *[values[name] if name in values else fixed[name] for name in names])

    # -- current resources -----------------------------------------------------------------

    async def get(self, type_: str, id_: str, *, lock: bool = False) -> StoredResource | None:
        if self.dialect == "postgresql":
            rows = await self.fetch(_PG_GET_LOCKED if lock else _PG_GET, type_, id_)
            return current(rows[0]) if rows else None
        query = _GET_LOCKED if lock else _GET
        row = (await self.conn.execute(query, {"type_": type_, "id_": id_})).first()
        return current(row) if row else None

    async def get_many(self, keys: Iterable[tuple[str, str]], *, include_deleted: bool = False
                       ) -> list[StoredResource]:
        """Current resources for (type, id) keys, in no particular order; not deleted ones
        unless ``include_deleted``."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return []
        if self.dialect == "postgresql":
            types, ids = zip(*wanted, strict=True)
            sql = _PG_GET_MANY_WITH_DELETED if include_deleted else _PG_GET_MANY
            return [current(r) for r in await self.fetch(sql, list(types), list(ids))]
        query = _GET_MANY_WITH_DELETED if include_deleted else _GET_MANY
        return [current(r) for r in (await self.conn.execute(query, {"keys": wanted})).all()]

    async def visible_pks(self, pks: Sequence[int], condition: sa.ColumnElement[bool]) -> set[int]:
        """Which of ``pks`` satisfy ``condition`` (a restriction of the unit's caller)."""
        if not pks:
            return set()
        if self.dialect == "postgresql":
            query = _built_once("visible_pks", (condition,),
                                lambda: sa.select(R.pk).where(R.pk == sa.any_(_PKS), condition))
            return {int(r[0]) for r in await self.fetch_compiled(query, {**self.parameters, "pks": list(pks)})}
        query = sa.select(R.pk).where(R.pk.in_(list(pks)), condition)
        found: list[Any] = list((await self.conn.execute(query, self.parameters)).scalars())
        return {int(pk) for pk in found}

    async def get_by_pks(self, pks: Sequence[int]) -> list[StoredResource]:
        if not pks:
            return []
        if self.dialect == "postgresql":
            rows: Sequence[Any] = await self.fetch(_PG_GET_BY_PKS, list(pks))
        else:
            rows = (await self.conn.execute(_GET_BY_PKS, {"pks": list(pks)})).all()
        by_pk = {r[0]: current(r) for r in rows}
        return [by_pk[pk] for pk in pks if pk in by_pk]

    async def existing(self, keys: Iterable[tuple[str, str]], *, share_lock: bool = False) -> set[tuple[str, str]]:
        """Which of the keys exist and are not deleted; optionally FOR SHARE (writes)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        if self.dialect == "postgresql":
            types, ids = zip(*wanted, strict=True)
            rows = await self.fetch(_PG_EXISTING_SHARED if share_lock else _PG_EXISTING, list(types), list(ids))
            return {(str(t), str(i)) for t, i in rows}
        query = sa.select(R.res_type, R.res_id).where(
            sa.tuple_(R.res_type, R.res_id).in_(wanted), R.deleted.is_(False)
        )
        if share_lock:
            query = query.with_for_update(read=True)
        return {(str(t), str(i)) for t, i in (await self.conn.execute(query)).all()}

    async def existing_visible(self, keys: Iterable[tuple[str, str]],
                               conditions: Mapping[str, sa.ColumnElement[bool] | None]) -> set[tuple[str, str]]:
        """Which of the keys exist, are not deleted and meet their type's condition in
        ``conditions`` (a restriction of the unit's caller; None: every resource of the type),
        FOR SHARE (the references of a write). One statement on PostgreSQL."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        if self.dialect != "postgresql":
            found = await self.existing(wanted, share_lock=True)
            rows = await self.get_many(found) if any(conditions.get(t) is not None for t, _ in found) else []
            hidden = set()
            for type_ in {r.type for r in rows}:
                condition = conditions.get(type_)
                if condition is not None:
                    of_type = [r.pk for r in rows if r.type == type_]
                    hidden |= set(of_type) - await self.visible_pks(of_type, condition)
            return found - {(r.type, r.id) for r in rows if r.pk in hidden}
        restricted = sorted(((t, c) for t, c in conditions.items() if c is not None), key=lambda tc: tc[0])

        def build() -> Any:
            visible = sa.case(*((R.res_type == t, c) for t, c in restricted), else_=sa.true()) if restricted \
                else sa.true()
            return sa.select(R.res_type, R.res_id).where(_KEYS_ANY, R.deleted.is_(False), visible) \
                .with_for_update(read=True)

        query = _built_once("existing_visible:" + ",".join(t for t, _ in restricted),
                            tuple(c for _, c in restricted), build)
        types, ids = zip(*wanted, strict=True)
        visible_rows = await self.fetch_compiled(query, {**self.parameters, "types": list(types), "ids": list(ids)})
        return {(str(t), str(i)) for t, i in visible_rows}

    async def insert(
        self, type_: str, id_: str, version_id: int, last_updated: datetime, body: str,
        patient_id: str | None = None, owner: tuple[str, str] | None = None,
    ) -> int:
        owner_unit, owner_provider = owner or (None, None)
        result = await self.conn.execute(
            sa.insert(RESOURCE)
            .values(res_type=type_, res_id=id_, version_id=version_id, last_updated=last_updated,
                    deleted=False, body=body, patient_id=patient_id, owner_unit=owner_unit,
                    owner_provider=owner_provider)
            .returning(R.pk)
        )
        pk: int = result.scalar_one()
        return pk

    async def store_version(
        self, type_: str, id_: str, version_id: int, last_updated: datetime, method: str, body: str,
        tables: Sequence[tuple[str, list[dict[str, Any]]]], *, patient_id: str | None,
        owner: tuple[str, str] | None = None, replacing: int | None = None,
    ) -> int:
        """Store a version of a resource that is not deleted: the current row (new, or the row
        ``replacing`` names, whose owner stays), the version row and the index rows (replacing
        the old ones); the current row's pk. One statement on PostgreSQL (``write_sql``)."""
        if self.dialect == "postgresql":
            own: list[Any] = [replacing] if replacing is not None else list(owner or (None, None))
            arguments = store_arguments(type_, id_, version_id, last_updated, method, body, patient_id, own, tables)
            [row] = await self.fetch(STORE_NEW if replacing is None else STORE_NEXT, *arguments)
            pk: int = row[0]
            return pk
        if replacing is None:
            pk = await self.insert(type_, id_, version_id, last_updated, body, patient_id=patient_id, owner=owner)
        else:
            pk = replacing
            await self.update(pk, version_id, last_updated, body, patient_id=patient_id)
        await self.add_version(type_, id_, version_id, last_updated, method, body)
        await self.write_index(pk, type_, tables, replace=replacing is not None)
        return pk

    async def update(
        self, pk: int, version_id: int, last_updated: datetime, body: str, *, deleted: bool = False,
        patient_id: str | None = None,
    ) -> None:
        """Replace the current row; a deletion keeps the row's ``patient_id``."""
        values: dict[str, Any] = {"version_id": version_id, "last_updated": last_updated, "body": body,
                                  "deleted": deleted}
        if not deleted:
            values["patient_id"] = patient_id
        await self.conn.execute(sa.update(RESOURCE).where(R.pk == pk).values(**values))

    async def patients_of(self, keys: Iterable[tuple[str, str]]) -> list[str]:
        """The patients of the given resources (for a Provenance, the patient of its targets)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return []
        query = sa.select(R.patient_id).distinct().where(
            sa.tuple_(R.res_type, R.res_id).in_(wanted), R.patient_id.is_not(None)
        )
        found: list[Any] = list((await self.conn.execute(query)).scalars())
        return [str(patient) for patient in found]

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

    async def stamp(self) -> datetime:
        """The instant a version written in this transaction is stamped with (``last_updated``,
        ``meta.lastUpdated``): now, never earlier than the transaction began.

        What makes history sync gapless (``Store.safe_point``): no version may be stamped before
        a safe point that a reader computed while its transaction was invisible to it. On
        PostgreSQL the first stamp of a transaction takes its transaction id, so that the
        transaction shows in pg_stat_activity from then until it ends, and then reads the
        database's clock; every stamp is at least that instant (truncated to the millisecond).
        A reader that did not see the transaction read pg_stat_activity before the id was taken,
        so its safe point, by the same clock, is earlier than every stamp of the transaction;
        one that saw it holds its safe point at the transaction's start, earlier still. That
        holds whatever the application servers' clocks say (a clock ahead only stamps later).
        One round trip per write transaction (docs/performance.md). On SQLite a write holds
        the database's write lock from its BEGIN IMMEDIATE, which the safe point waits for, so
        the clock alone will do.
        """
        if self._stamp_floor is None:
            if self.dialect == "postgresql":
                taken: datetime = (await self.fetch(TAKE_XID.text))[0][0]
                self._stamp_floor = floor_ms(taken)
            else:
                self._stamp_floor = datetime.min
        return max(now_utc(), self._stamp_floor)

    async def get_version(self, type_: str, id_: str, version_id: int) -> StoredVersion | None:
        query = sa.select(*VERSION_COLUMNS).where(
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
        window: HistoryWindow | None = None,
        restrictions: Mapping[str, sa.ColumnElement[bool] | None] | None = None,
        current_only: frozenset[str] = frozenset(),
    ) -> list[StoredVersion]:
        """Versions newest first (R4 http.html#history), ``count + 1`` rows to detect a next page.

        ``at`` is an instant or an inclusive period: only versions current at some time in it.
        ``window``: only versions stamped before its safe point, past its cursor, in its order
        (``HistoryWindow``); ties of ``last_updated`` are broken by ``seq``, so the order is total
        and a cursor names one place in it. ``restrictions`` limits the result to those types,
        and to the versions of resources whose current row meets the type's condition (None:
        every resource of the type); of the types in ``current_only`` (restricted ones), only the
        current versions.
        """
        query = history_query(type_, id_, since, at, offset, count, window, restrictions, current_only)
        return [_version(r) for r in (await self.conn.execute(query, self.parameters)).all()]

    async def history_count(
        self, *, type_: str | None, id_: str | None, since: datetime | None,
        at: datetime | tuple[datetime, datetime] | None,
        until: datetime | None = None,
        restrictions: Mapping[str, sa.ColumnElement[bool] | None] | None = None,
        current_only: frozenset[str] = frozenset(),
    ) -> int:
        query = sa.select(sa.func.count()).select_from(RESOURCE_VERSION).where(
            *history_filter(type_, id_, since, at, restrictions, current_only, until))
        total: int = (await self.conn.execute(query, self.parameters)).scalar_one()
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
            .where(REF.target_type == type_, REF.target_id == id_, REF.resource_pk != exclude_pk,
                   R.deleted.is_(False))
            .limit(limit)
        )
        return [(str(t), str(i)) for t, i in (await self.conn.execute(query)).all()]

    async def references_from(self, pks: Sequence[int], params: Sequence[tuple[str, str]] | None,
                              target_type: str | None = None) -> list[tuple[str, str]]:
        """Targets (type, id) referenced by the given resources through (res_type, param)."""
        if not pks:
            return []
        query = _REFERENCES_FROM[params is not None, target_type is not None]
        values: dict[str, Any] = {"pks": list(pks)}
        if params is not None:
            values["params"] = list(params)
        if target_type is not None:
            values["target_type"] = target_type
        return [(str(t), str(i)) for t, i in (await self.conn.execute(query, values)).all()]

    async def referencing(self, source_type: str, param: str | None, targets: Sequence[tuple[str, str]],
                          limit: int) -> list[int]:
        """pks of current resources of ``source_type`` whose ``param`` points at the targets."""
        if not targets:
            return []
        if self.dialect == "postgresql":
            types, ids = zip(*targets, strict=True)
            sql = _PG_REFERENCING if param is None else _PG_REFERENCING_PARAM
            arguments = [source_type, list(types), list(ids), limit, *([] if param is None else [param])]
            return [int(r[0]) for r in await self.fetch(sql, *arguments)]
        query = (
            sa.select(REF.resource_pk).distinct()
            .where(REF.res_type == source_type, sa.tuple_(REF.target_type, REF.target_id).in_(list(targets)))
            .limit(limit)
        )
        if param is not None:
            query = query.where(REF.param == param)
        pks: list[int] = list((await self.conn.execute(query)).scalars())
        return pks

    async def referencing_rows(self, source_type: str, param: str, targets: Sequence[tuple[str, str]],
                               limit: int) -> list[StoredResource]:
        """The current rows (deleted ones too) of ``referencing``'s pks, lowest pk first; one
        statement on PostgreSQL (the domain rules' look-ups of a write)."""
        if not targets:
            return []
        if self.dialect == "postgresql":
            types, ids = zip(*targets, strict=True)
            rows = await self.fetch(_PG_REFERENCING_ROWS, source_type, list(types), list(ids), limit, param)
            return [current(r) for r in rows]
        return sorted(await self.get_by_pks(await self.referencing(source_type, param, targets, limit)),
                      key=lambda r: r.pk)

    async def referencing_current(self, source_type: str, param: str | None, targets: Sequence[tuple[str, str]],
                                  condition: sa.ColumnElement[bool] | None, limit: int) -> list[StoredResource]:
        """Current resources of ``source_type`` whose ``param`` (any, if None) points at one of the
        targets and that ``condition`` admits (what the unit's caller may see; None: all), at most
        ``limit``, lowest ``pk`` first: ``_revinclude`` with its cap (search/engine.py)."""
        if not targets or limit <= 0:
            return []
        refs = sa.select(REF.resource_pk).where(
            REF.res_type == source_type, sa.tuple_(REF.target_type, REF.target_id).in_(list(targets)))
        if param is not None:
            refs = refs.where(REF.param == param)
        query = sa.select(*CURRENT_COLUMNS).where(R.pk.in_(refs), R.res_type == source_type, R.deleted.is_(False))
        if condition is not None:
            query = query.where(condition)
        query = query.order_by(R.pk).limit(limit)
        return [current(r) for r in (await self.conn.execute(query, self.parameters)).all()]

    # -- the access rules' look-ups (storage/access_sql.py) ---------------------------------

    async def count_reached(self, limit: int) -> int:
        """How many CarePlans the caller's care unit reaches from itself (``plans_reached``),
        counted up to ``limit``."""
        return int((await self.conn.execute(reached_count(limit), self.parameters)).scalar_one())

    async def any_row(self, condition: sa.ColumnElement[bool], parameters: Mapping[str, Any]) -> bool:
        """Whether any resource row meets ``condition`` (an access rule's, with its values)."""
        query = sa.select(sa.exists().where(condition))
        return bool((await self.conn.execute(query, {**self.parameters, **parameters})).scalar_one())

    async def has_care_plan(self, patient_id: str) -> bool:
        """Whether the patient has a current (not deleted) CarePlan."""
        return bool((await self.conn.execute(care_plan_of(patient_id), self.parameters)).scalar_one())

    # -- batches and state -----------------------------------------------------------------

    async def current_batch(self, after_pk: int, limit: int) -> list[StoredResource]:
        """Current, not deleted resources with ``pk`` above ``after_pk``, in ``pk`` order (reindexing)."""
        query = sa.select(*CURRENT_COLUMNS).where(R.pk > after_pk, R.deleted.is_(False)).order_by(R.pk).limit(limit)
        return [current(r) for r in (await self.conn.execute(query)).all()]

    async def set_patient(self, pk: int, patient_id: str | None) -> None:
        await self.conn.execute(sa.update(RESOURCE).where(R.pk == pk).values(patient_id=patient_id))

    async def set_owner(self, pk: int, owner: tuple[str, str]) -> None:
        """Give a resource that has no owner one (what the service itself wrote, or a resource
        stored before owners were recorded); an owner once set is never replaced."""
        await self.conn.execute(sa.update(RESOURCE).where(R.pk == pk, R.owner_provider.is_(None))
                                .values(owner_unit=owner[0], owner_provider=owner[1]))

    async def replace_consent_rules(self, consent_pk: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """What the Consent ``consent_pk`` says now (``tables.ConsentRule``), replacing what it said."""
        await self.conn.execute(sa.delete(CONSENT_RULE).where(CONSENT_RULE.c.consent_pk == consent_pk))
        if rows:
            await self.conn.execute(sa.insert(CONSENT_RULE), [{**row, "consent_pk": consent_pk} for row in rows])

    async def state(self, key: str) -> str | None:
        row = (await self.conn.execute(sa.select(SERVER_STATE.c.value).where(SERVER_STATE.c.key == key))).first()
        return str(row[0]) if row else None

    async def set_state(self, key: str, value: str) -> None:
        await self.conn.execute(sa.delete(SERVER_STATE).where(SERVER_STATE.c.key == key))
        await self.conn.execute(sa.insert(SERVER_STATE).values(key=key, value=value))

    async def lock_key(self, key: str) -> None:
        """Serialise writers on ``key`` until the transaction ends (conditional create/update).

        PostgreSQL: a transaction-scoped advisory lock. SQLite: write transactions already
        start with BEGIN IMMEDIATE, so writers are serialised.
        """
        if self.dialect == "postgresql":
            await self.fetch("SELECT pg_advisory_xact_lock(hashtext($1))", key)


MAX_COMPILED_READS = 4096  # read statements kept compiled (restriction shapes x care units)


class Store:
    """The engine plus the unit-of-work factories."""

    def __init__(self, engine: AsyncEngine, replica: AsyncEngine | None = None, replica_wait: float = 0.2,
                 recent_clients: int = 10_000, listen_engine: AsyncEngine | Literal[False] | None = None,
                 replica_max_lag: float = 1.0) -> None:
        self.engine = engine
        # Where workers LISTEN (notify/wakeup.py): the primary itself unless it is reached through
        # PgBouncer in transaction mode, which does not carry notifications (False: they poll).
        self.listen_engine = engine if listen_engine is None else listen_engine or None
        self.dialect = engine.dialect.name
        self._read_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.dialect == "postgresql" else engine
        )
        # A hot standby for the reads that may be served there (storage/replica.py); PostgreSQL only.
        self.replica = replica if self.dialect == "postgresql" else None
        self._replica_read = (
            replica.execution_options(isolation_level="AUTOCOMMIT") if replica is not None and self.replica else None
        )
        self.replica_wait = replica_wait
        self.replica_max_lag = replica_max_lag
        self._primary_mark: tuple[float, int] | None = None  # (when, the primary's WAL position then)
        self.recent = RecentWrites(recent_clients)
        self._replica_down_logged = False
        self._compiled: dict[tuple[Any, ...] | None, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        self._sqlite_processors: list[Any] | None = None
        self._sqlite_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = \
            weakref.WeakKeyDictionary()
        # SQLite: a read by id and the access log's append on the loop's own connection
        # (storage/sqlite_inline.py); the passive checkpoint that follows its commits.
        self.inline = InlineSQLite(engine.url) if self.dialect == "sqlite" else None
        self._checkpointing: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def sqlite_writer(self) -> AsyncIterator[None]:
        """On SQLite, this process's turn to write (``BEGIN IMMEDIATE`` ... ``COMMIT``), in the order
        the writers asked; elsewhere nothing.

        SQLite lets one writer in at a time and makes the others retry in its busy handler, which
        sleeps between tries, up to 100 ms at a time: a writer that has waited a while sleeps
        while newcomers take the lock, and under a steady write load some waited seconds (a
        create's p99 of 4.4 s at 10 connections, docs/performance.md). Queued here first, a
        process's writers take the lock one after another; the busy handler is left to order this
        process against the others (the worker, the CLI). A writer still waiting after the busy
        timeout (30 s) is refused as SQLite would refuse it (503)."""
        if self.dialect != "sqlite":
            yield
            return
        loop = asyncio.get_running_loop()
        lock = self._sqlite_writers.get(loop)
        if lock is None:
            lock = self._sqlite_writers[loop] = asyncio.Lock()
        try:
            await asyncio.wait_for(lock.acquire(), SQLITE_BUSY_TIMEOUT)
        except TimeoutError:
            raise DatabaseUnavailable("SQLite: the database stayed locked by other writers") from None
        try:
            yield
        finally:
            lock.release()

    def inline_write(self, work: Callable[[Any], None]) -> bool:
        """SQLite: ``work`` (a ``sqlite3.Connection``'s statements) in a transaction on the loop's
        own connection (storage/sqlite_inline.py), in this process's writers' turn, which the caller
        holds (``sqlite_writer``). False, with nothing written, where the caller must take the
        thread path (not SQLite, another process writing, any SQLite error)."""
        if self.inline is None or not self.inline.write(work):
            return False
        if self.inline.checkpoint_due and (self._checkpointing is None or self._checkpointing.done()):
            # in a context of its own, as the access log's writer: no request's id on what it logs
            self._checkpointing = asyncio.create_task(self._checkpoint(), context=contextvars.Context())
        return True

    async def _checkpoint(self) -> None:
        """A passive checkpoint on the thread path: it copies what it can of the WAL into the
        database without waiting for readers or writers."""
        try:
            async with self.driver() as driver:
                await driver.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)", [])
        except Exception as exc:  # the next one is due after as many commits again
            log.warning("SQLite checkpoint failed: %s", describe(exc))

    def _read_statement(self, restriction: Restriction | None) -> sa.Select[Any]:
        visible = restriction.condition if restriction is not None else sa.true()
        return sa.select(*CURRENT_COLUMNS, visible.label("visible")).where(
            R.res_type == sa.bindparam("type_"), R.res_id == sa.bindparam("id_"))

    async def read_current(self, type_: str, id_: str, restriction: Restriction | None = None, *,
                           replica: bool = False) -> tuple[StoredResource | None, bool]:
        """The current row of Type/id for the read interaction, and whether ``restriction`` lets
        the caller see it (the row is returned either way, so that a refused read can be logged
        with its patient). ``Unit.get`` without a unit.

        The statement, compiled once per restriction shape, goes straight to the pooled driver
        connection (asyncpg; on SQLite aiosqlite, ``_sqlite_read``), outside any transaction as in
        ``reading()`` on PostgreSQL. On a read by id
        SQLAlchemy's per-execution work (connection wrapper, autobegin/rollback, execution
        context, result metadata) costs about twice the CPU of the driver call itself
        (docs/performance.md). ``replica``: the replica may answer (``replica_reading``).
        """
        values = {"type_": type_, "id_": id_, **(restriction.values if restriction else {})}
        # Parameters marked ``literal_execute`` (a care unit's id) are part of the SQL text:
        # one statement per restriction shape and such values, kept as (SQL, the names of
        # its positional parameters, the values the statement carries itself).
        key = (restriction.key, *sorted(restriction.values.items())) if restriction else None
        prepared = self._compiled.get(key)
        if prepared is None:
            compiled = self._read_statement(restriction).compile(dialect=self.engine.dialect)
            expanded = compiled.construct_expanded_state(values)
            prepared = (expanded.statement, tuple(expanded.positiontup or ()), dict(expanded.parameters))
            if len(self._compiled) >= MAX_COMPILED_READS:
                self._compiled.clear()
            self._compiled[key] = prepared
        sql, names, fixed = prepared
        args = [values[name] if name in values else fixed[name] for name in names]
        if self.dialect == "sqlite":
            row = await self._sqlite_read(sql, args)
        else:
            if replica and self.replica is not None and SESSION.get() is not None:
                found = await self._replica_fetchrow(sql, args)
                if found is not False:
                    row = found
                    return (None, False) if row is None else (current(row[:-1]), bool(row[-1]))
            try:
                async with self.driver() as driver:
                    row = await driver.fetchrow(sql, *args)
            except DatabaseUnavailable as error:
                if not error.disconnected:
                    raise
                # A read can be tried again: once, on a fresh connection (the pool has dropped
                # the ones it made before the failure).
                async with self.driver() as driver:
                    row = await driver.fetchrow(sql, *args)
        if row is None:
            return None, False
        return current(row[:-1]), bool(row[-1])

    async def _replica_fetchrow(self, sql: str, args: list[Any]) -> Any:
        """``read_current``'s statement on the replica once it has caught up with the session; False
        when the primary must answer (the replica is behind or unavailable)."""
        assert self.replica is not None
        floor = await self._replica_floor()
        try:
            async with self.driver(self.replica) as driver:
                if floor is not None and not await self._caught_up(driver, floor):
                    return False
                return await driver.fetchrow(sql, *args)
        except Exception:  # unavailable, cancelled by a replay conflict or the timeout: the primary answers
            self._replica_unavailable()
            return False

    async def _replica_floor(self) -> int | None:
        """The WAL position the replica must have replayed to answer this request's read: what the
        client wrote (read-your-writes, storage/replica.py) and, whatever the client, what the
        primary had written at most ``replica_max_lag`` seconds ago, so that no read on the replica
        is staler than that (the access rules read the replica's consents and care teams: a spärr
        holds there within that bound). The primary's position is sampled at most once per
        ``replica_max_lag`` per process. A position the client sent (``X-PK-LSN``) counts only up
        to the primary's own: a forged one beyond it cannot make reads wait."""
        session = SESSION.get()
        if session is None:
            return None
        mark = await self._primary_position(self.replica_max_lag)
        after = session.after
        if after is not None and after > mark:
            after = min(after, await self._primary_position(_FRESH_MARK))
        known = [p for p in (after, self.recent.of(session.client), session.written) if p is not None]
        return max([mark, *known])

    async def _primary_position(self, max_age: float) -> int:
        """The primary's WAL position, as sampled at most ``max_age`` seconds ago."""
        now = time.monotonic()
        if self._primary_mark is not None and now - self._primary_mark[0] <= max_age:
            return self._primary_mark[1]
        async with self.driver() as driver:
            position = parse_lsn(await driver.fetchval("SELECT pg_current_wal_lsn()::text"))
        assert position is not None
        if self._primary_mark is None or self._primary_mark[0] < now:
            self._primary_mark = (now, position)
        return position

    async def _caught_up(self, driver: Any, floor: int) -> bool:
        """Whether the replica has replayed up to ``floor``, waiting up to ``replica_wait`` seconds."""
        deadline = time.monotonic() + self.replica_wait
        position = format_lsn(floor)
        while not await driver.fetchval(_CAUGHT_UP, position):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_REPLICA_POLL)
        return True

    def _replica_unavailable(self) -> None:
        if not self._replica_down_logged:
            log.warning("the replica is unavailable; reads go to the primary until it answers again")
            self._replica_down_logged = True

    @asynccontextmanager
    async def replica_reading(self, access: Any = None) -> AsyncIterator[Unit]:
        """``reading()`` for a read whose answer may lag the primary by a moment (read, search,
        ``$everything``): on the replica when there is one, has replayed what this request's
        client wrote (storage/replica.py) and answers; else on the primary. Only a request with a
        read session (a FHIR API request, ``api/auth.py``) goes to the replica: the pages and the
        service's own work, which have none, read the primary."""
        conn = None
        if self._replica_read is not None and SESSION.get() is not None:
            floor = await self._replica_floor()
            try:
                conn = await self._replica_read.connect()
                if floor is not None:
                    driver: Any = (await conn.get_raw_connection()).driver_connection
                    if not await self._caught_up(driver, floor):
                        await conn.close()
                        conn = None
            except BaseException as exc:
                # Whatever failed on the replica (a lost connection, a statement cancelled by a
                # replay conflict, asyncpg's own errors), the primary answers; a cancelled request
                # still gives its connection back.
                if conn is not None:
                    await conn.invalidate()
                    await conn.close()
                if not isinstance(exc, Exception):
                    raise
                self._replica_unavailable()
                conn = None
        if conn is None:
            async with self.reading(access) as unit:
                yield unit
            return
        self._replica_down_logged = False
        try:
            async with _outages():
                yield Unit(conn, access)
        finally:
            await conn.close()

    async def _sqlite_read(self, sql: str, args: list[Any]) -> Sequence[Any] | None:
        """``read_current`` on SQLite: the statement on the loop's own connection
        (storage/sqlite_inline.py), or where that gives up in one call to an aiosqlite
        connection's thread (``execute_fetchall``), in autocommit either way (one statement reads
        one snapshot). Through SQLAlchemy it was six calls to the thread (BEGIN, cursor, execute,
        fetch, close, ROLLBACK; docs/performance.md, "SQLite, the embedded default"); the row's
        values are converted as SQLAlchemy would (``last_updated``, ``deleted``)."""
        rows = self.inline.read(sql, args) if self.inline is not None else None
        if rows is None:
            async with self.driver() as driver:
                rows = await driver.execute_fetchall(sql, args)
        if not rows:
            return None
        if self._sqlite_processors is None:
            self._sqlite_processors = [
                column.type._cached_result_processor(self.engine.dialect, None)  # noqa: SLF001
                for column in CURRENT_COLUMNS]
        row = rows[0]
        return [*(value if process is None else process(value)
                  for process, value in zip(self._sqlite_processors, row[:-1], strict=True)), row[-1]]

    @asynccontextmanager
    async def driver(self, engine: AsyncEngine | None = None) -> AsyncIterator[Any]:
        """A pooled driver connection (asyncpg; on SQLite aiosqlite) of ``engine`` (the primary's
        by default) for a statement sent without SQLAlchemy (``read_current``, the access log's
        append), outside any transaction, with SQLAlchemy's handling of failures: a lost
        connection makes the pool drop every connection it made before (a restart has closed them
        all), any other failure drops this one (a failed or cancelled statement leaves it
        unusable), an outage is ``DatabaseUnavailable`` and a statement
        cancelled at the statement timeout ``StatementTimeout``.

        A failure that left the connection closed is a lost connection whatever the error says
        (as SQLAlchemy judges it for its own statements): when the server shuts down under a
        statement, asyncpg may report an ``InternalClientError`` of its protocol rather than the
        server's message."""
        engine = engine or self.engine
        async with _outages():
            pooled = await engine.raw_connection()
        deadline = sqlite_deadline(pooled.info) if self.dialect == "sqlite" else None
        try:
            if deadline is not None:  # SQLite: the progress handler interrupts it at the timeout
                deadline.start()
            yield pooled.driver_connection
        except BaseException as exc:
            lost = _lost(exc, pooled.driver_connection if self.dialect == "postgresql" else None)
            if lost:
                engine.pool._invalidate(pooled, exc)
            else:
                pooled.invalidate()
            if is_statement_timeout(exc):
                raise StatementTimeout() from exc
            if isinstance(exc, Exception):
                _raise_outage(exc)
                if lost:
                    raise DatabaseUnavailable(describe(exc), disconnected=True) from None
            raise
        finally:
            if deadline is not None:
                deadline.at = None
        pooled.close()

    @asynccontextmanager
    async def reading(self, access: Any = None) -> AsyncIterator[Unit]:
        pooled = raw = None
        try:
            async with self._read_engine.connect() as conn:
                pooled, raw = _pooled_of(conn)
                yield Unit(conn, access)
        except Exception as exc:
            self._after_failure(pooled, raw, exc)
            _raise_outage(exc)
            _raise_if_closed(raw, exc)
            raise

    @asynccontextmanager
    async def writing(self, access: Any = None) -> AsyncIterator[Unit]:
        committing = False
        pooled = raw = None
        try:
            async with self.sqlite_writer(), self._begun() as conn:
                pooled, raw = _pooled_of(conn)
                async with conn.begin():
                    yield Unit(conn, access)
                    committing = True
                committing = False
                if self.replica is not None:
                    await self._note_commit(conn)
        except Exception as exc:
            self._after_failure(pooled, raw, exc)
            _raise_outage(exc, unknown_outcome=committing)
            _raise_if_closed(raw, exc, unknown_outcome=committing)
            raise

    def _after_failure(self, pooled: Any, raw: Any, exc: Exception) -> None:
        """A unit whose connection was lost (a restart, ``pg_terminate_backend``): the pool drops
        every connection it made before, each at its next checkout, as SQLAlchemy does when its own
        statement finds the connection lost. A unit's statements sent straight to asyncpg
        (``Unit.fetch``) bypass that, and the pool would hand out a restart's dead connections
        one request after another."""
        if pooled is not None and _lost(exc, raw):
            self.engine.sync_engine.pool._invalidate(pooled, exc, _checkin=False)  # noqa: SLF001

    @asynccontextmanager
    async def _begun(self) -> AsyncIterator[AsyncConnection]:
        """A connection for a write transaction (``writing``, ``trial``), its transaction begun.

        SQLite: ``BEGIN IMMEDIATE`` when the caller begins. PostgreSQL: BEGIN is sent here rather
        than with the write's first statement (the same round trip, earlier). A connection the
        server closed after it went back to the pool, whose end of stream this process had not yet
        read (``_closed_in_pool`` cannot see it: a restart, ``pg_terminate_backend``, a pooler or
        proxy that relays the close a moment later), fails here, before anything of the write was
        sent; the pool then drops every connection made before (a restart has closed them all)
        and the write gets a fresh one, once. A second failure is the caller's (an outage, 503)."""
        if self.dialect == "sqlite":
            async with self.engine.connect() as conn:
                yield await conn.execution_options(sqlite_begin="IMMEDIATE")
            return
        for attempt in (1, 2):
            conn = await self.engine.connect()
            pooled, raw = _pooled_of(conn)
            try:
                await _begin_now(pooled.dbapi_connection)
                break
            except BaseException as exc:
                lost = isinstance(exc, Exception) and _lost(exc, raw)
                if lost:
                    self.engine.sync_engine.pool._invalidate(pooled, exc, _checkin=False)  # noqa: SLF001
                with suppress(Exception):  # failed or cancelled in its BEGIN: not to be used again
                    await conn.invalidate()
                await asyncio.shield(conn.close())
                if not lost:
                    raise
                if attempt == 2:
                    raise DatabaseUnavailable(describe(exc), disconnected=True) from None
        try:
            yield conn
        finally:
            await asyncio.shield(conn.close())  # as ``async with conn`` would

    async def _note_commit(self, conn: AsyncConnection) -> None:
        """Note where the primary's WAL is just after this commit, for the session's later reads
        on the replica (read-your-writes, storage/replica.py)."""
        session = SESSION.get()
        if session is None:
            return
        driver: Any = (await conn.get_raw_connection()).driver_connection
        try:
            position = await driver.fetchval("SELECT pg_current_wal_lsn()::text")
        except Exception as exc:  # the write has committed: it must not fail for this
            log.warning("cannot read the WAL position after a commit (%s); the client's next read may "
                        "not show its write on the replica", type(exc).__name__)
            return
        written = parse_lsn(position)
        if written is None:
            return
        session.written = max(session.written or 0, written)
        if session.client is not None:
            self.recent.remember(session.client, written)

    @asynccontextmanager
    async def trial(self, access: Any = None) -> AsyncIterator[Unit]:
        """A write transaction that is always rolled back: ``$validate`` tries the real write."""
        async with _outages(), self.sqlite_writer(), self._begun() as conn:
            transaction = await conn.begin()
            try:
                yield Unit(conn, access)
            finally:
                await transaction.rollback()

    async def safe_point(self) -> datetime:
        """The safe point S of history (R4 http.html#history, docs/api.md "History sync"): an
        instant, truncated to the millisecond, before which every version is committed and
        visible to any snapshot taken after this call returned. No transaction still in
        flight can commit a version stamped before it (``Unit.stamp``).

        PostgreSQL: the earlier of now and the start of the oldest transaction of this database
        that holds a transaction id, from pg_stat_activity, by the database's clock; every
        transaction gone from pg_stat_activity by then is committed. The history must then be
        read on a later snapshot (a later statement; on SQLite a later transaction) and on the
        primary: a replica's pg_stat_activity does not show the primary's writers.

        SQLite: now, taken while holding the write lock (BEGIN IMMEDIATE, then COMMIT at once):
        every write transaction that stamped earlier has committed by then, whichever process
        wrote it; a later one stamps later. A history request waits for the write in flight.
        """
        if self.dialect == "postgresql":
            async with self.reading() as reader:
                row = (await reader.conn.execute(SAFE_POINT)).one()
            started: datetime = row[0]
            oldest: datetime | None = row[1]
            return floor_ms(started if oldest is None else min(started, oldest))
        async with _outages(), self.sqlite_writer(), self.engine.connect() as conn:
            conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
            async with conn.begin():
                return floor_ms(datetime.now(UTC).replace(tzinfo=None))

    async def ping(self) -> None:
        """Raise if the database cannot answer (health checks)."""
        async with self.reading() as unit:
            await unit.conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        if self._checkpointing is not None:
            self._checkpointing.cancel()
            with suppress(asyncio.CancelledError):
                await self._checkpointing
        if self.inline is not None:
            self.inline.close()
        await self.engine.dispose()
        if self.replica is not None:
            await self.replica.dispose()
        if self.listen_engine is not None and self.listen_engine is not self.engine:
            await self.listen_engine.dispose()


def _raise_outage(exc: Exception, *, unknown_outcome: bool = False) -> None:
    """Raise ``DatabaseUnavailable`` if ``exc`` is an outage (storage/errors.py), without the
    driver's error as its cause: that error's text may quote the values of the statement.
    ``unknown_outcome``: the failure came as the transaction committed."""
    error = unavailable(exc, unknown_outcome=unknown_outcome)
    if error is not None:
        raise error from None


async def _begin_now(adapted: Any) -> None:
    """Send the BEGIN of the transaction on SQLAlchemy's asyncpg adapter ``adapted`` now, unless
    it was sent: the adapter sends it with the first statement. A transaction ``conn.begin()``
    starts afterwards is this one."""
    if adapted._transaction is None:  # noqa: SLF001
        await adapted._start_transaction()  # noqa: SLF001


def _lost(exc: BaseException, raw: Any) -> bool:
    """Whether the failure ``exc`` lost its connection: a disconnect by its kind, or any failure
    after which the asyncpg connection ``raw`` (None on SQLite) is closed, whatever the error says
    (when the server shuts down under a statement, asyncpg may report an ``InternalClientError``
    of its protocol rather than the server's message)."""
    return is_disconnect(exc) or (raw is not None and raw.is_closed())


def _pooled_of(conn: AsyncConnection) -> tuple[Any, Any]:
    """The pool's connection under ``conn`` and its asyncpg connection, taken without a round trip
    (None, None on SQLite)."""
    if conn.dialect.name != "postgresql" or conn.sync_connection is None:
        return None, None
    pooled = conn.sync_connection.connection
    return pooled, pooled.driver_connection


def _raise_if_closed(raw: Any, exc: Exception, *, unknown_outcome: bool = False) -> None:
    """A failure that left the unit's asyncpg connection closed is a lost connection whatever the
    error says: when the server shuts down under a statement, asyncpg may report an
    ``InternalClientError`` of its protocol rather than the server's message (``Store.driver``
    judges its own statements so)."""
    if raw is not None and raw.is_closed():
        raise DatabaseUnavailable(describe(exc), disconnected=True, unknown_outcome=unknown_outcome) from None


@asynccontextmanager
async def _outages() -> AsyncIterator[None]:
    try:
        yield
    except Exception as exc:
        _raise_outage(exc)
        raise
