"""The ``patientkontrakt`` command.

Configuration comes from ``PK_*`` environment variables (see ``patientkontrakt.config``);
the options here override the few that are per-invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from patientkontrakt.audit.checkpoint import AuditKeyError
from patientkontrakt.audit.checkpoint import generate_key as generate_audit_key
from patientkontrakt.audit.commands import load_keys as load_audit_keys
from patientkontrakt.config import Settings, get_settings
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.logs import describe
from patientkontrakt.security.keys import SigningKeyError, SigningKeys, generate_key
from patientkontrakt.storage.database import DatabaseNotMigrated, create_engine, ensure_migrated, migrate
from patientkontrakt.storage.errors import DatabaseUnavailable
from patientkontrakt.storage.repository import Store

T = TypeVar("T")

_EPILOG = """\
environment (all in docs/operations.md):
  PK_DATABASE_URL   database (default sqlite+aiosqlite:///./patientkontrakt.db;
                    production: postgresql+asyncpg://user@host:5432/db)
  PK_BASE_URL       public base URL of the service (default http://127.0.0.1:8000)
  PK_SIGNING_KEY    PEM file of the token signing key (default ./patientkontrakt-signing-key.pem)
  PK_TEST_IDP       true: sign in through the built-in test IdP (demo data only)
  PK_OIDC_ISSUER    external OpenID Connect provider for sign-in (with PK_OIDC_CLIENT_ID, ...)
  PK_AUDIT_KEY      Ed25519 PEM file that signs the access log's checkpoints
                    (default ./patientkontrakt-audit-key.pem)
  PK_AUDIT_CHECKPOINT_FILE  file each new checkpoint is appended to (outside the database's reach)
  PK_LOG_LEVEL      debug, info, warning, error (default info)
  PK_LOG_FORMAT     text or json (one JSON object per line, with the request id)
  PK_REQUEST_LOG    true: one log line per request, without ids or query strings
  PK_RETRY_AFTER    seconds clients are told to wait while the database is unavailable (default 10)
  PK_SUBSCRIPTION_ALLOWED_HOSTS  hosts a Subscription may deliver to although not public https
                    (comma-separated; make run: 127.0.0.1)

examples:
  patientkontrakt migrate
  patientkontrakt demo --agreements 50 --base-url http://127.0.0.1:8080
  PK_TEST_IDP=true patientkontrakt serve --host 127.0.0.1 --port 8080
  patientkontrakt token demo-ehr --key demo-ehr-key.pem
  patientkontrakt audit verify --checkpoint /mnt/worm/pk-checkpoints
  patientkontrakt worker
  patientkontrakt subscriptions status
"""


def _cmd_migrate(args: argparse.Namespace) -> int:
    settings = get_settings()
    url = settings.database_url
    try:
        migrate(url)
        reindexed = asyncio.run(_with_service(settings, _ensure_index))
    except (OSError, SQLAlchemyError, DatabaseUnavailable) as exc:
        print(f"patientkontrakt: cannot migrate {_safe(url)}: {describe(exc)}", file=sys.stderr)
        return 1
    if reindexed:
        print(f"search index rebuilt for changed search parameters: {reindexed} resources")
    print(f"database is up to date: {_safe(url)}")
    return 0


def _cmd_reindex(args: argparse.Namespace) -> int:
    from patientkontrakt.fhir.reindex import reindex

    count = asyncio.run(_with_service(get_settings(), reindex))
    print(f"reindexed {count} resources")
    return 0


async def _ensure_index(service: FhirService) -> int | None:
    from patientkontrakt.fhir.reindex import ensure_current

    return await ensure_current(service)


async def _with_service(settings: Settings, work: Callable[[FhirService], Awaitable[T]]) -> T:
    """Run ``work`` with the service as the service itself (no access rules, no access log)."""
    from patientkontrakt.domain.setup import build_service

    engine = create_engine(settings.database_url, pool_size=2, pgbouncer=settings.database_pgbouncer)
    try:
        await ensure_migrated(engine)
        return await work(build_service(settings, Store(engine)))
    finally:
        await engine.dispose()


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    try:
        asyncio.run(_check_schema(settings.database_url, settings.database_pgbouncer))
        SigningKeys.load(settings.signing_key, settings.previous_keys)
        load_audit_keys(settings)
    except (DatabaseNotMigrated, SigningKeyError, AuditKeyError) as exc:
        print(f"patientkontrakt: refusing to start: {exc}", file=sys.stderr)
        return 1
    if _tracing_without_sdk():
        print("patientkontrakt: refusing to start: OTEL_EXPORTER_OTLP_ENDPOINT is set, but OpenTelemetry is not "
              "installed: install the extra (pip install 'patientkontrakt[otel]') or unset the variable",
              file=sys.stderr)
        return 1
    if args.base_url is None and "PK_BASE_URL" not in os.environ:
        os.environ["PK_BASE_URL"] = f"http://{args.host}:{args.port}"
        get_settings.cache_clear()
    if args.request_log:  # read by the app in each worker process
        os.environ["PK_REQUEST_LOG"] = "true"
        get_settings.cache_clear()
    base = get_settings().base_url.rstrip("/")
    if settings.log_format != "json":  # a JSON log is JSON only
        print(f"Patientkontrakt on {base}", flush=True)
        print(f"  staff pages:        {base}/personal", flush=True)
        print(f"  patient e-service:  {base}/mitt", flush=True)
        print(f"  FHIR API:           {base}/fhir  (SMART: {base}/fhir/.well-known/smart-configuration)", flush=True)
        if settings.test_idp:
            print("  sign-in: the TEST IdP (PK_TEST_IDP): choose any demo staff member or patient; demo data only",
                  flush=True)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        access_log=False,  # it prints ids and query strings: api/requestlog.py logs requests instead
        http="api.limits:HeaderTimeoutProtocol",  # PK_HEADER_TIMEOUT (uvicorn has no header timeout)
    )
    return 0


def _tracing_without_sdk() -> bool:
    """Tracing configured (api/tracing.py) but the ``otel`` extra not installed: said before
    uvicorn starts, rather than as an error of its worker loading the app."""
    import importlib.util

    wanted = any(os.environ.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    if not wanted or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    try:
        return importlib.util.find_spec("opentelemetry.sdk.trace") is None
    except (ImportError, ValueError):  # a parent package missing; a module blocked in sys.modules
        return True


def _cmd_worker(args: argparse.Namespace) -> int:
    from patientkontrakt.logs import configure

    settings = get_settings()
    configure(settings.log_level, settings.log_format)
    try:
        asyncio.run(_run_worker(settings))
    except (DatabaseNotMigrated, DatabaseUnavailable, OSError, SQLAlchemyError) as exc:
        print(f"patientkontrakt: worker: {describe(exc)}", file=sys.stderr)
        return 1
    return 0


async def _run_worker(settings: Settings) -> None:
    """Deliver notifications until SIGTERM or SIGINT (then finish the request under way), and
    run Bulk Data export jobs beside (as the API processes do, unless PK_EXPORT_POLL_INTERVAL
    is 0: several runners are safe, each job is claimed by one)."""
    import signal

    from patientkontrakt.audit.log import AuditLog
    from patientkontrakt.domain.setup import build_service
    from patientkontrakt.fhir.export import run_forever
    from patientkontrakt.notify.worker import Worker
    from patientkontrakt.security.stored_access import bulk_export
    from patientkontrakt.storage.engines import open_store

    store = await open_store(settings, pool_size=4)
    try:
        service = build_service(settings, store, log=AuditLog(store))
        worker = Worker(service, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        exporting = asyncio.create_task(run_forever(bulk_export(service), settings.export_poll_interval)) \
            if settings.export_poll_interval > 0 else None
        try:
            await worker.run(stop)
        finally:
            if exporting is not None:
                exporting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await exporting
            await worker.close()
    finally:
        await store.dispose()


def _cmd_subscriptions(args: argparse.Namespace) -> int:
    from patientkontrakt.notify.status import delivery_status, status_line, table

    settings = get_settings()

    async def run() -> str:
        engine = create_engine(settings.database_url, pool_size=1, pgbouncer=settings.database_pgbouncer)
        try:
            await ensure_migrated(engine)
            rows = await delivery_status(Store(engine))
        finally:
            await engine.dispose()
        return status_line(rows) if args.json else table(rows)

    try:
        print(asyncio.run(run()))
    except (DatabaseNotMigrated, DatabaseUnavailable, OSError, SQLAlchemyError) as exc:
        print(f"patientkontrakt: subscriptions: {describe(exc)}", file=sys.stderr)
        return 1
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from patientkontrakt.security.demo_clients import demo_ehr_key, demo_ehr_key_path, register_demo_clients

    if args.migrate and (failed := _cmd_migrate(args)):
        return failed
    settings = get_settings()
    # The keys first, before anything is loaded: where one cannot be written (a read-only
    # directory of mounted secrets, as in the image), say so instead of failing halfway.
    try:
        if not settings.signing_key.exists():
            generate_key(settings.signing_key)
            print(f"generated the token signing key {settings.signing_key}")
        if not settings.audit_key.exists():
            generate_audit_key(settings.audit_key)
            print(f"generated the access log's checkpoint key {settings.audit_key}")
        demo_ehr_key(demo_ehr_key_path(settings))
    except OSError as exc:
        print(f"patientkontrakt: demo: cannot make or read the key {exc.filename or settings.signing_key.parent}: "
              f"{exc.strerror or exc}. The demo keeps its "
              "EHR client's key next to the signing key (PK_SIGNING_KEY): that directory must be writable",
              file=sys.stderr)
        return 1
    print(f"loading the demo region: its directory and {args.agreements} agreements (test data, tagged HTEST)",
          flush=True)

    async def load(service: FhirService) -> tuple[int, Path]:
        count = await _load_demo(service, args.agreements, args.seed)
        return count, await register_demo_clients(service, settings)

    try:
        count, ehr_key = asyncio.run(_with_service(settings, load))
    except DatabaseNotMigrated as exc:
        print(f"patientkontrakt: {exc}", file=sys.stderr)
        return 1
    base = settings.base_url.rstrip("/")
    print(f"demo region loaded: {count} resources ({args.agreements} agreements, all tagged HTEST as test data)")
    print(f"  staff pages:          {base}/personal   sign in as e.g. a nurse of Vårdcentralen Björkbacken")
    print(f"  patient e-service:    {base}/mitt       sign in as e.g. any demo patient")
    print(f"  FHIR base:            {base}/fhir   (every request needs a token)")
    print(f"  demo EHR client:      demo-ehr, private key {ehr_key}, acting for Vårdcentralen Björkbacken")
    print(f"  a token for curl:     TOKEN=$(.venv/bin/patientkontrakt token demo-ehr{_base_url_option(base)})")
    print(f"  agreements:           curl -H \"Authorization: Bearer $TOKEN\" '{base}/fhir/CarePlan?_count=1'")
    return 0


def _demo_progress(loaded: int, total: int) -> None:
    """A line when the directory is in and one per fifth of the agreements (flushed: ``make run``
    shows them as they come)."""
    if loaded == 0:
        print("  directory loaded: organisations, staff and their commissions", flush=True)
    elif loaded == total or loaded % max(1, total // 5) == 0:
        print(f"  agreements: {loaded}/{total}", flush=True)


async def _load_demo(service: FhirService, agreements: int, seed: int) -> int:
    from patientkontrakt.domain.demo import load_demo
    from patientkontrakt.fhir.bundles import BundleProcessor

    return await load_demo(BundleProcessor(service), agreements, seed, progress=_demo_progress)


def _cmd_keys(args: argparse.Namespace) -> int:
    settings = get_settings()
    path = Path(args.out) if args.out else settings.signing_key
    if path.exists() and not args.force:
        print(f"patientkontrakt: {path} exists; use --force to replace it (see docs/security.md on rollover)",
              file=sys.stderr)
        return 1
    generate_key(path)
    print(f"wrote a new RSA signing key to {path} (kid {SigningKeys.load(path).kid})")
    return 0


def _cmd_clients(args: argparse.Namespace) -> int:
    from patientkontrakt.security.clients import ClientError, Clients

    settings = get_settings()

    async def run(service: FhirService) -> int:
        clients = Clients(service.store)
        if args.action == "list":
            for row in await clients.registered():
                print(f"{row.client_id}\t{row.kind}\t{row.care_unit or '-'}\t{row.scope}\t{row.name}")
            return 0
        if args.action == "remove":
            removed = await clients.remove(args.client_id)
            print(f"removed {args.client_id}" if removed else f"no client {args.client_id}")
            return 0 if removed else 1
        jwks = Path(args.jwks).read_text() if args.jwks else None
        await clients.add(args.client_id, name=args.name or args.client_id, kind=args.kind,
                          redirect_uris=args.redirect_uri or [], jwks=jwks, jwks_uri=args.jwks_uri,
                          scope=args.scope, care_unit=args.care_unit)
        print(f"registered {args.kind} client {args.client_id}")
        return 0

    try:
        return asyncio.run(_with_service(settings, run))
    except ClientError as exc:
        print(f"patientkontrakt: {exc}", file=sys.stderr)
        return 2


def _cmd_audit(args: argparse.Namespace) -> int:
    from patientkontrakt.audit.commands import run

    result: int = asyncio.run(run(args, get_settings()))
    return result


def _cmd_token(args: argparse.Namespace) -> int:
    from patientkontrakt.security.client_assertion import TokenRequestError, request_token

    settings = get_settings()
    key = Path(args.key) if args.key else settings.signing_key.parent / f"{args.client_id}-key.pem"
    try:
        token = request_token(settings.base_url, args.client_id, key, args.scope)
    except TokenRequestError as exc:
        print(f"patientkontrakt: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0


def _base_url_option(base: str) -> str:
    """`` --base-url …`` when the service is not at the default base URL (a command to print)."""
    default = Settings.model_fields["base_url"].default
    return "" if base == str(default).rstrip("/") else f" --base-url {base}"


async def _check_schema(url: str, pgbouncer: bool) -> None:
    engine = create_engine(url, pool_size=1, pgbouncer=pgbouncer)
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
    serve.add_argument("--request-log", "--access-log", dest="request_log", action="store_true",
                       help="log every request: method, route, status and duration, never ids or query strings "
                            "(PK_REQUEST_LOG)")
    serve.set_defaults(func=_cmd_serve)

    worker = commands.add_parser("worker", help="deliver Subscription notifications (run one or more beside the "
                                                "service; PK_SUBSCRIPTION_ALLOWED_HOSTS, PK_WORKER_*)")
    worker.set_defaults(func=_cmd_worker)

    subscriptions = commands.add_parser("subscriptions", help="Subscriptions and their deliveries")
    subscription_actions = subscriptions.add_subparsers(dest="action", required=True, metavar="action")
    status = subscription_actions.add_parser(
        "status", help="per subscription: owner unit, status, endpoint host, pending, delivered, skipped, "
                       "failures, last error, last delivery, age of the oldest pending notification")
    status.add_argument("--json", action="store_true", help="one JSON line of totals, as the worker logs it")
    subscriptions.set_defaults(func=_cmd_subscriptions)

    migrate_cmd = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate_cmd.set_defaults(func=_cmd_migrate)

    demo = commands.add_parser("demo", help="load the fictional demo region and register its demo clients "
                                            "(idempotent; test data, tagged HTEST)")
    demo.add_argument("--agreements", type=int, default=50, help="number of agreements (default 50)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    demo.add_argument("--migrate", action="store_true",
                      help="first create or upgrade the database schema, as the migrate command does (make run)")
    demo.add_argument("--base-url", default=None,
                      help="public base URL the demo's sign-in clients return to (default: PK_BASE_URL, "
                           "else http://127.0.0.1:8000)")
    demo.set_defaults(func=_cmd_demo)

    reindex = commands.add_parser("reindex", help="rebuild the search index of every resource")
    reindex.set_defaults(func=_cmd_reindex)

    keys = commands.add_parser("keys", help="token signing keys")
    keys_actions = keys.add_subparsers(dest="action", required=True, metavar="action")
    generate = keys_actions.add_parser("generate", help="write a new RSA signing key (PEM)")
    generate.add_argument("--out", default=None, help="where (default: PK_SIGNING_KEY)")
    generate.add_argument("--force", action="store_true", help="replace an existing file")
    keys.set_defaults(func=_cmd_keys)

    clients = commands.add_parser("clients", help="register, list and remove OAuth clients")
    client_actions = clients.add_subparsers(dest="action", required=True, metavar="action")
    add = client_actions.add_parser("add", help="register (or replace) a client")
    add.add_argument("client_id")
    add.add_argument("--name", help="shown on the sign-in page")
    add.add_argument("--kind", choices=("public", "confidential", "backend", "directory"), required=True,
                     help="public: PKCE only (apps in a browser or on a phone); confidential: PKCE and "
                          "private_key_jwt; backend: client credentials (SMART Backend Services) acting for "
                          "a care unit; directory: client credentials for the region's directory "
                          "synchronisation, the only client that writes Organization, Practitioner and "
                          "PractitionerRole")
    add.add_argument("--redirect-uri", action="append", help="allowed redirect URI (repeat for several)")
    add.add_argument("--jwks", help="file with the client's public JWK Set (confidential, backend)")
    add.add_argument("--jwks-uri", help="URL of the client's public JWK Set (instead of --jwks)")
    add.add_argument("--scope", required=True, help='the scopes it may be granted, e.g. "system/*.rs"')
    add.add_argument("--care-unit", help="HSA-id of the care unit a backend client acts for")
    client_actions.add_parser("list", help="list the registered clients")
    remove = client_actions.add_parser("remove", help="remove a client and revoke its refresh tokens")
    remove.add_argument("client_id")
    clients.set_defaults(func=_cmd_clients)

    audit = commands.add_parser("audit", help="the access log")
    audit_actions = audit.add_subparsers(dest="action", required=True, metavar="action")
    verify = audit_actions.add_parser("verify", help="check every entry against the Merkle tree, the tree against "
                                                     "its signed checkpoints and the last exported checkpoint; "
                                                     "exit 1 naming what is wrong")
    verify.add_argument("--checkpoint", type=Path, help="the exported checkpoint(s) to verify against (the last in "
                                                        "the file; default PK_AUDIT_CHECKPOINT_FILE)")
    verify.add_argument("--archived-before", type=date.fromisoformat, metavar="YYYY-MM-DD",
                        help="entries recorded before this date may have been moved to an archive (their "
                             "partitions detached; docs/security.md)")
    audit_actions.add_parser("seal", help="seal the entries written so far into the tree and sign a checkpoint "
                                          "(the API does this every PK_AUDIT_SEAL_INTERVAL seconds)")
    audit_actions.add_parser("checkpoint", help="print the latest signed checkpoint (to keep outside the database)")
    key = audit_actions.add_parser("key", help="print the checkpoint key's verifier key (C2SP vkey)")
    key.add_argument("--generate", action="store_true", help="first write a new Ed25519 key to PK_AUDIT_KEY")
    key.add_argument("--force", action="store_true", help="with --generate: replace an existing key")
    audit.set_defaults(func=_cmd_audit)

    token = commands.add_parser("token", help="get an access token for a backend client from the running server "
                                              "(SMART Backend Services), e.g. for curl")
    token.add_argument("client_id")
    token.add_argument("--key", help="the client's private key, PEM (default: <client_id>-key.pem next to the "
                                     "signing key)")
    token.add_argument("--scope", default="system/*.rs", help="scopes to ask for (default system/*.rs)")
    token.add_argument("--base-url", default=None,
                       help="the running server (default: PK_BASE_URL, else http://127.0.0.1:8000)")
    token.set_defaults(func=_cmd_token)
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
