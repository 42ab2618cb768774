"""export: Bulk Data $export jobs and their ndjson files

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

``export_job`` holds a kicked-off ``$export`` (who asked, what, its state and the runner's lease);
``export_file`` its output, one ndjson text per resource type and part. No local files: any API
process may answer a status request or serve a file (design §9).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('export_job',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=400), nullable=False),
    sa.Column('access', sa.Text(), nullable=False),
    sa.Column('request', sa.Text(), nullable=False),
    sa.Column('params', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.String(length=200), nullable=True),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('transaction_time', sa.DateTime(), nullable=True),
    sa.Column('finished', sa.DateTime(), nullable=True),
    sa.Column('expires', sa.DateTime(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('export_job', schema=None) as batch_op:
        batch_op.create_index('ix_export_job_due', ['status', 'created'], unique=False)
        batch_op.create_index('ix_export_job_owner', ['owner', 'status'], unique=False)

    op.create_table('export_file',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('part', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('patients', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['export_job.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('export_file', schema=None) as batch_op:
        batch_op.create_index('ix_export_file_job', ['job_id', 'res_type', 'part'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('export_file', schema=None) as batch_op:
        batch_op.drop_index('ix_export_file_job')

    op.drop_table('export_file')
    with op.batch_alter_table('export_job', schema=None) as batch_op:
        batch_op.drop_index('ix_export_job_owner')
        batch_op.drop_index('ix_export_job_due')

    op.drop_table('export_job')
