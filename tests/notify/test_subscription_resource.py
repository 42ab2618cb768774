"""The Subscription resource over HTTP (the bare R4 engine, scopes only): what a client may
create, every kind of bad input answered with an OperationOutcome, and the delivery state and
triggers written with it, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.tables import SUBSCRIPTION, SUBSCRIPTION_OUTBOX, SUBSCRIPTION_TRIGGER
from tests.factories import create
from tests.notify.conftest import settings_on_each_database

settings = settings_on_each_database

TOPIC = "https://patientkontrakt.se/fhir/SubscriptionTopic/patientkontrakt"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
ENDPOINT = "https://ehr.example.org/fhir-hook"


def r4(criteria: str = "CarePlan?status=active", **channel: Any) -> dict[str, Any]:
    return {"resourceType": "Subscription", "status": "requested", "reason": "Journalen vill veta",
            "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": ENDPOINT, "payload": "application/fhir+json",
                        "header": ["Authorization: Bearer hemlig-nyckel"], **channel}}


def backport(filters: list[str], content: str | None = "id-only") -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": ENDPOINT, "payload": "application/fhir+json"}
    if content:
        channel["_payload"] = {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": content}]}
    sub = {"resourceType": "Subscription", "status": "requested", "reason": "Avtalen för en patient",
           "criteria": TOPIC, "channel": channel}
    if filters:
        sub["_criteria"] = {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": f}
                                          for f in filters]}
    return sub


def rows(url: str, table: sa.Table, *where: Any) -> list[Any]:
    async def go() -> list[Any]:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.select(table).where(*where))).all())
        finally:
            await engine.dispose()
    return asyncio.run(go())


def state(client: TestClient, id_: str) -> Any:
    url = client.app.state.settings.database_url  # type: ignore[attr-defined]
    found = rows(url, SUBSCRIPTION, SUBSCRIPTION.c.res_id == id_)
    return found[0] if found else None


def test_an_r4_subscription_is_stored_requested_with_its_trigger_and_a_handshake(client: TestClient) -> None:
    body = create(client, {**r4(), "status": "active", "error": "made up by the client"})
    assert body["status"] == "requested" and "error" not in body
    url = client.app.state.settings.database_url  # type: ignore[attr-defined]
    row = state(client, body["id"])
    assert (row.status, row.topic, row.channel, row.endpoint, row.content) == \
        ("requested", None, "rest-hook", ENDPOINT, "full-resource")
    assert row.headers == '["Authorization: Bearer hemlig-nyckel"]'
    assert '"rules":"scopes"' in row.principal and "hemlig" not in row.principal
    triggers = rows(url, SUBSCRIPTION_TRIGGER, SUBSCRIPTION_TRIGGER.c.subscription_pk == row.resource_pk)
    assert [(t.res_type, t.query) for t in triggers] == [("CarePlan", "status=active")]
    outbox = rows(url, SUBSCRIPTION_OUTBOX, SUBSCRIPTION_OUTBOX.c.subscription_pk == row.resource_pk)
    assert [o.kind for o in outbox] == ["handshake"]
    assert client.get(f"/fhir/Subscription/{body['id']}").json()["status"] == "requested"
    found = client.get("/fhir/Subscription", params={"status": "requested", "url": ENDPOINT}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [body["id"]]


def test_no_payload_is_an_empty_notification_and_off_owes_no_handshake(client: TestClient) -> None:
    sub = r4("Goal")
    del sub["channel"]["payload"]
    body = create(client, {**sub, "status": "off"})
    row = state(client, body["id"])
    assert (row.status, row.content) == ("off", "empty")
    url = client.app.state.settings.database_url  # type: ignore[attr-defined]
    assert rows(url, SUBSCRIPTION_OUTBOX, SUBSCRIPTION_OUTBOX.c.subscription_pk == row.resource_pk) == []
    triggers = rows(url, SUBSCRIPTION_TRIGGER, SUBSCRIPTION_TRIGGER.c.subscription_pk == row.resource_pk)
    assert [(t.res_type, t.query) for t in triggers] == [("Goal", "")]


def test_a_backport_subscription_watches_every_type_of_the_topic_with_its_filter(client: TestClient) -> None:
    body = create(client, backport(["CarePlan?patient=Patient/p1"], "full-resource"))
    assert f"{BACKPORT}/backport-subscription" in body["meta"]["profile"]
    row = state(client, body["id"])
    assert (row.topic, row.content) == (TOPIC, "full-resource")
    url = client.app.state.settings.database_url  # type: ignore[attr-defined]
    triggers = rows(url, SUBSCRIPTION_TRIGGER, SUBSCRIPTION_TRIGGER.c.subscription_pk == row.resource_pk)
    assert sorted((t.res_type, t.query) for t in triggers) == [
        (type_, "patient=Patient%2Fp1") for type_ in ("Appointment", "CarePlan", "CareTeam", "Goal")]
    assert state(client, create(client, backport([], None))["id"]).content == "id-only"
    no_payload = backport([], None) | {"channel": {"type": "rest-hook", "endpoint": ENDPOINT}}
    assert state(client, create(client, no_payload)["id"]).content == "empty"


def test_update_and_delete_keep_the_state_in_step(client: TestClient) -> None:
    body = create(client, r4())
    pk = state(client, body["id"]).resource_pk
    changed = {**body, "criteria": "CareTeam?status=active", "status": "off"}
    assert client.put(f"/fhir/Subscription/{body['id']}", json=changed).status_code == 200
    row = state(client, body["id"])
    assert row.status == "off"
    url = client.app.state.settings.database_url  # type: ignore[attr-defined]
    triggers = rows(url, SUBSCRIPTION_TRIGGER, SUBSCRIPTION_TRIGGER.c.subscription_pk == pk)
    assert [(t.res_type, t.query) for t in triggers] == [("CareTeam", "status=active")]
    again = {**changed, "status": "requested"}
    assert client.put(f"/fhir/Subscription/{body['id']}", json=again).status_code == 200
    outbox = rows(url, SUBSCRIPTION_OUTBOX, SUBSCRIPTION_OUTBOX.c.subscription_pk == pk)
    assert [o.kind for o in outbox] == ["handshake", "handshake"]
    assert client.delete(f"/fhir/Subscription/{body['id']}").status_code == 204
    assert state(client, body["id"]) is None
    assert rows(url, SUBSCRIPTION_TRIGGER, SUBSCRIPTION_TRIGGER.c.subscription_pk == pk) == []
    assert rows(url, SUBSCRIPTION_OUTBOX, SUBSCRIPTION_OUTBOX.c.subscription_pk == pk) == []


BAD: list[tuple[str, Any, int, str, str]] = [
    # (case, resource, status, issue code, expression)
    ("websocket channel", r4(type="websocket"), 422, "not-supported", "Subscription.channel.type"),
    ("email channel", r4(type="email"), 422, "not-supported", "Subscription.channel.type"),
    ("no endpoint", {**r4(), "channel": {"type": "rest-hook"}}, 422, "business-rule",
     "Subscription.channel.endpoint"),
    ("loopback endpoint", r4(endpoint="https://127.0.0.1/hook"), 422, "business-rule",
     "Subscription.channel.endpoint"),
    ("plain http endpoint", r4(endpoint="http://ehr.example.org/hook"), 422, "business-rule",
     "Subscription.channel.endpoint"),
    ("private endpoint", r4(endpoint="https://10.1.2.3/hook"), 422, "business-rule",
     "Subscription.channel.endpoint"),
    ("xml payload", r4(payload="application/fhir+xml"), 422, "not-supported", "Subscription.channel.payload"),
    ("header without colon", r4(header=["Authorization Bearer x"]), 422, "business-rule",
     "Subscription.channel.header[0]"),
    ("header with a newline", r4(header=["X-A: b\r\nHost: evil"]), 422, "business-rule",
     "Subscription.channel.header[0]"),
    ("unknown type", r4("Observation?code=x"), 400, "invalid", "Subscription.criteria"),
    ("subscription of subscriptions", r4("Subscription?status=active"), 400, "invalid", "Subscription.criteria"),
    ("unknown parameter", r4("CarePlan?colour=red"), 400, "invalid", "colour"),
    ("bad value", r4("CarePlan?date=yesterday"), 400, "invalid", ""),
    ("result parameter", r4("CarePlan?status=active&_count=5"), 422, "business-rule", "Subscription.criteria"),
    ("include", r4("CarePlan?_include=CarePlan:subject"), 422, "business-rule", "Subscription.criteria"),
    ("no criteria", {k: v for k, v in r4().items() if k != "criteria"}, 400, "", ""),
    ("unknown status", {**r4(), "status": "paused"}, 400, "", ""),
    ("unknown topic", {**r4(), "criteria": "https://example.org/SubscriptionTopic/x"}, 422, "not-supported",
     "Subscription.criteria"),
    ("filter by an unknown parameter", backport(["CarePlan?status=active"]), 422, "not-supported",
     "Subscription.criteria.extension[0]"),
    ("filter on a type outside the topic", backport(["Patient?patient=Patient/1"]), 422, "business-rule",
     "Subscription.criteria.extension[0]"),
    ("filter without a query", backport(["CarePlan"]), 422, "business-rule", "Subscription.criteria.extension[0]"),
    ("unknown content", backport([], "everything"), 422, "business-rule", "Subscription.channel.payload.extension"),
]


def test_bad_subscriptions_are_refused_with_an_outcome(client: TestClient) -> None:
    """Every case by create, by update and in a batch entry (one server for all: the checks do
    not depend on the database)."""
    existing = create(client, r4())
    for case, resource, status, code, where in BAD:
        for method, url in (("POST", "Subscription"), ("PUT", f"Subscription/{existing['id']}")):
            body = {**resource, "id": existing["id"]} if method == "PUT" else resource
            response = client.request(method, f"/fhir/{url}", json=body)
            assert response.status_code == status, (case, method, response.text)
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome", case
            issue = outcome["issue"][0]
            assert not code or issue["code"] == code, (case, issue)
            assert not where or where in issue.get("expression", []), (case, issue)
            assert "hemlig" not in response.text  # a header value is never echoed
        batch = {"resourceType": "Bundle", "type": "batch",
                 "entry": [{"resource": resource, "request": {"method": "POST", "url": "Subscription"}}]}
        entry = client.post("/fhir", json=batch).json()["entry"][0]["response"]
        assert entry["status"].startswith(str(status)), (case, entry)
    assert client.get("/fhir/Subscription").json().get("total") == 1
    assert client.get(f"/fhir/Subscription/{existing['id']}").json()["meta"]["versionId"] == "1"


def test_a_bad_subscription_in_a_transaction_rolls_it_back(client: TestClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r4(), "request": {"method": "POST", "url": "Subscription"}},
        {"resource": r4(type="websocket"), "request": {"method": "POST", "url": "Subscription"}}]}
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 422, response.text
    assert client.get("/fhir/Subscription").json().get("total") == 0

