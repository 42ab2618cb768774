"""SQLModel tables (design §4).

``resource`` holds the current version of every resource, ``resource_version`` every version,
and the ``idx_*`` tables the search index rows extracted from the SearchParameter definitions.
Index rows point at ``resource.pk``, a surrogate integer, so joins stay narrow.

Resource bodies are JSONB on PostgreSQL and JSON text on SQLite. They travel through Python
as serialised JSON text in both directions (``JsonText``), so a read streams the stored body
without parsing it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
        sa.Index("ix_resource_patient", "patient_id", "res_type"),
    )

    pk: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    res_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    res_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    version_id: int = Field(nullable=False)
    last_updated: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    deleted: bool = Field(default=False, nullable=False)
    body: str = Field(sa_column=sa.Column(JsonText(), nullable=False))
    # The id of the Patient whose compartment the resource is in (its own id for a Patient), set
    # at write time: access rules and the access log read it without parsing the body.
    patient_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    # Who owns the resource (Patientdatalagen: the care provider whose record it is), set by
    # storage when it is created, never from the body: the care unit that wrote it (its
    # Organization id) and that unit's care provider (vårdgivare, HSA-id). An update keeps them.
    # NULL for what belongs to no provider (the directory, what a patient writes about themself).
    owner_unit: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    owner_provider: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))


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
        # What a resource references, by parameter: the access rules probe it row by row.
        sa.Index("ix_reference_source", "resource_pk", "param", "target_type", "target_id"),
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


class ConsentRule(SQLModel, table=True):
    """What an active Consent (samtycke or spärr) says, in the form the access rules probe: one
    row per (recipient, custodian) pair of its ``provision.actor``s, written with the Consent and
    replaced when it changes (none while it is not ``active``). A recipient (IRCP) is the care
    unit (``recipient_unit``, Organization id) or provider (``recipient_provider``, HSA-id) that
    may read; a custodian (CST) the unit or provider whose data the provision is about (both NULL
    on a samtycke: every other provider's data). ``starts``/``ends``: ``provision.period`` (UTC)."""

    __tablename__ = "consent_rule"
    __table_args__ = (
        sa.Index("ix_consent_rule_patient", "patient_id", "kind"),
        sa.Index("ix_consent_rule_consent", "consent_pk"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    consent_pk: int = Field(sa_column=_resource_fk())
    patient_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # samtycke | inre-sparr | yttre-sparr
    recipient_unit: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    recipient_provider: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    custodian_unit: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    custodian_provider: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    starts: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))
    ends: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))


class SubscriptionState(SQLModel, table=True):
    """The delivery state of a ``Subscription`` resource (R4 subscription.html, and the topic-based
    form of the Subscriptions R5 Backport IG): one row per stored Subscription, written with it.

    ``principal``: what the worker needs to judge, at delivery time, what the subscriber may read
    (JSON; the identity and care unit of whoever created the Subscription). ``events_since_start``:
    the last event number given out (SubscriptionStatus.eventsSinceSubscriptionStart). The worker
    that delivers holds a lease (``lease_owner`` until ``lease_until``) instead of a transaction
    across the HTTP call; ``next_attempt`` is when the subscription is due again after a failure."""

    __tablename__ = "subscription"
    __table_args__ = (sa.Index("ix_subscription_due", "status", "next_attempt"),)

    resource_pk: int = Field(sa_column=sa.Column(BigKey, sa.ForeignKey("resource.pk", ondelete="CASCADE"),
                                                 primary_key=True, autoincrement=False))
    res_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # requested | active | error | off
    topic: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))  # backport topic URL
    channel: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # rest-hook
    endpoint: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    content: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # empty | id-only | full-resource
    headers: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # JSON array of "Name: value"
    principal: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # JSON
    events_since_start: int = Field(default=0, sa_column=sa.Column(sa.BigInteger(), nullable=False))
    failures: int = Field(default=0, nullable=False)  # consecutive failed attempts
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    next_attempt: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))
    lease_owner: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    lease_until: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))
    last_delivered: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))


