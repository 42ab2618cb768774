"""SQLModel tables (design §4).

``resource`` holds the current version of every resource, ``resource_version`` every version,
and the ``idx_*`` tables the search index rows extracted from the SearchParameter definitions.
Index rows point at ``resource.pk``, a surrogate integer, so joins stay narrow.

Resource bodies are JSONB on PostgreSQL and JSON text on SQLite. They travel through Python
as serialised JSON text in both directions (``JsonText``), so a read streams the stored body
without parsing it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

# BIGINT keys on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid.
BigKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class JsonText(sa.types.TypeDecorator[str]):
    """A JSON document carried as text: JSONB on PostgreSQL, TEXT elsewhere.

    The engine is created with a JSON serializer that passes text through and a deserializer
    that returns the text (see ``database.py``), so no JSON parsing happens on this column.
    """

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(sa.Text())


class Resource(SQLModel, table=True):
    __tablename__ = "resource"
    __table_args__ = (
        sa.UniqueConstraint("res_type", "res_id", name="uq_resource_type_id"),
        sa.Index("ix_resource_type_updated", "res_type", "last_updated"),
    )

    pk: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    res_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    res_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    version_id: int = Field(nullable=False)
    last_updated: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    deleted: bool = Field(default=False, nullable=False)
    body: str = Field(sa_column=sa.Column(JsonText(), nullable=False))


class ResourceVersion(SQLModel, table=True):
    """Every version; ``seq`` orders the whole history of the server."""

    __tablename__ = "resource_version"
    __table_args__ = (
        sa.UniqueConstraint("res_type", "res_id", "version_id", name="uq_version_type_id_version"),
        sa.Index("ix_version_last_updated", "last_updated"),
        sa.Index("ix_version_type_last_updated", "res_type", "last_updated"),
    )

    seq: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    res_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    res_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    version_id: int = Field(nullable=False)
    last_updated: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    method: str = Field(sa_column=sa.Column(sa.String(8), nullable=False))
    deleted: bool = Field(default=False, nullable=False)
    body: str | None = Field(default=None, sa_column=sa.Column(JsonText(), nullable=True))


def _resource_fk() -> sa.Column[int]:
    return sa.Column(BigKey, sa.ForeignKey("resource.pk", ondelete="CASCADE"), nullable=False)


class IdxToken(SQLModel, table=True):
    __tablename__ = "idx_token"
    __table_args__ = (
        sa.Index("ix_token_lookup", "res_type", "param", "code", "system", "resource_pk"),
        sa.Index("ix_token_resource", "resource_pk"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    resource_pk: int = Field(sa_column=_resource_fk())
    res_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    param: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    system: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    code: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))


class IdxString(SQLModel, table=True):
    __tablename__ = "idx_string"
    __table_args__ = (
        sa.Index(
            "ix_string_lookup", "res_type", "param", "value", "resource_pk",
            postgresql_ops={"value": "text_pattern_ops"},
        ),
        sa.Index("ix_string_resource", "resource_pk"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    resource_pk: int = Field(sa_column=_resource_fk())
    res_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    param: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    value: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    exact: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))


class IdxDate(SQLModel, table=True):
    __tablename__ = "idx_date"
    __table_args__ = (
        sa.Index("ix_date_low", "res_type", "param", "low", "resource_pk"),
        sa.Index("ix_date_high", "res_type", "param", "high", "resource_pk"),
        sa.Index("ix_date_resource", "resource_pk"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    resource_pk: int = Field(sa_column=_resource_fk())
    res_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    param: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    low: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    high: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))


class IdxReference(SQLModel, table=True):
    __tablename__ = "idx_reference"
    __table_args__ = (
        sa.Index("ix_reference_lookup", "res_type", "param", "target_id", "target_type", "resource_pk"),
        sa.Index("ix_reference_target", "target_type", "target_id"),
        sa.Index("ix_reference_url", "res_type", "param", "url"),
        sa.Index("ix_reference_resource", "resource_pk"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    resource_pk: int = Field(sa_column=_resource_fk())
    res_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    param: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    target_type: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    target_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    url: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))


class IdxUri(SQLModel, table=True):
    __tablename__ = "idx_uri"
    __table_args__ = (
        sa.Index("ix_uri_lookup", "res_type", "param", "uri", "resource_pk"),
        sa.Index("ix_uri_resource", "resource_pk"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    resource_pk: int = Field(sa_column=_resource_fk())
    res_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    param: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    uri: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))


INDEX_TABLES: dict[str, sa.Table] = {
    "token": IdxToken.__table__,  # type: ignore[attr-defined]
    "string": IdxString.__table__,  # type: ignore[attr-defined]
    "date": IdxDate.__table__,  # type: ignore[attr-defined]
    "reference": IdxReference.__table__,  # type: ignore[attr-defined]
    "uri": IdxUri.__table__,  # type: ignore[attr-defined]
}
RESOURCE: sa.Table = Resource.__table__  # type: ignore[attr-defined]
RESOURCE_VERSION: sa.Table = ResourceVersion.__table__  # type: ignore[attr-defined]
