"""The revocation list in storage (``OAuthStore``), on both backends: recorded once, kept until it
no longer matters, and the ``revoked`` rows of ``used_jti`` moved by migration 0006."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.security.revocation import Revocations
from patientkontrakt.storage.database import create_engine, migrate
from patientkontrakt.storage.errors import DatabaseError
from patientkontrakt.storage.oauth import OAuthStore, Revoked
from patientkontrakt.storage.repository import Store
from tests.storage.test_migrations import _on_connection, fresh_url  # noqa: F401  (the fixture)


async def test_revocations_are_kept_until_they_no_longer_matter(store: Store) -> None:
    oauth = OAuthStore(store)
    now = now_utc()
    soon, later, past = now + timedelta(minutes=5), now + timedelta(minutes=16), now - timedelta(seconds=1)
    await oauth.revoke([Revoked("token", "jti-1", soon), Revoked("client", "app", later)], now)
    await oauth.revoke([Revoked("token", "jti-1", later), Revoked("token", "gone", past)], now)  # again: kept once
    await oauth.revoke_family("family-1", now, later)
    assert sorted(await oauth.live_revocations(now)) == [
        ("client", "app"), ("session", "family-1"), ("token", "jti-1")]
    assert await oauth.is_revoked([("token", "other"), ("session", "family-1")], now)
    assert not await oauth.is_revoked([("token", "other"), ("session", "family-2"), ("token", "gone")], now)
    # once the tokens it covers have expired, a revocation is no longer in force (the first expiry of
    # jti-1 holds: recording it again changed nothing), and the next revocation deletes it
    assert sorted(await oauth.live_revocations(soon + timedelta(seconds=1))) == [("client", "app"),
                                                                                 ("session", "family-1")]
    await oauth.revoke([Revoked("token", "jti-2", later + timedelta(minutes=1))], later + timedelta(seconds=1))
    assert await oauth.live_revocations(now) == [("token", "jti-2")]


def test_migration_0006_moves_the_revoked_jtis(fresh_url: str) -> None:  # noqa: F811
    migrate(fresh_url, "0004")
    expires = now_utc() + timedelta(minutes=10)

    def revoked_before(conn: sa.Connection) -> None:
        conn.execute(sa.text("INSERT INTO used_jti (kind, issuer, jti, expires_at) VALUES "
                             "('revoked', 'app', 'jti-a', :e), ('assertion', 'ehr', 'jti-b', :e)"), {"e": expires})

    asyncio.run(_on_connection(fresh_url, revoked_before))
    migrate(fresh_url)

    async def state() -> tuple[list[tuple[str, str]], list[str]]:
        store = Store(create_engine(fresh_url, pool_size=1))
        try:
            live = await OAuthStore(store).live_revocations(now_utc())
            async with store.reading() as unit:
                kinds = [row[0] for row in (await unit.conn.execute(sa.text("SELECT kind FROM used_jti"))).all()]
            return live, kinds
        finally:
            await store.dispose()

    assert asyncio.run(state()) == ([("token", "jti-a")], ["assertion"])


async def test_a_failed_reload_keeps_the_list_in_force(tmp_path: Path) -> None:
    """A database error that is no outage (here: no tables) is storage's ``DatabaseError``; the
    revocation list goes on with what it had and tries again an interval later."""
    store = Store(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"))
    try:
        with pytest.raises(DatabaseError):
            await OAuthStore(store).live_revocations(now_utc())
        revocations = Revocations(OAuthStore(store), interval=3600)
        revocations.add([("token", "jti-1")])
        await revocations.refresh_if_due()
        assert revocations.revoked([("token", "jti-1")])
    finally:
        await store.dispose()
