"""Bulk loading of synthetic agreements, storing exactly what the server stores.

A resource reaches the database through the server's own code: the domain's ``prepare`` hook
(profile validation, identifier normalisation, the profile stamp in ``meta``; run for real on
every ``VERIFY_EVERY``-th agreement, whose result must equal the fast path byte for byte),
``writes.versioned_body`` (``meta.versionId``/``lastUpdated``, as ``Writer.store`` builds the
body), ``orjson`` for the text, ``Indexer.extract`` for the search index rows, and
``domain.sharing`` for the owner (``resource.owner_unit``/``owner_provider``: what storage
derives for a resource the service itself writes) and for a Consent's ``consent_rule`` rows;
those read the directory (Organization ``partOf``, PractitionerRole ``organization``) from the
resources being loaded instead of the database (``_Directory``). Only the transport differs:
rows are streamed with ``COPY`` (asyncpg ``copy_records_to_table``) instead of one INSERT per
row. Worker processes build the rows while the main process copies them in;
secondary indexes and foreign keys are dropped for the load and rebuilt from their own catalog
definitions afterwards, then VACUUM ANALYZE.

``load_consents`` adds one Consent per patient (a samtycke or a spärr, ``synthetic.CONSENTS``)
the same way to a loaded database, for the consent scenarios, and ``remove_consents`` takes them
out again.

``bench.checks.verify_against_writer`` proves the equivalence end to end on one agreement (and
on one Consent of each kind).
"""

from __future__ import annotations

import asyncio
import copy
import multiprocessing
import os
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import orjson

from bench import synthetic
from patientkontrakt.config import Settings
from patientkontrakt.domain import sharing
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.fhir.indexing import Indexer
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.fhir.writes import patient_from_index, versioned_body
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store, StoredResource
from patientkontrakt.storage.tables import CONSENT_RULE, INDEX_TABLES, RESOURCE, RESOURCE_VERSION

CHUNK = 1000  # agreements per COPY batch
RESOURCE_COLUMNS = [c.name for c in RESOURCE.c]
VERSION_COLUMNS = [c.name for c in RESOURCE_VERSION.c]
INDEX_COLUMNS = {name: [c.name for c in table.c if c.name != "id"] for name, table in INDEX_TABLES.items()}
CONSENT_RULE_COLUMNS = [c.name for c in CONSENT_RULE.c if c.name != "id"]
TABLES = [RESOURCE.name, RESOURCE_VERSION.name, *(t.name for t in INDEX_TABLES.values())]

Records = dict[str, list[tuple[Any, ...]]]
T = TypeVar("T")
_EPOCH = datetime(2026, 1, 1)

# Every VERIFY_EVERY-th agreement goes through the domain's prepare hook for real (profile
# validation, identifier normalisation, profile stamp) and must come out byte-identical to the
# fast path; the others get the ``meta`` that hook gave the same kind of resource in agreement 0.
VERIFY_EVERY = 100

_service: FhirService | None = None
_base = ""
_meta: dict[str, dict[str, Any]] = {}
_shared: dict[tuple[str, str], str] = {}


def local_base() -> str:
    """The FHIR base the rows are extracted with (all bench references are relative)."""
    return Settings().fhir_base


def offline_service(base_url: str | None = None) -> FhirService:
    """The server's FhirService with its domain rules, on an engine that is never connected."""
    url = "postgresql+asyncpg://bench@127.0.0.1/unused"
    settings = Settings(database_url=url, **({"base_url": base_url} if base_url else {}))
    return build_service(settings, Store(create_engine(url, pool_size=1)))


def _init_worker(base: str) -> None:
    global _service, _base, _meta, _shared
    _service = offline_service()
    _base = base
    _meta = {}
    for resource in synthetic.agreement(0):
        prepared = _service.apply_rules(copy.deepcopy(resource))
        _meta.setdefault(_meta_key(resource), prepared.get("meta", {}))
    _shared = _Directory.bodies(prepared_shared())


def _meta_key(resource: dict[str, Any]) -> str:
    """Resources whose prepared ``meta`` is the same: by type, a Consent by its kind too (the
    category chooses its profile)."""
    if resource["resourceType"] == "Consent":
        return f"Consent:{sharing.consent_kind(resource)}"
    return str(resource["resourceType"])


