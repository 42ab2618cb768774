"""The revocation list: access tokens that ended before they expired, on every process.

Access tokens are self-contained JWTs, checked without a database round trip. What ends one
early is a revocation (``storage.oauth.Revoked``, table ``token_revocation``):

* ``token``: one access token, by its ``jti`` (RFC 7009 revocation of an access token);
* ``session``: a sign-in, by the family of its refresh tokens, which its access tokens name as
  ``sid``. Revoking a refresh token (RFC 7009 §2.1: "SHOULD also invalidate all access tokens
  based on the same authorization grant"), signing out of the pages, presenting a used refresh
  token or a used code again, and a refresh refused because the commission ended all revoke the
  sign-in, and so end the access tokens issued in it;
* ``client``: every token of a client whose registration was removed.

A revocation is kept until every access token it covers has expired. Each process holds the
live revocations in memory and reloads them from the database when they are older than
``PK_REVOCATION_REFRESH_SECONDS`` (before the request that finds them so, which waits for the
one reload under way); the process that revokes knows at once. So a revoked token is refused by
the process that revoked it immediately and by every other within that interval. The check
runs on every request, after the per-process caches of verified tokens, so no cache outlives a
revocation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.security.tokens import LEEWAY, MAX_LIFETIME
from patientkontrakt.storage.errors import DatabaseError
from patientkontrakt.storage.oauth import OAuthStore

log = logging.getLogger("patientkontrakt.security")
# a sign-in or client revoked now covers the access tokens issued until now (and, for a refresh
# under way at that moment, a little after): each expires within MAX_LIFETIME, give or take LEEWAY
COVERS = timedelta(seconds=MAX_LIFETIME + 2 * LEEWAY)


def keys_of(claims: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The revocations that would end a token with these (verified) claims."""
    keys = [("token", str(claims["jti"])), ("client", str(claims["client_id"]))]
    if "sid" in claims:
        keys.append(("session", str(claims["sid"])))
    return keys


def covers_until(now: datetime) -> datetime:
    """How long a revocation of a sign-in or client made ``now`` must be kept."""
    return now + COVERS


class Revocations:
    """This process's copy of the revocation list."""

    def __init__(self, store: OAuthStore, interval: float) -> None:
        self._store = store
        self.interval = interval
        self._revoked: frozenset[tuple[str, str]] = frozenset()
        self._loaded = float("-inf")  # time.monotonic() when the last reload began
        self._recent: dict[tuple[str, str], float] = {}  # revoked here, and when
        self._lock = asyncio.Lock()

    def revoked(self, keys: list[tuple[str, str]]) -> bool:
        return any(key in self._revoked for key in keys)

    def add(self, keys: list[tuple[str, str]]) -> None:
        """Revocations this process has just stored: in force here at once."""
        now = time.monotonic()
        self._recent.update((key, now) for key in keys)
        self._revoked = self._revoked | frozenset(keys)

    def expire(self) -> None:
        """Reload before the next check (the tests' way to let the interval pass)."""
        self._loaded = float("-inf")

    async def refresh_if_due(self) -> None:
        if time.monotonic() - self._loaded < self.interval:
            return
        async with self._lock:
            if time.monotonic() - self._loaded < self.interval:
                return  # reloaded while this request waited
            started = time.monotonic()
            try:
                rows = await self._store.live_revocations(now_utc())
            except (OSError, DatabaseError) as exc:
                # The request needs the database too and will meet the outage there. The list this
                # process has stays in force, and the next reload is tried an interval later, so
                # the requests waiting here do not each wait for the database in turn.
                log.warning("the revocation list could not be reloaded: %s", type(exc).__name__)
                self._loaded = started
                return
            # a revocation made here while the query ran may be missing from its answer
            self._recent = {key: at for key, at in self._recent.items() if at >= started}
            self._revoked = frozenset(rows) | frozenset(self._recent)
            self._loaded = started
