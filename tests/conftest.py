"""Shared fixtures: a real PostgreSQL database per test session, cleaned before every test.

``PK_TEST_DATABASE_URL`` (default ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) names a
server and a maintenance database; the session creates its own database next to it
(``pk_test_<pid>``), migrates it once with Alembic, empties every table before each test and
drops it at the end. SQLite databases are fresh files per test.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from api.app import create_app
from patientkontrakt.audit.checkpoint import generate_key as generate_audit_key
from patientkontrakt.config import Settings
from patientkontrakt.domain.demo import load_demo
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.logs import configure as configure_logging
from patientkontrakt.security.keys import SigningKeys, generate_key
from patientkontrakt.security.tokens import AccessTokens, Grant
from patientkontrakt.storage.database import create_engine, migrate
from patientkontrakt.storage.repository import Store
from tests.patient_data import patient_data_in

TEST_URL = os.environ.get("PK_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
BASE_URL = "http://testserver"
TABLES = ("consent_rule", "idx_token", "idx_string", "idx_date", "idx_reference", "idx_uri", "resource_version",
          "resource", "audit_log", "audit_queue", "audit_leaf", "audit_checkpoint", "oauth_client", "oauth_code",
          "refresh_token", "used_jti", "server_state", "token_revocation", "export_file", "export_job",
          "subscription_outbox", "subscription_trigger", "subscription")
# Every FHIR request needs a token: the engine's and the rules' own tests use one for a backend
# system with every scope (their apps check scopes but no care units; tests/security/ test those).
ENGINE_SCOPES = "system/*.cruds system/AuditEvent.rs"


# -- every log of the test run (tests/test_no_patient_data_in_logs.py reads them last) ----------

SESSION_LOG: list[Path] = []  # every log record of this process, at every level
SERVER_LOGS: list[Path] = []  # the output of the server processes the tests start (tests/interop)


@pytest.fixture(autouse=True, scope="session")
def _capture_every_log_record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every record of the session goes to a file, tracebacks included, whatever the level: the
    service runs with its logging as configured (``patientkontrakt.logs.configure``), at DEBUG.
    httpx and urllib3 (requests: fhirpy, fhirclient) log the test clients' own requests, whose
    URLs carry the test's data; those lines are the clients', not the service's, and stay below
    the level."""
    path = tmp_path_factory.mktemp("logs") / "session.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    configure_logging("debug")
    for client in ("httpx", "urllib3"):
        logging.getLogger(client).setLevel(logging.WARNING)
    SESSION_LOG.append(path)
    yield
    root.removeHandler(handler)
    handler.close()


def _xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# The files that take longest (browser sessions, live servers, the consent matrix), handed out
# first under pytest-xdist: ``--dist loadfile`` gives a worker whole files in collection order, so
# with these first the last files handed out are short ones and the workers finish together.
_LONGEST_FIRST = ("tests/browser/", "tests/security/test_consent_matrix.py", "tests/interop/",
                  "tests/notify/test_delivery", "tests/profiles/test_conformance.py", "tests/api/test_export.py",
                  "tests/security/test_audit_tamper.py", "tests/security/test_sign_in_pages.py")


