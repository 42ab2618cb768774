"""The SQL of the access log: append without a lock, seal into the Merkle tree, read, walk.

Tables (``storage.tables``): ``audit_log`` the entries (partitioned by month on PostgreSQL),
``audit_queue`` the entries written but not yet sealed with their leaf hashes, ``audit_leaf``
the tree's leaves by position, ``audit_checkpoint`` the signed checkpoints. There is no
statement here that changes a row, and none that removes one except the sealer's removal of
what it sealed from the queue; the database refuses the rest (triggers of migration 0005).

**Appending** is one INSERT of the entries plus one of their queue rows, in the caller's
transaction (a write) or in its own (the group commit of reads), with no lock beyond the
rows' own: on PostgreSQL one statement, ``seq`` from a sequence and each leaf hash computed
from the row as stored (``_LEAF_SQL``, the same bytes as ``leaf_of``); on SQLite, whose writers
are serialised anyway, computed here.

**Sealing** (``patientkontrakt.audit.sealer``) takes the queue in ``seq`` order under
``SEAL_LOCK`` (try-lock: one sealer at a time, the others skip the round), gives each entry the
next position and writes a checkpoint; ``walk_*`` stream the tables for ``audit verify``.

Its length (over 400 lines) is the access log's one set of tables (entries, queue, leaves,
checkpoints) and every statement on them, kept together so the log's invariants (append-only,
sealed in order) can be read in one place.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from patientkontrakt.audit.merkle import leaf_hash
from patientkontrakt.storage.repository import Store, Unit
from patientkontrakt.storage.tables import AUDIT_CHECKPOINT, AUDIT_LEAF, AUDIT_LOG, AUDIT_QUEUE

A = AUDIT_LOG.c
Q = AUDIT_QUEUE.c
L = AUDIT_LEAF.c
C = AUDIT_CHECKPOINT.c
SEAL_LOCK = 0x504B_5345_414C  # "PKSEAL": held (try-lock, per transaction) by the one sealer at work
# The fields a leaf covers, in order (the leaf of a row is leaf_of(row); _LEAF_SQL is the same).
FIELDS = ("seq", "recorded", "user_id", "user_name", "user_kind", "role", "fhir_user", "care_unit",
          "care_unit_name", "care_provider", "client_id", "interaction", "request", "resources",
          "patient_id", "outcome", "status", "purpose", "reason", "request_id")
# Fields a leaf covers only when they hold a value, so that the leaves of entries written before
# the field existed (migration 0007: ``reason``; 0012: ``request_id``) are unchanged.
OPTIONAL = frozenset({"reason", "request_id"})
PARTITIONS_AHEAD = 3  # months with a partition of their own beyond the current one (PostgreSQL)


def canonical(row: dict[str, Any]) -> str:
    """The row's fields as ``<length>:<text>`` (NULL as ``~``) joined by ``|``: unambiguous,
    and as easy to build in SQL as here."""
    parts = []
    for name in FIELDS:
        value = row.get(name)
        if value is None:
            if name not in OPTIONAL:
                parts.append("~")
            continue
        text = value.isoformat(timespec="microseconds") if isinstance(value, datetime) else str(value)
        parts.append(f"{len(text)}:{text}")
    return "|".join(parts)


def leaf_of(row: dict[str, Any]) -> bytes:
    """The Merkle leaf hash of an entry: SHA-256(0x00 || canonical text in UTF-8)."""
    return leaf_hash(canonical(row).encode())


# canonical() in SQL over the columns of the row just inserted (audit_field, of migration 0004:
# "<length>:<text>", NULL as "~"); the timestamp as Python's isoformat with microseconds.
_LEAF_SQL = "sha256('\\x00'::bytea || convert_to(concat_ws('|', " + ", ".join(
    "audit_field(to_char(recorded, 'YYYY-MM-DD\"T\"HH24:MI:SS.US'))" if name == "recorded"
    else f"CASE WHEN {name} IS NULL THEN NULL ELSE audit_field({name}::text) END" if name in OPTIONAL
    else f"audit_field({name}::text)" for name in FIELDS) + "), 'UTF8'))"
_TYPES = {"recorded": "timestamp", "status": "integer"}
_INSERTED = ", ".join(FIELDS[1:])
_APPEND_SQL = f"""
WITH entry AS (
    INSERT INTO audit_log ({_INSERTED})
    SELECT {_INSERTED} FROM jsonb_to_recordset(CAST({{entries}} AS jsonb))
        AS x({", ".join(f"{name} {_TYPES.get(name, 'text')}" for name in FIELDS[1:])})
    RETURNING seq, recorded, {_LEAF_SQL} AS leaf_hash
)
INSERT INTO audit_queue (seq, recorded, leaf_hash) SELECT seq, recorded, leaf_hash FROM entry
"""
_APPEND_DRIVER = _APPEND_SQL.format(entries="$1")  # sent to asyncpg, not through SQLAlchemy


@dataclass(frozen=True)
class AuditRow:
    seq: int
    recorded: datetime
    user_id: str
    user_name: str | None
    user_kind: str
    role: str | None
    fhir_user: str | None
    care_unit: str | None
    care_unit_name: str | None
    care_provider: str | None
    client_id: str | None
    interaction: str
    request: str
    resources: str
    patient_id: str | None
    outcome: str
    status: int
    purpose: str
    reason: str | None = None
    request_id: str | None = None


_COLUMNS = tuple(A[name] for name in AuditRow.__dataclass_fields__)


def _as_json(entries: Sequence[dict[str, Any]]) -> str:
    return orjson.dumps([{**e, "recorded": e["recorded"].isoformat(timespec="microseconds")}
                         for e in entries]).decode()


async def _next_seq(unit: Unit) -> int:
    """SQLite: the next id, under the write lock every SQLite writer holds (``BEGIN IMMEDIATE``).
    Past every id ever sealed or queued too, so a removed tail never gives its ids again."""
    last = sa.select(sa.func.max(A.seq)).scalar_subquery()
    sealed = sa.select(sa.func.max(L.seq)).scalar_subquery()
    queued = sa.select(sa.func.max(Q.seq)).scalar_subquery()
    row = (await unit.conn.execute(sa.select(last, sealed, queued))).one()
    return max((v for v in row if v is not None), default=0) + 1


async def append(unit: Unit, entries: Sequence[dict[str, Any]]) -> None:
    """Append ``entries`` (every field but seq) in the unit's transaction, queued for sealing."""
    if not entries:
        return
    if unit.dialect == "postgresql":
        await unit.fetch(_APPEND_DRIVER, _as_json(entries))
        return
    seq = await _next_seq(unit)
    rows = [{**entry, "seq": seq + i} for i, entry in enumerate(entries)]
    await unit.conn.execute(sa.insert(AUDIT_LOG), rows)
    await unit.conn.execute(sa.insert(AUDIT_QUEUE), [
        {"seq": row["seq"], "recorded": row["recorded"], "leaf_hash": leaf_of(row)} for row in rows])


