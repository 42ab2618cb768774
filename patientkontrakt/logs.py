"""The application log: what it says about errors, and what it never says.

The log holds no patient data, ever (docs/operations.md#logging). Patient data reaches an
exception's text in ways no code review can follow: a database error quotes the value it choked
on (``invalid input syntax … "194303050068"``), its DETAIL repeats the failing row or key, and
SQLAlchemy appends the statement with its bound parameters. So an error is logged by what it
*is*, never by what it *says*: ``describe`` names the exception and its causes by type, with the
SQLSTATE and the schema objects PostgreSQL names (constraint, table, column), and ``where``
gives the frames of the traceback (file, line, function), not the messages. Both are bounded in
size whatever the error.

Every record carries ``request_id``: the id of the HTTP request (``api/requestlog.py``) or of the
notification delivery (``notify/worker.py``) it was written for, from ``REQUEST_ID``, a context
variable, so it follows the request into every task it starts; None outside one. With
``PK_LOG_FORMAT=json`` each record is one JSON object per line (``JsonFormatter``): time, level,
logger, message, request_id, and for a record with an exception its types and frames
(``describe``, ``where``), never its text.

``configure`` sets up the log of a process that has not configured logging itself, and keeps the
libraries that would print data quiet below WARNING: SQLAlchemy logs statements with their
parameters at INFO and result rows at DEBUG, aiosqlite every call with its arguments at DEBUG,
httpcore request headers (tokens) at DEBUG. uvicorn's access log prints the request line with
its query string (``Patient?identifier=…``): it is switched off; ``api/requestlog.py`` logs
requests without ids or query strings.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

QUIET = ("sqlalchemy", "aiosqlite", "httpcore")
MAX_CAUSES = 6
MAX_FRAMES = 16  # of the error itself: ours, and the innermost few of the libraries'
MAX_CAUSE_FRAMES = 3  # of each cause: the innermost
MAX_WHERE = 4000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.$]{0,62}")
_SQLSTATE = re.compile(r"[0-9A-Z]{5}")
# Attributes of PostgreSQL errors (asyncpg) that name schema objects, never values.
_SCHEMA_NAMES = ("constraint_name", "table_name", "column_name")
_CHECKOUT = str(Path(__file__).resolve().parents[1])
_OURS = tuple(f"{_CHECKOUT}/{package}/" for package in ("patientkontrakt", "api"))
# Frames are shown relative to the checkout or site-packages, longest prefix first.
_ROOTS = sorted({_CHECKOUT, *(p for p in sys.path if p not in ("", "/"))}, key=len, reverse=True)


REQUEST_ID: ContextVar[str | None] = ContextVar("pk_request_id", default=None)
# An id a client may give: a UUID, or 16-64 hex digits (what load balancers and proxies make:
# nginx's $request_id, Envoy's x-request-id). Nothing else, so that no name can pass; and not one
# that holds a valid personnummer (``_holds_personnummer``), however unlikely by chance.
_SANE_ID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|[0-9A-Fa-f]{16,64}")
_TEN_DIGITS = re.compile(r"(?=(\d{10}))")
# The servers' own loggers, which write to handlers of their own: in JSON, through the root's.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "gunicorn.error")


def request_id(offered: str | None = None) -> str:
    """``offered`` (a client's ``X-Request-ID``) if it is an opaque id (a UUID, or 16-64 hex
    digits) holding no personnummer, else a new random id (32 hex digits)."""
    if offered is not None and _SANE_ID.fullmatch(offered) and not _holds_personnummer(offered.replace("-", "")):
        return offered
    return uuid.uuid4().hex


def _holds_personnummer(text: str) -> bool:
    """Whether some ten digits in a row in ``text`` pass the personnummer's check digit (Luhn)."""
    for found in _TEN_DIGITS.finditer(text):
        digits = [int(d) for d in found.group(1)]
        total = sum(d * 2 - 9 if d * 2 > 9 and i % 2 == 0 else d * 2 if i % 2 == 0 else d
                    for i, d in enumerate(digits))
        if total % 10 == 0:
            return True
    return False


