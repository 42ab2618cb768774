"""export_file_lz4: export files compressed with lz4 where PostgreSQL has it

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

An export writes every resource once more, as ndjson text in ``export_file.content`` (20,000
resources, some 13-20 MB, a file), which PostgreSQL compresses when it stores it and
decompresses when the file is downloaded. With the default (pglz) compressing a file took
0.3-0.45 s of the database's time, with lz4 0.13-0.17 s (N = 100,000: 56 files), for a little
less compression (0.7 MB rather than 0.5 MB for 13 MB of goals). A server built without lz4
keeps pglz; SQLite has no such setting.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HAS_LZ4 = ("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not bind.exec_driver_sql(_HAS_LZ4).scalar():
        return
    op.execute("ALTER TABLE export_file ALTER COLUMN content SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE export_file ALTER COLUMN content SET COMPRESSION default")
