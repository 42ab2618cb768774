"""Outbox rows: a change writes one ``event`` row per subscription whose query it matches, in
the change's own transaction, whichever way it was written (create, update, PATCH, delete,
conditional, batch and transaction entries), on PostgreSQL and SQLite; nothing for a change that
matches no query, for a subscription that is ``off`` or in ``error``, or for a write that fails."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from patientkontrakt.config import Settings
from patientkontrakt.domain.setup import build_service
from patientkontrakt.notify.subscriptions import set_status
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from patientkontrakt.storage.tables import SUBSCRIPTION, SUBSCRIPTION_OUTBOX
from tests.factories import care_plan, care_team, create, goal, patient
from tests.notify.conftest import settings_on_each_database
from tests.notify.test_subscription_resource import backport, r4

settings = settings_on_each_database
PATCH = {"content-type": "application/json-patch+json"}


def events(settings: Settings, subscription_id: str) -> list[tuple[str, str, int]]:
    """(type, id, version) of the subscription's event rows, in outbox order."""
    async def go() -> list[tuple[str, str, int]]:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                found = await conn.execute(
                    sa.select(SUBSCRIPTION_OUTBOX.c.res_type, SUBSCRIPTION_OUTBOX.c.res_id,
                              SUBSCRIPTION_OUTBOX.c.version_id)
                    .join(SUBSCRIPTION, SUBSCRIPTION.c.resource_pk == SUBSCRIPTION_OUTBOX.c.subscription_pk)
                    .where(SUBSCRIPTION.c.res_id == subscription_id, SUBSCRIPTION_OUTBOX.c.kind == "event")
                    .order_by(SUBSCRIPTION_OUTBOX.c.id))
                return [(str(t), str(i), int(v)) for t, i, v in found.all()]
        finally:
            await engine.dispose()
    return asyncio.run(go())


def test_r4_criteria_notify_matching_changes_only(client: TestClient, settings: Settings) -> None:
    sub = create(client, r4("CarePlan?status=active"))["id"]
    other = create(client, r4("CarePlan?status=draft"))["id"]
    pat = create(client, patient())["id"]  # a type nobody watches
    active = create(client, care_plan(pat))["id"]
    draft = create(client, care_plan(pat, status="draft"))["id"]
    assert events(settings, sub) == [("CarePlan", active, 1)]
    assert events(settings, other) == [("CarePlan", draft, 1)]
    # update: the new version is judged, not the old one
    plan = client.get(f"/fhir/CarePlan/{draft}").json()
    assert client.put(f"/fhir/CarePlan/{draft}", json={**plan, "status": "active"}).status_code == 200
    # PATCH
    patched = client.patch(f"/fhir/CarePlan/{active}", headers=PATCH,
                           json=[{"op": "replace", "path": "/title", "value": "Nytt namn"}])
    assert patched.status_code == 200, patched.text
    # conditional update
    plan = client.get(f"/fhir/CarePlan/{active}").json()
    assert client.put(f"/fhir/CarePlan?_id={active}", json={**plan, "description": "Villkorad"}).status_code == 200
    # delete: the version it deletes matched
    assert client.delete(f"/fhir/CarePlan/{active}").status_code == 204
    assert events(settings, sub) == [("CarePlan", active, 1), ("CarePlan", draft, 2), ("CarePlan", active, 2),
                                     ("CarePlan", active, 3), ("CarePlan", active, 4)]
    assert events(settings, other) == [("CarePlan", draft, 1)]


def test_a_topic_with_a_patient_filter_notifies_that_patients_agreement_only(client: TestClient,
                                                                               settings: Settings) -> None:
    mine = create(client, patient())["id"]
    theirs = create(client, patient("191010101010", "Tiotal"))["id"]
    sub = create(client, backport([f"CarePlan?patient=Patient/{mine}"]))["id"]
    everything = create(client, backport([]))["id"]
    written = []
    for pat in (mine, theirs):
        team = create(client, care_team(pat))["id"]
        aim = create(client, goal(pat))["id"]
        plan = create(client, care_plan(pat, team))["id"]
        written.append([("CareTeam", team, 1), ("Goal", aim, 1), ("CarePlan", plan, 1)])
    assert events(settings, sub) == written[0]
    assert events(settings, everything) == written[0] + written[1]


