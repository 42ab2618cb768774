"""The service's Prometheus metrics (``GET /metrics``; docs/operations.md, "Observability").

Two kinds:

* **Counted in the process** as things happen: requests by method, route template and status,
  with a latency histogram (``api/metrics.py``), the access log's append latency
  (``audit/log.py``), and the database pool's connections. Under gunicorn each process counts its
  own; with ``PROMETHEUS_MULTIPROC_DIR`` set (``deploy/gunicorn.conf.py``) prometheus_client keeps
  them in files there and any process's ``/metrics`` shows the sum over every process.
* **Read from the database** at scrape time (``snapshot``): the notification outbox (rows not yet
  delivered, the age of the oldest), subscriptions by status and their consecutive failures, the
  age of the newest worker heartbeat and of the newest signed checkpoint of the access log, and
  the age of the oldest access-log entry not yet sealed. The same for every process, so a scrape
  of any one is the whole picture. ``deploy/prometheus/alerts.yaml`` alerts on them.

No label takes a value from a request other than the method, the route's template (never a path
or an id: ``api/requestlog.route_of``) and the status: nothing of a patient, and a bounded number
of series.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from patientkontrakt.audit.checkpoint import AuditKeys, CheckpointError, open_note
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.notify.heartbeat import last_beat
from patientkontrakt.storage import audit as audit_sql
from patientkontrakt.storage.repository import Store
from patientkontrakt.storage.tables import AUDIT_QUEUE as Q
from patientkontrakt.storage.tables import SUBSCRIPTION as S
from patientkontrakt.storage.tables import SUBSCRIPTION_OUTBOX as O

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Requests: from 1 ms (a read by id) to 10 s (a statement timeout); the access log's appends:
# from 0.1 ms (SQLite, in the write's transaction) to 1 s.
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_APPEND_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

REQUESTS = Counter("pk_http_requests", "HTTP requests answered, by method, route template and status",
                   ["method", "route", "status"])
REQUEST_SECONDS = Histogram("pk_http_request_duration_seconds", "Time from request to the end of the answer",
                            ["method", "route"], buckets=_REQUEST_BUCKETS)
AUDIT_APPEND_SECONDS = Histogram(
    "pk_audit_append_duration_seconds", "Time to append entries to the access log: in the write's own "
    "transaction, or committed for reads (group commit, the wait for the batch included)",
    ["mode"], buckets=_APPEND_BUCKETS)
POOL_SIZE = Gauge("pk_db_pool_size", "Connections the database pool keeps (per process; summed over processes)",
                  multiprocess_mode="livesum")
POOL_CHECKED_OUT = Gauge("pk_db_pool_checked_out", "Pooled connections in use (summed over processes)",
                         multiprocess_mode="livesum")
POOL_OVERFLOW = Gauge("pk_db_pool_overflow", "Connections beyond the pool's size in use (summed over processes)",
                      multiprocess_mode="livesum")


def observe_pool(engine: AsyncEngine) -> None:
    """Set the pool gauges from ``engine``'s pool (cheap: counters SQLAlchemy keeps). SQLite's
    pool has no fixed size; its gauges stay at zero."""
    pool = engine.sync_engine.pool
    size, checked_out, overflow = (getattr(pool, name, None) for name in ("size", "checkedout", "overflow"))
    if callable(size) and callable(checked_out) and callable(overflow):
        POOL_SIZE.set(size())
        POOL_CHECKED_OUT.set(checked_out())
        POOL_OVERFLOW.set(max(overflow(), 0))


@dataclass(frozen=True)
class Snapshot:
    """What the database says at scrape time."""

    outbox_pending: int
    outbox_oldest_age: float | None
    subscriptions: dict[str, int]
    consecutive_failures: int
    heartbeat_age: float | None
    checkpoint_age: float | None
    unsealed_age: float | None  # the oldest queued access-log entry's (None: the queue is empty)


async def snapshot(store: Store, keys: AuditKeys) -> Snapshot:
    now = now_utc()
    async with store.reading() as unit:
        pending, oldest = (await unit.conn.execute(
            sa.select(sa.func.count(), sa.func.min(O.c.created)).where(O.c.delivered.is_(None)))).one()
        by_status: list[Any] = list(await unit.conn.execute(
            sa.select(S.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(S.c.failures), 0))
            .group_by(S.c.status)))
        # The queue's head by its key (an index look-up however long a stopped sealer let it grow),
        # before the checkpoint: each statement sees what was committed when it ran, and a seal
        # empties the queue and signs its checkpoint in one transaction, so a queue read empty
        # is never paired with the checkpoint before the seal that emptied it.
        unsealed = (await unit.conn.execute(sa.select(Q.c.recorded).order_by(Q.c.seq).limit(1))).scalar_one_or_none()
        stored = await audit_sql.latest_checkpoint(unit.conn)
    beat = await last_beat(store)
    checkpoint_age = None
    if stored is not None:
        try:
            signed = open_note(stored.note, keys.verifiers, keys.origin)
        except CheckpointError:
            checkpoint_age = None  # not ours: as if none were signed (`audit verify` says why)
        else:
            checkpoint_age = max(0.0, datetime.now(UTC).timestamp() - signed.timestamp)
    return Snapshot(
        outbox_pending=int(pending),
        outbox_oldest_age=(now - oldest).total_seconds() if oldest is not None else None,
        subscriptions={str(status): int(count) for status, count, _ in by_status},
        consecutive_failures=sum(int(failures) for _, _, failures in by_status),
        heartbeat_age=(now - beat).total_seconds() if beat is not None else None,
        checkpoint_age=checkpoint_age,
        unsealed_age=max(0.0, (now - unsealed).total_seconds()) if unsealed is not None else None,
    )


class _SnapshotCollector(Collector):
    def __init__(self, found: Snapshot | None) -> None:
        self.found = found

    def collect(self) -> list[GaugeMetricFamily]:
        found = self.found
        up = GaugeMetricFamily("pk_database_up", "Whether the database answered this scrape's queries",
                               value=0 if found is None else 1)
        if found is None:
            return [up]
        families = [
            up,
            GaugeMetricFamily("pk_outbox_pending", "Notifications queued and not yet delivered",
                              value=found.outbox_pending),
            GaugeMetricFamily("pk_subscription_consecutive_failures",
                              "Failed deliveries in a row, summed over subscriptions (0 once each delivers again)",
                              value=found.consecutive_failures),
        ]
        subscriptions = GaugeMetricFamily("pk_subscriptions", "Subscriptions by status", labels=["status"])
        for status in ("requested", "active", "error", "off"):
            subscriptions.add_metric([status], found.subscriptions.get(status, 0))
        families.append(subscriptions)
        ages = (("pk_outbox_oldest_pending_age_seconds", "Age of the oldest undelivered notification",
                 found.outbox_oldest_age),
                ("pk_worker_heartbeat_age_seconds", "Seconds since a delivery worker last beat (/readyz)",
                 found.heartbeat_age),
                ("pk_audit_checkpoint_age_seconds", "Seconds since the newest signed checkpoint of the access log",
                 found.checkpoint_age),
                ("pk_audit_oldest_unsealed_age_seconds",
                 "Age of the oldest access-log entry not yet sealed into a signed checkpoint", found.unsealed_age))
        for name, text, age in ages:  # absent, not zero, when there is none: an alert on absent() sees it
            if age is not None:
                families.append(GaugeMetricFamily(name, text, value=age))
        return families


def exposition(found: Snapshot | None) -> bytes:
    """The metrics in Prometheus's text format: this process's (or, in multiprocess mode, every
    process's) counters, then ``found`` (None: the database did not answer)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counted = CollectorRegistry()
        MultiProcessCollector(counted)  # type: ignore[no-untyped-call]
        own = generate_latest(counted)
    else:
        from prometheus_client import REGISTRY

        own = generate_latest(REGISTRY)
    database = CollectorRegistry(auto_describe=False)
    database.register(_SnapshotCollector(found))
    return own + generate_latest(database)
