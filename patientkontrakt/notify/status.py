"""How deliveries stand, per subscription: ``patientkontrakt subscriptions status`` prints it as a
table, and each worker logs it as one JSON line every ``PK_WORKER_STATUS_INTERVAL`` seconds.

Nothing here names a patient or a resource, and no header value: the subscription's id, its
owner's care unit, its status, its endpoint's host, counts and times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
import sqlalchemy as sa

from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.storage.repository import Store
from patientkontrakt.storage.tables import SUBSCRIPTION as S
from patientkontrakt.storage.tables import SUBSCRIPTION_OUTBOX as O

SKIPPED_PREFIX = "skipped:"


@dataclass(frozen=True)
class DeliveryStatus:
    id: str
    owner: str
    status: str
    host: str
    pending: int
    delivered: int
    skipped: int
    failures: int
    error: str | None
    last_delivered: datetime | None
    oldest_pending: datetime | None

    def oldest_pending_age(self, now: datetime) -> float | None:
        return (now - self.oldest_pending).total_seconds() if self.oldest_pending else None


def _owner(principal: str) -> str:
    """The care unit (HSA-id) the subscriber acted for, or the kind of subscriber."""
    try:
        who = orjson.loads(principal).get("principal", {})
    except (orjson.JSONDecodeError, AttributeError):
        return "?"
    return str(who.get("care_unit") or who.get("kind") or "?")


async def delivery_status(store: Store) -> list[DeliveryStatus]:
    pending = sa.func.count().filter(O.c.delivered.is_(None))
    skipped = sa.func.count().filter(O.c.delivered.is_not(None), O.c.last_error.like(SKIPPED_PREFIX + "%"))
    delivered = sa.func.count().filter(O.c.delivered.is_not(None))
    oldest = sa.func.min(O.c.created).filter(O.c.delivered.is_(None))
    counts = (sa.select(O.c.subscription_pk, pending.label("pending"), delivered.label("delivered"),
                        skipped.label("skipped"), oldest.label("oldest"))
              .group_by(O.c.subscription_pk).subquery())
    query = (sa.select(S.c.res_id, S.c.principal, S.c.status, S.c.endpoint, S.c.failures, S.c.error,
                       S.c.last_delivered, counts.c.pending, counts.c.delivered, counts.c.skipped, counts.c.oldest)
             .outerjoin(counts, counts.c.subscription_pk == S.c.resource_pk)
             .order_by(S.c.res_id))
    async with store.reading() as unit:
        rows = (await unit.conn.execute(query)).all()
    return [DeliveryStatus(
        id=row.res_id, owner=_owner(row.principal), status=row.status, host=urlsplit(row.endpoint).hostname or "",
        pending=row.pending or 0, delivered=(row.delivered or 0) - (row.skipped or 0), skipped=row.skipped or 0,
        failures=row.failures, error=row.error, last_delivered=row.last_delivered, oldest_pending=row.oldest,
    ) for row in rows]


class Totals(Protocol):
    delivered: int
    skipped: int
    failed: int


def status_line(rows: list[DeliveryStatus], totals: Totals | None = None) -> str:
    """One JSON object: totals over every subscription, this worker's counts since it started,
    and the subscriptions that are behind or failing."""
    now = now_utc()
    ages = [age for row in rows if (age := row.oldest_pending_age(now)) is not None]
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row.status] = by_status.get(row.status, 0) + 1
    record: dict[str, Any] = {
        "subscriptions": by_status,
        "pending": sum(row.pending for row in rows),
        "oldest_pending_seconds": round(max(ages), 1) if ages else None,
        "failing": [{"id": row.id, "status": row.status, "failures": row.failures, "pending": row.pending}
                    for row in rows if row.failures or row.status == "error"][:20],
    }
    if totals is not None:
        record["worker"] = {"delivered": totals.delivered, "skipped": totals.skipped, "failed": totals.failed}
    return orjson.dumps(record).decode()


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def table(rows: list[DeliveryStatus]) -> str:
    """The rows as a plain-text table (times in UTC)."""
    now = now_utc()
    header = ("id", "owner unit", "status", "endpoint host", "pending", "delivered", "skipped", "failures",
              "last error", "last delivered (UTC)", "oldest pending")
    lines = [header] + [(
        row.id, row.owner, row.status, row.host, str(row.pending), str(row.delivered), str(row.skipped),
        str(row.failures), (row.error or "-")[:60], _when(row.last_delivered),
        _age(row.oldest_pending_age(now)),
    ) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)
