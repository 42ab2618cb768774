"""audit_request_id: each access-log entry keeps the id of the request that wrote it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

``audit_log.request_id``: the request's id (its ``X-Request-ID``, api/requestlog.py) or the id of
a notification's delivery attempt (notify/worker.py), so that an entry can be found in the
application log and in an EHR's own records, and the other way round. Like ``reason`` (0007) the
leaf covers it only when it holds a value (``storage/audit.py``, ``OPTIONAL``), so the leaves of
the entries written before are unchanged and the sealed tree still verifies.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('audit_log', sa.Column('request_id', sa.String(64), nullable=True))


def downgrade() -> None:
    # An entry's leaf covers its request id: dropping the ids would make every such entry fail
    # `audit verify` as changed after it was sealed. Only a log that holds none goes back.
    if op.get_bind().execute(sa.text('SELECT 1 FROM audit_log WHERE request_id IS NOT NULL LIMIT 1')).first():
        raise RuntimeError('audit_log holds request ids that its sealed leaves cover; '
                           'downgrading below 0012 would break the verification of the access log')
    op.drop_column('audit_log', 'request_id')
