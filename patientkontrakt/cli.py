"""The ``patientkontrakt`` command.

Configuration comes from ``PK_*`` environment variables (see ``patientkontrakt.config``);
the options here override the few that are per-invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from sqlalchemy.exc import SQLAlchemyError

from patientkontrakt.config import Settings, get_settings
from patientkontrakt.storage.database import DatabaseNotMigrated, create_engine, ensure_migrated, migrate
from patientkontrakt.storage.repository import Store

_EPILOG = """\
environment:
  PK_DATABASE_URL   database (default sqlite+aiosqlite:///./patientkontrakt.db;
                    production: postgresql+asyncpg://user@host:5432/db)
  PK_BASE_URL       public base URL of the service (default http://127.0.0.1:8000)
  PK_LOG_LEVEL      debug, info, warning, error (default info)

examples:
  patientkontrakt migrate
  patientkontrakt demo --agreements 50
  patientkontrakt serve --host 127.0.0.1 --port 8000
"""


def _cmd_migrate(args: argparse.Namespace) -> int:
    url = get_settings().database_url
    try:
        migrate(url)
    except (OSError, SQLAlchemyError) as exc:
        print(f"patientkontrakt: cannot migrate {_safe(url)}: {exc}", file=sys.stderr)
        return 1
    print(f"database is up to date: {_safe(url)}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    try:
        asyncio.run(_check_schema(settings.database_url))
    except DatabaseNotMigrated as exc:
        print(f"patientkontrakt: refusing to start: {exc}", file=sys.stderr)
        return 1
    if args.base_url is None and "PK_BASE_URL" not in os.environ:
        os.environ["PK_BASE_URL"] = f"http://{args.host}:{args.port}"
        get_settings.cache_clear()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        access_log=args.access_log,
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        count = asyncio.run(_load_demo(settings, args.agreements, args.seed))
    except DatabaseNotMigrated as exc:
        print(f"patientkontrakt: {exc}", file=sys.stderr)
        return 1
    base = settings.fhir_base
    print(f"demo region loaded: {count} resources ({args.agreements} agreements, all tagged HTEST as test data)")
    print(f"  FHIR base:            {base}")
    print(f"  a Patientkontrakt:    {base}/Patient/demo-pat-000000/$patientkontrakt")
    print(f"  all agreements:       {base}/CarePlan?_include=CarePlan:care-team")
    return 0


async def _load_demo(settings: Settings, agreements: int, seed: int) -> int:
    from patientkontrakt.domain.demo import load_demo
    from patientkontrakt.domain.setup import build_service
    from patientkontrakt.fhir.bundles import BundleProcessor

    engine = create_engine(settings.database_url, pool_size=2)
    try:
        await ensure_migrated(engine)
        service = build_service(settings, Store(engine))
        return await load_demo(BundleProcessor(service), agreements, seed)
    finally:
        await engine.dispose()


async def _check_schema(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        await ensure_migrated(engine)
    finally:
        await engine.dispose()


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patientkontrakt",
        description="Patientkontrakt: a FHIR R4 service for the Swedish Patientkontrakt.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    serve = commands.add_parser("serve", help="run the HTTP service (the database must be migrated)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--base-url", default=None,
                       help="public base URL (default: PK_BASE_URL, else http://HOST:PORT)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(func=_cmd_serve)

    migrate_cmd = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate_cmd.set_defaults(func=_cmd_migrate)

    demo = commands.add_parser("demo", help="load the fictional demo region (idempotent; test data, tagged HTEST)")
    demo.add_argument("--agreements", type=int, default=50, help="number of agreements (default 50)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "base_url", None):
        os.environ["PK_BASE_URL"] = args.base_url
        get_settings.cache_clear()
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
