"""Real faults for the tests of errors and outages: never mocks.

* ``PostgresProxy``: a TCP proxy between the service and the shared PostgreSQL server, in a
  thread of its own, that can cut every connection through it (what a network failure or a
  restart does to them) and close its port, so that new connections are refused, until told to
  accept again; or close only its connections to the server, leaving the service's ends open until
  the service next sends on them (``sever``: a restart that a pooler or network in between relays
  late). The shared server is never stopped: other engineers' tests use it.
* ``admin``/``backends``/``terminate``: SQL on the server itself, e.g. ``pg_terminate_backend``
  of the service's connections (what a restart does to existing connections), or a trigger that
  makes a statement fail.
* ``wait_for``: poll a condition with a generous deadline (an ordering, never a timing claim).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

from tests.conftest import _dsn

T = TypeVar("T")
DEADLINE = 30.0


class PostgresProxy:
    """``127.0.0.1:<port>`` forwarding to the PostgreSQL server of ``url``."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self._target = (parsed.host or "127.0.0.1", parsed.port or 5432)
        self._url = url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-proxy", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self._upstream: dict[asyncio.StreamWriter, asyncio.StreamWriter] = {}  # server end -> client end
        self._severed: set[asyncio.StreamWriter] = set()  # client ends kept open until they next send
        self.port = 0
        self.accept()

    def url(self) -> str:
        """``url`` with this proxy as the server."""
        return make_url(self._url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def _run(self, work: Callable[[], Any]) -> Any:
        done: Future[Any] = asyncio.run_coroutine_threadsafe(work(), self._loop)
        return done.result(timeout=DEADLINE)

    def accept(self) -> None:
        """Listen (again, on the same port) and forward new connections."""
        async def listen() -> None:
            self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]
        self._run(listen)

    def refuse(self) -> None:
        """Close the port: connecting is refused (ECONNREFUSED), as to a server that is down."""
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
        self._run(close)

    def cut(self) -> int:
        """Drop every connection through the proxy (both ends); returns how many there were."""
        async def drop() -> int:
            pipes, self._pipes = self._pipes, set()
            for writer in pipes:
                writer.transport.abort()
            return len(pipes) // 2
        count: int = self._run(drop)
        return count

    def sever(self) -> int:
        """Close every connection to the server, but leave the service's end of each open until the
        service next sends on it, and only then close it: until that moment the service cannot
        know (nothing it could read says so). Returns how many there were."""
        async def close_upstream() -> int:
            servers = [writer for writer in self._pipes if writer in self._upstream]
            for server in servers:
                self._severed.add(self._upstream[server])
                server.transport.abort()
            return len(servers)
        count: int = self._run(close_upstream)
        return count

    def down(self) -> None:
        """The database is down: refused, and every existing connection gone."""
        self.refuse()
        self.cut()

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=DEADLINE)

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.transport.abort()
            return
        self._pipes |= {client_writer, server_writer}
        self._upstream[server_writer] = client_writer
        try:
            await asyncio.gather(self._pump(client_reader, server_writer), self._pump(server_reader, client_writer))
        finally:
            del self._upstream[server_writer]
            self._severed.discard(client_writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if writer.transport.is_closing():  # severed: the client sent on it; now it is closed
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if writer not in self._severed:  # severed, the client's end stays open until it sends
                self._pipes.discard(writer)
                writer.transport.abort()
            client = self._upstream.get(writer)  # the client's pump ended: its end goes too
            if client is not None:
                self._severed.discard(client)
                self._pipes.discard(client)
                client.transport.abort()


def admin(url: str, statement: str, *args: Any) -> list[dict[str, Any]]:
    """Run one statement on the database of ``url`` as the test (not as the service)."""
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(_dsn(url))
        try:
            return [dict(r) for r in await conn.fetch(statement, *args)]
        finally:
            await conn.close()
    return asyncio.run(run())


def backends(url: str, where: str = "true") -> list[int]:
    """The server processes of other connections to the database of ``url`` (the service's)."""
    name = make_url(url).database
    rows = admin(url, f"SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() "
                      f"AND backend_type = 'client backend' AND ({where})", name)
    return [int(r["pid"]) for r in rows]


def terminate(url: str, where: str = "true") -> int:
    """``pg_terminate_backend`` of those processes, as a restart ends them; returns once they are
    gone, with how many there were."""
    pids = backends(url, where)
    for pid in pids:
        admin(url, "SELECT pg_terminate_backend($1)", pid)
    wait_for(lambda: not set(pids) & set(backends(url)), "the terminated backends to exit")
    return len(pids)


def wait_for(condition: Callable[[], T], what: str, deadline: float = DEADLINE) -> T:
    """Poll ``condition`` until it holds (returns its value); fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)
