"""Short SQLite statements on the event loop's own thread.

aiosqlite runs each connection in a thread of its own and hands every call over to it and back
(a queue, a thread woken, ``call_soon_threadsafe``, the GIL passed twice): about 90 µs of CPU per
call on the benchmark machine, where SQLite reads a row by its key in 3 µs and appends an access-log
entry with its queue row in about 40 µs (docs/performance.md, "SQLite: the read's two statements
on the loop"). An authenticated read by id is two such calls — the row, then its access-log entry —
and they were the larger part of its cost.

Those two, and only statements of that kind (bounded by an index lookup and a few rows, whatever
a client sends), run here: on a plain ``sqlite3`` connection of the running event loop's own,
synchronously, so they never wait for anything:

- ``busy_timeout`` 0: where SQLite would wait for a lock (another process writing, such as the
  worker or the CLI; for a reader, a WAL recovery) the call gives up at once and the caller takes
  the thread path, which waits in SQLite's busy handler as before. Writers of this process are
  already in turn (``Store.sqlite_writer``) before they come here.
- ``wal_autocheckpoint`` 0: a checkpoint copies the WAL into the database and syncs both, which
  would stop the loop for milliseconds. After every ``checkpoint_every`` commits here a passive
  checkpoint runs on the thread path instead (``Store``); the service's other connections
  checkpoint on their own commits as before.
- Any SQLite error: what was begun is rolled back and the caller takes the thread path, whose
  handling of errors (outages as 503, statement timeouts, a dropped connection) is the service's
  one. A statement that failed here is therefore tried once more there.

Searches, writes of resources and everything else stay on the thread path, where a long statement
keeps SQLite's lock and the thread, not the loop. An in-memory database (each connection its own)
or a file not in WAL mode never comes here.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 200  # commits here between passive checkpoints (about SQLite's own 1,000 pages)


class InlineSQLite:
    """One ``sqlite3`` connection per running event loop, for ``read`` and ``write``."""

    def __init__(self, url: URL, checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        database = url.database
        self.path = database if database and database != ":memory:" and not url.query else None
        self.checkpoint_every = checkpoint_every
        self.commits = 0
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, sqlite3.Connection | None] = \
            weakref.WeakKeyDictionary()
        self._opened: list[sqlite3.Connection] = []

    def _connection(self) -> sqlite3.Connection | None:
        """The running loop's connection, opened on first use; None where this path is not taken."""
        if self.path is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            return self._connections[loop]
        except KeyError:
            pass
        conn = None
        try:
            # check_same_thread: a loop may run in another thread than the one that made the Store
            # (a test client's); the connection is only ever used from its loop's thread.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("PRAGMA synchronous=NORMAL")  # per connection: as the engine's (no fsync per commit)
            conn.execute("PRAGMA foreign_keys=ON")
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        except sqlite3.Error as exc:  # not remembered: the next call tries again
            log.debug("SQLite statements on aiosqlite's thread for now: %s", type(exc).__name__)
            if conn is not None:
                conn.close()
            return None
        if mode != "wal":  # never here: a reader on this connection could hold writers up
            conn.close()
            self._connections[loop] = None
            return None
        self._opened.append(conn)
        weakref.finalize(loop, self._forget, conn)  # a loop that is gone leaves no connection open
        self._connections[loop] = conn
        return conn

    def read(self, sql: str, args: Sequence[Any]) -> list[Any] | None:
        """The rows of ``sql``, run in autocommit (one statement reads one snapshot); None: take
        the thread path."""
        conn = self._connection()
        if conn is None:
            return None
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.Error:
            return None

    def write(self, work: Callable[[sqlite3.Connection], None]) -> bool:
        """Run ``work`` between ``BEGIN IMMEDIATE`` and ``COMMIT``; False (nothing written): take
        the thread path. An exception not SQLite's is raised after the rollback."""
        conn = self._connection()
        if conn is None:
            return False
        try:
            conn.execute("BEGIN IMMEDIATE")
            work(conn)
            conn.execute("COMMIT")
        except sqlite3.Error:
            self._roll_back(conn)
            return False
        except BaseException:
            self._roll_back(conn)
            raise
        self.commits += 1
        return True

    def _forget(self, conn: sqlite3.Connection) -> None:
        conn.close()
        if conn in self._opened:
            self._opened.remove(conn)

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        """End what ``write`` began; a connection that cannot is closed (its lock with it) and
        the loop's next call opens another."""
        if not conn.in_transaction:
            return
        try:
            conn.rollback()
        except sqlite3.Error:
            self._forget(conn)
            self._connections.pop(asyncio.get_running_loop(), None)

    @property
    def checkpoint_due(self) -> bool:
        return self.commits > 0 and self.commits % self.checkpoint_every == 0

    def close(self) -> None:
        for conn in self._opened:
            conn.close()
        self._opened.clear()
        self._connections.clear()