async def append_committed(store: Store, entries: Sequence[dict[str, Any]]) -> None:
    """Append ``entries`` in a transaction of their own; return once it has committed. On
    PostgreSQL a single statement on a pooled connection, outside any open transaction; on
    SQLite one call to the connection's thread (``_append_sqlite``)."""
    if store.dialect != "postgresql":
        await _append_sqlite(store, entries)
        return
    async with store.driver() as driver:
        await driver.execute(_APPEND_DRIVER, _as_json(entries))


# SQLite's limit on the parameters of one statement is 32,766 (3.32 and later); fewer rows per
# INSERT than that allows.
_SQLITE_ROWS_PER_INSERT = 500
_SQLITE_LAST_SEQ = ("SELECT (SELECT max(seq) FROM audit_log), (SELECT max(seq) FROM audit_leaf), "
                    "(SELECT max(seq) FROM audit_queue)")


def _sqlite_insert(table: sa.Table, columns: Sequence[str], rows: int) -> str:
    values = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES " + ", ".join([values] * rows)


async def _append_sqlite(store: Store, entries: Sequence[dict[str, Any]]) -> None:
    """``append`` in a transaction of its own on SQLite: BEGIN IMMEDIATE, the last ``seq`` (as
    ``_next_seq``), one INSERT of the entries and one of their queue rows, COMMIT, as one piece of
    work on the loop's own connection (``Store.inline_write``, storage/sqlite_inline.py), or where
    that gives up in one call to an aiosqlite connection's thread. Through SQLAlchemy the same took
    about fifteen hand-overs to that thread and back, the larger part of an authenticated read's CPU
    (docs/performance.md, "SQLite, the embedded default"). Values are bound as SQLAlchemy binds them
    (``recorded`` as its DATETIME text).

    A failure on the thread leaves the transaction to ``Store.driver``, which drops the connection
    and with it the transaction."""
    if not entries:
        return
    time_text = AUDIT_LOG.c.recorded.type._cached_bind_processor(store.engine.dialect)  # noqa: SLF001
    assert time_text is not None

    def work(conn: sqlite3.Connection) -> None:
        last = conn.execute(_SQLITE_LAST_SEQ).fetchone()
        seq = max((v for v in last if v is not None), default=0) + 1
        rows = [{**entry, "seq": seq + i} for i, entry in enumerate(entries)]
        for start in range(0, len(rows), _SQLITE_ROWS_PER_INSERT):
            chunk = rows[start:start + _SQLITE_ROWS_PER_INSERT]
            conn.execute(
                _sqlite_insert(AUDIT_LOG, FIELDS, len(chunk)),
                [time_text(row[name]) if name == "recorded" else row.get(name) for row in chunk for name in FIELDS])
            conn.execute(
                _sqlite_insert(AUDIT_QUEUE, ("seq", "recorded", "leaf_hash"), len(chunk)),
                [value for row in chunk for value in (row["seq"], time_text(row["recorded"]), leaf_of(row))])

    def threaded(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        work(conn)
        conn.commit()

    async with store.sqlite_writer():
        if store.inline_write(work):
            return
        async with store.driver() as driver:
            await _in_thread(driver, threaded)


async def _in_thread(driver: Any, work: Callable[[sqlite3.Connection], None]) -> None:
    """``work`` on the ``sqlite3`` connection of aiosqlite's ``driver``, in one call to its thread.
    aiosqlite runs a function there with ``Connection._execute`` (what its own ``execute_fetchall``
    uses; aiosqlite is pinned below 1.0, and every access-log and seal test runs this on SQLite)."""
    await driver._execute(work, driver._conn)  # noqa: SLF001


# -- sealing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    seq: int
    recorded: datetime | str  # on SQLite, its DATETIME text as stored (``_sqlite_queued``)
    leaf_hash: bytes
    sealed: bool = False  # its seq is a leaf already


@dataclass(frozen=True)
class StoredCheckpoint:
    tree_size: int
    note: str
    frontier: bytes


async def try_seal_lock(unit: Unit) -> bool:
    """Whether this transaction is the sealer (PostgreSQL: a transaction-level try-lock, so a
    second sealer in any process or machine skips the round instead of waiting; SQLite: its
    writers are serialised, so every sealer is the only one while it runs)."""
    if unit.dialect != "postgresql":
        return True
    return bool((await unit.conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(SEAL_LOCK)))).scalar_one())


