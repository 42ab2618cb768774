"""the access log as a Merkle tree with signed checkpoints, partitioned by month

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

The hash chain of 0002-0004 did not prove its tail: with the last rows deleted, or the table
truncated, or one row rewritten and every later link recomputed, it still verified; and every
append took one lock, so writers waited on each other. Now (patientkontrakt.audit.sealer):

* ``audit_log`` holds the entries, written by plain INSERTs; ``seq`` (the AuditEvent id) comes
  from the sequence ``audit_log_seq``. On PostgreSQL the table is partitioned by month of
  ``recorded``: a partition per month from the oldest entry's to three months ahead, and
  ``audit_log_default`` for anything else (an insert never fails for want of a partition).
* ``audit_queue`` holds each entry not yet sealed with its leaf hash (written with the entry).
* ``audit_leaf`` holds each sealed entry's position in the tree and its leaf hash.
* ``audit_checkpoint`` holds the signed checkpoints and the tree's right edge at each.

Existing entries keep their ``seq`` and their order: the migration checks the chain as 0004
left it (a broken chain stops the migration and names the entry; PK_AUDIT_ACCEPT_BROKEN_CHAIN
lets it go on once someone has looked), moves the entries, and queues them in ``seq`` order,
so the first seal gives them the positions 0 … n-1 and signs the first checkpoint (the key is
not the database's, so the migration cannot).

Triggers refuse UPDATE and DELETE of the log, the leaves and the checkpoints, UPDATE of the
queue (whose rows the sealer deletes once sealed), and TRUNCATE of all four and of every
partition. The functions ``audit_append`` and ``audit_log_append_only`` go; ``audit_field``
(0004) stays, for the leaf hash in SQL.

Downgrade rebuilds the hash chain over the entries in ``seq`` order. 0004's chain has no gaps
in ``seq``, so entries after a gap (a rolled-back write) are renumbered: their AuditEvent ids
change. The tree and the checkpoints are dropped: verify (``patientkontrakt audit verify``)
before downgrading.
"""

import hashlib
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from alembic import op

from patientkontrakt.config import Settings

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

_KEY = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
FIELDS = ("seq", "recorded", "user_id", "user_name", "user_kind", "role", "fhir_user", "care_unit",
          "care_unit_name", "care_provider", "client_id", "interaction", "request", "resources",
          "patient_id", "outcome", "status", "purpose")
_INDEXES = (("ix_audit_care_unit", ["care_unit", "seq"]), ("ix_audit_patient", ["patient_id", "seq"]),
            ("ix_audit_recorded", ["recorded"]), ("ix_audit_user", ["user_id", "seq"]))
_PAGE = 5000
_AHEAD = 3

# The leaf hash in SQL, as patientkontrakt.storage.audit builds it (frozen here as of 0005).
_LEAF_SQL = "sha256('\\x00'::bytea || convert_to(concat_ws('|', " + ", ".join(
    "audit_field(to_char(recorded, 'YYYY-MM-DD\"T\"HH24:MI:SS.US'))" if name == "recorded"
    else f"audit_field({name}::text)" for name in FIELDS) + "), 'UTF8'))"

_REFUSE = """
CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END $$"""


def _canonical(row: Any) -> str:
    parts = []
    for name in FIELDS:
        value = row[name]
        if value is None:
            parts.append("~")
            continue
        text = value.isoformat(timespec="microseconds") if isinstance(value, datetime) else str(value)
        parts.append(f"{len(text)}:{text}")
    return "|".join(parts)


def _rows(conn: sa.Connection, table: str, columns: Sequence[str]) -> Iterator[Any]:
    """Every row of ``table`` in ``seq`` order, a page at a time."""
    last = 0
    while True:
        page = sa.text(f"SELECT {', '.join(columns)} FROM {table} WHERE seq > :last ORDER BY seq LIMIT {_PAGE}")
        rows = conn.execute(page.columns(recorded=sa.DateTime()), {"last": last}).mappings().all()
        yield from rows
        if len(rows) < _PAGE:
            return
        last = rows[-1]["seq"]


