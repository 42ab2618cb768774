"""The SQL of the access log (``audit_log``): append under a lock, read, walk the chain.

There is no statement here that changes or removes a row, and the database refuses them
anyway (triggers from migration 0002).

Appending computes each row's ``seq`` (previous + 1) and ``hash`` (``entry_hash``) under a lock
on the chain. On PostgreSQL that is one statement, the ``audit_append(jsonb)`` function of
migration 0002, so a batch of entries costs one round trip (and, outside a transaction, one
commit); on SQLite the same computation runs here.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from patientkontrakt.storage.repository import Store, Unit
from patientkontrakt.storage.tables import AUDIT_LOG

A = AUDIT_LOG.c
GENESIS = "0" * 64
CHAIN_LOCK = 0x504B_4155_4449_54  # "PKAUDIT": the advisory lock serialising appends (also in audit_append)
# The fields a link covers, in order (audit_append in migration 0002 lists the same).
FIELDS = ("seq", "recorded", "user_id", "user_name", "user_kind", "role", "fhir_user", "care_unit",
          "care_unit_name", "care_provider", "client_id", "interaction", "request", "resources",
          "patient_id", "outcome", "status", "purpose")


def canonical(row: dict[str, Any]) -> str:
    """The row's fields as ``<length>:<text>`` (NULL as ``~``) joined by ``|``: unambiguous,
    and as easy to build in SQL as here."""
    parts = []
    for name in FIELDS:
        value = row[name]
        if value is None:
            parts.append("~")
            continue
        text = value.isoformat(timespec="microseconds") if isinstance(value, datetime) else str(value)
        parts.append(f"{len(text)}:{text}")
    return "|".join(parts)


def entry_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """The chain link of ``row`` after the link ``prev_hash``."""
    return hashlib.sha256(f"{prev_hash}\n{canonical(row)}".encode()).hexdigest()


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
    prev_hash: str
    hash: str


_COLUMNS = tuple(A[name] for name in AuditRow.__dataclass_fields__)


async def _chain_head(unit: Unit) -> tuple[int, str]:
    """The last (seq, hash); the caller's write transaction holds the chain (SQLite writers
    are serialised by BEGIN IMMEDIATE)."""
    row = (await unit.conn.execute(sa.select(A.seq, A.hash).order_by(A.seq.desc()).limit(1))).first()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


def _as_json(entries: Sequence[dict[str, Any]]) -> str:
    return orjson.dumps([{**e, "recorded": e["recorded"].isoformat(timespec="microseconds")}
                         for e in entries]).decode()


async def append(unit: Unit, entries: Sequence[dict[str, Any]]) -> None:
    """Append ``entries`` (every field but seq and the hashes) in the unit's transaction."""
    if not entries:
        return
    if unit.dialect == "postgresql":
        await unit.conn.execute(sa.text("SELECT audit_append(CAST(:entries AS jsonb))"),
                                {"entries": _as_json(entries)})
        return
    seq, prev = await _chain_head(unit)
    rows = []
    for entry in entries:
        seq += 1
        row = {**entry, "seq": seq, "prev_hash": prev}
        row["hash"] = prev = entry_hash(prev, row)
        rows.append(row)
    await unit.conn.execute(sa.insert(AUDIT_LOG), rows)


async def append_committed(store: Store, entries: Sequence[dict[str, Any]]) -> None:
    """Append ``entries`` in a transaction of their own; return once it has committed. On
    PostgreSQL a single statement on a pooled connection, outside any open transaction."""
    if store.dialect != "postgresql":
        async with store.writing() as unit:
            await append(unit, entries)
        return
    async with store.driver() as driver:
        await driver.execute("SELECT audit_append($1::jsonb)", _as_json(entries))


@dataclass
class AuditQuery:
    """Filters of an AuditEvent search; every one given must hold.

    ``agents``, ``entity`` and ``recorded`` hold one group per occurrence of the search
    parameter: every group must hold, any value within a group (R4 search.html#combining:
    repeating a parameter is AND, a comma-separated list is OR)."""

    patient_ids: list[str] | None = None  # any of
    care_unit: str | None = None
    agents: list[list[str]] = field(default_factory=list)  # user id, fhirUser reference or client id
    entity: list[list[str]] = field(default_factory=list)  # "Type/id"
    since: datetime | None = None  # recorded at or after
    until: datetime | None = None  # recorded before
    recorded: list[list[tuple[str, datetime, datetime]]] = field(default_factory=list)  # (prefix, low, high)
    seq: int | None = None


def _where(query: AuditQuery) -> list[Any]:
    where: list[Any] = []
    if query.patient_ids is not None:
        where.append(A.patient_id.in_(query.patient_ids) if query.patient_ids else sa.false())
    if query.care_unit is not None:
        where.append(A.care_unit == query.care_unit)
    for agents in query.agents:
        where.append(sa.or_(A.user_id.in_(agents), A.fhir_user.in_(agents), A.client_id.in_(agents))
                     if agents else sa.false())
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


async def walk(store: Store, batch: int = 5000) -> AsyncIterator[AuditRow]:
    """Every row in ``seq`` order (``patientkontrakt audit verify``)."""
    last = 0
    while True:
        async with store.reading() as unit:
            rows = (await unit.conn.execute(
                sa.select(*_COLUMNS).where(A.seq > last).order_by(A.seq).limit(batch))).all()
        if not rows:
            return
        for row in rows:
            yield AuditRow(**row._mapping)
        last = int(rows[-1][0])