async def latest_checkpoint(conn: AsyncConnection) -> StoredCheckpoint | None:
    row = (await conn.execute(sa.select(C.tree_size, C.note, C.frontier)
                              .order_by(C.tree_size.desc()).limit(1))).first()
    return StoredCheckpoint(int(row[0]), str(row[1]), bytes(row[2])) if row else None


async def checkpoint_at(conn: AsyncConnection, size: int) -> str | None:
    """The signed note of the checkpoint at ``size``, if there is one."""
    note = (await conn.execute(sa.select(C.note).where(C.tree_size == size))).scalar_one_or_none()
    return None if note is None else str(note)


async def tree_size(conn: AsyncConnection) -> int:
    """The number of leaves, by the last position (an index look-up)."""
    last = (await conn.execute(sa.select(sa.func.max(L.position)))).scalar_one()
    return 0 if last is None else int(last) + 1


async def queued(unit: Unit, limit: int) -> list[Queued]:
    """The oldest ``limit`` committed entries waiting to be sealed, each saying whether its ``seq``
    is already a leaf (a queue row not written by the log). Not locked row by row: the seal lock
    makes the caller the only sealer, writers only add rows, and a row lock would write every
    queue row once more before the sealer deletes it (a third of a seal's time).

    Which of them are leaves already is a second statement, by the leaves' ``seq`` index: asked
    in the same statement (``EXISTS`` per queue row), PostgreSQL's plan scanned the whole leaf
    table once per queued entry, a seal's cost growing with everything ever sealed. SQLite plans
    the join by that index, in one call to the connection's thread (``_sqlite_queued``)."""
    if unit.dialect == "sqlite":
        return await _sqlite_queued(unit, limit)
    query = sa.select(Q.seq, Q.recorded, Q.leaf_hash).order_by(Q.seq).limit(limit)
    rows = (await unit.conn.execute(query)).all()
    seqs = [int(r[0]) for r in rows]
    sealed = await _sealed_among(unit, seqs) if seqs else set()
    return [Queued(seq, r[1], bytes(r[2]), seq in sealed) for seq, r in zip(seqs, rows, strict=True)]


