"""The database is unavailable: telling an outage from every other database error.

An outage is anything that says "not now" rather than "not this": the server refuses or drops
connections (down, restarting, failing over), a connection was terminated under a statement
(``pg_terminate_backend``, a restart: 57P01, 08003), the server does not accept connections yet
(57P03) or has no room for more (class 53), the pool has no connection to give within its
timeout, or SQLite's file is locked or cannot be opened. The ``Store`` turns these into
``DatabaseUnavailable``, which the API answers with 503 and ``Retry-After`` (api/errors.py).
Anything else (a constraint, a bug, a cancelled statement) stays what it is.
"""

from __future__ import annotations

import sqlite3

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa

from patientkontrakt.logs import causes, describe

# 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now
_SHUTDOWN = frozenset({"57P01", "57P02", "57P03"})
_SQLITE_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL")


class DatabaseUnavailable(Exception):
    """The database cannot serve this request now; trying again later may succeed.

    The message is ``describe`` of the cause (types and codes, never values), so this can be
    logged as it is. ``disconnected``: an established connection was lost (a read may be tried
    again on a fresh one). ``unknown_outcome``: the connection was lost while a transaction was
    committing, so whether it was stored is not known.
    """

    def __init__(self, description: str, *, disconnected: bool = False, unknown_outcome: bool = False) -> None:
        super().__init__(description)
        self.disconnected = disconnected
        self.unknown_outcome = unknown_outcome


class DatabaseError(Exception):
    """A statement failed for a reason other than an outage (a constraint, a bug, a cancelled
    statement), where a caller outside storage goes on without the answer instead of failing
    (``OAuthStore.live_revocations``). The message is ``describe`` of the cause, as above; the
    cause is the driver's error."""


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` says an established connection was lost."""
    for cause in causes(exc):
        if isinstance(cause, sa.exc.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, sa.exc.DisconnectionError | asyncpg.PostgresConnectionError | ConnectionResetError
                      | ConnectionAbortedError | BrokenPipeError):
            return True
        if isinstance(cause, asyncpg.InterfaceError) and "closed" in str(cause):  # "connection is closed"
            return True
        if getattr(cause, "sqlstate", None) in _SHUTDOWN:
            return True
    return False


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is unavailable rather than that the request failed."""
    if is_disconnect(exc):
        return True
    for cause in causes(exc):
        if isinstance(cause, sa.exc.TimeoutError | OSError):  # the pool's timeout; refused, unreachable, timed out
            return True
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and (sqlstate.startswith(("08", "53")) or sqlstate in _SHUTDOWN):
            return True
        if isinstance(cause, sqlite3.OperationalError) and str(getattr(cause, "sqlite_errorname", "")).startswith(
                _SQLITE_BUSY):
            return True
    return False


def unavailable(exc: BaseException, *, unknown_outcome: bool = False) -> DatabaseUnavailable | None:
    """``exc`` as ``DatabaseUnavailable`` if it is an outage, else None."""
    if not is_outage(exc):
        return None
    return DatabaseUnavailable(describe(exc), disconnected=is_disconnect(exc), unknown_outcome=unknown_outcome)
