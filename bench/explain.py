"""EXPLAIN (ANALYZE, BUFFERS) of the SQL the server runs for the search scenario.

The statements are not written by hand: the search runs through the server's own code
(``FhirService.parser.parse`` and ``search_engine.find``, the same calls ``FhirService.search``
makes) against the benchmark database, and every statement SQLAlchemy executes on the way is
captured (``before_execute``) and compiled for PostgreSQL with literal binds. Each is then run
once to warm the cache and explained with ANALYZE and BUFFERS. The search runs with the
``Access`` the server builds for the benchmark's token (``synthetic.bench_grant``, or another of
``synthetic.GRANTS``), so the plans include the care unit's access rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql

from bench import synthetic
from bench.database import asyncpg_dsn
from patientkontrakt.config import Settings
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.security.authenticate import Authenticator
from patientkontrakt.security.keys import SigningKeys
from patientkontrakt.security.tokens import AccessTokens
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store


def compile_literal(statement: Any) -> str:
    return str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def bench_access(service: Any, signing_key: Path, grant: str) -> Any:
    """The ``Access`` of the benchmark's caller ``grant``, from a token as the server issues it."""
    tokens = AccessTokens(SigningKeys.load(signing_key), "https://bench.invalid", "https://bench.invalid/fhir",
                          lifetime=60)
    token = tokens.issue(synthetic.GRANTS[grant](), synthetic.BENCH_SCOPE, "bench")[0]
    return Authenticator(tokens, service.parser, service.search_engine.builder).access(f"Bearer {token}")


async def search_sql(database_url: str, type_: str, pairs: list[tuple[str, str]], signing_key: Path,
                     grant: str = "clinic") -> list[str]:
    """The statements one search of the benchmark's caller executes, in order, as literal
    PostgreSQL SQL."""
    engine = create_engine(database_url, pool_size=1)
    store = Store(engine)
    captured: list[str] = []

    def capture(_conn: Any, clauseelement: Any, multiparams: Any, params: Any, *_args: Any) -> None:
        if isinstance(clauseelement, sa.sql.ClauseElement) and not isinstance(clauseelement, sa.TextClause):
            values = params or (multiparams[0] if multiparams else {})  # the caller's, e.g. its unit
            captured.append(compile_literal(clauseelement.params(values) if values else clauseelement))

    try:
        service = build_service(Settings(database_url=database_url), store)
        access = bench_access(service, signing_key, grant)
        query = service.parser.parse(type_, pairs, strict=Preferences().strict)
        event.listen(engine.sync_engine, "before_execute", capture)
        async with store.reading(access) as unit:
            page = await service.search_engine.find(unit, query)
        event.remove(engine.sync_engine, "before_execute", capture)
        if not page.matches:
            raise RuntimeError(f"the search {type_}?{pairs} found nothing: the data is not what the bench expects")
    finally:
        await store.dispose()
    return captured


async def explain(database_url: str, type_: str, pairs: list[tuple[str, str]], header: str,
                  signing_key: Path, grant: str = "clinic") -> str:
    statements = await search_sql(database_url, type_, pairs, signing_key, grant)
    parts = [header]
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        for number, sql in enumerate(statements, 1):
            await conn.fetch(sql)
            plan = [row[0] for row in await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")]
            parts.append(f"-- statement {number} of {len(statements)}\n{sql};\n\n" + "\n".join(plan))
    finally:
        await conn.close()
    return "\n\n".join(parts) + "\n"


async def export_sql(database_url: str, signing_key: Path, grant: str = "clinic"
                     ) -> dict[str, list[tuple[str, tuple[Any, ...]]]]:
    """The statements the runner (``fhir/export.py``) issues for a system-level export of the
    bench's caller: the one that finds what the caller may see of every type
    (``storage.export.visible``), then for each type its first batch of bodies (``rows``), each
    as the asyncpg text with its parameters."""
    from patientkontrakt.fhir.access import bound
    from patientkontrakt.fhir.dates import now_utc
    from patientkontrakt.fhir.export import _allowed
    from patientkontrakt.security.stored_access import bulk_export
    from patientkontrakt.storage import export as export_storage

    engine = create_engine(database_url, pool_size=1)
    store = Store(engine)
    captured: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
    current: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        captured.setdefault(current[0], []).append((statement, tuple(parameters or ())))

    try:
        service = build_service(Settings(database_url=database_url), store)
        access = bench_access(service, signing_key, grant)
        export = bulk_export(service)
        stored = export._record(access)
        assert stored is not None
        access = export._rebuild(stored)  # as the runner has it
        until = now_utc()
        event.listen(engine.sync_engine, "before_cursor_execute", capture)
        current[:] = ["every type"]
        conditions = {type_: bound(access.restriction(type_))
                      for type_ in export._level_types("system") if _allowed(access, type_)}
        found = await export_storage.visible(store, access, conditions, since=None, until=until, patients=None,
                                             compartment_only=False)
        for type_, pks in found.items():
            if pks:
                current[:] = [type_]
                await export_storage.rows(store, type_, pks[:service.settings.export_batch_size], since=None,
                                          until=until)
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    finally:
        await store.dispose()
    return captured


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list):
        return "ARRAY[" + ",".join(str(int(v)) for v in value) + "]::bigint[]"
    return "'" + str(value).replace("'", "''") + "'"


async def explain_export(database_url: str, signing_key: Path) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of each type's export statements as the runner runs them:
    prepared, with the server's ``plan_cache_mode`` (a generic plan) and their parameters."""
    statements = await export_sql(database_url, signing_key)
    parts = []
    conn = await asyncpg.connect(asyncpg_dsn(database_url),
                                 server_settings={"plan_cache_mode": "force_generic_plan", "jit": "off"})
    try:
        for type_, found in statements.items():
            for number, (sql, params) in enumerate(found, 1):
                name = f"export_{type_.lower().replace(' ', '_')}_{number}"
                await conn.execute(f"PREPARE {name} AS {sql}")
                execute = f"EXECUTE {name}" + (f"({', '.join(_literal(p) for p in params)})" if params else "")
                await conn.fetch(execute)
                plan = [row[0] for row in await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {execute}")]
                shown = execute if len(execute) < 300 else execute[:300] + "…"
                parts.append(f"-- {type_}, statement {number} of {len(found)}: {shown}\n{sql};\n\n" + "\n".join(plan))
    finally:
        await conn.close()
    return "\n\n".join(parts) + "\n"