def _check_chain(conn: sa.Connection) -> int:
    """The entries of the 0004 chain, once every link verifies (as its `audit verify` did)."""
    prev, expected = "0" * 64, 1
    for row in _rows(conn, "audit_log", (*FIELDS, "prev_hash", "hash")):
        if row["seq"] != expected:
            why = f"seq {row['seq']} follows {expected - 1}: entries are missing"
        elif row["prev_hash"] != prev:
            why = "prev_hash does not match the previous entry's hash"
        elif hashlib.sha256(f"{prev}\n{_canonical(row)}".encode()).hexdigest() != row["hash"]:
            why = "the entry's content does not match its hash"
        else:
            prev, expected = row["hash"], expected + 1
            continue
        message = f"the access log's hash chain is broken at entry {row['seq']}: {why}"
        if not Settings().audit_accept_broken_chain:
            raise RuntimeError(f"{message}. Nothing was migrated. Find out what happened (the entries are "
                               "evidence); to migrate the log as it stands, set PK_AUDIT_ACCEPT_BROKEN_CHAIN=true")
        log.warning("%s; migrated as it stands (PK_AUDIT_ACCEPT_BROKEN_CHAIN)", message)
        return -1
    return expected - 1


def _months(first: date, last: date) -> list[date]:
    months, month = [], first.replace(day=1)
    while month <= last:
        months.append(month)
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return months


def _refuse(table: str, actions: Sequence[str], truncate: bool) -> None:
    if op.get_bind().dialect.name == 'postgresql':
        if actions:
            op.execute(f"CREATE TRIGGER {table}_no_change BEFORE {' OR '.join(actions)} ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()")
        if truncate:
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()")
        return
    for action in actions:
        op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                   f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END")


