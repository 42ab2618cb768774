"""The SQL of history (R4 http.html#history): which versions one history answer is taken from
(``HistoryWindow``), the statement that reads a page of them, and the two statements that make
history sync gapless on PostgreSQL: the transaction id a write takes before it stamps
(``TAKE_XID``, ``Unit.stamp``) and the safe point (``SAFE_POINT``, ``Store.safe_point``).
docs/api.md, "History sync", says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from patientkontrakt.storage.tables import RESOURCE, RESOURCE_VERSION

R = RESOURCE.c
V = RESOURCE_VERSION.c
VERSION_COLUMNS = (V.res_type, V.res_id, V.version_id, V.last_updated, V.method, V.deleted, V.body)


@dataclass(frozen=True)
class HistoryWindow:
    """Which versions one history answer is taken from, fixed at its first page
    (``patientkontrakt.fhir.history``).

    ``until``: the safe point S, exclusive: every version stamped before it is committed
    (``Store.safe_point``). ``after``: the keyset cursor, the (``last_updated``, ``seq``) of the
    previous page's last entry; the page holds the versions past it in the order asked, or,
    ``backward``, those just before it (a ``previous`` link; still returned in the order asked).
    ``ascending``: oldest first (R5's ``_sort=_lastUpdated``) instead of newest first.
    """

    until: datetime
    after: tuple[datetime, int] | None = None
    ascending: bool = False
    backward: bool = False


def floor_ms(value: datetime) -> datetime:
    """``value`` truncated to the millisecond: the precision of stamps and of safe points."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


# The transaction's id, taken before the write stamps anything, makes it show in
# pg_stat_activity (``backend_xid``) until it ends; then the database's clock, read once the id
# is taken (the CTE is evaluated first).
TAKE_XID = sa.text("WITH taken AS MATERIALIZED (SELECT pg_current_xact_id()) "
                   "SELECT clock_timestamp() AT TIME ZONE 'UTC' FROM taken")
# The safe point on PostgreSQL: when this statement began, or when the oldest transaction of
# this database that holds an id began, whichever is earlier. A transaction whose start this
# role may not see (another role's, without pg_read_all_stats) counts as infinitely old.
SAFE_POINT = sa.text(
    "SELECT statement_timestamp() AT TIME ZONE 'UTC', "
    "min(coalesce(xact_start, '-infinity'::timestamptz)) AT TIME ZONE 'UTC' "
    "FROM pg_stat_activity "
    "WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
)


def _current_during(at: datetime | tuple[datetime, datetime]) -> tuple[sa.ColumnElement[bool], ...]:
    """Versions current at some time in [low, high]: written by its end, not replaced by its start."""
    low, high = at if isinstance(at, tuple) else (at, at)
    later = RESOURCE_VERSION.alias("later")
    replaced = sa.exists().where(
        later.c.res_type == V.res_type, later.c.res_id == V.res_id,
        later.c.version_id > V.version_id, later.c.last_updated <= low,
    )
    return V.last_updated <= high, ~replaced


def history_filter(type_: str | None, id_: str | None, since: datetime | None,
                    at: datetime | tuple[datetime, datetime] | None,
                    restrictions: Mapping[str, sa.ColumnElement[bool] | None] | None,
                    current_only: frozenset[str] = frozenset(),
                    until: datetime | None = None) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if type_ is not None:
        where.append(V.res_type == type_)
    if id_ is not None:
        where.append(V.res_id == id_)
    if since is not None:
        where.append(V.last_updated >= since)
    if until is not None:
        where.append(V.last_updated < until)
    if at is not None:
        where.extend(_current_during(at))
    if restrictions is not None:
        options = []
        for name, condition in restrictions.items():
            if condition is None:
                options.append(V.res_type == name)
            else:
                # ``condition`` is written over ``resource``; here it correlates to the row of
                # the version's resource (and, for ``current_only`` types, to that version only).
                current = (R.version_id == V.version_id,) if name in current_only else ()
                options.append(sa.and_(V.res_type == name, sa.exists().where(
                    R.res_type == V.res_type, R.res_id == V.res_id, *current, condition)))
        where.append(sa.or_(*options) if options else sa.false())
    return where


def history_query(type_: str | None, id_: str | None, since: datetime | None,
                  at: datetime | tuple[datetime, datetime] | None, offset: int, count: int,
                  window: HistoryWindow | None,
                  restrictions: Mapping[str, sa.ColumnElement[bool] | None] | None = None,
                  current_only: frozenset[str] = frozenset()) -> sa.Select[Any]:
    """The statement of ``Unit.history`` (apart, so that its plans can be looked at: docs/performance.md)."""
    where = history_filter(type_, id_, since, at, restrictions, current_only, window.until if window else None)
    # Rows are read in the direction of travel: oldest first for an ascending page or a page
    # back from a descending one.
    up = window is not None and window.ascending != window.backward
    if window is not None and window.after is not None:
        last_updated, seq = window.after
        key = sa.tuple_(V.last_updated, V.seq)
        cursor = sa.tuple_(sa.literal(last_updated, sa.DateTime()), sa.literal(seq, sa.BigInteger()))
        where.append(key > cursor if up else key < cursor)
    order = (V.last_updated.asc(), V.seq.asc()) if up else (V.last_updated.desc(), V.seq.desc())
    return sa.select(*VERSION_COLUMNS, V.seq).where(*where).order_by(*order).offset(offset).limit(count + 1)
