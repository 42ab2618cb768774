"""Engines, connections and the migration gate.

PostgreSQL (asyncpg) is the production store, SQLite (aiosqlite) the embedded default.
SQLite runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so two writers queue instead of failing half-way.

With a ``statement_timeout`` (the service's engine: ``PK_STATEMENT_TIMEOUT``) every statement
that runs longer is cancelled and raises ``StatementTimeout``: PostgreSQL's own
``statement_timeout`` on every connection, and on SQLite a progress handler that interrupts the
statement once its time is up.

Every engine hides bound parameters in its errors (``hide_parameters``): an error's text names
the statement but never the values (patient data) it carried. A PostgreSQL connection that the
server closed while it sat in the pool (a restart, ``pg_terminate_backend``) is not handed out
again: checking it out finds it closed, and the pool drops every connection it made before and
connects anew (``_closed_in_pool``), so a restart costs no request an error.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class DatabaseNotMigrated(RuntimeError):
    """The database schema is missing or older than this code."""


class StatementTimeout(RuntimeError):
    """The database cancelled a statement that ran longer than the engine's statement timeout;
    its transaction is rolled back."""

    def __init__(self) -> None:
        super().__init__("the database cancelled a statement that ran longer than the statement timeout")


def is_statement_timeout(exc: BaseException) -> bool:
    """Whether a driver error is a statement cancelled for running too long: PostgreSQL's
    ``query_canceled`` (SQLSTATE 57014, from asyncpg directly or through SQLAlchemy's adapter) for
    the statement timeout, or SQLite's interrupt (only our progress handler interrupts)."""
    if getattr(exc, "sqlstate", None) == "57014":
        # the same SQLSTATE as an operator's pg_cancel_backend ("due to user request"), which is
        # not the request's fault
        return "statement timeout" in str(exc)
    return isinstance(exc, sqlite3.OperationalError) and str(exc) == "interrupted"


def _json_text(value: Any) -> Any:
    # Bodies arrive serialised already; see tables.JsonText.
    return value


def create_engine(url: str, pool_size: int = 20, echo: bool = False, connect_timeout: float = 10,
                  statement_timeout: float | None = None) -> AsyncEngine:
    """The async engine for ``url``; with ``statement_timeout`` (seconds), a statement that runs
    longer is cancelled and raises ``StatementTimeout`` (the service's engine; the CLI's jobs,
    migrations among them, have none). ``connect_timeout``: seconds to wait for a new PostgreSQL
    connection (asyncpg's default is a minute, during which a request to an unreachable server
    would hang)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(url, echo=echo, hide_parameters=True, connect_args={"timeout": 30})
        _configure_sqlite(engine, statement_timeout)
    else:
        engine = _postgresql_engine(url, pool_size, echo, connect_timeout, statement_timeout)
        event.listen(engine.sync_engine, "checkout", _closed_in_pool)
    if statement_timeout is not None:
        _raise_statement_timeouts(engine)
    return engine


def _closed_in_pool(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a pooled asyncpg connection the server has closed (the event loop has seen its end of
    stream). ``InvalidatePoolError`` makes the pool discard every connection made before it and
    connect anew: when the server closed one, a restart has usually closed them all. A connection
    that breaks while in use is SQLAlchemy's to handle (and ``Store.driver``'s)."""
    if dbapi_connection.driver_connection.is_closed():
        raise sa.exc.InvalidatePoolError("the server closed this connection while it was in the pool")


def _postgresql_engine(url: str, pool_size: int, echo: bool, connect_timeout: float,
                       statement_timeout: float | None) -> AsyncEngine:
    server_settings = {"plan_cache_mode": "force_generic_plan", "jit": "off"}
    if statement_timeout is not None:
        server_settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))  # milliseconds
    return create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        json_serializer=_json_text,
        json_deserializer=_json_text,
        # Statements are prepared once per connection; PostgreSQL would still re-plan the access
        # rules' nested conditions on every execution (about 2.6 ms each) whenever it estimates
        # the generic plan dearer than a custom one. Our statements are equality and range
        # lookups on indexed columns, for which the generic plan is the same plan (the search
        # engine chooses where a search with several criteria starts: search/engine.py).
        # No JIT: a generic plan's estimates run high, past jit_above_cost, and compiling took
        # 125 ms (900 ms with optimisation) for a page of a search that runs in 20 ms.
        # asyncpg keeps statements up to 15 KB prepared; a write's reference check with the
        # access rules of several types is about 30 KB (storage/repository.py, Unit.fetch_compiled)
        # and would otherwise be parsed and planned by PostgreSQL on every write.
        connect_args={"server_settings": server_settings, "timeout": connect_timeout,
                      "max_cacheable_statement_size": 256 * 1024},
    )


def _raise_statement_timeouts(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "handle_error")
    def _timeout(context: Any) -> None:
        if is_statement_timeout(context.original_exception):
            raise StatementTimeout() from context.original_exception


# SQLite calls the progress handler every this many virtual machine instructions (some microseconds).
_PROGRESS_STEPS = 10_000
_DEADLINE = "pk_statement_deadline"


class _Deadline:
    """When the statement running on one SQLite connection is to be interrupted (None: no statement)."""

    at: float | None = None

    def passed(self) -> int:
        return int(self.at is not None and time.monotonic() > self.at)


def _configure_sqlite(engine: AsyncEngine, statement_timeout: float | None = None) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        if statement_timeout is not None:
            # aiosqlite runs the connection in a thread of its own; the handler runs there.
            deadline = record.info[_DEADLINE] = _Deadline()
            await_only(record.driver_connection.set_progress_handler(deadline.passed, _PROGRESS_STEPS))

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    if statement_timeout is not None:
        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _start(conn: Any, *_args: Any) -> None:
            conn.connection.info[_DEADLINE].at = time.monotonic() + statement_timeout

        @event.listens_for(engine.sync_engine, "after_cursor_execute")
        def _done(conn: Any, *_args: Any) -> None:
            # Nothing to interrupt until the next statement sets its own deadline. (After a failed
            # statement the old one stays: COMMIT and ROLLBACK take far fewer than _PROGRESS_STEPS.)
            conn.connection.info[_DEADLINE].at = None


def is_sqlite(engine: AsyncEngine | AsyncConnection) -> bool:
    return engine.dialect.name == "sqlite"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def ensure_migrated(engine: AsyncEngine) -> None:
    """Refuse to run against a database that `patientkontrakt migrate` has not brought up to date."""
    head = head_revision()
    try:
        current = await current_revision(engine)
    except (OSError, sa.exc.DBAPIError) as exc:
        raise DatabaseNotMigrated(f"cannot open the database: {exc}") from exc
    if current != head:
        state = "has no schema" if current is None else f"is at schema revision {current}"
        raise DatabaseNotMigrated(
            f"The database {engine.url.render_as_string(hide_password=True)} {state}; this version needs "
            f"revision {head}. Run `patientkontrakt migrate` (same PK_DATABASE_URL) and start again."
        )


def migrate(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking; for the CLI and tests)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
