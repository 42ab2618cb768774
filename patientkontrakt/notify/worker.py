"""The delivery worker (``patientkontrakt worker``; design §7, docs/operations.md).

Any number of workers may run, on any hosts, against one database. A worker:

1. claims one due Subscription — status ``requested`` or ``active``, undelivered outbox rows,
   ``next_attempt`` passed, no live lease — in a short transaction (``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL, so two workers never wait for or take the same row; SQLite has one writer at a
   time) and writes its lease (``lease_owner``, ``lease_until``);
2. delivers that subscription's pending rows in ``id`` order, outside any transaction (an HTTP
   call never holds a database transaction or lock), marking each delivered in its own short
   transaction that also renews the lease;
3. on a failure counts it (``attempts``, ``last_error`` on the row; ``failures`` on the
   subscription), leaves that row and every later one waiting (order is kept), and sets
   ``next_attempt`` by exponential backoff with jitter; after ``PK_SUBSCRIPTION_MAX_FAILURES``
   consecutive failures the subscription's status becomes ``error`` with the reason. A success
   resets the count; a handshake's success makes a ``requested`` subscription ``active``.

Every write of the worker checks that it still holds the lease. A worker that dies (SIGKILL, a
lost host) holds its subscription until the lease runs out, then another takes it over and sends
again what was not marked delivered: delivery is at least once. The event number is given to a
row once, in the database, before its first attempt (to a batch of pending rows at a time, in
order), and kept across retries and workers, so the receiver sees the same number again and can
drop the repeat.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from patientkontrakt.config import Settings
from patientkontrakt.fhir.access import Access
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.fhir.errors import FhirError
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.logs import REQUEST_ID, describe, request_id
from patientkontrakt.notify import heartbeat
from patientkontrakt.notify.delivery import DeliveryFailed, Event, Sender, Skip, Subscriber, build
from patientkontrakt.notify.status import delivery_status, status_line
from patientkontrakt.notify.subscriptions import set_status
from patientkontrakt.notify.wakeup import Wakeup
from patientkontrakt.security.stored_access import UnknownPrincipal, access_from
from patientkontrakt.storage.errors import DatabaseUnavailable
from patientkontrakt.storage.tables import SUBSCRIPTION as S
from patientkontrakt.storage.tables import SUBSCRIPTION_OUTBOX as O

log = logging.getLogger(__name__)

DELIVERABLE = ("requested", "active")
SKIPPED = "skipped: the subscriber may not read it now"
_BATCH = 50


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure: ``base`` doubled per failure,
    at most ``cap``, of which a random half is taken off ("equal jitter"), so that subscriptions
    that failed together (one receiver down) do not all come back at the same instant."""
    delay: float = min(cap, base * 2.0 ** min(max(failures - 1, 0), 30))
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass
class Outcome:
    """What one claim achieved (tests and the status line count these)."""

    delivered: int = 0
    skipped: int = 0
    failed: int = 0


