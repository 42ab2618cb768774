"""Delivering notifications (issue 15), on PostgreSQL with the demo region: a real receiver on
loopback (allowed through PK_SUBSCRIPTION_ALLOWED_HOSTS), the worker in-process or as real
processes. Subscriptions and their outbox rows are written as the API writes them.

Duplicates: two workers that both run deliver each notification exactly once (asserted: zero
repeats). A worker killed mid-delivery may leave one notification sent but not marked; the worker
that takes over sends it again with the same event number (asserted: a repeat carries the number
it had, and nothing is lost or reordered).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.config import Settings
from patientkontrakt.domain.demo import DemoGenerator
from patientkontrakt.notify.endpoints import check_url
from patientkontrakt.security.clients import Clients
from patientkontrakt.storage.tables import AUDIT_LOG, SUBSCRIPTION
from tests.conftest import BASE_URL, demo_database
from tests.notify.delivery_tools import (
    Received,
    Receiver,
    _db,
    announce,
    deliver,
    delivery_settings,
    forget_subscriptions,
    in_thread,
    receiving,
    state,
    subscribe,
    subscription,
    worker_of,
    worker_process,
)
from tests.security.conftest import World, _agreements
from tests.security.test_consent_matrix import HOMECARE, TARGET, VC, consent

TOPIC = "https://patientkontrakt.se/fhir/SubscriptionTopic/patientkontrakt"
SECRET = "Authorization: Bearer the-endpoints-own-secret"


@pytest.fixture(scope="module")
def module_db() -> Iterator[str]:
    with demo_database(f"pk_notify_{os.getpid()}", 4) as url:
        yield url


@pytest.fixture(scope="module")
def world(module_db: str) -> World:
    generator = DemoGenerator(seed=1)
    return World(delivery_settings(module_db), generator, _agreements(generator)[:4])


@pytest.fixture(scope="module")
def app(world: World) -> Iterator[TestClient]:
    """The service as deployed (care-unit rules, access log), in-process, for the API's writes."""
    with TestClient(create_app(world.settings), base_url=BASE_URL) as client:
        client.headers.update({"content-type": "application/fhir+json"})
        yield client


@pytest.fixture
def settings(world: World) -> Iterator[Settings]:
    yield world.settings
    forget_subscriptions(world.settings)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def vc_system(world: World) -> dict[str, str]:
    """A backend system of the vårdcentral that owns agreement TARGET, as a subscriber."""
    return world.system(VC)


def all_delivered(settings: Settings, pk: int) -> Any:
    return lambda: all(row.delivered is not None for row in state(settings, pk)[1])


def plan_events(world: World, count: int) -> list[tuple[str, str, int]]:
    target = world.agreements[TARGET]
    cycle = [("CarePlan", target.plan, 1), ("CareTeam", target.team, 1), ("Goal", target.goals[1], 1)]
    return [cycle[i % 3] for i in range(count)]


def numbers(received: list[Received]) -> list[int | None]:
    return [r.event_number for r in received]


def test_r4_rest_hook_handshake_then_each_change_in_order_with_its_headers(
        app: TestClient, world: World, settings: Settings, receiver: Receiver) -> None:
    pk = subscribe(app, vc_system(world), receiver.url("/hook"), headers=(SECRET, "X-Region: Exempel"))
    target = world.agreements[TARGET]
    announce(settings, pk, plan_events(world, 3))
    deliver(settings, all_delivered(settings, pk))

    got = receiver.at("/hook")
    assert [(r.method, r.path) for r in got] == [
        ("POST", "/hook"), ("PUT", f"/hook/CarePlan/{target.plan}"), ("PUT", f"/hook/CareTeam/{target.team}"),
        ("PUT", f"/hook/Goal/{target.goals[1]}")]
    handshake, plan = got[0], got[1]
    assert handshake.body == b"" and handshake.event_number is None
    assert numbers(got[1:]) == [1, 2, 3]
    assert plan.json()["resourceType"] == "CarePlan" and plan.json()["id"] == target.plan
    assert plan.json()["meta"]["versionId"] == "1"
    assert plan.headers["x-subscription-resource-version"] == "1"
    assert plan.headers["content-type"] == "application/fhir+json"
    for request in got:
        assert request.headers["authorization"] == "Bearer the-endpoints-own-secret"
        assert request.headers["x-region"] == "Exempel"
        assert request.headers["host"] == receiver.origin.removeprefix("http://")
    row, rows = state(settings, pk)
    assert row.status == "active" and row.events_since_start == 3 and row.failures == 0
    assert row.lease_owner is None and row.last_delivered is not None
    assert [r.event_number for r in rows] == [None, 1, 2, 3]


