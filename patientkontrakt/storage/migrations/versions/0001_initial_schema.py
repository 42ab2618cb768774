"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23

Tables of design §4: current resources, every version, and the search index tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_JSON = sa.Text().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table('resource',
    sa.Column('pk', _KEY, autoincrement=True, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.DateTime(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('body', _JSON, nullable=False),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('res_type', 'res_id', name='uq_resource_type_id')
    )
    op.create_index('ix_resource_type_updated', 'resource', ['res_type', 'last_updated'], unique=False)
    op.create_table('resource_version',
    sa.Column('seq', _KEY, autoincrement=True, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.DateTime(), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('body', _JSON, nullable=True),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('res_type', 'res_id', 'version_id', name='uq_version_type_id_version')
    )
    op.create_index('ix_version_last_updated', 'resource_version', ['last_updated'], unique=False)
    op.create_index('ix_version_type_last_updated', 'resource_version', ['res_type', 'last_updated'], unique=False)
    op.create_table('idx_date',
    sa.Column('id', _KEY, autoincrement=True, nullable=False),
    sa.Column('resource_pk', _KEY, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('low', sa.DateTime(), nullable=False),
    sa.Column('high', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_date_high', 'idx_date', ['res_type', 'param', 'high', 'resource_pk'], unique=False)
    op.create_index('ix_date_low', 'idx_date', ['res_type', 'param', 'low', 'resource_pk'], unique=False)
    op.create_index('ix_date_resource', 'idx_date', ['resource_pk'], unique=False)
    op.create_table('idx_reference',
    sa.Column('id', _KEY, autoincrement=True, nullable=False),
    sa.Column('resource_pk', _KEY, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('url', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_reference_lookup', 'idx_reference', ['res_type', 'param', 'target_id', 'target_type', 'resource_pk'], unique=False)
    op.create_index('ix_reference_resource', 'idx_reference', ['resource_pk'], unique=False)
    op.create_index('ix_reference_target', 'idx_reference', ['target_type', 'target_id'], unique=False)
    op.create_index('ix_reference_url', 'idx_reference', ['res_type', 'param', 'url'], unique=False)
    op.create_table('idx_string',
    sa.Column('id', _KEY, autoincrement=True, nullable=False),
    sa.Column('resource_pk', _KEY, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('exact', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_string_lookup', 'idx_string', ['res_type', 'param', 'value', 'resource_pk'], unique=False, postgresql_ops={'value': 'text_pattern_ops'})
    op.create_index('ix_string_resource', 'idx_string', ['resource_pk'], unique=False)
    op.create_table('idx_token',
    sa.Column('id', _KEY, autoincrement=True, nullable=False),
    sa.Column('resource_pk', _KEY, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('system', sa.Text(), nullable=True),
    sa.Column('code', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_token_lookup', 'idx_token', ['res_type', 'param', 'code', 'system', 'resource_pk'], unique=False)
    op.create_index('ix_token_resource', 'idx_token', ['resource_pk'], unique=False)
    op.create_table('idx_uri',
    sa.Column('id', _KEY, autoincrement=True, nullable=False),
    sa.Column('resource_pk', _KEY, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('uri', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_uri_lookup', 'idx_uri', ['res_type', 'param', 'uri', 'resource_pk'], unique=False)
    op.create_index('ix_uri_resource', 'idx_uri', ['resource_pk'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_uri_resource', table_name='idx_uri')
    op.drop_index('ix_uri_lookup', table_name='idx_uri')
    op.drop_table('idx_uri')
    op.drop_index('ix_token_resource', table_name='idx_token')
    op.drop_index('ix_token_lookup', table_name='idx_token')
    op.drop_table('idx_token')
    op.drop_index('ix_string_resource', table_name='idx_string')
    op.drop_index('ix_string_lookup', table_name='idx_string', postgresql_ops={'value': 'text_pattern_ops'})
    op.drop_table('idx_string')
    op.drop_index('ix_reference_url', table_name='idx_reference')
    op.drop_index('ix_reference_target', table_name='idx_reference')
    op.drop_index('ix_reference_resource', table_name='idx_reference')
    op.drop_index('ix_reference_lookup', table_name='idx_reference')
    op.drop_table('idx_reference')
    op.drop_index('ix_date_resource', table_name='idx_date')
    op.drop_index('ix_date_low', table_name='idx_date')
    op.drop_index('ix_date_high', table_name='idx_date')
    op.drop_table('idx_date')
    op.drop_index('ix_version_type_last_updated', table_name='resource_version')
    op.drop_index('ix_version_last_updated', table_name='resource_version')
    op.drop_table('resource_version')
    op.drop_index('ix_resource_type_updated', table_name='resource')
    op.drop_table('resource')
