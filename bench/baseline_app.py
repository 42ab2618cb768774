"""The framework+database limit: a bare FastAPI app that returns a stored resource body.

One route, ``GET /fhir/{type}/{id}``, the same path the real read answers, runs the same
lookup (``resource`` by ``res_type``/``res_id``) through an asyncpg pool and returns the stored
JSON text untouched. No validation, no access rules, no SQLAlchemy, no FHIR headers: what is
left is uvicorn, FastAPI routing and one database round trip. It is served by the same
``uvicorn.run`` settings as ``patientkontrakt serve`` (see ``bench.servers``).

    python -m bench.baseline_app --port 8001 --database-url postgresql://postgres@127.0.0.1/pk_bench_10000_run
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from fastapi.responses import Response

from bench.serving import serve, server_arguments

_QUERY = "SELECT body FROM resource WHERE res_type = $1 AND res_id = $2"
_NOT_FOUND = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}'
FHIR_JSON = "application/fhir+json; charset=utf-8"


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """Skip asyncpg's release-time ``RESET ALL``/``UNLISTEN``… round trip: these connections never
    change session state, and the real server's SQLAlchemy pool does not pay for one either
    (its autocommit read connections have no transaction to roll back)."""


def create_app() -> FastAPI:
    dsn = os.environ["BENCH_BASELINE_DSN"]
    pool_size = int(os.environ.get("BENCH_BASELINE_POOL", "20"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, reset=_no_reset)
        yield
        await app.state.pool.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/fhir/{type_}/{id_}")
    async def read(type_: str, id_: str) -> Response:
        async with app.state.pool.acquire() as conn:
            body = await conn.fetchval(_QUERY, type_, id_)
        if body is None:
            return Response(_NOT_FOUND, status_code=404, media_type=FHIR_JSON)
        return Response(body, media_type=FHIR_JSON)

    return app


def main() -> None:
    parser = server_arguments(__doc__.splitlines()[0], port=8001)
    parser.add_argument("--database-url", required=True, help="postgresql:// DSN of the benchmark database")
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    os.environ["BENCH_BASELINE_DSN"] = args.database_url
    os.environ["BENCH_BASELINE_POOL"] = str(args.pool_size)
    serve("bench.baseline_app:create_app", args, log_level=args.log_level)


if __name__ == "__main__":
    main()
