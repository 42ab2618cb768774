"""Waking an idle worker when notifications are queued, instead of at its next poll.

On PostgreSQL the transaction that writes ``event`` rows also sends ``NOTIFY pk_outbox``
(``announce``): the server passes it on when that transaction commits, and never if it rolls
back, so a worker is woken exactly when there is something it can claim. Each worker keeps one
connection that ``LISTEN``s (``Wakeup``); whatever happens to that connection (a restart of the
server, a pooler in transaction mode that does not carry notifications), the worker still polls
every ``PK_WORKER_POLL_INTERVAL`` seconds, so a lost wake-up costs latency, never a delivery.
SQLite has no notifications: there the poll alone. Behind PgBouncer in transaction mode
(``PK_DATABASE_PGBOUNCER``) a LISTEN would stay on whichever server connection ran it, so the
worker listens on ``PK_DATABASE_LISTEN_URL`` (a direct connection) or only polls.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any

import sqlalchemy as sa

from patientkontrakt.logs import describe
from patientkontrakt.storage.repository import Store, Unit

log = logging.getLogger(__name__)

CHANNEL = "pk_outbox"
_NOTIFY = sa.text(f"NOTIFY {CHANNEL}")
_CHECK_EVERY = 30.0  # seconds between checks that the listening connection is still there
_RETRY_AFTER = 5.0  # seconds before listening again after the connection was lost


async def announce(unit: Unit) -> None:
    """In the transaction that queued notifications: wake the listening workers at its commit.
    (Several in one transaction are folded into one by PostgreSQL.)"""
    if unit.dialect == "postgresql":
        await unit.conn.execute(_NOTIFY)


class Wakeup:
    """A worker's ear: ``wait`` returns when notifications were announced since the last
    ``arm``, when ``stop`` is set, or after ``timeout`` seconds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.woken = asyncio.Event()
        self.listening = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.store.engine.dialect.name == "postgresql" and self._task is None:
            if self.store.listen_engine is None:
                log.info("worker: behind PgBouncer without PK_DATABASE_LISTEN_URL: polling, not listening")
                return
            self._task = asyncio.create_task(self._listen(), name="outbox-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def arm(self) -> None:
        """Forget earlier wake-ups: called before the worker looks for work, so that one that
        comes while it looks is not lost."""
        self.woken.clear()

    async def wait(self, stop: asyncio.Event, timeout: float) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.woken.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _notified(self, *_: Any) -> None:
        self.woken.set()

    async def _listen(self) -> None:
        while True:
            try:
                assert self.store.listen_engine is not None
                async with self.store.listen_engine.connect() as conn:
                    await self._hold((await conn.get_raw_connection()).driver_connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poll goes on; listen again shortly
                log.warning("worker: not listening for notifications: %s", describe(exc))
            self.listening = False
            await asyncio.sleep(_RETRY_AFTER)

    async def _hold(self, driver: Any) -> None:
        """Listen on the asyncpg connection ``driver`` until it is lost."""
        lost = asyncio.Event()
        driver.add_termination_listener(lambda *_: lost.set())
        await driver.add_listener(CHANNEL, self._notified)
        self.listening = True
        self.woken.set()  # anything queued while no one listened
        while not lost.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), _CHECK_EVERY)
            if not lost.is_set():
                await driver.execute("SELECT 1")