def _record_factory(factory: Any) -> Any:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = factory(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record
    make.pk_request_id = True  # type: ignore[attr-defined]
    return make


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; non-ASCII as itself (UTF-8), so that a search of
    the log for a name finds it as written."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None)}
        if record.exc_info and record.exc_info[1] is not None:  # a library's: by type, never by text
            entry["error"] = describe(record.exc_info[1])
            entry["where"] = where(record.exc_info[1])
        return orjson.dumps(entry).decode()


def configure(level: str, fmt: str = "text") -> None:
    """The process's log at ``level`` (debug, info, warning, error) on stderr, as text or JSON
    (``fmt``), unless logging is configured already (uvicorn's, gunicorn's or the tests' handlers
    stay as they are). Every record gets its ``request_id`` either way."""
    numeric = logging.getLevelName(level.upper())
    numeric = numeric if isinstance(numeric, int) else logging.INFO
    if not getattr(logging.getLogRecordFactory(), "pk_request_id", False):
        logging.setLogRecordFactory(_record_factory(logging.getLogRecordFactory()))
    if fmt == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=numeric, handlers=[handler])
        for name in _SERVER_LOGGERS:  # uvicorn's and gunicorn's own lines as JSON too
            server = logging.getLogger(name)
            server.handlers.clear()
            server.propagate = True
    else:
        logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    logging.getLogger("uvicorn.access").disabled = True


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what led to it: SQLAlchemy's ``orig``, ``__cause__``, the implicit context and
    the members of an exception group, each once, at most ``MAX_CAUSES``."""
    seen: set[int] = set()
    pending = [exc]
    while pending and len(seen) < MAX_CAUSES:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            pending.append(orig)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
        elif current.__context__ is not None and not current.__suppress_context__:
            pending.append(current.__context__)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)


def describe(exc: BaseException) -> str:
    """One line naming ``exc`` and its causes by type, with what a PostgreSQL or SQLite error says
    about itself in codes and names only, e.g. ``sqlalchemy.exc.IntegrityError <-
    asyncpg.exceptions.UniqueViolationError (sqlstate 23505, constraint_name ix_x, table_name
    idx_token)``. No message, no statement, no parameter."""
    parts = []
    for cause in causes(exc):
        facts = []
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and _SQLSTATE.fullmatch(sqlstate):
            facts.append(f"sqlstate {sqlstate}")
        for name in _SCHEMA_NAMES:
            value = getattr(cause, name, None)
            if isinstance(value, str) and _NAME.fullmatch(value):
                facts.append(f"{name} {value}")
        sqlite = getattr(cause, "sqlite_errorname", None)
        if isinstance(sqlite, str) and _NAME.fullmatch(sqlite):
            facts.append(sqlite)
        parts.append(f"{_type_name(cause)} ({', '.join(facts)})" if facts else _type_name(cause))
    return " <- ".join(parts)


def where(exc: BaseException) -> str:
    """Where ``exc`` was raised, as ``file:line in function`` lines: the frames of its traceback in
    our code and the innermost few (at most ``MAX_FRAMES``), then the innermost few of each cause's;
    no source text, no message, at most ``MAX_WHERE`` characters."""
    lines = []
    for number, cause in enumerate(causes(exc)):
        frames: list[traceback.FrameSummary] = list(traceback.extract_tb(cause.__traceback__))
        if number == 0:
            last = len(frames) - MAX_CAUSE_FRAMES
            frames = [f for i, f in enumerate(frames) if i >= last or f.filename.startswith(_OURS)][-MAX_FRAMES:]
        else:
            frames = frames[-MAX_CAUSE_FRAMES:]
        if frames:
            lines.append(f"  {_type_name(cause)} raised at:")
            lines.extend(f"    {_short(frame.filename)}:{frame.lineno} in {frame.name}" for frame in frames)
    return "\n".join(lines)[:MAX_WHERE]


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _short(filename: str) -> str:
    for root in _ROOTS:
        if filename.startswith(root + "/"):
            return filename[len(root) + 1:]
    return filename
