"""The framework+database limit: a bare FastAPI app that returns a stored resource body.

One route, ``GET /fhir/{type}/{id}``, the same path the real read answers, runs the same
lookup (``resource`` by ``res_type``/``res_id``) through an asyncpg pool and returns the stored
JSON text untouched. No validation, no access rules, no SQLAlchemy, no FHIR headers: what is
left is uvicorn, FastAPI routing and one database round trip. It is served by the same
``uvicorn.run`` settings as ``patientkontrakt serve`` (see ``bench.servers``).

On SQLite (``--database-url sqlite:///path``: ``python -m bench --database sqlite``) the same
lookup runs through a pool of aiosqlite connections (each a thread of its own, as the service's
SQLAlchemy/aiosqlite connections are), read-only on the same file in WAL mode.

    python -m bench.baseline_app --port 8001 --database-url postgresql://postgres@127.0.0.1/pk_bench_10000_run
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
import asyncpg
from fastapi import FastAPI
from fastapi.responses import Response

from bench.serving import serve, server_arguments

_QUERY = "SELECT body FROM resource WHERE res_type = $1 AND res_id = $2"
_SQLITE_QUERY = "SELECT body FROM resource WHERE res_type = ? AND res_id = ?"
_NOT_FOUND = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}'
FHIR_JSON = "application/fhir+json; charset=utf-8"


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """Skip asyncpg's release-time ``RESET ALL``/``UNLISTEN``… round trip: these connections never
    change session state, and the real server's SQLAlchemy pool does not pay for one either
    (its autocommit read connections have no transaction to roll back)."""


class _SqlitePool:
    """``size`` aiosqlite connections to one file, handed out one request at a time."""

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size = path, size
        self.idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(self.size):
            conn = await aiosqlite.connect(self.path, isolation_level=None)
            await conn.execute("PRAGMA busy_timeout=30000")
            self.idle.put_nowait(conn)

    async def fetchval(self, type_: str, id_: str) -> Any:
        conn = await self.idle.get()
        try:
            async with conn.execute(_SQLITE_QUERY, (type_, id_)) as cursor:
                row = await cursor.fetchone()
        finally:
            self.idle.put_nowait(conn)
        return None if row is None else row[0]

    async def close(self) -> None:
        while not self.idle.empty():
            await self.idle.get_nowait().close()


def create_app() -> FastAPI:
    dsn = os.environ["BENCH_BASELINE_DSN"]
    pool_size = int(os.environ.get("BENCH_BASELINE_POOL", "20"))
    sqlite_path = dsn.split(":///", 1)[1] if dsn.startswith("sqlite") else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if sqlite_path is not None:
            app.state.sqlite = _SqlitePool(sqlite_path, pool_size)
            await app.state.sqlite.open()
            yield
            await app.state.sqlite.close()
            return
        app.state.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, reset=_no_reset)
        yield
        await app.state.pool.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/fhir/{type_}/{id_}")
    async def read(type_: str, id_: str) -> Response:
        if sqlite_path is not None:
            body = await app.state.sqlite.fetchval(type_, id_)
        else:
            async with app.state.pool.acquire() as conn:
                body = await conn.fetchval(_QUERY, type_, id_)
        if body is None:
            return Response(_NOT_FOUND, status_code=404, media_type=FHIR_JSON)
        return Response(body, media_type=FHIR_JSON)

    return app


def main() -> None:
    parser = server_arguments(__doc__.splitlines()[0], port=8001)
    parser.add_argument("--database-url", required=True,
                        help="postgresql:// DSN or sqlite:///path of the benchmark database")
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    os.environ["BENCH_BASELINE_DSN"] = args.database_url
    os.environ["BENCH_BASELINE_POOL"] = str(args.pool_size)
    serve("bench.baseline_app:create_app", args, log_level=args.log_level)


if __name__ == "__main__":
    main()
