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
again: checking it out finds it closed, or its end of stream waiting unread in the socket, and the
pool drops every connection it made before and connects anew (``_closed_in_pool``), so a restart
costs no request an error.
"""

from __future__ import annotations

import select
import sqlite3
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
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
                  statement_timeout: float | None = None, pgbouncer: bool = False) -> AsyncEngine:
    """The async engine for ``url``; with ``statement_timeout`` (seconds), a statement that runs
    longer is cancelled and raises ``StatementTimeout`` (the service's engine; the CLI's jobs,
    migrations among them, have none). ``connect_timeout``: seconds to wait for a new PostgreSQL
    connection (asyncpg's default is a minute, during which a request to an unreachable server
    would hang)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # As many pooled connections as on PostgreSQL: each aiosqlite connection is a thread, and
        # SQLAlchemy's default (5, plus 10 closed again on return) opened and closed one, thread
        # and all, for most requests under load. Reset on return only when a transaction is open
        # (``_configure_sqlite``): a rollback is a round trip to the connection's thread.
        engine = create_async_engine(url, echo=echo, hide_parameters=True, connect_args={"timeout": 30},
                                     pool_size=pool_size, max_overflow=pool_size, pool_reset_on_return=None)
        _configure_sqlite(engine, statement_timeout)
    else:
        engine = _postgresql_engine(url, pool_size, echo, connect_timeout, statement_timeout, pgbouncer)
        event.listen(engine.sync_engine, "checkout", _closed_in_pool)
    if statement_timeout is not None:
        _raise_statement_timeouts(engine)
    return engine


