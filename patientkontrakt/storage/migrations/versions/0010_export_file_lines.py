"""export_file_lines: an export file knows what each of its lines is

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

``export_file.patients`` (patient id -> at most 200 resource names, for the access log) becomes
``export_file.lines`` (``[pk, id, patient]`` of each line, in order): a download serves only the
lines its caller may still read under the rules as they are then (``fhir/export.py``), which needs
to know each line's resource. Files written before have no such list; they are derived data that
expires within the hour, so their jobs are removed (a client kicking off again gets them anew).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM export_file")
    op.execute("DELETE FROM export_job")
    with op.batch_alter_table('export_file', schema=None) as batch_op:
        batch_op.drop_column('patients')
        batch_op.add_column(sa.Column('lines', sa.Text(), nullable=False))


def downgrade() -> None:
    op.execute("DELETE FROM export_file")
    op.execute("DELETE FROM export_job")
    with op.batch_alter_table('export_file', schema=None) as batch_op:
        batch_op.drop_column('lines')
        batch_op.add_column(sa.Column('patients', sa.Text(), nullable=False))