def change(app: TestClient, headers: dict[str, str], type_: str, id_: str) -> int:
    """A real update through the API (a new description); the new version."""
    current = app.get(f"/fhir/{type_}/{id_}", headers=headers)
    assert current.status_code == 200, current.text
    body = current.json()
    if type_ == "Goal":
        body["description"] = {"text": f"{body['description'].get('text', '')} (ändrat)"}
    else:
        body["description"] = f"{body.get('description', '')} (ändrat)"
    response = app.put(f"/fhir/{type_}/{id_}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["meta"]["versionId"])


def test_only_matching_changes_notify(app: TestClient, world: World, settings: Settings, receiver: Receiver) -> None:
    """Real writes through the API: an R4 criteria on one patient's CarePlans, and the topic
    filtered to that patient (every resource of the topic)."""
    target = world.agreements[TARGET]
    other = next(a for a in world.agreements if a.patient != target.patient)
    vc = vc_system(world)
    r4 = subscribe(app, vc, receiver.url("/r4"), criteria=f"CarePlan?patient=Patient/{target.patient}")
    topic = subscribe(app, vc, receiver.url("/topic"), topic=TOPIC, content="id-only",
                      filters=(f"CarePlan?patient=Patient/{target.patient}",))
    plan_version = change(app, vc, "CarePlan", target.plan)
    change(app, world.system(other.author), "CarePlan", other.plan)  # another patient: neither
    goal_version = change(app, vc, "Goal", target.goals[1])  # not a CarePlan: the topic only
    deliver(settings, lambda: all_delivered(settings, r4)() and all_delivered(settings, topic)())

    got = receiver.at("/r4")
    assert [(r.method, r.path, r.event_number) for r in got] == [
        ("POST", "/r4", None), ("PUT", f"/r4/CarePlan/{target.plan}", 1)]
    assert got[1].json()["meta"]["versionId"] == str(plan_version)
    focus = []
    for request in receiver.at("/topic")[1:]:
        parts = {p["name"]: p for p in request.json()["entry"][0]["resource"]["parameter"]}
        event = {p["name"]: p for p in parts["notification-event"]["part"]}
        focus.append((event["focus"]["valueReference"]["reference"].split("/fhir/")[1],
                      request.headers["x-subscription-resource-version"]))
    assert focus == [(f"CarePlan/{target.plan}", str(plan_version)), (f"Goal/{target.goals[1]}", str(goal_version))]


def test_a_notification_names_the_request_whose_write_queued_it(
        app: TestClient, world: World, settings: Settings, receiver: Receiver) -> None:
    """X-Correlation-ID: the X-Request-ID of the write (the client's own, or the one the service
    gave it); X-Request-ID: the delivery attempt's own; the write's access-log entry has the id."""
    target = world.agreements[TARGET]
    vc = vc_system(world)
    pk = subscribe(app, {**vc, "X-Request-ID": "7f3c2a9e-1b4d-4c8e-9a6f-2d5b8e1c3a70"}, receiver.url("/hook"))
    current = app.get(f"/fhir/CarePlan/{target.plan}", headers=vc).json()
    own = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    first = app.put(f"/fhir/CarePlan/{target.plan}", json={**current, "description": "Första"},
                    headers={**vc, "X-Request-ID": own})
    assert first.status_code == 200 and first.headers["x-request-id"] == own
    second = app.put(f"/fhir/CarePlan/{target.plan}", json={**first.json(), "description": "Andra"}, headers=vc)
    assert second.status_code == 200
    given = second.headers["x-request-id"]
    deliver(settings, all_delivered(settings, pk))

    got = receiver.at("/hook")
    assert [(r.method, r.headers.get("x-correlation-id")) for r in got] == [
        ("POST", "7f3c2a9e-1b4d-4c8e-9a6f-2d5b8e1c3a70"), ("PUT", own), ("PUT", given)]
    attempts = [r.headers["x-request-id"] for r in got]
    assert len(set(attempts)) == 3 and not {own, given} & set(attempts)
    logged = _db(settings, lambda store: _request_ids(store, f"CarePlan/{target.plan}"))
    assert {own, given} <= logged


async def _request_ids(store: Any, request: str) -> set[str]:
    async with store.reading() as unit:
        found = await unit.conn.execute(sa.select(AUDIT_LOG.c.request_id).where(AUDIT_LOG.c.request == request))
        return {r for (r,) in found.all() if r}


def test_an_idle_worker_is_woken_by_a_change_not_by_its_poll(
        app: TestClient, world: World, settings: Settings, receiver: Receiver) -> None:
    """PostgreSQL: a worker that polls once a minute delivers the handshake and a change within
    seconds: the transaction that queues them sends a NOTIFY, and the listening worker wakes."""
    slow = settings.model_copy(update={"worker_poll_interval": 60.0})
    ready = threading.Event()

    async def work(stop: threading.Event) -> None:
        async with worker_of(slow) as worker:
            stopping = asyncio.Event()
            running = asyncio.create_task(worker.run(stopping))
            try:
                while not stop.is_set():
                    if worker.wakeup is not None and worker.wakeup.listening:
                        ready.set()
                    await asyncio.sleep(0.05)
            finally:
                stopping.set()
                await running

    with in_thread(work) as failure:
        assert ready.wait(30), failure
        time.sleep(0.5)  # idle: it has looked, found nothing, and waits out its minute
        started = time.monotonic()
        subscribe(app, vc_system(world), receiver.url("/woken"))
        receiver.wait_for("/woken", 1, timeout=10)
        target = world.agreements[TARGET]
        change(app, vc_system(world), "CarePlan", target.plan)
        got = receiver.wait_for("/woken", 2, timeout=10)
        assert time.monotonic() - started < 20 < slow.worker_poll_interval
        assert [(r.method, r.path) for r in got] == [("POST", "/woken"), ("PUT", f"/woken/CarePlan/{target.plan}")]


def test_r4_without_payload_is_an_empty_post(
        app: TestClient, world: World, settings: Settings, receiver: Receiver) -> None:
    pk = subscribe(app, vc_system(world), receiver.url("/empty"), content="empty")
    announce(settings, pk, plan_events(world, 2))
    deliver(settings, all_delivered(settings, pk))
    got = receiver.at("/empty")
    assert [(r.method, r.path, r.body) for r in got] == [("POST", "/empty", b"")] * 3
    assert numbers(got) == [None, 1, 2]
    assert "x-subscription-resource-version" not in got[1].headers


def test_backport_bundles(
        app: TestClient, world: World, settings: Settings, receiver: Receiver) -> None:
    who = vc_system(world)
    full = subscribe(app, who, receiver.url("/full"), topic=TOPIC, content="full-resource")
    ids = subscribe(app, who, receiver.url("/ids"), topic=TOPIC, content="id-only")
    target = world.agreements[TARGET]
    for pk in (full, ids):
        announce(settings, pk, plan_events(world, 2))
    deliver(settings, lambda: all_delivered(settings, full)() and all_delivered(settings, ids)())

    def status(bundle: dict[str, Any]) -> dict[str, Any]:
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
        first = bundle["entry"][0]
        assert first["request"]["url"].endswith("/$status")
        return {p["name"]: p for p in first["resource"]["parameter"]}

    handshake = status(receiver.at("/full")[0].json())
    assert handshake["type"]["valueCode"] == "handshake"
    assert handshake["status"]["valueCode"] == "requested"
    assert handshake["topic"]["valueCanonical"] == TOPIC
    full_id = state(settings, full)[0].res_id
    assert handshake["subscription"]["valueReference"]["reference"] == f"{BASE_URL}/fhir/Subscription/{full_id}"
    assert handshake["events-since-subscription-start"]["valueString"] == "0"

    for path, content in (("/full", "full-resource"), ("/ids", "id-only")):
        events = receiver.at(path)[1:]
        assert len(events) == 2
        for number, request in enumerate(events, start=1):
            bundle = request.json()
            params = status(bundle)
            assert params["type"]["valueCode"] == "event-notification"
            assert params["status"]["valueCode"] == "active"
            assert params["events-since-subscription-start"]["valueString"] == str(number)
            event = {p["name"]: p for p in params["notification-event"]["part"]}
            assert event["event-number"]["valueString"] == str(number)
            assert request.event_number == number
            focus = event["focus"]["valueReference"]["reference"]
            if content == "full-resource":
                assert len(bundle["entry"]) == 2
                assert bundle["entry"][1]["fullUrl"] == focus
                assert bundle["entry"][1]["resource"]["meta"]["versionId"] == "1"
            else:
                assert len(bundle["entry"]) == 1
        first = {p["name"]: p for p in status(events[0].json())["notification-event"]["part"]}
        assert first["focus"]["valueReference"]["reference"] == f"{BASE_URL}/fhir/CarePlan/{target.plan}"


def test_a_receiver_down_for_a_while_gets_everything_afterwards_in_order(
        app: TestClient, world: World, settings: Settings, receiver: Receiver) -> None:
    pk = subscribe(app, vc_system(world), receiver.url("/down"), content="empty")
    receiver.failing = 6  # the handshake fails six times: nothing after it goes first
    announce(settings, pk, plan_events(world, 8))
    deliver(settings, all_delivered(settings, pk))
    got = receiver.at("/down")
    assert numbers(got) == [None, *range(1, 9)]
    row, rows = state(settings, pk)
    assert rows[0].attempts == 7 and all(r.attempts == 1 for r in rows[1:])
    assert row.failures == 0 and row.status == "active" and row.error is None


def test_a_batch_is_numbered_before_its_first_attempt_and_keeps_its_numbers_after_a_failure(
        app: TestClient, world: World, settings: Settings, receiver: Receiver) -> None:
    """The changes waiting after a delivered handshake get their numbers together, before the
    first is sent; when the first fails, the rest keep the numbers they were given, and every
    notification goes with its own number once the receiver is back."""
    pk = subscribe(app, vc_system(world), receiver.url("/batch"), content="empty")
    deliver(settings, all_delivered(settings, pk))
    announce(settings, pk, plan_events(world, 4))
    receiver.failing = 1
    patient = delivery_settings(settings.database_url, subscription_backoff=60, subscription_backoff_max=60)
    deliver(patient, lambda: state(settings, pk)[1][1].attempts >= 1)  # no retry within the minute
    row, rows = state(settings, pk)
    assert [r.event_number for r in rows] == [None, 1, 2, 3, 4]
    assert [r.attempts for r in rows[1:]] == [1, 0, 0, 0] and rows[1].delivered is None
    assert row.events_since_start == 4

    async def retry_now(store: Any) -> None:
        async with store.writing() as unit:
            await unit.conn.execute(SUBSCRIPTION.update().where(SUBSCRIPTION.c.resource_pk == pk)
                                    .values(next_attempt=None))
    _db(settings, retry_now)
    deliver(settings, all_delivered(settings, pk))
    assert numbers(receiver.at("/batch")) == [None, 1, 2, 3, 4]
    assert [r.event_number for r in state(settings, pk)[1]] == [None, 1, 2, 3, 4]


def test_error_status_with_the_reason_after_repeated_failure(
        app: TestClient, world: World, receiver: Receiver) -> None:
    settings = delivery_settings(world.settings.database_url, subscription_max_failures=3)
    try:
        pk = subscribe(app, vc_system(world), receiver.url("/error"), content="empty")
        announce(settings, pk, plan_events(world, 2))
        receiver.status = 500
        deliver(settings, lambda: state(settings, pk)[0].status == "error")
        row, rows = state(settings, pk)
        assert row.failures == 3 and "3 deliveries in a row failed" in row.error and "500" in row.error
        assert rows[0].attempts == 3 and rows[0].last_error == "the endpoint answered 500"
        assert all(r.delivered is None for r in rows) and rows[1].event_number is None
        assert receiver.at("/error") == []
    finally:
        forget_subscriptions(settings)


def test_an_endpoint_on_loopback_is_refused_without_the_setting(
        app: TestClient, world: World, receiver: Receiver) -> None:
    assert check_url(receiver.url("/loop"), frozenset()) is not None
    settings = delivery_settings(world.settings.database_url, subscription_allowed_hosts="",
                                 subscription_max_failures=2)
    with TestClient(create_app(settings), base_url=BASE_URL) as strict:
        response = strict.post("/fhir/Subscription", json=subscription(receiver.url("/loop")),
                               headers={**vc_system(world), "content-type": "application/fhir+json"})
        assert response.status_code == 422, response.text
        assert "channel.endpoint is refused" in response.text
    try:
        # written while it was allowed; delivered by a worker that does not allow it
        pk = subscribe(app, vc_system(world), receiver.url("/loop"))
        deliver(settings, lambda: state(settings, pk)[0].status == "error")
        row, rows = state(settings, pk)
        assert "https" in rows[0].last_error or "not public" in rows[0].last_error
        assert receiver.requests == []
    finally:
        forget_subscriptions(settings)


def test_a_subscriber_that_loses_access_stops_receiving_the_patients_data(
        app: TestClient, world: World, settings: Settings, receiver: Receiver) -> None:
    """The hemsjukvård (another care provider) sees the vårdcentral's agreement only with the
    patient's samtycke and never past a spärr, at delivery time."""
    target = world.agreements[TARGET]
    nurse = world.staff(world.role_at(HOMECARE, "nurse"))

    def record(unit: str, resource: dict[str, Any]) -> str:
        response = app.post(f"/fhir/{resource['resourceType']}", json=resource,
                            headers=world.staff(world.role_at(unit, "nurse")))
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def revoke(consent_id: str) -> None:
        current = app.get(f"/fhir/Consent/{consent_id}", headers=nurse).json()
        response = app.put(f"/fhir/Consent/{consent_id}", json={**current, "status": "inactive"}, headers=nurse)
        assert response.status_code == 200, response.text

    samtycke = record(HOMECARE, consent(target.patient, "samtycke", "IRCP", HOMECARE))
    pk = subscribe(app, nurse, receiver.url("/kommun"))
    plan = ("CarePlan", target.plan, 1)
    announce(settings, pk, [plan])
    deliver(settings, all_delivered(settings, pk))
    assert [r.path for r in receiver.at("/kommun")] == ["/kommun", f"/kommun/CarePlan/{target.plan}"]

    revoke(samtycke)
    announce(settings, pk, [plan])
    deliver(settings, all_delivered(settings, pk))
    assert len(receiver.at("/kommun")) == 2, "nothing after the samtycke was revoked"
    _, rows = state(settings, pk)
    assert rows[-1].last_error.startswith("skipped") and rows[-1].delivered is not None

    samtycke = record(HOMECARE, consent(target.patient, "samtycke", "IRCP", HOMECARE))
    announce(settings, pk, [plan])
    deliver(settings, all_delivered(settings, pk))
    assert len(receiver.at("/kommun")) == 3, "the samtycke given again"
    sparr = record(VC, consent(target.patient, "yttre-sparr", "CST", VC))
    announce(settings, pk, [plan])
    deliver(settings, all_delivered(settings, pk))
    assert len(receiver.at("/kommun")) == 3, "nothing past the spärr"
    # the event numbers a skipped event took are not reused: the receiver sees a gap, not a repeat
    assert numbers(receiver.at("/kommun")) == [None, 1, 3]
    assert sparr and samtycke


def test_a_removed_client_receives_nothing_more(
        app: TestClient, world: World, settings: Settings, receiver: Receiver) -> None:
    """``patientkontrakt clients remove``: the client's tokens stop working, and so do its
    Subscriptions (they outlive any token): status error, nothing more sent."""
    hsa = world._run(lambda directory: directory.care_unit_by_id(VC))[0]
    # a client of its own: removing it revokes every token of that client id for the token lifetime
    _db(settings, lambda store: Clients(store).add(
        "ehr-to-remove", name="Test EHR", kind="backend", redirect_uris=[], scope="system/*.rs",
        jwks_uri="https://ehr.example.se/jwks.json", care_unit=hsa))
    pk = subscribe(app, world.system(VC, client_id="ehr-to-remove"), receiver.url("/removed"))
    target = world.agreements[TARGET]
    announce(settings, pk, [("CarePlan", target.plan, 1)])
    deliver(settings, all_delivered(settings, pk))
    assert [r.path for r in receiver.at("/removed")] == ["/removed", f"/removed/CarePlan/{target.plan}"]

    assert _db(settings, lambda store: Clients(store).remove("ehr-to-remove")) is True
    announce(settings, pk, [("CarePlan", target.plan, 1)])
    row, rows = state(settings, pk)
    assert row.status == "error" and "removed" in row.error
    deliver(settings, lambda: True)
    time.sleep(0.3)  # a worker that would (wrongly) deliver has had several polls
    assert len(receiver.at("/removed")) == 2
    assert rows[-1].delivered is None


def test_two_workers_deliver_each_notification_once(
        app: TestClient, world: World, settings: Settings, receiver: Receiver, tmp_path: Path) -> None:
    who = vc_system(world)
    receiver.delay = 0.05
    with worker_process(settings, tmp_path, "worker-1"), worker_process(settings, tmp_path, "worker-2"):
        deadline = time.monotonic() + 60
        while not all("started" in (tmp_path / f"worker-{n}.log").read_text() for n in (1, 2)):
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        # both workers are looking for work when it comes
        pks = {name: subscribe(app, who, receiver.url(f"/two/{name}/"), content="empty")
               for name in ("a", "b", "c", "d")}
        for pk in pks.values():
            announce(settings, pk, plan_events(world, 15))
        receiver.wait_for("/two/", 4 * 16, timeout=60)
        time.sleep(1.5)  # any repeat would come now, and each status line
    for name in pks:
        got = receiver.at(f"/two/{name}/")
        assert numbers(got) == [None, *range(1, 16)], name  # each once, in order
    logs = [(tmp_path / f"worker-{n}.log").read_text() for n in (1, 2)]
    shares = [log.count("delivered, status 200") for log in logs]
    assert sum(shares) == 4 * 16 and all(shares), f"both workers delivered: {shares}"
    assert all('subscriptions {"subscriptions":' in log for log in logs), "each logs its status line"


def test_a_worker_killed_mid_delivery_loses_nothing(
        app: TestClient, world: World, settings: Settings, receiver: Receiver, tmp_path: Path) -> None:
    settings = delivery_settings(world.settings.database_url, worker_lease=2.0)
    pk = subscribe(app, vc_system(world), receiver.url("/kill"), content="empty", headers=(SECRET,))
    announce(settings, pk, plan_events(world, 12))
    receiver.delay = 0.15
    with worker_process(settings, tmp_path, "killed") as first:
        receiver.wait_for("/kill", 5)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    receiver.delay = 0
    sent = len(receiver.at("/kill"))
    assert sent < 13, "killed before it was done"
    with worker_process(settings, tmp_path, "successor"):
        receiver.wait_for("/kill", 13, timeout=60)
        deadline = time.monotonic() + 30
        while not all_delivered(settings, pk)() and time.monotonic() < deadline:
            time.sleep(0.1)
    got = numbers(receiver.at("/kill"))
    first_seen = list(dict.fromkeys(got))
    assert first_seen == [None, *range(1, 13)], "nothing lost, in order"
    repeats = len(got) - len(first_seen)
    assert repeats <= 1, f"at most the notification in flight is sent again: {got}"
    if repeats:
        # a repeat is the same event (same number) sent right again: the receiver can drop it
        assert any(a == b for a, b in zip(got, got[1:], strict=False))
    assert all_delivered(settings, pk)()
    assert all(r.headers["authorization"] == "Bearer the-endpoints-own-secret" for r in receiver.at("/kill"))
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("killed", "successor")}
    assert "event 1: delivered, status 200" in logs["killed"]
    assert "event 12: delivered, status 200" in logs["successor"]
    assert not any("the-endpoints-own-secret" in log for log in logs.values()), "header values are never logged"


def test_subscriptions_status_command(
        app: TestClient, world: World, settings: Settings, receiver: Receiver) -> None:
    pk = subscribe(app, vc_system(world), receiver.url("/status"), content="empty")
    announce(settings, pk, plan_events(world, 2))
    deliver(settings, all_delivered(settings, pk))
    announce(settings, pk, plan_events(world, 1))
    env = {**os.environ, "PK_DATABASE_URL": settings.database_url}
    command = [str(Path(sys.executable).parent / "patientkontrakt"), "subscriptions", "status"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split()[:3] == ["id", "owner", "unit"]
    id_ = state(settings, pk)[0].res_id
    cells = next(line.split() for line in lines if line.startswith(id_))
    assert cells[2:4] == ["active", "127.0.0.1"]
    assert cells[1].startswith("SE"), "the owner's care unit (HSA-id)"
    assert cells[4:8] == ["1", "3", "0", "0"]  # pending, delivered (the handshake too), skipped, failures
    as_json = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert '"pending":1' in as_json.stdout and '"active":1' in as_json.stdout