def _closed_in_pool(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a pooled asyncpg connection the server has closed: the event loop has seen its end of
    stream, or the end (or anything else: an idle connection is sent nothing it asked for) waits
    in the socket, not yet read (``_unread``). ``InvalidatePoolError`` makes the pool discard
    every connection made before it and connect anew: when the server closed one, a restart has
    usually closed them all. A connection that breaks while in use is SQLAlchemy's to handle
    (and ``Store.driver``'s); one whose close has not reached this machine yet, ``Store``'s
    write transactions (``Store._begun``)."""
    driver = dbapi_connection.driver_connection
    if driver.is_closed() or _unread(driver):
        raise sa.exc.InvalidatePoolError("the server closed this connection while it was in the pool")


_POLL = getattr(select, "poll", None)
_ARRIVED = select.POLLIN | getattr(select, "POLLRDHUP", 0)


def _unread(driver: Any) -> bool:
    """Whether the socket of an idle asyncpg connection holds something the event loop has not read
    yet (one system call, about 2 µs): when the server has just closed it (a restart ends every
    connection with a FATAL message and the end of stream), the loop reads that only on its next
    turn, and the request that checked the connection out would fail on it."""
    transport = getattr(driver, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if _POLL is None or sock is None:
        return False
    poll = _POLL()
    poll.register(sock.fileno(), _ARRIVED)
    return bool(poll.poll(0))


def server_settings(statement_timeout: float | None) -> dict[str, str]:
    """The settings every PostgreSQL connection of the service runs with (see ``_postgresql_engine``)."""
    settings = {"plan_cache_mode": "force_generic_plan", "jit": "off"}
    if statement_timeout is not None:
        settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))  # milliseconds
    return settings


def _unnamed_statement() -> str:
    # The unnamed statement: asyncpg, whose statement cache is off, parses it again with each
    # Bind, in the one message sequence PgBouncer hands to one server connection, so it works
    # outside transactions too; named ones (SQLAlchemy's docs suggest unique names) are parsed in
    # a round trip of their own, which in autocommit PgBouncer may send to another server
    # connection than the execution ("prepared statement ... does not exist"), and stay behind on
    # the server connection until it is closed.
    return ""


def _postgresql_engine(url: str, pool_size: int, echo: bool, connect_timeout: float,
                       statement_timeout: float | None, pgbouncer: bool = False) -> AsyncEngine:
    connect_args: dict[str, Any] = {"timeout": connect_timeout}
    if pgbouncer:
        # PgBouncer in transaction mode hands each transaction (each statement outside one) any
        # server connection: no statement prepared on one connection may be used later, and
        # startup parameters other than a few it knows are refused, so the settings are the
        # role's (ALTER ROLE ... SET, docs/operations.md) and checked at start (``check_settings``).
        connect_args |= {"statement_cache_size": 0, "prepared_statement_cache_size": 0,
                         "prepared_statement_name_func": _unnamed_statement}
    else:
        connect_args["server_settings"] = server_settings(statement_timeout)
        # asyncpg keeps statements up to 15 KB prepared; a write's reference check with the
        # access rules of several types is about 30 KB (storage/repository.py, Unit.fetch_compiled)
        # and would otherwise be parsed and planned by PostgreSQL on every write.
        connect_args["max_cacheable_statement_size"] = 256 * 1024
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
        connect_args=connect_args,
    )


async def check_settings(engine: AsyncEngine, statement_timeout: float | None) -> list[str]:
    """The service's connection settings (``server_settings``) that a connection of ``engine``
    does not have: behind PgBouncer they come from the role or database, not from the connection."""
    wanted = server_settings(statement_timeout)
    async with engine.connect() as conn:
        found = {name: str((await conn.exec_driver_sql(f"SHOW {name}")).scalar()) for name in wanted}
    missing = []
    for name, value in wanted.items():
        have = found[name]
        if name == "statement_timeout":
            have = str(_milliseconds(have))
        if have != value:
            missing.append(f"{name} = {value} (the connection has {found[name]})")
    return missing


def _milliseconds(shown: str) -> int:
    units = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
    for unit in sorted(units, key=len, reverse=True):
        if shown.endswith(unit) and shown[: -len(unit)].isdigit():
            return int(shown[: -len(unit)]) * units[unit]
    return int(shown) if shown.isdigit() else -1


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

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def start(self) -> None:
        self.at = time.monotonic() + self.seconds

    def passed(self) -> int:
        return int(self.at is not None and time.monotonic() > self.at)


def sqlite_deadline(info: dict[Any, Any]) -> _Deadline | None:
    """The statement deadline of a pooled SQLite connection (its ``info``), if the engine has a
    statement timeout: ``start()`` it before a statement sent to the driver directly."""
    deadline: _Deadline | None = info.get(_DEADLINE)
    return deadline


class _SQLiteCompiler(SQLiteCompiler):
    """SQLite's compiler, with a row-value IN over a list (``tuple_(a, b).in_(keys)``) as
    ``(a, b) IN (SELECT * FROM (VALUES …))``: SQLite 3.40 plans the plain ``IN (VALUES …)`` as a
    scan of the whole table (50 ms on 22,000 resources, for every write's reference check and
    every ``_include``), the subquery form by the index (0.04 ms)."""

    def _literal_execute_expanding_parameter(self, name: Any, parameter: Any, values: Any, **kw: Any) -> Any:
        to_update, replacement = super()._literal_execute_expanding_parameter(name, parameter, values, **kw)  # type: ignore[no-untyped-call]
        if values and replacement.startswith("VALUES "):
            replacement = f"SELECT * FROM ({replacement})"
        return to_update, replacement


SQLITE_BUSY_TIMEOUT = 30.0  # seconds a writer waits for SQLite's write lock before it is refused


def _configure_sqlite(engine: AsyncEngine, statement_timeout: float | None = None) -> None:
    engine.dialect.statement_compiler = _SQLiteCompiler
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={round(SQLITE_BUSY_TIMEOUT * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        if statement_timeout is not None:
            # aiosqlite runs the connection in a thread of its own; the handler runs there.
            deadline = record.info[_DEADLINE] = _Deadline(statement_timeout)
            await_only(record.driver_connection.set_progress_handler(deadline.passed, _PROGRESS_STEPS))

    @event.listens_for(engine.sync_engine, "reset")
    def _reset(dbapi_connection: Any, _record: Any, state: Any) -> None:
        # The pool's rollback on return (``pool_reset_on_return=None``), when there is something
        # to roll back: a connection given back with its transaction open.
        if state.asyncio_safe and not state.terminate_only and _in_transaction(dbapi_connection):
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    if statement_timeout is not None:
        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _start(conn: Any, *_args: Any) -> None:
            conn.connection.info[_DEADLINE].start()

        @event.listens_for(engine.sync_engine, "after_cursor_execute")
        def _done(conn: Any, *_args: Any) -> None:
            # Nothing to interrupt until the next statement sets its own deadline. (After a failed
            # statement the old one stays: COMMIT and ROLLBACK take far fewer than _PROGRESS_STEPS.)
            conn.connection.info[_DEADLINE].at = None


def _in_transaction(dbapi_connection: Any) -> bool:
    try:
        return bool(dbapi_connection.driver_connection.in_transaction)
    except ValueError:  # closed already: nothing to roll back
        return False


def is_sqlite(engine: AsyncEngine | AsyncConnection) -> bool:
    return engine.dialect.name == "sqlite"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The newest schema revision this code's migrations know (read once per process: reading
    the migration scripts takes about 25 ms, and they change only with the code)."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


@lru_cache(maxsize=1)
def known_revisions() -> frozenset[str]:
    """Every schema revision this code's migrations know (read once per process)."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return frozenset(revision.revision for revision in script.walk_revisions())


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
