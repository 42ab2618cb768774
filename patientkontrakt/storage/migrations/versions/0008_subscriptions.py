"""subscriptions: their delivery state, what each watches, and the outbox

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

A ``Subscription`` resource is stored as any resource; ``subscription`` holds its delivery state
(status, endpoint, the subscriber's principal, the worker's lease), ``subscription_trigger`` what
it watches (resource type and search query), and ``subscription_outbox`` the notifications a
change owes, written in the same transaction as the change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('subscription',
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('topic', sa.Text(), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('endpoint', sa.Text(), nullable=False),
    sa.Column('content', sa.String(length=16), nullable=False),
    sa.Column('headers', sa.Text(), nullable=False),
    sa.Column('principal', sa.Text(), nullable=False),
    sa.Column('events_since_start', sa.BigInteger(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('next_attempt', sa.DateTime(), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(), nullable=True),
    sa.Column('last_delivered', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['resource_pk'], ['resource.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('resource_pk')
    )
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.create_index('ix_subscription_due', ['status', 'next_attempt'], unique=False)

    op.create_table('subscription_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('subscription_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=True),
    sa.Column('res_id', sa.String(length=64), nullable=True),
    sa.Column('version_id', sa.Integer(), nullable=True),
    sa.Column('event_number', sa.BigInteger(), nullable=True),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('delivered', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['subscription_pk'], ['subscription.resource_pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('subscription_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_created', ['created'], unique=False)
        batch_op.create_index('ix_outbox_pending', ['subscription_pk', 'delivered', 'id'], unique=False)

    op.create_table('subscription_trigger',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('subscription_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('query', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['subscription_pk'], ['subscription.resource_pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('subscription_trigger', schema=None) as batch_op:
        batch_op.create_index('ix_subscription_trigger_subscription', ['subscription_pk'], unique=False)
        batch_op.create_index('ix_subscription_trigger_type', ['res_type'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('subscription_trigger', schema=None) as batch_op:
        batch_op.drop_index('ix_subscription_trigger_type')
        batch_op.drop_index('ix_subscription_trigger_subscription')

    op.drop_table('subscription_trigger')
    with op.batch_alter_table('subscription_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_pending')
        batch_op.drop_index('ix_outbox_created')

    op.drop_table('subscription_outbox')
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.drop_index('ix_subscription_due')

    op.drop_table('subscription')
