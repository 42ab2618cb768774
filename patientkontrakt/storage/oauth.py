"""The SQL of the authorization server: clients, codes, refresh tokens, seen ``jti`` values and
revocations."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from patientkontrakt.logs import describe
from patientkontrakt.storage.errors import DatabaseError
from patientkontrakt.storage.repository import Store
from patientkontrakt.storage.tables import (
    OAUTH_CLIENT,
    OAUTH_CODE,
    REFRESH_TOKEN,
    SUBSCRIPTION,
    TOKEN_REVOCATION,
    USED_JTI,
)

C = OAUTH_CLIENT.c
K = OAUTH_CODE.c
T = REFRESH_TOKEN.c
J = USED_JTI.c
X = TOKEN_REVOCATION.c


@dataclass(frozen=True)
class Revoked:
    """A revocation: ``kind`` token (``value`` a jti), session (a refresh token family, the ``sid``
    of its access tokens) or client (a client_id); it matters until ``expires_at``."""

    kind: str
    value: str
    expires_at: datetime


@dataclass(frozen=True)
class ClientRow:
    client_id: str
    name: str
    kind: str
    redirect_uris: str
    jwks: str | None
    jwks_uri: str | None
    scope: str
    care_unit: str | None
    created: datetime


@dataclass(frozen=True)
class CodeRow:
    code_hash: str
    client_id: str
    redirect_uri: str
    scope: str
    grant: str
    code_challenge: str
    nonce: str | None
    expires_at: datetime
    used_at: datetime | None
    family_id: str | None


@dataclass(frozen=True)
class RefreshRow:
    token_hash: str
    family_id: str
    client_id: str
    scope: str
    grant: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


class OAuthStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    # -- clients ---------------------------------------------------------------------------

    async def client(self, client_id: str) -> ClientRow | None:
        async with self._store.reading() as unit:
            row = (await unit.conn.execute(sa.select(*OAUTH_CLIENT.c).where(C.client_id == client_id))).first()
        return ClientRow(**row._mapping) if row else None

    async def clients(self) -> list[ClientRow]:
        async with self._store.reading() as unit:
            rows = (await unit.conn.execute(sa.select(*OAUTH_CLIENT.c).order_by(C.client_id))).all()
        return [ClientRow(**r._mapping) for r in rows]

    async def save_client(self, values: dict[str, Any]) -> None:
        """Insert or replace a client registration."""
        async with self._store.writing() as unit:
            await unit.conn.execute(sa.delete(OAUTH_CLIENT).where(C.client_id == values["client_id"]))
            await unit.conn.execute(sa.insert(OAUTH_CLIENT).values(**values))

    async def remove_client(self, client_id: str, now: datetime, tokens_until: datetime) -> bool:
        """Remove a registration; its refresh tokens are revoked, and its access tokens with them
        (a ``client`` revocation until ``tokens_until``), and its Subscriptions stop: their
        delivery state becomes ``error`` (``SUBSCRIBER_REMOVED``), so the worker sends nothing
        more to a client that may no longer read anything."""
        async with self._store.writing() as unit:
            result = await unit.conn.execute(sa.delete(OAUTH_CLIENT).where(C.client_id == client_id))
            await unit.conn.execute(sa.update(REFRESH_TOKEN).where(T.client_id == client_id, T.revoked_at.is_(None))
                                    .values(revoked_at=now))
            if result.rowcount:
                await _record(unit.conn, [Revoked("client", client_id, tokens_until)], now)
                await _stop_subscriptions(unit.conn, client_id)
        return bool(result.rowcount)

    # -- codes -----------------------------------------------------------------------------

    async def add_code(self, values: dict[str, Any]) -> None:
        async with self._store.writing() as unit:
            await unit.conn.execute(sa.insert(OAUTH_CODE).values(**values))

    async def use_code(self, code_hash: str, now: datetime, family_id: str) -> CodeRow | None:
        """Mark the code used and return it as it was before; a code can be used once (a second
        use finds ``used_at`` set). Returns None for an unknown code."""
        async with self._store.writing() as unit:
            row = (await unit.conn.execute(
                sa.select(*OAUTH_CODE.c).where(K.code_hash == code_hash).with_for_update())).first()
            if row is None:
                return None
            code = CodeRow(**row._mapping)
            if code.used_at is None:
                await unit.conn.execute(sa.update(OAUTH_CODE).where(K.code_hash == code_hash)
                                        .values(used_at=now, family_id=family_id))
        return code

    # -- refresh tokens --------------------------------------------------------------------

    async def add_refresh(self, values: dict[str, Any]) -> None:
        async with self._store.writing() as unit:
            await unit.conn.execute(sa.insert(REFRESH_TOKEN).values(**values))

    async def rotate_refresh(self, token_hash: str, now: datetime, successor: dict[str, Any] | None,
                             tokens_until: datetime) -> RefreshRow | None:
        """Use a refresh token: if it is live, mark it used and store ``successor`` (same family)
        in one transaction; if it was used before, revoke its whole family with its access tokens
        (a stolen token was replayed; see ``revoke_family``). Returns the row as it was, or None if
        unknown."""
        async with self._store.writing() as unit:
            row = (await unit.conn.execute(
                sa.select(*REFRESH_TOKEN.c).where(T.token_hash == token_hash).with_for_update())).first()
            if row is None:
                return None
            token = RefreshRow(**row._mapping)
            if token.used_at is not None:
                await _revoke_family(unit.conn, token.family_id, now, tokens_until)
            elif token.revoked_at is None and token.expires_at > now and successor is not None:
                await unit.conn.execute(sa.update(REFRESH_TOKEN).where(T.token_hash == token_hash).values(used_at=now))
                await unit.conn.execute(sa.insert(REFRESH_TOKEN).values(**successor))
        return token

    async def refresh(self, token_hash: str) -> RefreshRow | None:
        async with self._store.reading() as unit:
            row = (await unit.conn.execute(sa.select(*REFRESH_TOKEN.c).where(T.token_hash == token_hash))).first()
        return RefreshRow(**row._mapping) if row else None

    async def revoke_family(self, family_id: str, now: datetime, tokens_until: datetime) -> None:
        """End a sign-in: its refresh tokens, and (a ``session`` revocation until ``tokens_until``)
        the access tokens issued in it."""
        async with self._store.writing() as unit:
            await _revoke_family(unit.conn, family_id, now, tokens_until)

    # -- revocations -----------------------------------------------------------------------

    async def revoke(self, revoked: list[Revoked], now: datetime) -> None:
        async with self._store.writing() as unit:
            await _record(unit.conn, revoked, now)

    async def live_revocations(self, now: datetime) -> list[tuple[str, str]]:
        """``(kind, value)`` of every revocation that still matters. Raises ``DatabaseUnavailable``
        in an outage and ``DatabaseError`` on any other failure of the database."""
        try:
            async with self._store.reading() as unit:
                rows = (await unit.conn.execute(sa.select(X.kind, X.value).where(X.expires_at > now))).all()
        except SQLAlchemyError as exc:
            raise DatabaseError(describe(exc)) from exc
        return [(row.kind, row.value) for row in rows]

    async def is_revoked(self, keys: list[tuple[str, str]], now: datetime) -> bool:
        """Whether any of ``(kind, value)`` is revoked (introspection asks the database itself)."""
        async with self._store.reading() as unit:
            found = (await unit.conn.execute(sa.select(X.kind).where(
                sa.tuple_(X.kind, X.value).in_(keys), X.expires_at > now).limit(1))).first()
        return found is not None

    # -- jti -------------------------------------------------------------------------------

    async def remember_jti(self, kind: str, issuer: str, jti: str, expires_at: datetime, now: datetime) -> bool:
        """Record a ``jti``; False if it was already recorded and has not expired (a replay)."""
        try:
            async with self._store.writing() as unit:
                await unit.conn.execute(sa.delete(USED_JTI).where(J.expires_at < now))
                seen = (await unit.conn.execute(sa.select(J.jti).where(
                    J.kind == kind, J.issuer == issuer, J.jti == jti))).first()
                if seen is not None:
                    return False
                await unit.conn.execute(sa.insert(USED_JTI).values(kind=kind, issuer=issuer, jti=jti,
                                                                   expires_at=expires_at))
        except IntegrityError:  # the same jti, recorded at the same moment by another request
            return False
        return True


SUBSCRIBER_REMOVED = "the client that created this Subscription was removed; nothing more is delivered"


async def _stop_subscriptions(conn: AsyncConnection, client_id: str) -> None:
    """Put the Subscriptions ``client_id`` created (``subscription.principal``, see
    ``security/stored_access.py``) in status ``error``: the worker delivers only ``requested`` and
    ``active`` ones."""
    S = SUBSCRIPTION.c
    live = sa.select(S.resource_pk, S.principal).where(S.status.in_(("requested", "active")))
    rows = (await conn.execute(live)).all()
    stopped = [pk for pk, principal in rows if _client_of(principal) == client_id]
    if stopped:
        await conn.execute(SUBSCRIPTION.update().where(S.resource_pk.in_(stopped))
                           .values(status="error", error=SUBSCRIBER_REMOVED, lease_owner=None, lease_until=None))


def _client_of(principal: Any) -> str | None:
    try:
        who = json.loads(principal).get("principal") or {}
    except (ValueError, AttributeError):
        return None
    client = who.get("client_id") if isinstance(who, dict) else None
    return client if isinstance(client, str) else None


async def _revoke_family(conn: AsyncConnection, family_id: str, now: datetime, tokens_until: datetime) -> None:
    await conn.execute(sa.update(REFRESH_TOKEN).where(
        T.family_id == family_id, T.revoked_at.is_(None)).values(revoked_at=now))
    await _record(conn, [Revoked("session", family_id, tokens_until)], now)


async def _record(conn: AsyncConnection, revoked: list[Revoked], now: datetime) -> None:
    """Insert revocations (one already recorded stays as it is) and forget those that expired."""
    await conn.execute(sa.delete(TOKEN_REVOCATION).where(X.expires_at <= now))
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    await conn.execute(insert(TOKEN_REVOCATION).values([
        {"kind": r.kind, "value": r.value, "revoked_at": now, "expires_at": r.expires_at} for r in revoked
    ]).on_conflict_do_nothing())