# SQLite: the sealer's statements straight to the unit's aiosqlite connection, in its transaction.
# Through SQLAlchemy a batch of 5,000 took about 65 ms with the write lock held, most of it the
# conversion of every ``recorded`` from SQLite's DATETIME text to a datetime and back; the text
# now goes from the queue row to the leaf as stored (docs/performance.md, "The sealer on SQLite").
_SQLITE_QUEUED = ("SELECT q.seq, q.recorded, q.leaf_hash, l.seq IS NOT NULL FROM audit_queue AS q "
                  "LEFT JOIN audit_leaf AS l ON l.seq = q.seq ORDER BY q.seq LIMIT ?")
_SQLITE_ADD_LEAF = "INSERT INTO audit_leaf (position, seq, recorded, leaf_hash) VALUES (?, ?, ?, ?)"
_SQLITE_DEQUEUE = "DELETE FROM audit_queue WHERE seq IN (SELECT value FROM json_each(?))"


async def _sqlite_driver(unit: Unit) -> Any:
    """The unit's aiosqlite connection, inside the transaction ``Store.writing`` began."""
    assert unit.conn.in_transaction()
    return (await unit.conn.get_raw_connection()).driver_connection


async def _sqlite_queued(unit: Unit, limit: int) -> list[Queued]:
    rows = await (await _sqlite_driver(unit)).execute_fetchall(_SQLITE_QUEUED, [limit])
    return [Queued(int(seq), recorded, bytes(leaf), bool(sealed)) for seq, recorded, leaf, sealed in rows]


_SEALED_AMONG = sa.text("SELECT seq FROM audit_leaf WHERE seq = ANY(CAST(:seqs AS bigint[]))")


async def _sealed_among(unit: Unit, seqs: list[int]) -> set[int]:
    """Those of ``seqs`` that are leaves of the tree (one index look-up each; PostgreSQL)."""
    result = await unit.conn.execute(_SEALED_AMONG, {"seqs": seqs})
    values: list[Any] = list(result.scalars())
    return {int(value) for value in values}


# PostgreSQL: a batch of leaves in and out of the queue as arrays, one statement each (a list of
# 5,000 bound values each was most of a seal's time).
_ADD_LEAVES = sa.text("INSERT INTO audit_leaf (position, seq, recorded, leaf_hash) SELECT * FROM unnest("
                      "CAST(:positions AS bigint[]), CAST(:seqs AS bigint[]), CAST(:recorded AS timestamp[]), "
                      "CAST(:hashes AS bytea[]))")
_DEQUEUE = sa.text("DELETE FROM audit_queue WHERE seq = ANY(CAST(:seqs AS bigint[]))")


async def seal(unit: Unit, first_position: int, entries: Sequence[Queued], dequeue: Sequence[int],
               checkpoint: tuple[int, str, bytes] | None) -> None:
    """Give ``entries`` the positions from ``first_position`` on, take ``dequeue`` off the queue
    and store the ``checkpoint`` (tree size, signed note, right edge) of the tree that results,
    all in the sealer's transaction."""
    if unit.dialect == "sqlite":
        await _sqlite_seal(unit, first_position, entries, dequeue, checkpoint)
        return
    if entries:
        await unit.conn.execute(_ADD_LEAVES, {
            "positions": list(range(first_position, first_position + len(entries))),
            "seqs": [e.seq for e in entries], "recorded": [e.recorded for e in entries],
            "hashes": [e.leaf_hash for e in entries]})
    if checkpoint is not None:
        size, note, frontier = checkpoint
        await unit.conn.execute(sa.insert(AUDIT_CHECKPOINT).values(tree_size=size, note=note, frontier=frontier))
    if dequeue:
        await unit.conn.execute(_DEQUEUE, {"seqs": list(dequeue)})