class Worker:
    def __init__(self, service: FhirService, settings: Settings, owner: str | None = None) -> None:
        self.service = service
        self.store = service.store
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()[:40]}:{os.getpid()}:{random.randrange(1 << 16):04x}"
        self.sender = Sender(settings.subscription_allowed, settings.subscription_timeout)
        self.lease = timedelta(seconds=settings.worker_lease)
        self.totals = Outcome()
        self.wakeup: Wakeup | None = None  # while ``run`` runs

    async def close(self) -> None:
        await self.sender.close()

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; idle, wait until a change is queued (PostgreSQL
        ``LISTEN``, ``notify/wakeup.py``) or ``PK_WORKER_POLL_INTERVAL`` seconds have passed."""
        log.info("worker %s started", self.owner)
        interval = self.settings.worker_status_interval
        next_status = asyncio.get_running_loop().time() + interval
        self.wakeup = wakeup = Wakeup(self.store)
        wakeup.start()
        try:
            await self._loop(stop, wakeup, interval, next_status)
        finally:
            await wakeup.close()
        log.info("worker %s stopped", self.owner)

    async def _loop(self, stop: asyncio.Event, wakeup: Wakeup, interval: float, next_status: float) -> None:
        clock = asyncio.get_running_loop().time
        next_beat = clock()
        while not stop.is_set():
            if clock() >= next_beat:
                next_beat = clock() + self.settings.worker_heartbeat_interval
                await self._beat()
            wakeup.arm()
            try:
                busy = await self.run_once()
            except DatabaseUnavailable as exc:
                log.warning("worker: database unavailable: %s", describe(exc))
                busy = False
            except Exception as exc:  # one bad subscription must not stop every delivery
                log.error("worker: delivery failed unexpectedly: %s", describe(exc))
                busy = False
            if interval > 0 and asyncio.get_running_loop().time() >= next_status:
                next_status = asyncio.get_running_loop().time() + interval
                await self._log_status()
            if not busy:
                await wakeup.wait(stop, self.settings.worker_poll_interval)

    async def _beat(self) -> None:
        """The heartbeat /readyz looks for (``notify/heartbeat.py``): this loop still turns."""
        try:
            await heartbeat.beat(self.store)
        except DatabaseUnavailable as exc:
            log.warning("worker: cannot write its heartbeat: %s", describe(exc))

    async def _log_status(self) -> None:
        try:
            rows = await delivery_status(self.store)
        except DatabaseUnavailable:
            return
        log.info("subscriptions %s", status_line(rows, self.totals))

    async def run_once(self) -> bool:
        """Claim one due subscription and deliver what it is owed; False if none was due."""
        pk = await self.claim()
        if pk is None:
            return False
        try:
            await self.deliver(pk)
        finally:
            await self.release(pk)
        return True

    # -- claiming --------------------------------------------------------------------------

    async def claim(self) -> int | None:
        now = now_utc()
        pending = sa.exists().where(O.c.subscription_pk == S.c.resource_pk, O.c.delivered.is_(None))
        due = (sa.select(S.c.resource_pk)
               .where(S.c.status.in_(DELIVERABLE),
                      sa.or_(S.c.next_attempt.is_(None), S.c.next_attempt <= now),
                      sa.or_(S.c.lease_until.is_(None), S.c.lease_until < now),
                      pending)
               .order_by(S.c.last_delivered.asc().nulls_first(), S.c.resource_pk)
               .limit(1))
        async with self.store.reading() as unit:  # idle workers take no write lock (SQLite: one writer)
            if (await unit.conn.execute(due)).scalar() is None:
                return None
        async with self.store.writing() as unit:
            if self.store.dialect == "postgresql":
                due = due.with_for_update(skip_locked=True, of=S)
            pk = (await unit.conn.execute(due)).scalar()
            if pk is None:
                return None
            taken = await unit.conn.execute(
                S.update().where(S.c.resource_pk == pk,
                                 sa.or_(S.c.lease_until.is_(None), S.c.lease_until < now))
                .values(lease_owner=self.owner, lease_until=now + self.lease))
        return int(pk) if taken.rowcount == 1 else None

    async def release(self, pk: int) -> None:
        try:
            async with self.store.writing() as unit:
                await unit.conn.execute(S.update().where(S.c.resource_pk == pk, S.c.lease_owner == self.owner)
                                        .values(lease_owner=None, lease_until=None))
        except DatabaseUnavailable as exc:  # the lease runs out by itself
            log.warning("worker: cannot release subscription %s: %s", pk, describe(exc))

    def _mine(self, pk: int) -> sa.ColumnElement[bool]:
        return sa.and_(S.c.resource_pk == pk, S.c.lease_owner == self.owner)

    # -- delivering ------------------------------------------------------------------------

    async def deliver(self, pk: int) -> Outcome:
        """Send the subscription's pending rows in order while the lease lasts."""
        outcome = Outcome()
        started = now_utc()
        while now_utc() - started < self.lease / 2:
            async with self.store.reading() as unit:
                row = (await unit.conn.execute(sa.select(S).where(self._mine(pk)))).first()
                if row is None or row.status not in DELIVERABLE:
                    return outcome
                events = [Event(r.id, r.kind, r.res_type, r.res_id, r.version_id, r.event_number, r.created,
                                r.request_id)
                          for r in await unit.conn.execute(
                              sa.select(O).where(O.c.subscription_pk == pk, O.c.delivered.is_(None))
                              .order_by(O.c.id).limit(_BATCH))]
            if not events:
                return outcome
            # A handshake or heartbeat goes alone; the changes after it are numbered once it is
            # through (a subscription whose handshake fails numbers nothing).
            events = events[:1] if events[0].kind != "event" else \
                list(itertools.takewhile(lambda e: e.kind == "event", events))
            numbered = await self._numbered(pk, events)
            if numbered is None:  # the lease is gone
                return outcome
            events = numbered
            sub = Subscriber.of(row)
            access = self._access(sub)
            for event in events:
                result = await self._deliver_one(sub, access, event)
                if result is None:  # the lease is gone
                    return outcome
                if result == "failed":
                    outcome.failed += 1
                    self.totals.failed += 1
                    return outcome
                if result == "skipped":
                    outcome.skipped += 1
                    self.totals.skipped += 1
                else:
                    outcome.delivered += 1
                    self.totals.delivered += 1
                if result == "activated":
                    sub = replace(sub, status="active")
        return outcome

    def _access(self, sub: Subscriber) -> Access | None:
        try:
            return access_from(sub.principal, self.service.parser, self.service.search_engine.builder)
        except UnknownPrincipal as exc:
            log.warning("subscription %s: cannot rebuild its subscriber: %s", sub.id, exc)
            return None

    async def _deliver_one(self, sub: Subscriber, access: Access | None, event: Event) -> str | None:
        """One attempt, under a request id of its own (``logs.REQUEST_ID``): in its log records,
        the access-log entry of its read, and the notification's ``X-Request-ID``."""
        current = REQUEST_ID.set(request_id())
        try:
            return await self._attempt(sub, access, event)
        finally:
            REQUEST_ID.reset(current)

    async def _attempt(self, sub: Subscriber, access: Access | None, event: Event) -> str | None:
        number = event.event_number
        try:
            request = await build(self.service, access, sub, event, number)
        except Skip:
            log.info("subscription %s event %s: skipped", sub.id, number)
            return "skipped" if await self._mark(sub, event, skipped=True) else None
        try:
            status = await self.sender.send(request, sub.headers)
        except DeliveryFailed as failure:
            log.info("subscription %s event %s%s: failed: %s", sub.id, number, _origin(event), failure.reason)
            await self._failed(sub, event, failure.reason)
            return "failed"
        log.info("subscription %s event %s%s: delivered, status %s", sub.id, number, _origin(event), status)
        if not await self._mark(sub, event, skipped=False):
            return None
        return "activated" if event.kind == "handshake" else "delivered"

    async def _numbered(self, pk: int, events: list[Event]) -> list[Event] | None:
        """``events`` with an event number on each change (``kind`` event) that has none yet:
        the next ones of the subscription's count, in outbox order, given to the whole batch in
        one transaction before the first attempt (one per event cost a third of the worker's CPU
        per notification); kept across retries and workers. None if the lease is lost."""
        unnumbered = [e.id for e in events if e.kind == "event" and e.event_number is None]
        if not unnumbered:
            return events
        async with self.store.writing() as unit:
            counted = await unit.conn.execute(
                S.update().where(self._mine(pk)).values(events_since_start=S.c.events_since_start + len(unnumbered)))
            if counted.rowcount != 1:
                return None
            last: int = (await unit.conn.execute(
                sa.select(S.c.events_since_start).where(S.c.resource_pk == pk))).scalar_one()
            numbers = {row_id: int(last) - len(unnumbered) + 1 + i for i, row_id in enumerate(unnumbered)}
            await unit.conn.execute(
                O.update().where(O.c.id == sa.bindparam("row_id"), O.c.event_number.is_(None))
                .values(event_number=sa.bindparam("number")),
                [{"row_id": row_id, "number": number} for row_id, number in numbers.items()])
        return [replace(e, event_number=numbers.get(e.id, e.event_number)) for e in events]

    async def _mark(self, sub: Subscriber, event: Event, *, skipped: bool) -> bool:
        """Mark the row delivered (or skipped) and renew the lease; False if the lease is lost."""
        now = now_utc()
        values: dict[str, Any] = {"lease_until": now + self.lease}
        if not skipped:
            values.update(failures=0, error=None, next_attempt=None, last_delivered=now)
        async with self.store.writing() as unit:
            kept = await unit.conn.execute(S.update().where(self._mine(sub.pk)).values(**values))
            if kept.rowcount != 1:
                return False
            await unit.conn.execute(O.update().where(O.c.id == event.id).values(
                delivered=now, attempts=O.c.attempts + (0 if skipped else 1),
                last_error=SKIPPED if skipped else None))
            if event.kind == "handshake" and not skipped and sub.status == "requested":
                await self._set_status(unit, sub, "active", None)
        return True

    async def _failed(self, sub: Subscriber, event: Event, reason: str) -> None:
        now = now_utc()
        async with self.store.writing() as unit:
            failures = (await unit.conn.execute(
                sa.select(S.c.failures).where(self._mine(sub.pk)))).scalar()
            if failures is None:
                return
            failures += 1
            wait = backoff(failures, self.settings.subscription_backoff, self.settings.subscription_backoff_max)
            await unit.conn.execute(S.update().where(self._mine(sub.pk)).values(
                failures=failures, next_attempt=now + timedelta(seconds=wait)))
            await unit.conn.execute(O.update().where(O.c.id == event.id).values(
                attempts=O.c.attempts + 1, last_error=reason))
            if failures >= self.settings.subscription_max_failures:
                error = f"{failures} deliveries in a row failed; the last: {reason}"
                await self._set_status(unit, sub, "error", error)
                log.warning("subscription %s: status error after %s failures", sub.id, failures)

    async def _set_status(self, unit: Any, sub: Subscriber, status: str, error: str | None) -> None:
        """The Subscription's new status: a new version of the resource (``set_status``); if the
        resource cannot take it (say, its endpoint is no longer allowed), the state row alone."""
        try:
            async with unit.conn.begin_nested():
                await set_status(self.service, unit, sub.pk, status, error)
        except FhirError as refused:
            log.warning("subscription %s: status %s kept in the delivery state only: %s", sub.id, status,
                        type(refused).__name__)
            await unit.conn.execute(S.update().where(S.c.resource_pk == sub.pk).values(status=status, error=error))


def _origin(event: Event) -> str:
    """The write that queued ``event``, for the log line of its attempt (its ``X-Correlation-ID``)."""
    return f" (from request {event.request_id})" if event.request_id else ""