class SubscriptionTrigger(SQLModel, table=True):
    """What a subscription watches: one row per resource type, with the search query (without the
    type, ``''`` for every resource of it) a changed resource must match. An R4 ``criteria`` gives
    one row; a backport topic one per resource type it covers, with the subscription's filters."""

    __tablename__ = "subscription_trigger"
    __table_args__ = (
        sa.Index("ix_subscription_trigger_type", "res_type"),
        sa.Index("ix_subscription_trigger_subscription", "subscription_pk"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    subscription_pk: int = Field(sa_column=sa.Column(BigKey, sa.ForeignKey("subscription.resource_pk",
                                                                           ondelete="CASCADE"), nullable=False))
    res_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    query: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))


class SubscriptionOutbox(SQLModel, table=True):
    """Notifications to deliver, written in the same database transaction as the change (or the
    handshake) they announce; ``delivered`` once the endpoint accepted it. ``event_number`` is
    given the first time the worker tries it and kept across retries, so a receiver can
    de-duplicate. Per subscription, delivery follows ``id``."""

    __tablename__ = "subscription_outbox"
    __table_args__ = (
        sa.Index("ix_outbox_pending", "subscription_pk", "delivered", "id"),
        sa.Index("ix_outbox_created", "created"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    subscription_pk: int = Field(sa_column=sa.Column(BigKey, sa.ForeignKey("subscription.resource_pk",
                                                                           ondelete="CASCADE"), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # handshake | event | heartbeat
    res_type: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    res_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    version_id: int | None = Field(default=None, nullable=True)
    event_number: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger(), nullable=True))
    created: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    attempts: int = Field(default=0, nullable=False)
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    delivered: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))
    # The id of the request whose write queued it (X-Request-ID; migration 0013), sent with each
    # attempt as X-Correlation-ID.
    request_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))


class ExportJob(SQLModel, table=True):
    """A Bulk Data ``$export`` (Bulk Data Access IG 2.0): kicked off by a backend client, run in
    the background by whichever process claims it (``lease_owner`` until ``lease_until``), its
    files in ``export_file``. ``id`` is random and unguessable: it is in the status URL.

    ``owner``: who may poll it and download its files (client, principal, care unit); ``access``:
    what the runner needs to rebuild the caller's access rules (JSON, ``security/stored_access.py``).
    ``params``: the checked kick-off parameters (JSON). ``expires``: when it and its files go."""

    __tablename__ = "export_job"
    __table_args__ = (
        sa.Index("ix_export_job_due", "status", "created"),
        sa.Index("ix_export_job_owner", "owner", "status"),
    )

    id: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    owner: str = Field(sa_column=sa.Column(sa.String(400), nullable=False))
    access: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # JSON
    request: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # the kick-off URL
    params: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # JSON
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # queued | running | done | failed
    progress: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    created: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    transaction_time: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))
    finished: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))
    expires: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    lease_owner: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    lease_until: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))


class ExportFile(SQLModel, table=True):
    """One ndjson file of an export: ``count`` resources of one type (part ``part`` of that type),
    and what each line is (``lines``: JSON, ``[pk, id, patient]`` per line, in order): a download
    serves only the lines the caller may still read, and logs them under their patients."""

    __tablename__ = "export_file"
    __table_args__ = (sa.Index("ix_export_file_job", "job_id", "res_type", "part"),)

    id: int | None = Field(default=None, sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    job_id: str = Field(sa_column=sa.Column(sa.String(64), sa.ForeignKey("export_job.id", ondelete="CASCADE"),
                                            nullable=False))
    res_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    part: int = Field(nullable=False)
    count: int = Field(nullable=False)
    content: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # ndjson
    lines: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # JSON: [pk, id, patient] of each line


class ServerState(SQLModel, table=True):
    """Small facts about the database itself, e.g. which search parameters its index was built with."""

    __tablename__ = "server_state"

    key: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    value: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))