def upgrade() -> None:
    conn = op.get_bind()
    postgres = conn.dialect.name == 'postgresql'
    count = _check_chain(conn)
    span = conn.execute(sa.text("SELECT min(recorded), max(recorded) FROM audit_log")).one()

    for name, _ in _INDEXES:
        op.drop_index(name, table_name='audit_log')
    if postgres:
        op.execute("DROP TRIGGER audit_log_no_update ON audit_log")
        op.execute("ALTER TABLE audit_log RENAME CONSTRAINT audit_log_pkey TO audit_log_v1_pkey")
    else:
        op.execute("DROP TRIGGER audit_log_no_update")
        op.execute("DROP TRIGGER audit_log_no_delete")
    op.rename_table('audit_log', 'audit_log_v1')

    op.create_table('audit_log',
    sa.Column('seq', _KEY, autoincrement=False, nullable=False),
    sa.Column('recorded', sa.DateTime(), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=False),
    sa.Column('user_name', sa.Text(), nullable=True),
    sa.Column('user_kind', sa.String(length=16), nullable=False),
    sa.Column('role', sa.Text(), nullable=True),
    sa.Column('fhir_user', sa.Text(), nullable=True),
    sa.Column('care_unit', sa.Text(), nullable=True),
    sa.Column('care_unit_name', sa.Text(), nullable=True),
    sa.Column('care_provider', sa.Text(), nullable=True),
    sa.Column('client_id', sa.Text(), nullable=True),
    sa.Column('interaction', sa.String(length=32), nullable=False),
    sa.Column('request', sa.Text(), nullable=False),
    sa.Column('resources', sa.Text(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('seq', 'recorded'),
    postgresql_partition_by='RANGE (recorded)',
    )
    partitions: list[str] = []
    if postgres:
        op.execute("CREATE SEQUENCE audit_log_seq OWNED BY audit_log.seq")
        op.execute("ALTER TABLE audit_log ALTER COLUMN seq SET DEFAULT nextval('audit_log_seq')")
        today = datetime.now(UTC).date()
        first = min(span[0].date(), today) if span[0] is not None else today
        last = date(today.year + (today.month + _AHEAD - 1) // 12, (today.month + _AHEAD - 1) % 12 + 1, 1)
        for month in _months(first, max(last, span[1].date() if span[1] is not None else last)):
            end = date(month.year + month.month // 12, month.month % 12 + 1, 1)
            name = f"audit_log_y{month.year:04d}m{month.month:02d}"
            op.execute(f"CREATE TABLE {name} PARTITION OF audit_log "
                       f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')")
            partitions.append(name)
        op.execute("CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT")
        partitions.append("audit_log_default")
    for name, columns in _INDEXES:
        op.create_index(name, 'audit_log', columns, unique=False)

    op.create_table('audit_queue',
    sa.Column('seq', _KEY, autoincrement=False, nullable=False),
    sa.Column('recorded', sa.DateTime(), nullable=False),
    sa.Column('leaf_hash', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_table('audit_leaf',
    sa.Column('position', _KEY, autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('recorded', sa.DateTime(), nullable=False),
    sa.Column('leaf_hash', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('position')
    )
    op.create_index('ix_audit_leaf_seq', 'audit_leaf', ['seq'], unique=True)
    op.create_table('audit_checkpoint',
    sa.Column('tree_size', _KEY, autoincrement=False, nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('frontier', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('tree_size')
    )

    names = ", ".join(FIELDS)
    op.execute(f"INSERT INTO audit_log ({names}) SELECT {names} FROM audit_log_v1")
    if postgres:
        op.execute(f"INSERT INTO audit_queue (seq, recorded, leaf_hash) SELECT seq, recorded, {_LEAF_SQL} "
                   "FROM audit_log")
        op.execute("SELECT setval('audit_log_seq', (SELECT max(seq) FROM audit_log)) "
                   "WHERE EXISTS (SELECT 1 FROM audit_log)")
    else:
        queue = sa.table('audit_queue', sa.column('seq'), sa.column('recorded', sa.DateTime()), sa.column('leaf_hash'))
        page: list[dict[str, Any]] = []
        for row in _rows(conn, "audit_log", FIELDS):
            page.append({"seq": row["seq"], "recorded": row["recorded"],
                         "leaf_hash": hashlib.sha256(b"\x00" + _canonical(row).encode()).digest()})
            if len(page) == _PAGE:
                conn.execute(sa.insert(queue), page)
                page = []
        if page:
            conn.execute(sa.insert(queue), page)
    op.drop_table('audit_log_v1')
    log.info("access log: %s entries queued for the first seal", count if count >= 0 else "all")

    if postgres:
        op.execute("DROP FUNCTION audit_append(jsonb)")
        op.execute("DROP FUNCTION audit_log_append_only()")
        op.execute(_REFUSE)
        for name in partitions:
            _refuse(name, (), truncate=True)
    _refuse('audit_log', ('UPDATE', 'DELETE'), truncate=True)
    _refuse('audit_leaf', ('UPDATE', 'DELETE'), truncate=True)
    _refuse('audit_checkpoint', ('UPDATE', 'DELETE'), truncate=True)
    _refuse('audit_queue', ('UPDATE',), truncate=True)


def _previous(name: str) -> ModuleType:
    spec = spec_from_file_location(f"migration_{name[:4]}", Path(__file__).with_name(name))
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def downgrade() -> None:
    conn = op.get_bind()
    postgres = conn.dialect.name == 'postgresql'
    op.create_table('audit_log_v1',
    sa.Column('seq', _KEY, autoincrement=False, nullable=False),
    sa.Column('recorded', sa.DateTime(), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=False),
    sa.Column('user_name', sa.Text(), nullable=True),
    sa.Column('user_kind', sa.String(length=16), nullable=False),
    sa.Column('role', sa.Text(), nullable=True),
    sa.Column('fhir_user', sa.Text(), nullable=True),
    sa.Column('care_unit', sa.Text(), nullable=True),
    sa.Column('care_unit_name', sa.Text(), nullable=True),
    sa.Column('care_provider', sa.Text(), nullable=True),
    sa.Column('client_id', sa.Text(), nullable=True),
    sa.Column('interaction', sa.String(length=32), nullable=False),
    sa.Column('request', sa.Text(), nullable=False),
    sa.Column('resources', sa.Text(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name='audit_log_v1_pkey')
    )
    old = sa.table('audit_log_v1', *(sa.column(name, sa.DateTime() if name == "recorded" else None)
                                     for name in (*FIELDS, "prev_hash", "hash")))
    prev, seq, page = "0" * 64, 0, []
    for row in _rows(conn, "audit_log", FIELDS):
        seq += 1
        entry = {**row, "seq": seq, "prev_hash": prev}
        entry["hash"] = prev = hashlib.sha256(f"{prev}\n{_canonical(entry)}".encode()).hexdigest()
        page.append(entry)
        if len(page) == _PAGE:
            conn.execute(sa.insert(old), page)
            page = []
    if page:
        conn.execute(sa.insert(old), page)

    for table in ('audit_checkpoint', 'audit_leaf', 'audit_queue', 'audit_log'):
        op.drop_table(table)  # with their triggers, partitions, indexes and the sequence
    if postgres:
        op.execute("DROP FUNCTION audit_refuse_change()")
        op.execute("ALTER TABLE audit_log_v1 RENAME CONSTRAINT audit_log_v1_pkey TO audit_log_pkey")
    op.rename_table('audit_log_v1', 'audit_log')
    for name, columns in _INDEXES:
        op.create_index(name, 'audit_log', columns, unique=False)
    migration_0002 = _previous("0002_access_control_and_audit_log.py")
    migration_0002._append_only('audit_log')
    if postgres:
        op.execute(_previous("0004_audit_append_in_one_insert.py").AUDIT_APPEND
                   .replace("CREATE OR REPLACE FUNCTION", "CREATE FUNCTION", 1))
