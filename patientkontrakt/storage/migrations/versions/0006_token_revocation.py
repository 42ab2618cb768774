"""token_revocation: revoked access tokens, sign-ins and clients, for every process

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

Revoking an access token recorded its ``jti`` in ``used_jti`` (kind ``revoked``), which only
introspection read; the FHIR API kept accepting the token until it expired. Revocations now have
their own table, which every process of the service reads (``security/revocation.py``): an
access token (``token``), a sign-in (``session``: a refresh token family, named by the ``sid``
of its access tokens) or a removed client (``client``), each until every access token it covers
has expired. The ``revoked`` rows of ``used_jti`` move here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('token_revocation',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'value')
    )
    with op.batch_alter_table('token_revocation', schema=None) as batch_op:
        batch_op.create_index('ix_token_revocation_expires', ['expires_at'], unique=False)
    op.execute("INSERT INTO token_revocation (kind, value, revoked_at, expires_at) "
               "SELECT 'token', jti, CURRENT_TIMESTAMP, max(expires_at) FROM used_jti WHERE kind = 'revoked' "
               "GROUP BY jti")
    op.execute("DELETE FROM used_jti WHERE kind = 'revoked'")


def downgrade() -> None:
    # the revocations are dropped, not moved back: the tokens they cover expire within minutes
    with op.batch_alter_table('token_revocation', schema=None) as batch_op:
        batch_op.drop_index('ix_token_revocation_expires')
    op.drop_table('token_revocation')