class AuditLog(SQLModel, table=True):
    """The access log of Patientdatalagen (4 kap 3 §): append-only, one row per patient touched.

    ``seq`` is the entry's id (the AuditEvent id): on PostgreSQL from the sequence
    ``audit_log_seq`` at insert, on SQLite the previous + 1 under its single writer. It is unique
    and follows the order of writing, with a gap where a transaction rolled back; the order that is
    proven is the entry's position in the Merkle tree (``AuditLeaf``). On PostgreSQL the table is
    partitioned by month of ``recorded`` (migration 0005), hence ``recorded`` in the key. Triggers
    refuse UPDATE, DELETE and TRUNCATE.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_patient", "patient_id", "seq"),
        sa.Index("ix_audit_recorded", "recorded"),
        sa.Index("ix_audit_user", "user_id", "seq"),
        sa.Index("ix_audit_care_unit", "care_unit", "seq"),
        sa.Index("ix_audit_care_provider", "care_provider", "seq"),  # a provider's log review
        {"postgresql_partition_by": "RANGE (recorded)"},
    )

    seq: int = Field(sa_column=sa.Column(BigKey, primary_key=True, autoincrement=True))
    recorded: datetime = Field(sa_column=sa.Column(sa.DateTime(), primary_key=True))
    user_id: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    user_name: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    user_kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    role: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    fhir_user: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    care_unit: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    care_unit_name: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    care_provider: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    client_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    interaction: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    request: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    resources: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # JSON array of "Type/id"
    patient_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    outcome: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    status: int = Field(nullable=False)
    purpose: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    # Why, when the purpose needs one: the reason typed for an emergency access (ETREAT).
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    # The id of the request (X-Request-ID) or notification delivery that wrote it (migration 0012).
    request_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))


class AuditQueue(SQLModel, table=True):
    """Entries written but not yet sealed, with the leaf hash of their content (computed when
    written): the sealer's queue, the only audit table whose rows are deleted (by the sealer)."""

    __tablename__ = "audit_queue"

    seq: int = Field(sa_column=sa.Column(BigKey, primary_key=True, autoincrement=False))
    recorded: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    leaf_hash: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))


class AuditLeaf(SQLModel, table=True):
    """The Merkle tree's leaves: each sealed entry's position (0, 1, 2, ... without gaps) and leaf
    hash. Small and kept for good: the tree verifies even when old entries are archived."""

    __tablename__ = "audit_leaf"
    __table_args__ = (sa.Index("ix_audit_leaf_seq", "seq", unique=True),)

    position: int = Field(sa_column=sa.Column(BigKey, primary_key=True, autoincrement=False))
    seq: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    recorded: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    leaf_hash: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))


class AuditCheckpoint(SQLModel, table=True):
    """A signed checkpoint of the tree at ``tree_size`` (the note as signed and exported) and the
    tree's right edge at that size, from which the sealer goes on."""

    __tablename__ = "audit_checkpoint"

    tree_size: int = Field(sa_column=sa.Column(BigKey, primary_key=True, autoincrement=False))
    note: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    frontier: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))


class OAuthClient(SQLModel, table=True):
    """A registered OAuth client (SMART app, the pages, an EHR backend)."""

    __tablename__ = "oauth_client"

    client_id: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # public | confidential | backend
    redirect_uris: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # JSON array
    jwks: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))  # JSON JWK Set
    jwks_uri: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    scope: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # the scopes it may be granted
    care_unit: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))  # HSA-id
    created: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))


class OAuthCode(SQLModel, table=True):
    """An authorization code: stored as its SHA-256, usable once, for about a minute."""

    __tablename__ = "oauth_code"

    code_hash: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    client_id: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    redirect_uri: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    scope: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    grant: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))  # JSON: identity and launch context
    code_challenge: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    nonce: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    expires_at: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))
    family_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))


class RefreshToken(SQLModel, table=True):
    """A refresh token (its SHA-256). Each use rotates it; reuse of a used one revokes its family."""

    __tablename__ = "refresh_token"
    __table_args__ = (sa.Index("ix_refresh_family", "family_id"),)

    token_hash: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    family_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    client_id: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))
    scope: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    grant: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    issued_at: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(), nullable=True))


