"""The storage primitives, on both backends (the ``store`` fixture runs each test on PostgreSQL
and on SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from patientkontrakt.storage import repository
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.errors import DatabaseUnavailable
from patientkontrakt.storage.repository import Store, Unit
from patientkontrakt.storage.tables import INDEX_TABLES, RESOURCE, RESOURCE_VERSION

DATA = Path(__file__).resolve().parents[1] / "data"
T0 = datetime(2024, 3, 5, 10, 30, 15, 123456)


class Boom(Exception):
    pass


def body(type_: str, id_: str, **extra: Any) -> str:
    return orjson.dumps({"resourceType": type_, "id": id_, **extra}).decode()


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((DATA / f"{name}.json").read_bytes())
    return data


async def put(unit: Unit, type_: str, id_: str, at: datetime = T0, refs: Sequence[tuple[str, str, str]] = (),
              **extra: Any) -> int:
    """Insert version 1 with its version row and reference index rows (param, type, id)."""
    text = body(type_, id_, **extra)
    pk = await unit.insert(type_, id_, 1, at, text)
    await unit.add_version(type_, id_, 1, at, "POST", text)
    rows = [{"param": p, "target_type": t, "target_id": i, "url": None} for p, t, i in refs]
    await unit.write_index(pk, type_, [("reference", rows)], replace=False)
    return pk


async def count(store: Store, table: sa.Table) -> int:
    async with store.reading() as unit:
        total: int = (await unit.conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
        return total


async def index_rows(store: Store, name: str, pk: int) -> list[dict[str, Any]]:
    table = INDEX_TABLES[name]
    async with store.reading() as unit:
        result = await unit.conn.execute(
            sa.select(table).where(table.c.resource_pk == pk).order_by(table.c.id)
        )
        return [
            {k: v for k, v in row._mapping.items() if k not in ("id", "resource_pk")}
            for row in result
        ]


# -- current resources -----------------------------------------------------------------------


async def test_insert_then_get_returns_what_was_stored(store: Store) -> None:
    resource = example("careplan-agreement")
    text = orjson.dumps(resource).decode()
    async with store.writing() as unit:
        pk = await unit.insert("CarePlan", "pk-tolvan", 1, T0, text)
    async with store.reading() as unit:
        stored = await unit.get("CarePlan", "pk-tolvan")
        assert await unit.get("CarePlan", "someone-else") is None
        assert await unit.get("Patient", "pk-tolvan") is None
    assert stored is not None
    assert (stored.pk, stored.type, stored.id, stored.version_id, stored.deleted) == (
        pk, "CarePlan", "pk-tolvan", 1, False)
    assert stored.last_updated == T0  # microseconds survive on both backends
    assert isinstance(stored.body, str)
    # PostgreSQL's JSONB keeps the document, not the text (key order, spacing).
    assert orjson.loads(stored.body) == resource


async def test_update_replaces_the_current_version_and_can_mark_deleted(store: Store) -> None:
    async with store.writing() as unit:
        pk = await unit.insert("Patient", "p1", 1, T0, body("Patient", "p1", gender="male"))
    later = T0 + timedelta(minutes=5)
    async with store.writing() as unit:
        await unit.update(pk, 2, later, body("Patient", "p1", gender="female"))
    async with store.reading() as unit:
        stored = await unit.get("Patient", "p1")
    assert stored is not None
    assert (stored.version_id, stored.last_updated, stored.deleted) == (2, later, False)
    assert orjson.loads(stored.body)["gender"] == "female"

    async with store.writing() as unit:
        await unit.update(pk, 3, later + timedelta(seconds=1), stored.body, deleted=True)
    async with store.reading() as unit:
        gone = await unit.get("Patient", "p1")
        assert gone is not None and gone.deleted and gone.version_id == 3
        assert await unit.get_many([("Patient", "p1")]) == []
        assert await unit.existing([("Patient", "p1")]) == set()


async def test_get_with_lock_inside_a_write(store: Store) -> None:
    async with store.writing() as unit:
        await unit.insert("Patient", "p1", 1, T0, body("Patient", "p1"))
    async with store.writing() as unit:
        locked = await unit.get("Patient", "p1", lock=True)
        assert locked is not None and locked.id == "p1"


async def test_type_and_id_are_unique(store: Store) -> None:
    async with store.writing() as unit:
        await unit.insert("Patient", "p1", 1, T0, body("Patient", "p1"))
        await unit.insert("Practitioner", "p1", 1, T0, body("Practitioner", "p1"))
    with pytest.raises(sa.exc.IntegrityError):
        async with store.writing() as unit:
            await unit.insert("Patient", "p1", 1, T0, body("Patient", "p1"))
    assert await count(store, RESOURCE) == 2


async def test_get_many_existing_and_get_by_pks(store: Store) -> None:
    async with store.writing() as unit:
        pk1 = await put(unit, "Patient", "p1")
        pk2 = await put(unit, "Patient", "p2")
        pk3 = await put(unit, "Organization", "o1")
        await unit.update(pk2, 2, T0, body("Patient", "p2"), deleted=True)
    keys = [("Patient", "p1"), ("Patient", "p2"), ("Organization", "o1"), ("Patient", "nope"), ("Patient", "p1")]
    async with store.reading() as unit:
        many = await unit.get_many(keys)
        assert sorted((r.type, r.id) for r in many) == [("Organization", "o1"), ("Patient", "p1")]
        assert await unit.get_many([]) == []
        assert await unit.existing(keys) == {("Patient", "p1"), ("Organization", "o1")}
        assert await unit.existing([]) == set()
        # Order of the pks asked for; deleted resources are still rows; unknown pks are skipped.
        by_pks = await unit.get_by_pks([pk3, 999_999, pk2, pk1])
        assert [(r.id, r.deleted) for r in by_pks] == [("o1", False), ("p2", True), ("p1", False)]
        assert await unit.get_by_pks([]) == []
    async with store.writing() as unit:
        assert await unit.existing(keys, share_lock=True) == {("Patient", "p1"), ("Organization", "o1")}


# -- versions and history --------------------------------------------------------------------


async def test_versions_are_kept_and_a_deletion_has_no_body(store: Store) -> None:
    async with store.writing() as unit:
        await unit.add_version("Patient", "p1", 1, T0, "POST", body("Patient", "p1", gender="male"))
        await unit.add_version("Patient", "p1", 2, T0 + timedelta(seconds=1), "PUT", body("Patient", "p1"))
        await unit.add_version("Patient", "p1", 3, T0 + timedelta(seconds=2), "DELETE", None)
    async with store.reading() as unit:
        first = await unit.get_version("Patient", "p1", 1)
        deletion = await unit.get_version("Patient", "p1", 3)
        assert await unit.get_version("Patient", "p1", 4) is None
        assert await unit.get_version("Patient", "p2", 1) is None
    assert first is not None and deletion is not None
    assert (first.method, first.deleted, first.last_updated) == ("POST", False, T0)
    assert first.body is not None and orjson.loads(first.body)["gender"] == "male"
    assert (deletion.method, deletion.deleted, deletion.body) == ("DELETE", True, None)


async def test_a_version_number_is_used_once(store: Store) -> None:
    async with store.writing() as unit:
        await unit.add_version("Patient", "p1", 1, T0, "POST", body("Patient", "p1"))
    with pytest.raises(sa.exc.IntegrityError):
        async with store.writing() as unit:
            await unit.add_version("Patient", "p1", 1, T0, "PUT", body("Patient", "p1"))


async def _history_fixture(store: Store) -> None:
    """p1 v1 (t0), o1 v1 (t0+1s), p1 v2 (t0+2s), p2 v1 (t0+2s, written after), p1 v3 deleted (t0+3s)."""
    s = timedelta(seconds=1)
    async with store.writing() as unit:
        await unit.add_version("Patient", "p1", 1, T0, "POST", body("Patient", "p1"))
        await unit.add_version("Organization", "o1", 1, T0 + s, "POST", body("Organization", "o1"))
        await unit.add_version("Patient", "p1", 2, T0 + 2 * s, "PUT", body("Patient", "p1"))
        await unit.add_version("Patient", "p2", 1, T0 + 2 * s, "POST", body("Patient", "p2"))
        await unit.add_version("Patient", "p1", 3, T0 + 3 * s, "DELETE", None)


def _keys(versions: list[Any]) -> list[tuple[str, int]]:
    return [(v.id, v.version_id) for v in versions]


async def test_history_is_newest_first_with_ties_in_write_order(store: Store) -> None:
    await _history_fixture(store)
    async with store.reading() as unit:
        everything = await unit.history(type_=None, id_=None, since=None, at=None, offset=0, count=10)
        patients = await unit.history(type_="Patient", id_=None, since=None, at=None, offset=0, count=10)
        one = await unit.history(type_="Patient", id_="p1", since=None, at=None, offset=0, count=10)
        since = await unit.history(type_=None, id_=None, since=T0 + timedelta(seconds=2), at=None, offset=0,
                                   count=10)
    assert _keys(everything) == [("p1", 3), ("p2", 1), ("p1", 2), ("o1", 1), ("p1", 1)]
    assert _keys(patients) == [("p1", 3), ("p2", 1), ("p1", 2), ("p1", 1)]
    assert _keys(one) == [("p1", 3), ("p1", 2), ("p1", 1)]
    assert one[0].deleted and one[0].body is None
    assert _keys(since) == [("p1", 3), ("p2", 1), ("p1", 2)]


async def test_history_pages_fetch_one_extra_row_and_count_everything(store: Store) -> None:
    await _history_fixture(store)
    async with store.reading() as unit:
        first = await unit.history(type_=None, id_=None, since=None, at=None, offset=0, count=2)
        second = await unit.history(type_=None, id_=None, since=None, at=None, offset=2, count=2)
        last = await unit.history(type_=None, id_=None, since=None, at=None, offset=4, count=2)
        total = await unit.history_count(type_=None, id_=None, since=None, at=None)
        patients = await unit.history_count(type_="Patient", id_=None, since=None, at=None)
        p1_since = await unit.history_count(type_="Patient", id_="p1", since=T0 + timedelta(seconds=1), at=None)
    assert _keys(first) == [("p1", 3), ("p2", 1), ("p1", 2)]  # count + 1: there is a next page
    assert _keys(second) == [("p1", 2), ("o1", 1), ("p1", 1)]
    assert _keys(last) == [("p1", 1)]
    assert (total, patients, p1_since) == (5, 4, 2)


# -- search index ----------------------------------------------------------------------------


def _rows() -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        ("token", [{"param": "identifier", "system": "urn:x", "code": "1"},
                   {"param": "gender", "system": None, "code": "male"}]),
        ("string", [{"param": "family", "value": "strom", "exact": "Ström"}]),
        ("date", [{"param": "birthdate", "low": datetime(1912, 12, 12), "high": datetime(1912, 12, 12, 23, 59, 59,
                                                                                            999999)}]),
        ("reference", [{"param": "general-practitioner", "target_type": "Practitioner", "target_id": "lisa",
                        "url": None},
                       {"param": "general-practitioner", "target_type": "Practitioner", "target_id": None,
                        "url": "https://other.example/Practitioner/7"}]),
        ("uri", [{"param": "_profile", "uri": "https://patientkontrakt.se/fhir/StructureDefinition/pk-patient"}]),
    ]


async def test_write_index_writes_every_table_with_type_and_pk(store: Store) -> None:
    async with store.writing() as unit:
        pk = await unit.insert("Patient", "p1", 1, T0, body("Patient", "p1"))
        await unit.write_index(pk, "Patient", _rows(), replace=False)
    for name, expected in _rows():
        assert await index_rows(store, name, pk) == [{"res_type": "Patient", **row} for row in expected]


async def test_write_index_with_replace_drops_the_old_rows(store: Store) -> None:
    async with store.writing() as unit:
        pk = await unit.insert("Patient", "p1", 1, T0, body("Patient", "p1"))
        other = await unit.insert("Patient", "p2", 1, T0, body("Patient", "p2"))
        await unit.write_index(pk, "Patient", _rows(), replace=False)
        await unit.write_index(other, "Patient", _rows(), replace=False)
    new = [("token", [{"param": "gender", "system": None, "code": "female"}]), ("string", [])]
    async with store.writing() as unit:
        await unit.write_index(pk, "Patient", new, replace=True)
    assert await index_rows(store, "token", pk) == [
        {"res_type": "Patient", "param": "gender", "system": None, "code": "female"},
    ]
    for name in ("string", "date", "reference", "uri"):
        assert await index_rows(store, name, pk) == []
        assert await index_rows(store, name, other) != [], "another resource's rows are untouched"

    async with store.writing() as unit:
        await unit.clear_index(other)
    for name in INDEX_TABLES:
        assert await index_rows(store, name, other) == []


async def test_store_version_writes_and_replaces_the_row_version_and_index(store: Store) -> None:
    """One statement on PostgreSQL (storage/write_sql.py): the same rows as the primitives."""
    async with store.writing() as unit:
        other = await put(unit, "Patient", "p2", refs=[("link", "Patient", "p2")])
        pk = await unit.store_version("Patient", "p1", 1, T0, "POST", body("Patient", "p1"), _rows(),
                                      patient_id="p1", owner=("unit-1", "provider-1"))
    for name, expected in _rows():
        assert await index_rows(store, name, pk) == [{"res_type": "Patient", **row} for row in expected]
    new = [("token", [{"param": "gender", "system": None, "code": "female"}])]
    later = T0 + timedelta(seconds=1)
    async with store.writing() as unit:
        assert await unit.store_version("Patient", "p1", 2, later, "PUT", body("Patient", "p1", active=True), new,
                                        patient_id=None, replacing=pk) == pk
    async with store.reading() as unit:
        stored = await unit.get("Patient", "p1")
        assert stored is not None and (stored.version_id, stored.last_updated, stored.patient_id) == (2, later, None)
        assert (stored.owner_unit, stored.owner_provider) == ("unit-1", "provider-1"), "an update keeps the owner"
        assert orjson.loads(stored.body)["active"] is True
        versions = [await unit.get_version("Patient", "p1", n) for n in (1, 2)]
        assert [(v.method, v.deleted) for v in versions if v is not None] == [("POST", False), ("PUT", False)]
    assert await index_rows(store, "token", pk) == [
        {"res_type": "Patient", "param": "gender", "system": None, "code": "female"}]
    for name in ("string", "date", "reference", "uri"):
        assert await index_rows(store, name, pk) == []
    assert await index_rows(store, "reference", other) != [], "another resource's rows are untouched"


async def test_statements_on_the_driver_are_in_the_units_transaction(store: Store) -> None:
    """A unit whose first statement goes to the asyncpg connection (``Unit.driver``) begins its
    transaction all the same: a failure rolls every statement back, and a FOR SHARE lock holds."""
    async with store.writing() as unit:
        await put(unit, "Patient", "kept")
    with pytest.raises(Boom):
        async with store.writing() as unit:
            assert await unit.existing([("Patient", "kept")], share_lock=True) == {("Patient", "kept")}
            await unit.store_version("Patient", "p1", 1, T0, "POST", body("Patient", "p1"), _rows(), patient_id="p1")
            raise Boom
    assert await count(store, RESOURCE) == 1
    assert await count(store, RESOURCE_VERSION) == 1
    for table in INDEX_TABLES.values():
        assert await count(store, table) == 0
    if store.dialect != "postgresql":
        return
    async with store.writing() as unit:
        await unit.existing([("Patient", "kept")], share_lock=True)
        async with store.writing() as other:
            await other.conn.execute(sa.text("SET LOCAL lock_timeout = '100ms'"))
            with pytest.raises(sa.exc.DBAPIError, match="lock timeout"):
                await other.conn.execute(sa.update(RESOURCE).where(RESOURCE.c.res_id == "kept").values(version_id=9))


async def test_existing_visible_finds_the_live_keys_each_type_s_condition_admits(store: Store) -> None:
    """The references of a write (``Writer.check_references``): one statement on PostgreSQL."""
    async with store.writing() as unit:
        for type_, id_, patient in (("Patient", "p1", "p1"), ("Patient", "p2", None), ("Goal", "g1", None),
                                    ("Goal", "gone", None)):
            await unit.insert(type_, id_, 1, T0, body(type_, id_), patient_id=patient)
        gone = await unit.get("Goal", "gone")
        assert gone is not None
        await unit.update(gone.pk, 2, T0, gone.body, deleted=True)
    keys = [("Patient", "p1"), ("Patient", "p2"), ("Goal", "g1"), ("Goal", "gone"), ("Goal", "never")]
    with_patient = RESOURCE.c.patient_id.is_not(None)
    async with store.writing() as unit:
        assert await unit.existing_visible(keys, {"Patient": with_patient, "Goal": None}) == {
            ("Patient", "p1"), ("Goal", "g1")}
        assert await unit.existing_visible(keys, {"Patient": None, "Goal": None}) == {
            ("Patient", "p1"), ("Patient", "p2"), ("Goal", "g1")}
        assert await unit.existing_visible(keys[:3], {"Patient": None, "Goal": with_patient}) == {
            ("Patient", "p1"), ("Patient", "p2")}


async def test_index_rows_must_belong_to_a_resource(store: Store) -> None:
    """The foreign key holds on SQLite too (PRAGMA foreign_keys=ON on every connection)."""
    with pytest.raises(sa.exc.IntegrityError):
        async with store.writing() as unit:
            await unit.write_index(424242, "Patient", _rows(), replace=False)


async def test_referrers_references_from_and_referencing(store: Store) -> None:
    async with store.writing() as unit:
        patient = await put(unit, "Patient", "p1", refs=[("link", "Patient", "p1")])
        plan = await put(unit, "CarePlan", "c1", refs=[("subject", "Patient", "p1"), ("patient", "Patient", "p1"),
                                                       ("care-team", "CareTeam", "t1")])
        team = await put(unit, "CareTeam", "t1", refs=[("subject", "Patient", "p1"),
                                                       ("participant", "Practitioner", "lisa")])
        goal = await put(unit, "Goal", "g1", refs=[("subject", "Patient", "p2")])
        await unit.write_index(plan, "CarePlan", [("reference", [
            {"param": "author", "target_type": "Organization", "target_id": None, "url": "https://x.example/o"},
        ])], replace=False)

    async with store.reading() as unit:
        # A resource referring to itself does not block its own deletion.
        assert sorted(await unit.referrers("Patient", "p1", exclude_pk=patient)) == [
            ("CarePlan", "c1"), ("CareTeam", "t1"),
        ]
        assert await unit.referrers("Patient", "p1", exclude_pk=patient, limit=1) in (
            [("CarePlan", "c1")], [("CareTeam", "t1")])
        assert await unit.referrers("Practitioner", "lisa", exclude_pk=0) == [("CareTeam", "t1")]
        assert await unit.referrers("Patient", "nobody", exclude_pk=0) == []

        # Targets with an id only (external URLs have none); filtered by (type, param) and target type.
        assert sorted(await unit.references_from([plan, team], None)) == [
            ("CareTeam", "t1"), ("Patient", "p1"), ("Practitioner", "lisa"),
        ]
        assert await unit.references_from([plan, team], [("CarePlan", "care-team")]) == [("CareTeam", "t1")]
        assert sorted(await unit.references_from([plan, team], [("CarePlan", "subject"), ("CareTeam", "subject")])) == [
            ("Patient", "p1"),
        ]
        assert await unit.references_from([plan, team], None, target_type="Practitioner") == [
            ("Practitioner", "lisa"),
        ]
        assert await unit.references_from([], None) == []

        assert await unit.referencing("CarePlan", "subject", [("Patient", "p1")], limit=10) == [plan]
        assert await unit.referencing("CarePlan", None, [("Patient", "p1"), ("CareTeam", "t1")], limit=10) == [plan]
        assert await unit.referencing("CarePlan", "care-team", [("Patient", "p1")], limit=10) == []
        assert await unit.referencing("Goal", None, [("Patient", "p2"), ("Patient", "p1")], limit=10) == [goal]
        assert len(await unit.referencing("CarePlan", None, [("Patient", "p1")], limit=10)) == 1
        assert await unit.referencing("CareTeam", "subject", [], limit=10) == []


# -- units of work ---------------------------------------------------------------------------


async def test_a_failed_write_unit_leaves_nothing_behind(store: Store) -> None:
    async with store.writing() as unit:
        kept = await put(unit, "Patient", "kept")
    with pytest.raises(Boom):
        async with store.writing() as unit:
            pk = await put(unit, "Patient", "p1", refs=[("link", "Patient", "kept")])
            await unit.write_index(pk, "Patient", _rows(), replace=False)
            await unit.update(kept, 2, T0, body("Patient", "kept", active=False), deleted=True)
            await unit.add_version("Patient", "kept", 2, T0, "DELETE", None)
            await unit.clear_index(kept)
            raise Boom
    assert await count(store, RESOURCE) == 1
    assert await count(store, RESOURCE_VERSION) == 1
    for table in INDEX_TABLES.values():
        assert await count(store, table) == 0
    async with store.reading() as unit:
        survivor = await unit.get("Patient", "kept")
        assert survivor is not None and survivor.version_id == 1 and not survivor.deleted
        assert await unit.get("Patient", "p1") is None


async def test_a_database_error_rolls_back_the_earlier_statements_of_the_unit(store: Store) -> None:
    async with store.writing() as unit:
        await put(unit, "Patient", "p1")
    with pytest.raises(sa.exc.IntegrityError):
        async with store.writing() as unit:
            await put(unit, "Patient", "p2", refs=[("link", "Patient", "p1")])
            await unit.insert("Patient", "p1", 1, T0, body("Patient", "p1"))
    async with store.reading() as unit:
        assert await unit.get("Patient", "p2") is None
    assert await count(store, RESOURCE_VERSION) == 1
    assert await count(store, INDEX_TABLES["reference"]) == 0


async def test_a_read_unit_sees_committed_writes_only(store: Store) -> None:
    async with store.writing() as writer:
        await put(writer, "Patient", "p1")
        async with store.reading() as reader:
            assert await reader.get("Patient", "p1") is None
    async with store.reading() as reader:
        assert await reader.get("Patient", "p1") is not None


async def test_concurrent_writers_all_succeed(store: Store) -> None:
    async def write(n: int) -> None:
        async with store.writing() as unit:
            pk = await put(unit, "Patient", f"p{n}")
            await asyncio.sleep(0.01)  # hold the transaction open while others wait
            await unit.write_index(pk, "Patient", _rows(), replace=True)

    await asyncio.gather(*(write(n) for n in range(8)))
    assert await count(store, RESOURCE) == 8
    assert await count(store, RESOURCE_VERSION) == 8
    assert await count(store, INDEX_TABLES["token"]) == 16


async def test_sqlite_writers_of_a_process_take_turns_in_the_order_they_came(sqlite_url: str) -> None:
    """SQLite's busy handler lets a newcomer take the write lock before writers that have slept
    in it; queued in the process first, writers (and the access log's appends) go in order."""
    store = Store(create_engine(sqlite_url, pool_size=20))
    order: list[int] = []

    async def write(n: int) -> None:
        await asyncio.sleep(n * 0.01)  # arrive one after another, while the first still holds the lock
        async with store.writing() as unit:
            order.append(n)
            await put(unit, "Patient", f"p{n}")
            await asyncio.sleep(0.15 if n == 0 else 0.005)

    try:
        await asyncio.gather(*(write(n) for n in range(16)))
    finally:
        await store.dispose()
    assert order == list(range(16))


async def test_a_sqlite_writer_that_waits_past_the_busy_timeout_is_refused(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repository, "SQLITE_BUSY_TIMEOUT", 0.2)
    store = Store(create_engine(sqlite_url, pool_size=5))
    held = asyncio.Event()

    async def hold() -> None:
        async with store.writing() as unit:
            await put(unit, "Patient", "held")
            held.set()
            await asyncio.sleep(1.0)

    try:
        holder = asyncio.create_task(hold())
        await held.wait()
        with pytest.raises(DatabaseUnavailable):
            async with store.writing() as unit:
                await put(unit, "Patient", "late")
        await holder
        async with store.reading() as unit:
            assert await unit.get("Patient", "held") is not None and await unit.get("Patient", "late") is None
    finally:
        await store.dispose()


async def test_concurrent_read_modify_write_loses_no_update(store: Store) -> None:
    async with store.writing() as unit:
        await unit.insert("Patient", "p1", 1, T0, body("Patient", "p1", counter=0))

    async def increment() -> None:
        async with store.writing() as unit:
            current = await unit.get("Patient", "p1", lock=True)
            assert current is not None
            await asyncio.sleep(0.005)
            counter = orjson.loads(current.body)["counter"] + 1
            text = body("Patient", "p1", counter=counter)
            await unit.update(current.pk, current.version_id + 1, T0, text)
            await unit.add_version("Patient", "p1", current.version_id + 1, T0, "PUT", text)

    await asyncio.gather(*(increment() for _ in range(6)))
    async with store.reading() as unit:
        final = await unit.get("Patient", "p1")
    assert final is not None
    assert final.version_id == 7
    assert orjson.loads(final.body)["counter"] == 6


async def test_lock_key_serialises_check_then_insert(store: Store) -> None:
    """What conditional create relies on: under the lock, one writer creates and the others see it."""
    created: list[str] = []

    async def create_if_absent(n: int) -> None:
        async with store.writing() as unit:
            await unit.lock_key("Patient?identifier=urn:x|1")
            found = (await unit.conn.execute(
                sa.select(sa.func.count()).select_from(RESOURCE).where(RESOURCE.c.res_type == "Patient")
            )).scalar_one()
            await asyncio.sleep(0.02)
            if not found:
                await put(unit, "Patient", f"p{n}")
                created.append(f"p{n}")

    await asyncio.gather(*(create_if_absent(n) for n in range(4)))
    assert len(created) == 1
    assert await count(store, RESOURCE) == 1


async def test_readers_do_not_fail_while_a_writer_holds_its_transaction(store: Store) -> None:
    async with store.writing() as unit:
        await put(unit, "Patient", "p1")

    async def read() -> bool:
        async with store.reading() as unit:
            return await unit.get("Patient", "p1") is not None

    async with store.writing() as writer:
        await put(writer, "Patient", "p2")
        assert await asyncio.gather(*(read() for _ in range(3))) == [True, True, True]


async def test_postgresql_connections_use_generic_plans_and_no_jit(clean_pg: str) -> None:
    """The service's connections plan each statement once (the access rules are costly to plan)
    and never JIT-compile: a generic plan's high estimates passed jit_above_cost, and compiling
    cost 125-900 ms for searches that run in 20 ms (docs/performance.md)."""
    store = Store(create_engine(clean_pg, pool_size=1))
    try:
        async with store.reading() as unit:
            settings = {name: (await unit.conn.execute(sa.text(f"SHOW {name}"))).scalar_one()
                        for name in ("plan_cache_mode", "jit")}
    finally:
        await store.dispose()
    assert settings == {"plan_cache_mode": "force_generic_plan", "jit": "off"}


def test_a_statement_around_shared_conditions_is_built_once_per_condition_object() -> None:
    """The access rules' conditions are shared objects; a statement around one is reused for the
    same object only: an equal-looking condition built anew (a scope narrowed per request) gets
    its own statement, so no request runs another caller's condition."""
    column = RESOURCE.c.owner_unit
    first, second = column == sa.bindparam("org"), column == sa.bindparam("org")
    built: list[Any] = []

    def build(condition: Any) -> Any:
        built.append(condition)
        return sa.select(RESOURCE.c.pk).where(condition)

    one = repository._built_once("test", (first,), lambda: build(first))
    again = repository._built_once("test", (first,), lambda: build(first))
    other = repository._built_once("test", (second,), lambda: build(second))
    assert one is again and other is not one
    assert built == [first, second]
    assert repository._built_once("other kind", (first,), lambda: build(first)) is not one


def test_statements_around_per_request_conditions_are_not_all_kept() -> None:
    """A condition built per request (a narrowed scope) gets its statement, and the memo stays
    bounded however many such requests pass."""
    column = RESOURCE.c.owner_unit
    for _ in range(repository.MAX_BUILT_STATEMENTS * 2 + 1):
        condition = column == sa.bindparam("org")
        repository._built_once("narrowed", (condition,), lambda c=condition: sa.select(RESOURCE.c.pk).where(c))
        assert len(repository._built) <= repository.MAX_BUILT_STATEMENTS
