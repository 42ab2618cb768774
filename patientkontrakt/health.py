"""Readiness: may this process take requests? (``GET /readyz``; ``/healthz`` is liveness only.)

Three checks, each bounded by ``PK_READY_TIMEOUT`` seconds:

* ``database``: it answers a ``SELECT 1``;
* ``migrations``: its Alembic revision is not behind the one this code needs (a rollback of the
  database, or code newer than its migrations, shows here before the first query fails). A
  revision this code does not know is a migration of a newer release (``ahead``): during a
  rolling upgrade the old processes keep serving (migrations add before they take away:
  docs/operations.md, "Upgrading"), so it counts as ready;
* ``worker``: a delivery worker (``patientkontrakt worker``) beat within
  ``PK_READY_WORKER_MAX_AGE`` seconds (``notify/heartbeat.py``); with ``PK_READY_WORKER=false``
  it is not checked.

Each check's result is a short fixed word, never an error's text (which may quote patient data,
``logs.py``): ``ok``, ``unavailable``, ``timeout``, ``not current`` (the database is at an older
revision, or has none), ``ahead``, ``stale``, ``none`` (no heartbeat ever), ``skipped`` (the database did not
answer), ``not required``.

The checks run once for all the requests that come while they run (``Probe``): a flood of
``/readyz`` (it needs no token) costs the database one round of checks at a time per process,
not one per request, and a result is never older than the round that was running when the
request came.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from patientkontrakt.config import Settings
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.logs import describe
from patientkontrakt.notify.heartbeat import last_beat
from patientkontrakt.storage.database import current_revision, head_revision, known_revisions
from patientkontrakt.storage.errors import DatabaseUnavailable
from patientkontrakt.storage.repository import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
OK = "ok"


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(result in (OK, "ahead", "not required") for result in self.checks.values())


class _Failed(Exception):
    def __init__(self, result: str) -> None:
        self.result = result


async def _bounded(work: Awaitable[T], timeout: float, what: str) -> T:
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        log.warning("readiness: %s: no answer within %ss", what, timeout)
        raise _Failed("timeout") from None
    except (OSError, SQLAlchemyError, DatabaseUnavailable) as exc:
        log.warning("readiness: %s: %s", what, describe(exc))
        raise _Failed("unavailable") from None


async def readiness(store: Store, settings: Settings) -> Readiness:
    timeout = settings.ready_timeout
    checks = {"database": OK, "migrations": OK, "worker": OK if settings.ready_worker else "not required"}
    try:
        await _bounded(store.ping(), timeout, "database")
    except _Failed as failed:
        checks["database"] = failed.result
        checks["migrations"] = "skipped"
        if settings.ready_worker:
            checks["worker"] = "skipped"
        return Readiness(checks)
    try:
        revision = await _bounded(current_revision(store.engine), timeout, "migrations")
        if revision != head_revision():
            ahead = revision is not None and revision not in known_revisions()
            checks["migrations"] = "ahead" if ahead else "not current"
    except _Failed as failed:
        checks["migrations"] = failed.result
    if settings.ready_worker:
        try:
            beat = await _bounded(last_beat(store), timeout, "worker heartbeat")
        except _Failed as failed:
            checks["worker"] = failed.result
        else:
            if beat is None:
                checks["worker"] = "none"
            elif (now_utc() - beat).total_seconds() > settings.ready_worker_max_age:
                checks["worker"] = "stale"
    return Readiness(checks)


class Probe:
    """``readiness`` shared by concurrent callers: a caller that comes while a round of checks
    runs waits for that round instead of starting its own; the next caller after it ends starts
    a new one. A caller that goes away (a probe's client disconnecting) does not cancel the
    round the others wait for."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._running: asyncio.Task[Readiness] | None = None

    async def check(self) -> Readiness:
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(readiness(self._store, self._settings))
        return await asyncio.shield(self._running)