class UsedJti(SQLModel, table=True):
    """``jti`` values of client assertions already seen (a replay is refused)."""

    __tablename__ = "used_jti"

    kind: str = Field(sa_column=sa.Column(sa.String(16), primary_key=True))  # assertion
    issuer: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    jti: str = Field(sa_column=sa.Column(sa.String(255), primary_key=True))
    expires_at: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))


class TokenRevocation(SQLModel, table=True):
    """What ended before it expired: an access token (``token``, its ``jti``), a sign-in (``session``:
    a refresh token family, the ``sid`` of its access tokens), or every token of a removed client
    (``client``). Kept until every access token it covers has expired (``expires_at``); every
    process of the service reads the live rows (``security/revocation.py``)."""

    __tablename__ = "token_revocation"
    __table_args__ = (sa.Index("ix_token_revocation_expires", "expires_at"),)

    kind: str = Field(sa_column=sa.Column(sa.String(16), primary_key=True))  # token | session | client
    value: str = Field(sa_column=sa.Column(sa.String(255), primary_key=True))
    revoked_at: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=sa.Column(sa.DateTime(), nullable=False))


_PARTITION = re.compile(r"audit_log_(y\d{4}m\d{2}|default)")


def in_models(name: str | None, type_: str, parent_names: Mapping[Any, Any]) -> bool:
    """Whether a database object is one the models describe (Alembic's ``include_name``): not the
    monthly partitions of ``audit_log``, which the sealer creates as months come."""
    return not (type_ == "table" and name is not None and _PARTITION.fullmatch(name))


INDEX_TABLES: dict[str, sa.Table] = {
    "token": IdxToken.__table__,  # type: ignore[attr-defined]
    "string": IdxString.__table__,  # type: ignore[attr-defined]
    "date": IdxDate.__table__,  # type: ignore[attr-defined]
    "reference": IdxReference.__table__,  # type: ignore[attr-defined]
    "uri": IdxUri.__table__,  # type: ignore[attr-defined]
}
RESOURCE: sa.Table = Resource.__table__  # type: ignore[attr-defined]
RESOURCE_VERSION: sa.Table = ResourceVersion.__table__  # type: ignore[attr-defined]
SERVER_STATE: sa.Table = ServerState.__table__  # type: ignore[attr-defined]
CONSENT_RULE: sa.Table = ConsentRule.__table__  # type: ignore[attr-defined]
AUDIT_LOG: sa.Table = AuditLog.__table__  # type: ignore[attr-defined]
AUDIT_QUEUE: sa.Table = AuditQueue.__table__  # type: ignore[attr-defined]
AUDIT_LEAF: sa.Table = AuditLeaf.__table__  # type: ignore[attr-defined]
AUDIT_CHECKPOINT: sa.Table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
OAUTH_CLIENT: sa.Table = OAuthClient.__table__  # type: ignore[attr-defined]
OAUTH_CODE: sa.Table = OAuthCode.__table__  # type: ignore[attr-defined]
REFRESH_TOKEN: sa.Table = RefreshToken.__table__  # type: ignore[attr-defined]
USED_JTI: sa.Table = UsedJti.__table__  # type: ignore[attr-defined]
TOKEN_REVOCATION: sa.Table = TokenRevocation.__table__  # type: ignore[attr-defined]
SUBSCRIPTION: sa.Table = SubscriptionState.__table__  # type: ignore[attr-defined]
SUBSCRIPTION_TRIGGER: sa.Table = SubscriptionTrigger.__table__  # type: ignore[attr-defined]
SUBSCRIPTION_OUTBOX: sa.Table = SubscriptionOutbox.__table__  # type: ignore[attr-defined]
EXPORT_JOB: sa.Table = ExportJob.__table__  # type: ignore[attr-defined]
EXPORT_FILE: sa.Table = ExportFile.__table__  # type: ignore[attr-defined]