class _Directory:
    """What ``domain.sharing`` reads through ``Unit.get`` (Organizations, PractitionerRoles), from
    the resources being loaded: the shared ones and the agreement's own. No look-up waits, so its
    coroutines run to the end in one step (``_done``), without an event loop."""

    def __init__(self, shared: dict[tuple[str, str], str], resources: list[dict[str, Any]]) -> None:
        self._bodies = {**shared, **self.bodies(resources)}

    @staticmethod
    def bodies(resources: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
        return {(r["resourceType"], r["id"]): orjson.dumps(r).decode() for r in resources
                if r["resourceType"] in sharing.UNOWNED}

    async def get(self, type_: str, id_: str, *, lock: bool = False) -> StoredResource | None:
        body = self._bodies.get((type_, id_))
        return None if body is None else StoredResource(0, type_, id_, 1, _EPOCH, False, body)


def _done(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("the directory look-up waited: it must come from the loaded resources")


def owner(directory: _Directory, resource: dict[str, Any]) -> sharing.Owner | None:
    """What storage records as the owner of ``resource`` written by the service itself
    (``PatientkontraktRules._sharing``): none for the directory, else derived from the content."""
    if resource["resourceType"] in sharing.UNOWNED:
        return None
    return _done(sharing.derived_owner(directory, resource))  # type: ignore[arg-type]


def consent_rules(directory: _Directory, resource: dict[str, Any], patient_id: str | None) -> list[dict[str, Any]]:
    """The ``consent_rule`` rows storage writes with ``resource`` (none unless a Consent)."""
    if resource["resourceType"] != "Consent":
        return []
    return _done(sharing.consent_rules(directory, resource, patient_id))  # type: ignore[arg-type]


def _text(resource: dict[str, Any]) -> bytes:
    return orjson.dumps(versioned_body(resource, 1, _EPOCH))


def prepared_agreement(i: int) -> list[dict[str, Any]]:
    """Agreement ``i`` as the server's ``prepare`` leaves it (see VERIFY_EVERY)."""
    return _prepared(i, synthetic.agreement(i))


def prepared_consent(i: int, kind: str) -> dict[str, Any]:
    """Agreement ``i``'s patient's Consent of ``kind`` (``synthetic.CONSENTS``), prepared."""
    assert _service is not None
    resource = synthetic.CONSENTS[kind](i)
    if _meta_key(resource) not in _meta:
        first = synthetic.CONSENTS[kind](0)
        _meta[_meta_key(resource)] = _service.apply_rules(copy.deepcopy(first)).get("meta", {})
    return _prepared(i, [resource])[0]


def _prepared(i: int, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert _service is not None
    fast = [{**r, "meta": _meta[_meta_key(r)]} for r in resources]
    if i % VERIFY_EVERY:
        return fast
    real = [_service.apply_rules(copy.deepcopy(r)) for r in resources]
    for mine, theirs in zip(fast, real, strict=True):
        if _text(mine) != _text(theirs):
            raise AssertionError(f"{mine['resourceType']}/{mine['id']}: the bulk form differs from what the "
                                 f"server's prepare hook makes of it:\n{_text(mine)!r}\n{_text(theirs)!r}")
    return real


def stored_form(resource: dict[str, Any], indexer: Indexer, base: str
                ) -> tuple[datetime, str, dict[str, list[dict[str, Any]]]]:
    """(last_updated, body text, index rows by table) of a prepared ``resource`` as version 1."""
    now = now_utc()
    body = versioned_body(resource, 1, now)
    rows = indexer.extract(body, base)
    return now, orjson.dumps(body).decode(), dict(rows.tables())


def _patient(resource: dict[str, Any], tables: dict[str, list[dict[str, Any]]]) -> str | None:
    assert _service is not None
    return patient_from_index(resource["resourceType"], resource["id"], tables.items(),
                              _service.defs.patient_compartment)


def prepared_shared() -> list[dict[str, Any]]:
    """The resources every agreement shares (the regional clinic), through the real prepare."""
    assert _service is not None
    return [_service.apply_rules(copy.deepcopy(r)) for r in synthetic.shared()]


def _add(out: Records, pk: int, resource: dict[str, Any], directory: _Directory) -> None:
    assert _service is not None
    type_, id_ = resource["resourceType"], resource["id"]
    now, text, tables = stored_form(resource, _service.indexer, _base)
    patient = _patient(resource, tables)
    owner_unit, owner_provider = owner(directory, resource) or (None, None)
    row = {"pk": pk, "res_type": type_, "res_id": id_, "version_id": 1, "last_updated": now, "deleted": False,
           "body": text, "patient_id": patient, "owner_unit": owner_unit, "owner_provider": owner_provider}
    out[RESOURCE.name].append(tuple(row[c] for c in RESOURCE_COLUMNS))
    out[RESOURCE_VERSION.name].append((pk, type_, id_, 1, now, "POST", False, text))
    for rule in consent_rules(directory, resource, patient):
        full = {**rule, "consent_pk": pk}
        out.setdefault(CONSENT_RULE.name, []).append(tuple(full[c] for c in CONSENT_RULE_COLUMNS))
    for name, rows in tables.items():
        columns = INDEX_COLUMNS[name]
        target = out[INDEX_TABLES[name].name]
        for row in rows:
            full = {**row, "resource_pk": pk, "res_type": type_}
            target.append(tuple(full.get(c) for c in columns))


# The shared resources' pk and seq are 1, 2, …; the agreements' start after these (the service's
# own keys start at 1 too, and keyset scans such as $export's and reindex's begin after 0).
SHARED_PKS = 16


def build_chunk(bounds: tuple[int, int]) -> Records:
    """COPY records for agreements ``start..stop-1``; pk and seq are ``SHARED_PKS + 11 * i + k +
    1``, and the shared resources (in the first chunk) get ``1, 2, …`` so they never collide."""
    start, stop = bounds
    out: Records = {name: [] for name in TABLES}
    if start == 0:
        directory = _Directory(_shared, [])
        for k, resource in enumerate(prepared_shared()):
            _add(out, k + 1, resource, directory)
    for i in range(start, stop):
        resources = prepared_agreement(i)
        directory = _Directory(_shared, resources)
        for k, resource in enumerate(resources):
            _add(out, SHARED_PKS + synthetic.RESOURCES_PER_AGREEMENT * i + k + 1, resource, directory)
    return out


def build_consent_chunk(job: tuple[int, int, str, int]) -> Records:
    """COPY records of the Consents of ``kind`` for agreements ``start..stop-1``; pk and seq are
    ``first + i``."""
    start, stop, kind, first = job
    out: Records = {name: [] for name in [*TABLES, CONSENT_RULE.name]}
    for i in range(start, stop):
        _add(out, first + i, prepared_consent(i, kind), _Directory(_shared, []))
    return out


def _chunks(agreements: int) -> Iterator[tuple[int, int]]:
    for start in range(0, agreements, CHUNK):
        yield start, min(agreements, start + CHUNK)


@dataclass
class _Ddl:
    drop: list[str]
    create_first: list[str]  # unique constraints and plain indexes
    create_last: list[str]  # foreign keys


async def _secondary_ddl(conn: asyncpg.Connection) -> _Ddl:
    """Drop/recreate statements for everything but primary keys, from the catalog itself."""
    ddl = _Ddl([], [], [])
    constraints = await conn.fetch(
        """SELECT c.conrelid::regclass::text AS tbl, c.conname, c.contype, pg_get_constraintdef(c.oid) AS def
           FROM pg_constraint c WHERE c.conrelid::regclass::text = ANY($1::text[]) AND c.contype IN ('u', 'f')
           ORDER BY c.contype DESC, c.conname""",
        TABLES,
    )
    for row in constraints:
        ddl.drop.append(f'ALTER TABLE {row["tbl"]} DROP CONSTRAINT "{row["conname"]}"')
        target = ddl.create_last if row["contype"] == "f" else ddl.create_first
        target.append(f'ALTER TABLE {row["tbl"]} ADD CONSTRAINT "{row["conname"]}" {row["def"]}')
    indexes = await conn.fetch(
        """SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
           FROM pg_index i WHERE i.indrelid::regclass::text = ANY($1::text[])
             AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
           ORDER BY 1""",
        TABLES,
    )
    for row in indexes:
        ddl.drop.append(f'DROP INDEX "{row["name"]}"')
        ddl.create_first.append(row["def"])
    return ddl


async def _run_parallel(dsn: str, statements: list[str], connections: int) -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for statement in statements:
        queue.put_nowait(statement)

    async def worker() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SET maintenance_work_mem = '1GB'")
            while not queue.empty():
                await conn.execute(queue.get_nowait())
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


@dataclass
class LoadStats:
    agreements: int
    resources: int
    index_rows: int
    seconds_generate_copy: float
    seconds_indexes: float
    seconds_vacuum: float

    @property
    def seconds(self) -> float:
        return self.seconds_generate_copy + self.seconds_indexes + self.seconds_vacuum


async def load(dsn: str, agreements: int, jobs: int, progress: bool = True) -> LoadStats:
    """Load agreements ``0..agreements-1`` into the migrated, empty database at ``dsn``."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET synchronous_commit = off")
        ddl = await _secondary_ddl(conn)
        for statement in ddl.drop:
            await conn.execute(statement)
        started = time.perf_counter()
        resources = index_rows = 0
        context = multiprocessing.get_context("spawn")
        with context.Pool(max(1, jobs), initializer=_init_worker, initargs=(local_base(),)) as pool:
            for records in pool.imap(build_chunk, _chunks(agreements)):
                await _copy(conn, records)
                resources += len(records[RESOURCE.name])
                index_rows += sum(len(r) for t, r in records.items() if t.startswith("idx_"))
                if progress and (resources // synthetic.RESOURCES_PER_AGREEMENT) % 10_000 == 0:
                    done = resources // synthetic.RESOURCES_PER_AGREEMENT
                    rate = resources / (time.perf_counter() - started)
                    print(f"  loaded {done:,}/{agreements:,} agreements ({rate:,.0f} resources/s)", flush=True)
        copied = time.perf_counter()
        await _set_sequences(conn)
    finally:
        await conn.close()
    await _run_parallel(dsn, ddl.create_first, connections=2)
    await _run_parallel(dsn, ddl.create_last, connections=2)
    indexed = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()
    vacuumed = time.perf_counter()
    return LoadStats(agreements, resources, index_rows, copied - started, indexed - copied, vacuumed - indexed)


async def _copy(conn: asyncpg.Connection, records: Records) -> None:
    for table, rows in records.items():
        if not rows:
            continue
        columns = (RESOURCE_COLUMNS if table == RESOURCE.name else VERSION_COLUMNS if table == RESOURCE_VERSION.name
                   else CONSENT_RULE_COLUMNS if table == CONSENT_RULE.name else INDEX_COLUMNS[_index_name(table)])
        await conn.copy_records_to_table(table, records=rows, columns=columns)


async def _set_sequences(conn: asyncpg.Connection) -> None:
    for table, column in ((RESOURCE.name, "pk"), (RESOURCE_VERSION.name, "seq")):
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
            f"(SELECT coalesce(max({column}), 1) FROM {table}))"
        )


@dataclass(frozen=True)
class ConsentLoad:
    kind: str
    first_pk: int
    count: int
    seconds: float


async def load_consents(dsn: str, agreements: int, kind: str, jobs: int) -> ConsentLoad:
    """Give every patient of agreements ``0..agreements-1`` their Consent of ``kind``
    (``synthetic.CONSENTS``) in the loaded database at ``dsn``, with its index and
    ``consent_rule`` rows, then ANALYZE. The indexes stay in place (a few rows per agreement)."""
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET synchronous_commit = off")
        first = 1 + await conn.fetchval(
            "SELECT greatest((SELECT coalesce(max(pk), 0) FROM resource), "
            "(SELECT coalesce(max(seq), 0) FROM resource_version))")
        context = multiprocessing.get_context("spawn")
        with context.Pool(max(1, jobs), initializer=_init_worker, initargs=(local_base(),)) as pool:
            jobs_ = [(start, stop, kind, first) for start, stop in _chunks(agreements)]
            async with conn.transaction():
                for records in pool.imap(build_consent_chunk, jobs_):
                    await _copy(conn, records)
        await _set_sequences(conn)
        await conn.execute(f"ANALYZE {RESOURCE.name}, {RESOURCE_VERSION.name}, {CONSENT_RULE.name}, "
                           + ", ".join(t.name for t in INDEX_TABLES.values()))
    finally:
        await conn.close()
    return ConsentLoad(kind, first, agreements, time.perf_counter() - started)


async def remove_consents(dsn: str, loaded: ConsentLoad) -> None:
    """Take the Consents of ``loaded`` out again (their index and ``consent_rule`` rows go with
    them: ``ON DELETE CASCADE``), then VACUUM ANALYZE what they were in."""
    last = loaded.first_pk + loaded.count - 1
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM resource WHERE res_type = 'Consent' AND pk BETWEEN $1 AND $2",
                               loaded.first_pk, last)
            await conn.execute("DELETE FROM resource_version WHERE res_type = 'Consent' AND seq BETWEEN $1 AND $2",
                               loaded.first_pk, last)
        await conn.execute(f"VACUUM (ANALYZE) {RESOURCE.name}, {RESOURCE_VERSION.name}, {CONSENT_RULE.name}, "
                           + ", ".join(t.name for t in INDEX_TABLES.values()))
    finally:
        await conn.close()


def _index_name(table: str) -> str:
    return next(name for name, t in INDEX_TABLES.items() if t.name == table)


def default_jobs() -> int:
    return max(1, (os.cpu_count() or 2))
