"""The service's store from its settings: the primary's engine, and the replica's and the
listening engine when configured (docs/operations.md, "Replicas, PgBouncer, failover")."""

from __future__ import annotations

import logging
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from patientkontrakt.config import Settings
from patientkontrakt.storage.database import check_settings, create_engine, ensure_migrated
from patientkontrakt.storage.repository import Store

log = logging.getLogger("patientkontrakt.storage")


async def open_store(settings: Settings, pool_size: int) -> Store:
    """A ``Store`` on ``PK_DATABASE_URL`` (migrated, or ``DatabaseNotMigrated``), with the replica
    of ``PK_DATABASE_REPLICA_URL`` if any. Behind PgBouncer (``PK_DATABASE_PGBOUNCER``) the
    connection settings must come from the role: a missing one is logged (the service runs, but
    without its statement timeout or its plan choice)."""
    pgbouncer = settings.database_pgbouncer

    def engine(url: str, size: int, bouncer: bool = pgbouncer) -> AsyncEngine:
        return create_engine(url, pool_size=size, connect_timeout=settings.db_connect_timeout,
                             statement_timeout=settings.statement_timeout, pgbouncer=bouncer)

    primary = engine(settings.database_url, pool_size)
    engines = [primary]
    try:
        await ensure_migrated(primary)
        replica = engine(settings.database_replica_url, pool_size) if settings.database_replica_url else None
        if replica is not None:
            engines.append(replica)
        listen: AsyncEngine | Literal[False] | None = None  # None: the primary's engine
        if pgbouncer and primary.dialect.name == "postgresql":
            listen = engine(settings.database_listen_url, 1, False) if settings.database_listen_url else False
            if listen:
                engines.append(listen)
            for missing in await check_settings(primary, settings.statement_timeout):
                log.warning("behind PgBouncer, connections lack %s: set it on the role (ALTER ROLE ... SET)",
                            missing)
    except BaseException:
        for made in engines:
            await made.dispose()
        raise
    return Store(primary, replica, replica_wait=settings.replica_wait, replica_max_lag=settings.replica_max_lag,
                 recent_clients=settings.replica_clients,
                 listen_engine=listen)
