"""A version written in one statement on PostgreSQL (docs/performance.md, "Writes").

A create or update writes the current row, the version row and the resource's search index rows.
Sent one by one, through SQLAlchemy, that was eight to thirteen statements per write, each a round
trip and about 0.2 ms of the server's CPU in SQLAlchemy alone. Here it is one statement of data-
modifying CTEs, sent to the asyncpg connection as it is: the index rows go as one array per
column, unnested into each table (``STORE_NEW``, ``STORE_NEXT``). An update's old index rows are
deleted in the same statement: its parts share one snapshot, so the DELETEs do not see the rows
the INSERTs add.

SQLite keeps the statements one by one (``Unit.store_version``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from patientkontrakt.storage.tables import INDEX_TABLES

# The columns of each index table that an index row (``fhir.indexing.IndexRows``) fills, with
# the PostgreSQL array type they are sent as.
_NOT_ROW = frozenset({"id", "resource_pk", "res_type", "param"})
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(c.name for c in table.columns if c.name not in _NOT_ROW) for name, table in INDEX_TABLES.items()
}
_ARRAY_TYPE = {name: {c.name: "timestamp[]" if isinstance(c.type, sa.DateTime) else "text[]"
                      for c in table.columns} for name, table in INDEX_TABLES.items()}

# $1 type, $2 id, $3 version, $4 last_updated, $5 body, $6 patient, $7 method, then what each
# statement needs of its own (below), then, per index table, the array of params and one array per
# column.
_VERSION = ("v AS (INSERT INTO resource_version (res_type, res_id, version_id, last_updated, method, deleted, body) "
            "VALUES ($1, $2, $3, $4, $7, false, $5::jsonb))")


def _index_parts(first: int) -> list[str]:
    parts, n = [], first
    for name, columns in INDEX_COLUMNS.items():
        arrays = [f"${n}::text[]", *(f"${n + 1 + i}::{_ARRAY_TYPE[name][c]}" for i, c in enumerate(columns))]
        parts.append(
            f"i_{name} AS (INSERT INTO {INDEX_TABLES[name].name} (resource_pk, res_type, param, {', '.join(columns)}) "
            f"SELECT r.pk, $1, u.* FROM r, unnest({', '.join(arrays)}) AS u)")
        n += 1 + len(columns)
    return parts


# A new resource: $8 owner_unit, $9 owner_provider.
STORE_NEW = (
    "WITH r AS (INSERT INTO resource (res_type, res_id, version_id, last_updated, deleted, body, patient_id, "
    "owner_unit, owner_provider) VALUES ($1, $2, $3, $4, false, $5::jsonb, $6, $8, $9) RETURNING pk), "
    + ", ".join([_VERSION, *_index_parts(10)]) + " SELECT pk FROM r"
)

# The next version of the resource whose pk is $8; the owner stays.
STORE_NEXT = (
    "WITH r AS (UPDATE resource SET version_id = $3, last_updated = $4, body = $5::jsonb, deleted = false, "
    "patient_id = $6 WHERE pk = $8 RETURNING pk), "
    + ", ".join([*(f"d_{name} AS (DELETE FROM {table.name} WHERE resource_pk = $8)"
                   for name, table in INDEX_TABLES.items()), _VERSION, *_index_parts(9)])
    + " SELECT pk FROM r"
)


def index_arrays(tables: Iterable[tuple[str, list[dict[str, Any]]]]) -> list[list[Any]]:
    """The index rows as the statements take them: per table, the params, then each column."""
    by_name = dict(tables)
    arrays: list[list[Any]] = []
    for name, columns in INDEX_COLUMNS.items():
        rows = by_name.get(name, [])
        arrays.append([row["param"] for row in rows])
        arrays.extend([row.get(column) for row in rows] for column in columns)
    return arrays


def store_arguments(type_: str, id_: str, version_id: int, last_updated: datetime, method: str, body: str,
                    patient_id: str | None, own: list[Any],
                    tables: Iterable[tuple[str, list[dict[str, Any]]]]) -> list[Any]:
    """The arguments of ``STORE_NEW`` (``own``: the owner's unit and provider) or ``STORE_NEXT``
    (``own``: the resource's pk)."""
    return [type_, id_, version_id, last_updated, body, patient_id, method, *own, *index_arrays(tables)]
