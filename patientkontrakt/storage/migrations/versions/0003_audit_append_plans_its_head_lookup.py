"""audit_append plans its look-up of the chain head on every call

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

PL/pgSQL caches the plan of a static statement for the life of the connection. The plan of
``SELECT … FROM audit_log ORDER BY seq DESC LIMIT 1`` made while the log was empty is a
sequential scan, and a pooled connection kept it while the log grew: every append read the whole
log (on a benchmark clone with autovacuum off, whose statistics never told the planner otherwise,
reads slowed down round after round). The head is now looked up with ``EXECUTE``, planned on
each call against the log's current size: an index scan backwards on the primary key, one row.
PostgreSQL only; SQLite computes the chain in Python (``storage.audit``).
"""

from collections.abc import Sequence
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same function as in 0002 but for the look-up of the head (EXECUTE, and FOUND, which
# EXECUTE does not set, replaced by a NULL check).
AUDIT_APPEND = r"""
CREATE OR REPLACE FUNCTION audit_append(entries jsonb) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    prev text;
    last_seq bigint;
    e jsonb;
    r timestamp;
    content text;
    link text;
BEGIN
    PERFORM pg_advisory_xact_lock(22600742112348500);  -- storage.audit.CHAIN_LOCK
    EXECUTE 'SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1' INTO last_seq, prev;
    IF last_seq IS NULL THEN
        last_seq := 0;
        prev := repeat('0', 64);
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(entries) LOOP
        last_seq := last_seq + 1;
        r := (e->>'recorded')::timestamp;
        SELECT string_agg(CASE WHEN v IS NULL THEN '~' ELSE length(v)::text || ':' || v END, '|' ORDER BY n)
          INTO content
          FROM unnest(ARRAY[
              last_seq::text, to_char(r, 'YYYY-MM-DD"T"HH24:MI:SS.US'), e->>'user_id', e->>'user_name',
              e->>'user_kind', e->>'role', e->>'fhir_user', e->>'care_unit', e->>'care_unit_name',
              e->>'care_provider', e->>'client_id', e->>'interaction', e->>'request', e->>'resources',
              e->>'patient_id', e->>'outcome', e->>'status', e->>'purpose'
          ]) WITH ORDINALITY AS f(v, n);
        link := encode(sha256(convert_to(prev || E'\n' || content, 'UTF8')), 'hex');
        INSERT INTO audit_log (seq, recorded, user_id, user_name, user_kind, role, fhir_user, care_unit,
                               care_unit_name, care_provider, client_id, interaction, request, resources,
                               patient_id, outcome, status, purpose, prev_hash, hash)
        VALUES (last_seq, r, e->>'user_id', e->>'user_name', e->>'user_kind', e->>'role', e->>'fhir_user',
                e->>'care_unit', e->>'care_unit_name', e->>'care_provider', e->>'client_id', e->>'interaction',
                e->>'request', e->>'resources', e->>'patient_id', e->>'outcome', (e->>'status')::integer,
                e->>'purpose', prev, link);
        prev := link;
    END LOOP;
    RETURN last_seq;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(AUDIT_APPEND)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        spec = spec_from_file_location("migration_0002", Path(__file__).with_name("0002_access_control_and_audit_log.py"))
        assert spec is not None and spec.loader is not None
        previous = module_from_spec(spec)
        spec.loader.exec_module(previous)
        op.execute(previous.AUDIT_APPEND.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