def _started_at(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return next((n for n, prefix in enumerate(_LONGEST_FIRST) if path.startswith(prefix)), len(_LONGEST_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``runs_last`` run after every other test of the session. Under pytest-xdist
    (``make test`` runs ``-n``) no worker sees the whole run, so the workers leave them out and
    the controller does their check over every worker's logs at the end (``_CheckWorkerLogs``);
    and the longest files come first (the same order in every worker, as xdist requires)."""
    last = [item for item in items if item.get_closest_marker("runs_last")]
    items[:] = [item for item in items if not item.get_closest_marker("runs_last")]
    if _xdist_worker(config):
        items.sort(key=_started_at)  # stable: within a file, and among the rest, as collected
        if last:
            config.hook.pytest_deselected(items=last)
    else:
        items.extend(last)


def run_logs() -> list[Path]:
    """The logs of this process's tests: its own records and those of the servers it started."""
    return [*SESSION_LOG, *SERVER_LOGS]


def leaks_in(logs: list[Path]) -> dict[str, list[str]]:
    """Patient data found in any of ``logs``, by file (tests/patient_data.py)."""
    found = {}
    for path in logs:
        if path.exists():
            hits = patient_data_in(path.read_text(encoding="utf-8", errors="replace"))
            if hits:
                found[str(path)] = hits[:20]
    return found


class _CheckWorkerLogs:
    """The controller's half of tests/test_no_patient_data_in_logs.py under pytest-xdist: each
    worker hands over the paths of its logs when it stops (``workeroutput``), and when the run
    ends they are searched for patient data; a hit fails the run, as the test would have."""

    def __init__(self) -> None:
        self.logs: list[Path] = []
        self.workers = 0

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.workers += 1
        self.logs.extend(Path(path) for path in getattr(node, "workeroutput", {}).get("logs", []))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.workers:
            return
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        sessions = [path for path in self.logs if path.name == "session.log"]
        found = leaks_in(self.logs)
        if found or len(sessions) < self.workers:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is None:
            return
        if len(sessions) < self.workers:
            reporter.write_line(f"FAILED no patient data in logs: {len(sessions)} of {self.workers} workers "
                                "handed over their session log", red=True)
        elif found:
            reporter.write_line(f"FAILED no patient data in logs: {found}", red=True)
        else:
            reporter.write_line(f"no patient data in the {len(self.logs)} logs of {self.workers} workers", green=True)


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist") and not _xdist_worker(config) and config.getoption("numprocesses"):
        config.pluginmanager.register(_CheckWorkerLogs(), "check-worker-logs")


def pytest_sessionfinish(session: pytest.Session) -> None:
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["logs"] = [str(path) for path in run_logs()]


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    try:
        conn = await asyncpg.connect(_dsn(TEST_URL))
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"The tests need PostgreSQL at {TEST_URL} (set PK_TEST_DATABASE_URL): {exc}"
        ) from exc
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def new_database(name: str) -> str:
    """Create the empty PostgreSQL database ``name`` (dropping a leftover one first); its URL."""
    drop_database(name)
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return make_url(TEST_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def demo_database(name: str, agreements: int) -> Iterator[str]:
    """A migrated PostgreSQL database ``name`` holding the demo region with ``agreements``
    agreements (for a module's tests that only read, or undo what they do); dropped after."""
    url = new_database(name)
    migrate(url)

    async def load() -> None:
        store = Store(create_engine(url, pool_size=2))
        try:
            await load_demo(BundleProcessor(build_service(make_settings(url), store)), agreements)
        finally:
            await store.dispose()

    asyncio.run(load())
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"pk_test_{os.getpid()}"
    url = new_database(name)
    migrate(url)
    yield url
    drop_database(name)


async def _empty(url: str) -> None:
    # A server a test left running (a live server's access-log sealer, a worker's heartbeat) may
    # still touch the tables: PostgreSQL then ends one side of the deadlock, and ours tries again.
    for attempt in range(5):
        try:
            await _empty_once(url)
            return
        except asyncpg.exceptions.DeadlockDetectedError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))


# Every sequence back to its start, as TRUNCATE ... RESTART IDENTITY would (ids in the tests are
# then the same whatever ran before them in the worker).
_RESTART_SEQUENCES = ("SELECT setval(seqrelid, seqstart, false) FROM pg_sequence "
                      "JOIN pg_class ON pg_class.oid = seqrelid WHERE relnamespace = 'public'::regnamespace")


async def _empty_once(url: str) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        async with conn.transaction():
            # TEST ONLY. The access log's tables refuse changes and TRUNCATE (their triggers,
            # migration 0005). The fixture connects as the database owner (a superuser) and, for
            # this transaction alone, takes the replication role, under which no ordinary trigger
            # fires. The service never does this; an attacker with the same power can, which is
            # what `audit verify` and the exported checkpoints are for
            # (tests/security/test_audit_tamper.py). DELETE, not TRUNCATE: a test leaves a few
            # hundred rows, and TRUNCATE, which gives each table and index a new file, takes
            # 0.15 s where DELETE takes 0.02 s (every table is in TABLES, so no foreign key is left
            # pointing at a deleted row; the replication role skips their checks as it skips the
            # triggers).
            await conn.execute("SET LOCAL session_replication_role = replica;"
                               + "".join(f"DELETE FROM {table};" for table in TABLES) + _RESTART_SEQUENCES)
    finally:
        await conn.close()


@pytest.fixture
def clean_pg(pg_url: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    asyncio.run(_empty(pg_url))
    return pg_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'pk.db'}"
    migrate(url)
    return url


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Both backends, clean: for tests of the storage layer."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("clean_pg"))
    return str(request.getfixturevalue("sqlite_url"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    store = Store(create_engine(db_url, pool_size=5))
    yield store
    await store.dispose()


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real RSA key for the session's tokens."""
    return generate_key(tmp_path_factory.mktemp("keys") / "signing.pem")


@pytest.fixture(scope="session")
def audit_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's Ed25519 key for the access log's checkpoints."""
    return generate_audit_key(tmp_path_factory.mktemp("keys") / "audit.pem")


_KEY: list[Path] = []
_AUDIT_KEY: list[Path] = []


@pytest.fixture(autouse=True, scope="session")
def _remember_key(signing_key: Path, audit_key: Path) -> None:
    _KEY.append(signing_key)
    _AUDIT_KEY.append(audit_key)


def audit_key_file() -> Path:
    """The session's checkpoint key, for a service started in a subprocess (``PK_AUDIT_KEY``)."""
    return _AUDIT_KEY[0]


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test's service. The access log is sealed only when a test asks for it
    (``audit_seal_interval=0``: no background sealer), so what a test sees does not depend on time.
    No delivery worker runs beside a test's service unless the test starts one, so /readyz asks
    for none unless a test says ``ready_worker=True`` (tests/api/test_readiness.py)."""
    values: dict[str, Any] = {"database_url": database_url, "base_url": BASE_URL, "signing_key": _KEY[0],
                              "audit_key": _AUDIT_KEY[0], "audit_seal_interval": 0, "ready_worker": False}
    return Settings(**{**values, **overrides})


def issue_token(settings: Settings, grant: Grant, scope: str, client_id: str = "test-client") -> str:
    """A token as the server's authorization server would issue it, signed with the session key."""
    tokens = AccessTokens(SigningKeys.load(settings.signing_key), settings.base_url, settings.fhir_base)
    return tokens.issue(grant, scope, client_id)[0]


def engine_token(settings: Settings) -> str:
    return issue_token(settings, Grant(kind="system", sub="test-client", name="Test system"), ENGINE_SCOPES)


@pytest.fixture
def settings(clean_pg: str) -> Settings:
    return make_settings(clean_pg)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The bare FHIR R4 engine over HTTP (in-process), on a clean PostgreSQL database.

    No Patientkontrakt rules: tests of generic FHIR behaviour use plain R4 resources. Requests
    carry a token with every ``system/`` scope (scopes are checked; care units are not).
    """
    with TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL) as test_client:
        test_client.headers.update({"content-type": "application/fhir+json",
                                    "authorization": f"Bearer {engine_token(settings)}"})
        yield test_client


@pytest.fixture
def pk_client(settings: Settings) -> Iterator[TestClient]:
    """The FHIR engine with the Patientkontrakt profiles and rules, for the tests of those rules:
    a token with every ``system/`` scope, and no care-unit rules (tests/security/ test the
    service with them)."""
    with TestClient(create_app(settings, care_unit_rules=False), base_url=BASE_URL) as test_client:
        test_client.headers.update({"content-type": "application/fhir+json",
                                    "authorization": f"Bearer {engine_token(settings)}"})
        yield test_client