async def _sqlite_seal(unit: Unit, first_position: int, entries: Sequence[Queued], dequeue: Sequence[int],
                       checkpoint: tuple[int, str, bytes] | None) -> None:
    """``seal`` on SQLite: its three statements in one call to the unit's connection's thread."""
    leaves = [(first_position + i, e.seq, e.recorded, e.leaf_hash) for i, e in enumerate(entries)]
    dequeued = orjson.dumps(list(dequeue)).decode()

    def work(conn: sqlite3.Connection) -> None:
        if leaves:
            conn.executemany(_SQLITE_ADD_LEAF, leaves)
        if checkpoint is not None:
            conn.execute("INSERT INTO audit_checkpoint (tree_size, note, frontier) VALUES (?, ?, ?)", checkpoint)
        if dequeue:
            conn.execute(_SQLITE_DEQUEUE, [dequeued])

    await _in_thread(await _sqlite_driver(unit), work)


async def vacuum_queue(store: Store) -> None:
    """``VACUUM audit_queue`` (PostgreSQL), after a seal: the sealer deletes every row the writers
    add, thousands a second, and a queue whose dead rows stay (autovacuum off, or behind) makes
    every seal walk them all again. A few milliseconds for a queue this small; without the
    table's ownership PostgreSQL skips it with a warning."""
    if store.dialect != "postgresql":
        return
    async with store.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM audit_queue")


# -- partitions (PostgreSQL) ------------------------------------------------------------------


def partition_name(month: date) -> str:
    return f"audit_log_y{month.year:04d}m{month.month:02d}"