def test_bundle_entries_notify_and_a_failed_transaction_leaves_no_row(client: TestClient,
                                                                      settings: Settings) -> None:
    sub = create(client, r4("Goal"))["id"]
    pat = create(client, patient())["id"]
    failing = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": goal(pat), "request": {"method": "POST", "url": "Goal"}},
        {"resource": {**goal(pat), "subject": {"reference": "Patient/nobody"}},
         "request": {"method": "POST", "url": "Goal"}}]}
    assert client.post("/fhir", json=failing).status_code in (400, 404, 422)
    assert events(settings, sub) == []
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": goal(pat), "request": {"method": "POST", "url": "Goal"}},
        {"resource": goal(pat, "Laga mat"), "request": {"method": "POST", "url": "Goal",
                                                        "ifNoneExist": "identifier=urn:x|nothing-like-this"}}]}
    done = client.post("/fhir", json=transaction)
    assert done.status_code == 200, done.text
    ids = [_id_of(e["response"]["location"]) for e in done.json()["entry"]]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": goal(pat), "request": {"method": "POST", "url": "Goal"}},
        {"resource": {**goal(pat), "subject": {"reference": "Patient/nobody"}},
         "request": {"method": "POST", "url": "Goal"}}]}
    answered = client.post("/fhir", json=batch).json()
    kept = [_id_of(e["response"]["location"]) for e in answered["entry"] if "location" in e["response"]]
    assert len(kept) == 1
    assert events(settings, sub) == [("Goal", ids[0], 1), ("Goal", ids[1], 1), ("Goal", kept[0], 1)]


def _id_of(location: str) -> str:
    return location.split("/_history")[0].rsplit("/", 1)[1]


def test_subscriptions_that_are_off_or_in_error_are_not_notified(client: TestClient, settings: Settings) -> None:
    off = create(client, {**r4("Goal"), "status": "off"})["id"]
    failing = create(client, r4("Goal"))["id"]
    asyncio.run(_set(settings, failing, "error", "the endpoint answered 500 ten times"))
    stored = client.get(f"/fhir/Subscription/{failing}").json()
    assert (stored["status"], stored["error"], stored["meta"]["versionId"]) == \
        ("error", "the endpoint answered 500 ten times", "2")
    pat = create(client, patient())["id"]
    create(client, goal(pat))
    assert events(settings, off) == [] and events(settings, failing) == []
    asyncio.run(_set(settings, failing, "active", None))
    assert "error" not in client.get(f"/fhir/Subscription/{failing}").json()
    aim = create(client, goal(pat))["id"]
    assert events(settings, failing) == [("Goal", aim, 1)]


async def _set(settings: Settings, id_: str, status: str, error: str | None) -> None:
    store = Store(create_engine(settings.database_url, pool_size=1))
    try:
        service = build_service(settings, store)
        async with store.writing() as unit:
            pk = (await unit.conn.execute(sa.select(SUBSCRIPTION.c.resource_pk)
                                          .where(SUBSCRIPTION.c.res_id == id_))).scalar_one()
            await set_status(service, unit, pk, status, error)
        async with store.reading() as unit:
            row = (await unit.conn.execute(sa.select(SUBSCRIPTION).where(SUBSCRIPTION.c.resource_pk == pk))).one()
            assert (row.status, row.error) == (status, error)
    finally:
        await store.dispose()


def test_a_write_of_a_type_nobody_watches_pays_one_query(settings: Settings) -> None:
    async def go() -> list[list[str]]:
        store = Store(create_engine(settings.database_url, pool_size=1))
        statements: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        def sent(record: Any) -> None:
            statements.append(record.query)

        def connected(dbapi_connection: Any, _: Any) -> None:
            # statements sent to asyncpg directly (Unit.fetch), which SQLAlchemy does not see
            if store.dialect == "postgresql":
                dbapi_connection.driver_connection.add_query_logger(sent)

        sa.event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
        sa.event.listen(store.engine.sync_engine.pool, "connect", connected)
        try:
            service = build_service(settings, store, domain_rules=False)
            rounds = []
            woman = patient("191111111111", gender="female")
            for resource in (patient(), r4("Patient?gender=female"), patient(), woman):
                statements.clear()
                async with store.writing() as unit:
                    await service.writer.create(unit, resource)
                rounds.append([s for s in statements if "subscription" in s])
            return rounds
        finally:
            await store.dispose()

    unwatched, _, unmatched, matched = asyncio.run(go())
    assert len(unwatched) == 1 and "subscription_trigger" in unwatched[0]
    assert len(unmatched) == 1 and "subscription_trigger" in unmatched[0]  # the match itself reads resource rows
    assert len(matched) == 2 and "INSERT INTO subscription_outbox" in matched[1]
