"""The delivery worker's heartbeat: the time of its last loop, in the database (``server_state``).

Every worker writes ``worker_heartbeat`` at most every ``PK_WORKER_HEARTBEAT_INTERVAL`` seconds
while its loop turns; ``/readyz`` reads it (``patientkontrakt/health.py``). Several workers share
the one row: the newest beat is what matters (is *a* worker delivering?), and an upsert keeps two
workers that beat at once from colliding on the key.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.storage.repository import Store
from patientkontrakt.storage.tables import SERVER_STATE

KEY = "worker_heartbeat"


async def beat(store: Store, when: datetime | None = None) -> None:
    """Record ``when`` (naive UTC; default now) as the newest heartbeat."""
    value = (when or now_utc()).isoformat()
    insert = (postgresql.insert if store.dialect == "postgresql" else sqlite.insert)(SERVER_STATE)
    statement = insert.values(key=KEY, value=value).on_conflict_do_update(
        index_elements=[SERVER_STATE.c.key], set_={"value": value})
    async with store.writing() as unit:
        await unit.conn.execute(statement)


async def last_beat(store: Store) -> datetime | None:
    """The newest heartbeat (naive UTC), or None if no worker ever beat."""
    async with store.reading() as unit:
        value = (await unit.conn.execute(sa.select(SERVER_STATE.c.value).where(SERVER_STATE.c.key == KEY))).scalar()
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None
