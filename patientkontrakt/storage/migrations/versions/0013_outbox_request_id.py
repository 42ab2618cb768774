"""outbox_request_id: each queued notification keeps the id of the request whose write queued it

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

``subscription_outbox.request_id``: the ``X-Request-ID`` of the API request (api/requestlog.py)
whose write queued the notification, sent with every delivery attempt as ``X-Correlation-ID``
(notify/delivery.py), so that a receiver's record of a notification leads to the write in the
application log and the access log. Rows queued before have none (their notifications go without
the header).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('subscription_outbox', sa.Column('request_id', sa.String(64), nullable=True))


def downgrade() -> None:
    # Only the correlation of notifications not yet delivered is lost: they are still delivered.
    with op.batch_alter_table('subscription_outbox') as batch:
        batch.drop_column('request_id')
