"""access control and audit log

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

The tables of the authorization server (clients, codes, refresh tokens, seen ``jti``s), the
Patientdatalagen access log (append-only: triggers refuse UPDATE and DELETE), ``server_state``,
and ``resource.patient_id`` (the Patient compartment a resource is in), filled here for the
resources already stored from their indexed references.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
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
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_care_unit', ['care_unit', 'seq'], unique=False)
        batch_op.create_index('ix_audit_patient', ['patient_id', 'seq'], unique=False)
        batch_op.create_index('ix_audit_recorded', ['recorded'], unique=False)
        batch_op.create_index('ix_audit_user', ['user_id', 'seq'], unique=False)

    op.create_table('oauth_client',
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('redirect_uris', sa.Text(), nullable=False),
    sa.Column('jwks', sa.Text(), nullable=True),
    sa.Column('jwks_uri', sa.Text(), nullable=True),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('care_unit', sa.Text(), nullable=True),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('client_id')
    )
    op.create_table('oauth_code',
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('redirect_uri', sa.Text(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('grant', sa.Text(), nullable=False),
    sa.Column('code_challenge', sa.String(length=128), nullable=False),
    sa.Column('nonce', sa.Text(), nullable=True),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.Column('family_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('code_hash')
    )
    op.create_table('refresh_token',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('family_id', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('grant', sa.Text(), nullable=False),
    sa.Column('issued_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('token_hash')
    )
    with op.batch_alter_table('refresh_token', schema=None) as batch_op:
        batch_op.create_index('ix_refresh_family', ['family_id'], unique=False)

    op.create_table('server_state',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('used_jti',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('issuer', sa.String(length=128), nullable=False),
    sa.Column('jti', sa.String(length=255), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'issuer', 'jti')
    )
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.add_column(sa.Column('patient_id', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_resource_patient', ['patient_id', 'res_type'], unique=False)
    with op.batch_alter_table('idx_reference', schema=None) as batch_op:
        batch_op.drop_index('ix_reference_resource')
        batch_op.create_index('ix_reference_source', ['resource_pk', 'param', 'target_type', 'target_id'],
                              unique=False)
    _fill_patient_ids()
    _append_only('audit_log')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(AUDIT_APPEND)



# Where a stored resource names its patient (the R4 Patient CompartmentDefinition's parameters
# for the types this revision serves); Provenance takes the patient of what it targets.
_PATIENT_PARAMS = {
    'CarePlan': ('patient', 'subject', 'performer'),
    'CareTeam': ('patient', 'subject', 'participant'),
    'Goal': ('patient', 'subject'),
    'Appointment': ('patient', 'actor'),
}


def _fill_patient_ids() -> None:
    op.execute("UPDATE resource SET patient_id = res_id WHERE res_type = 'Patient'")
    for type_, params in _PATIENT_PARAMS.items():
        # the first parameter (in the order above) that names a patient decides
        choices = ", ".join(
            f"(SELECT min(r.target_id) FROM idx_reference r WHERE r.resource_pk = resource.pk "
            f"AND r.target_type = 'Patient' AND r.param = '{p}')" for p in params)
        op.execute(f"UPDATE resource SET patient_id = coalesce({choices}) WHERE res_type = '{type_}'")
    op.execute(
        "UPDATE resource SET patient_id = (SELECT min(t.patient_id) FROM idx_reference r "
        "JOIN resource t ON t.res_id = r.target_id AND t.res_type = r.target_type "
        "WHERE r.resource_pk = resource.pk AND r.param = 'target') WHERE res_type = 'Provenance'"
    )


# Appends log entries in one statement: takes the chain lock, reads the last link, and inserts
# each entry with its seq and SHA-256 link. The link is computed exactly as
# patientkontrakt.audit.log.entry_hash does (which SQLite uses, and `audit verify` checks):
# sha256(prev_hash || '\n' || canonical), canonical being every field as "<length>:<text>"
# (NULL as "~") joined by "|", the timestamp as YYYY-MM-DDTHH:MM:SS.ffffff.
AUDIT_APPEND = r"""
CREATE FUNCTION audit_append(entries jsonb) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    prev text;
    last_seq bigint;
    e jsonb;
    r timestamp;
    content text;
    link text;
BEGIN
    PERFORM pg_advisory_xact_lock(22600742112348500);  -- storage.audit.CHAIN_LOCK
    SELECT seq, hash INTO last_seq, prev FROM audit_log ORDER BY seq DESC LIMIT 1;
    IF NOT FOUND THEN
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


def _append_only(table: str) -> None:
    """Refuse UPDATE and DELETE on ``table`` in the database itself, whoever connects."""
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(f"""
            CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{table} is append-only: % refused', TG_OP;
            END $$""")
        op.execute(f"CREATE TRIGGER {table}_no_update BEFORE UPDATE OR DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()")
    else:
        for action in ('UPDATE', 'DELETE'):
            op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END")


def downgrade() -> None:
    with op.batch_alter_table('idx_reference', schema=None) as batch_op:
        batch_op.drop_index('ix_reference_source')
        batch_op.create_index('ix_reference_resource', ['resource_pk'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP FUNCTION audit_append(jsonb)")
        op.execute("DROP TRIGGER audit_log_no_update ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_index('ix_resource_patient')
        batch_op.drop_column('patient_id')

    op.drop_table('used_jti')
    op.drop_table('server_state')
    with op.batch_alter_table('refresh_token', schema=None) as batch_op:
        batch_op.drop_index('ix_refresh_family')

    op.drop_table('refresh_token')
    op.drop_table('oauth_code')
    op.drop_table('oauth_client')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_user')
        batch_op.drop_index('ix_audit_recorded')
        batch_op.drop_index('ix_audit_patient')
        batch_op.drop_index('ix_audit_care_unit')

    op.drop_table('audit_log')