def _months(start: date, count: int) -> list[date]:
    first = start.year * 12 + start.month - 1
    return [date((first + i) // 12, (first + i) % 12 + 1, 1) for i in range(count + 1)]


async def ensure_partitions(unit: Unit, today: date, ahead: int = PARTITIONS_AHEAD) -> list[str]:
    """Create the monthly partitions of this month and ``ahead`` more that do not exist yet;
    return their names. A partition is made as a table and attached, which takes a lock that
    does not wait for (or stop) transactions appending to the log; a lock that cannot be had
    within two seconds fails this round, and the next round tries again. Entries whose month
    has no partition land in ``audit_log_default`` (never an error)."""
    if unit.dialect != "postgresql":
        return []
    conn = unit.conn
    existing: set[str] = set((await conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'audit_log'::regclass"))).scalars())
    months = _months(today, ahead + 1)
    created = []
    for month, end in zip(months, months[1:], strict=False):
        name = partition_name(month)
        if name in existing:
            continue
        clash = (await conn.execute(sa.text(
            "SELECT 1 FROM audit_log_default WHERE recorded >= :low AND recorded < :high LIMIT 1"),
            {"low": month, "high": end})).first()
        if clash:  # entries of that month went to the default partition: it stays there
            continue
        await conn.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
        await conn.execute(sa.text(f"CREATE TABLE {name} (LIKE audit_log INCLUDING DEFAULTS)"))
        await conn.execute(sa.text(f"ALTER TABLE audit_log ATTACH PARTITION {name} "
                                   f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"))
        await conn.execute(sa.text(f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
                                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"))
        created.append(name)
    return created


# -- verification -----------------------------------------------------------------------------


@asynccontextmanager
async def snapshot(store: Store) -> AsyncIterator[AsyncConnection]:
    """One read-only transaction for a whole ``audit verify``: every table as of one instant,
    so an entry committed meanwhile is not seen in one table and missed in another."""
    async with store.engine.connect() as conn:
        if store.dialect == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        async with conn.begin():
            yield conn


async def _walk(conn: AsyncConnection, query: sa.Select[Any], key: Any, batch: int) -> AsyncIterator[Any]:
    """The rows of ``query`` in ``key`` order, a page at a time (bounded memory at any size)."""
    last: Any = None
    while True:
        page = query if last is None else query.where(key > last)
        rows = (await conn.execute(page.order_by(key).limit(batch))).all()
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        last = rows[-1]._mapping[key.name]


def walk_entries(conn: AsyncConnection, batch: int = 5000) -> AsyncIterator[Any]:
    return _walk(conn, sa.select(*_COLUMNS), A.seq, batch)


def walk_leaves_by_seq(conn: AsyncConnection, batch: int = 5000) -> AsyncIterator[Any]:
    return _walk(conn, sa.select(L.seq, L.position, L.recorded, L.leaf_hash), L.seq, batch)


def walk_queue(conn: AsyncConnection, batch: int = 5000) -> AsyncIterator[Any]:
    return _walk(conn, sa.select(Q.seq, Q.recorded, Q.leaf_hash), Q.seq, batch)


def walk_leaves(conn: AsyncConnection, batch: int = 5000) -> AsyncIterator[Any]:
    return _walk(conn, sa.select(L.position, L.leaf_hash), L.position, batch)


def walk_checkpoints(conn: AsyncConnection, batch: int = 1000) -> AsyncIterator[Any]:
    return _walk(conn, sa.select(C.tree_size, C.note), C.tree_size, batch)


@dataclass
class AuditQuery:
    """Filters of an AuditEvent search; every one given must hold.

    ``agents``, ``entity`` and ``recorded`` hold one group per occurrence of the search
    parameter: every group must hold, any value within a group (R4 search.html#combining:
    repeating a parameter is AND, a comma-separated list is OR)."""

    patient_ids: list[str] | None = None  # any of
    care_unit: str | None = None
    care_provider: str | None = None  # HSA-id of the vårdgivare whose units wrote the entries
    agents: list[list[str]] = field(default_factory=list)  # user id, fhirUser reference, client id or unit HSA-id
    purposes: list[list[str]] = field(default_factory=list)  # v3 ActReason codes (TREAT, ETREAT, PATRQT…)
    entity: list[list[str]] = field(default_factory=list)  # "Type/id"
    since: datetime | None = None  # recorded at or after
    until: datetime | None = None  # recorded before
    recorded: list[list[tuple[str, datetime, datetime]]] = field(default_factory=list)  # (prefix, low, high)
    seq: int | None = None
    # ``patient_ids``/``entity`` given by the caller match successful entries only: a refused
    # entry names what its caller may not see (a care unit's view of its own log).
    names_of_successes_only: bool = False


def _where(query: AuditQuery) -> list[Any]:
    where: list[Any] = []
    if query.patient_ids is not None:
        where.append(A.patient_id.in_(query.patient_ids) if query.patient_ids else sa.false())
    if query.care_unit is not None:
        where.append(A.care_unit == query.care_unit)
    if query.care_provider is not None:
        where.append(A.care_provider == query.care_provider)
    for agents in query.agents:
        where.append(sa.or_(A.user_id.in_(agents), A.fhir_user.in_(agents), A.client_id.in_(agents),
                            A.care_unit.in_(agents)) if agents else sa.false())
    for purposes in query.purposes:
        where.append(A.purpose.in_(purposes) if purposes else sa.false())
    for names in query.entity:
        where.append(sa.or_(*(_entity(e) for e in names)) if names else sa.false())
    for ranges in query.recorded:
        where.append(sa.or_(*(_date(prefix, low, high) for prefix, low, high in ranges)) if ranges else sa.false())
    if query.since is not None:
        where.append(A.recorded >= query.since)
    if query.until is not None:
        where.append(A.recorded < query.until)
    if query.seq is not None:
        where.append(A.seq == query.seq)
    if query.names_of_successes_only and (query.entity or query.patient_ids is not None):
        where.append(A.outcome == "success")
    return where


def _entity(name: str) -> Any:
    """Entries whose rendered ``entity`` includes ``name``: the resources an entry lists, and for
    ``Patient/id`` also every entry about that patient (``render`` always names the patient as an
    entity, whether or not the Patient resource itself was read)."""
    listed = A.resources.like(f'%"{_escape(name)}"%', escape="\\")
    type_, _, id_ = name.partition("/")
    return sa.or_(listed, A.patient_id == id_) if type_ == "Patient" and id_ else listed


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace('"', "")


def _date(prefix: str, low: datetime, high: datetime) -> Any:
    """R4 search prefixes on an instant (``recorded`` has no range of its own)."""
    column = A.recorded
    return {
        "eq": sa.and_(column >= low, column <= high),
        "ne": sa.or_(column < low, column > high),
        "gt": column > high, "sa": column > high,
        "lt": column < low, "eb": column < low,
        "ge": column >= low, "le": column <= high,
    }.get(prefix, sa.and_(column >= low, column <= high))


async def search(store: Store, query: AuditQuery, offset: int, count: int) -> tuple[list[AuditRow], int]:
    """Newest first: one page (``count + 1`` rows to tell whether there is a next) and the total."""
    where = _where(query)
    async with store.reading() as unit:
        rows = (await unit.conn.execute(
            sa.select(*_COLUMNS).where(*where).order_by(A.seq.desc()).offset(offset).limit(count + 1))).all()
        total = (await unit.conn.execute(sa.select(sa.func.count()).select_from(AUDIT_LOG).where(*where))).scalar_one()
    return [AuditRow(**r._mapping) for r in rows], int(total)
