"""Shared fixtures: a real PostgreSQL database per test session, cleaned before every test.

``PK_TEST_DATABASE_URL`` (default ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) names a
server and a maintenance database; the session creates its own database next to it
(``pk_test_<pid>``), migrates it once with Alembic, truncates every table before each test and
drops it at the end. SQLite databases are fresh files per test.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from api.app import create_app
from patientkontrakt.config import Settings
from patientkontrakt.storage.database import create_engine, migrate
from patientkontrakt.storage.repository import Store

TEST_URL = os.environ.get("PK_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
BASE_URL = "http://testserver"
TABLES = ("idx_token", "idx_string", "idx_date", "idx_reference", "idx_uri", "resource_version", "resource")


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


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"pk_test_{os.getpid()}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(TEST_URL).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    yield url
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture
def clean_pg(pg_url: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    asyncio.run(_truncate(pg_url))
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


def make_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(database_url=database_url, base_url=BASE_URL, **overrides)


@pytest.fixture
def settings(clean_pg: str) -> Settings:
    return make_settings(clean_pg)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The bare FHIR R4 engine over HTTP (in-process), on a clean PostgreSQL database.

    No Patientkontrakt rules: tests of generic FHIR behaviour use plain R4 resources.
    """
    with TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL) as test_client:
        test_client.headers.update({"content-type": "application/fhir+json"})
        yield test_client


@pytest.fixture
def pk_client(settings: Settings) -> Iterator[TestClient]:
    """The service as deployed: the FHIR engine with the Patientkontrakt profiles and rules."""
    with TestClient(create_app(settings), base_url=BASE_URL) as test_client:
        test_client.headers.update({"content-type": "application/fhir+json"})
        yield test_client
