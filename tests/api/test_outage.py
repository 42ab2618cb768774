"""The database is unavailable: 503 with ``Retry-After``, and recovery without a restart
(docs/operations.md#when-the-database-is-unavailable).

The service as deployed, with the demo region, reaches PostgreSQL through a proxy the test
controls (tests/faults.py): the proxy drops every connection and refuses new ones (the database
is down), or accepts again (it is back). A restart is played by ``pg_terminate_backend`` of the
service's connections. The shared PostgreSQL server itself is never stopped.

* While the database is down, everything that needs it answers 503 with ``Retry-After`` (the
  FHIR API with an OperationOutcome, the pages with a page, the token endpoint with an OAuth
  error), ``/readyz`` says 503 naming the database, and ``/healthz`` (liveness) still 200.
* After it is back, or after a restart ended every connection, the very next requests succeed,
  on the same process.
* No acknowledged write is lost, and a write answered 503 left nothing behind (or, if the
  connection broke while it committed, says that it may have been stored).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.domain import codes
from patientkontrakt.domain.setup import build_service
from patientkontrakt.security.demo_clients import register_demo_clients
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import _dsn, make_settings
from tests.faults import PostgresProxy, admin, backends, terminate, wait_for
from tests.security import conftest as security
from tests.security.conftest import World

world = security.world  # the fixture: the demo region (16 agreements) loaded into the clean database

AUTHOR = "demo-org-vc-bjorkbacken"
TARGET = 2  # an active agreement of Björkbacken
RETRY_AFTER = "7"
BASE = "http://127.0.0.1"
_SEALED = re.compile(r'name="request" value="([^"]+)"')


@dataclass
class Site:
    world: World
    http: TestClient
    proxy: PostgresProxy
    database_url: str  # direct, for the test's own SQL
    system: dict[str, str]  # headers of Björkbacken's EHR system

    @property
    def target(self) -> Any:
        return self.world.agreements[TARGET]

    def goal(self) -> dict[str, Any]:
        response = self.http.get(f"/fhir/Goal/{self.target.goals[1]}", headers=self.system)
        assert response.status_code == 200, response.text
        return {k: v for k, v in response.json().items() if k != "meta"}


@pytest.fixture
def site(world: World) -> Iterator[Site]:
    """The service on a loopback base URL (the pages' OAuth clients may use http only there)."""
    url = world.settings.database_url
    world = replace(world, settings=make_settings(url, base_url=BASE))
    asyncio.run(_register_page_clients(world))
    proxy = PostgresProxy(url)
    settings = make_settings(proxy.url(), base_url=BASE, test_idp=True, retry_after=int(RETRY_AFTER),
                             ready_worker=False)
    try:
        with TestClient(create_app(settings), base_url=BASE) as http:
            http.headers.update({"content-type": "application/fhir+json"})
            yield Site(world, http, proxy, url, world.system(AUTHOR))
    finally:
        proxy.close()


async def _register_page_clients(world: World) -> None:
    store = Store(create_engine(world.settings.database_url, pool_size=1))
    try:
        await register_demo_clients(build_service(world.settings, store), world.settings)
    finally:
        await store.dispose()


def sign_in_to_the_staff_pages(site: Site) -> None:
    """A nurse of Björkbacken signs in through the test IdP; the session cookie stays in ``http``."""
    http = site.http
    login = http.get("/personal/logga-in", follow_redirects=False)
    idp = http.get(login.headers["location"], follow_redirects=False)
    assert idp.status_code == 200, idp.text
    sealed = _SEALED.search(idp.text)
    assert sealed, idp.text
    chosen = http.post("/oauth/test-idp", data={"request": sealed.group(1),
                                                "as": f"role:{site.world.role_at(AUTHOR, 'nurse')}"},
                       headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    back = http.get(chosen.headers["location"], follow_redirects=False)
    assert back.status_code == 303 and "pk_session_personal" in http.cookies, back.text


# -- what needs the database ------------------------------------------------------------------


def _new_goal(site: Site, text: str) -> dict[str, Any]:
    target = site.target
    return {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": text},
            "subject": {"reference": f"Patient/{target.patient}"},
            "expressedBy": {"reference": f"PractitionerRole/{target.staff_roles[0]}"},
            "meta": {"tag": [dict(codes.TEST_DATA_TAG)]}}


def requests(site: Site, mark: str) -> dict[str, Callable[[], httpx.Response]]:
    """One of each kind of request that needs the database; ``mark`` makes each write new."""
    http, system, target = site.http, site.system, site.target
    goal = site.goal()
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**goal, "description": {"text": f"Transaktion {mark}"}},
         "request": {"method": "PUT", "url": f"Goal/{goal['id']}"}},
        {"resource": _new_goal(site, f"Nytt mål i transaktion {mark}"), "request": {"method": "POST", "url": "Goal"}},
    ]}
    return {
        "read": lambda: http.get(f"/fhir/Patient/{target.patient}", headers=system),
        "search": lambda: http.get("/fhir/CarePlan", params={"patient": target.patient}, headers=system),
        "agreement": lambda: http.get(f"/fhir/Patient/{target.patient}/$patientkontrakt", headers=system),
        "update": lambda: http.put(f"/fhir/Goal/{goal['id']}", json={**goal, "description": {"text": f"Ändrat {mark}"}},
                                   headers=system),
        "create": lambda: http.post("/fhir/Goal", json=_new_goal(site, f"Nytt mål {mark}"), headers=system),
        "transaction": lambda: http.post("/fhir", json=transaction, headers=system),
        "audit": lambda: http.get("/fhir/AuditEvent", params={"_count": "5"}, headers=system),
        "page": lambda: http.get("/personal", follow_redirects=False),
        "sign-in": lambda: http.get("/oauth/authorize", params={
            "response_type": "code", "client_id": "pk-personal", "redirect_uri": f"{BASE}/personal/callback",
            "scope": "openid", "state": "s", "code_challenge": "x" * 43, "code_challenge_method": "S256",
            "aud": f"{BASE}/fhir"}, follow_redirects=False),
        "token": lambda: http.post("/oauth/token", data={
            "grant_type": "authorization_code", "client_id": "pk-personal", "code": "no-such-code",
            "redirect_uri": f"{BASE}/personal/callback", "code_verifier": "v" * 43},
            headers={"content-type": "application/x-www-form-urlencoded"}),
    }


SUCCESS = {"read": 200, "search": 200, "agreement": 200, "update": 200, "create": 201, "transaction": 200,
           "audit": 200, "page": 200, "sign-in": 200, "token": 400}


def assert_unavailable(name: str, response: httpx.Response) -> None:
    assert response.status_code == 503, (name, response.status_code, response.text[:500])
    assert response.headers["retry-after"] == RETRY_AFTER, name
    kind = response.headers["content-type"]
    if name in ("page", "sign-in"):
        assert kind.startswith("text/html"), name
        assert "Försök igen" in response.text and "Traceback" not in response.text, response.text
    elif name == "token":
        assert response.json()["error"] == "temporarily_unavailable"
    else:
        assert kind.startswith("application/fhir+json"), name
        issue = response.json()["issue"][0]
        assert response.json()["resourceType"] == "OperationOutcome"
        assert issue["code"] == "transient"
        assert "försök" in issue["details"]["text"].lower()  # try again
        assert issue["diagnostics"]


def assert_all_succeed(site: Site, mark: str) -> None:
    for name, request in requests(site, mark).items():
        response = request()
        assert response.status_code == SUCCESS[name], (name, response.status_code, response.text[:500])
    ready = site.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "migrations": "ok", "worker": "not required"}}


# -- down, and back ---------------------------------------------------------------------------


def test_while_the_database_is_down_everything_answers_503_and_then_works_again_without_a_restart(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    sign_in_to_the_staff_pages(site)
    assert_all_succeed(site, "före")
    before = site.goal()
    goals_before = site.http.get("/fhir/Goal", params={"patient": site.target.patient}, headers=site.system).json()

    calls = requests(site, "under avbrottet")
    site.proxy.down()
    caplog.set_level(logging.DEBUG)
    for name, request in calls.items():
        assert_unavailable(name, request())
    ready = site.http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] in ("unavailable", "timeout"), ready.text
    assert site.http.get("/healthz").status_code == 200  # alive: no reason to restart the process
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text

    site.proxy.accept()
    # nothing a 503 answered was written: the goal is as it was, and no new goal exists
    assert site.goal() == before
    goals_after = site.http.get("/fhir/Goal", params={"patient": site.target.patient}, headers=site.system).json()
    assert goals_after["total"] == goals_before["total"]
    assert_all_succeed(site, "efter")


def test_after_a_restart_ended_every_connection_the_next_requests_succeed(site: Site) -> None:
    """``pg_terminate_backend`` of every connection of the service, as a restart does: the pool
    holds only dead connections, and none of them is handed out to a request."""
    sign_in_to_the_staff_pages(site)
    assert_all_succeed(site, "före")
    assert terminate(site.database_url) >= 1
    assert_all_succeed(site, "efter omstarten")
    assert terminate(site.database_url) >= 1
    assert site.http.get(f"/fhir/Patient/{site.target.patient}", headers=site.system).status_code == 200


def test_writes_right_after_a_restart_whose_close_has_not_arrived_succeed(site: Site) -> None:
    """The connections to PostgreSQL are ended, but the close has not reached the service (the
    proxy holds the service's ends open until it sends, as a pooler or a network relaying it late):
    an update, a create and a transaction each find their connection closed at their BEGIN, before
    anything of them was sent, and are answered on a fresh connection."""
    goal = site.goal()

    def severed() -> None:
        assert site.proxy.sever() >= 1
        wait_for(lambda: not backends(site.database_url), "the service's connections to end")

    severed()
    changed = {**goal, "description": {"text": "Efter omstarten"}}
    updated = site.http.put(f"/fhir/Goal/{goal['id']}", json=changed, headers=site.system)
    assert updated.status_code == 200, updated.text
    assert site.goal()["description"]["text"] == "Efter omstarten"
    severed()
    new = {**{k: v for k, v in goal.items() if k != "id"}, "description": {"text": "Ny efter omstarten"}}
    created = site.http.post("/fhir/Goal", json=new, headers=site.system)
    assert created.status_code == 201, created.text
    severed()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**changed, "description": {"text": "I en transaktion"}},
         "request": {"method": "PUT", "url": f"Goal/{goal['id']}"}}]}
    answered = site.http.post("/fhir", json=bundle, headers=site.system)
    assert answered.status_code == 200, answered.text
    assert site.goal()["description"]["text"] == "I en transaktion"


def test_a_read_whose_connection_is_ended_while_it_runs_is_tried_again_on_a_fresh_one(site: Site) -> None:
    """The read by id blocks on a lock; its connection is terminated under it; it is tried again
    once, on a new connection, and answered."""
    url = site.database_url
    site.http.get(f"/fhir/Patient/{site.target.patient}", headers=site.system)
    lock = _LockedTable(url, "resource")
    try:
        reader = _Background(lambda: site.http.get(f"/fhir/Patient/{site.target.patient}", headers=site.system))
        [first] = wait_for(lambda: backends(url, "wait_event_type = 'Lock'"), "the read to wait for the lock")
        admin(url, "SELECT pg_terminate_backend($1)", first)
        wait_for(lambda: [p for p in backends(url, "wait_event_type = 'Lock'") if p != first],
                 "the read to be tried again")
    finally:
        lock.release()
    response = reader.result()
    assert response.status_code == 200, response.text
    assert response.json()["id"] == site.target.patient


# -- writes -----------------------------------------------------------------------------------


def _update_ended_in_its_trigger(site: Site, goal: dict[str, Any], text: str, *, deferred: bool,
                                 waiting_for: str) -> httpx.Response:
    """Update ``goal``'s description to ``text`` while a trigger on resource_version sleeps (at
    COMMIT if ``deferred``), and end the update's database connection there: the answer."""
    url = site.database_url
    with _SleepingTrigger(url, "resource_version", deferred=deferred):
        writer = _Background(lambda: site.http.put(f"/fhir/Goal/{goal['id']}",
                                                   json={**goal, "description": {"text": text}},
                                                   headers=site.system))
        [pid] = wait_for(lambda: backends(url, "wait_event = 'PgSleep'"), waiting_for)
        admin(url, "SELECT pg_terminate_backend($1)", pid)
        return writer.result()


def test_a_write_whose_connection_is_ended_before_it_commits_leaves_nothing(site: Site) -> None:
    goal = site.goal()
    response = _update_ended_in_its_trigger(site, goal, "Aldrig sparat", deferred=False,
                                            waiting_for="the write to sleep in its trigger")
    assert_unavailable("update", response)
    assert "may or may not" not in response.text
    assert site.goal() == goal


def test_a_write_whose_connection_is_ended_while_it_commits_says_it_may_have_been_stored(site: Site) -> None:
    """The connection breaks during COMMIT (a deferred trigger runs then): whether the change was
    stored is not known to the service, and the answer says so."""
    goal = site.goal()
    response = _update_ended_in_its_trigger(site, goal, "Kanske sparat", deferred=True,
                                            waiting_for="the commit to sleep in its trigger")
    assert_unavailable("update", response)
    issue = response.json()["issue"][0]
    assert "may or may not have been stored" in issue["diagnostics"]
    assert "kan ha sparats" in issue["details"]["text"]
    assert site.goal() == goal  # here it was not: the server ended the transaction before it committed


def test_no_acknowledged_write_is_lost_across_outages_and_restarts(site: Site) -> None:
    """Updates of one Goal, each with its own text, while the database goes down, comes back and
    restarts between them and under them. Every update answered 200 is in the Goal's history;
    no update answered 503 is."""
    goal = site.goal()
    url = site.database_url
    acknowledged: list[str] = []
    refused: list[str] = []

    def update(n: int) -> None:
        text = f"Version {n}"
        response = site.http.put(f"/fhir/Goal/{goal['id']}", json={**goal, "description": {"text": text}},
                                 headers=site.system)
        assert response.status_code in (200, 503), response.text
        (acknowledged if response.status_code == 200 else refused).append(text)

    for n in range(36):
        step = n % 12
        if step == 2:
            site.proxy.cut()
        elif step == 4:
            terminate(url)
        elif step == 6:
            site.proxy.down()
        elif step == 8:
            site.proxy.accept()
        elif step == 10:  # ended under the write, before it commits
            with _SleepingTrigger(url, "resource_version", deferred=False):
                writer = _Background(lambda n=n: update(n))
                [pid] = wait_for(lambda: backends(url, "wait_event = 'PgSleep'"), "the write to sleep")
                admin(url, "SELECT pg_terminate_backend($1)", pid)
                writer.result()
            continue
        update(n)
    # down (6, 7) and ended under the write (10): 503; everything else, right after a fault too: 200
    assert refused == [f"Version {n}" for n in range(36) if n % 12 in (6, 7, 10)], refused
    history = site.http.get(f"/fhir/Goal/{goal['id']}/_history", params={"_count": "100"}, headers=site.system)
    assert history.status_code == 200, history.text
    stored = [e["resource"]["description"]["text"] for e in history.json()["entry"]]
    assert set(acknowledged) <= set(stored), set(acknowledged) - set(stored)
    assert not set(refused) & set(stored), set(refused) & set(stored)
    assert site.goal()["description"]["text"] == acknowledged[-1]


# -- helpers ------------------------------------------------------------------------------------


class _Background:
    """Run ``work`` in a thread (a request that will block), and get its result."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._result: list[Any] = []
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(work,))
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._result.append(work())
        except BaseException as exc:  # handed to the test
            self._error.append(exc)

    def result(self) -> Any:
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the request did not finish"
        if self._error:
            raise self._error[0]
        return self._result[0] if self._result else None


class _LockedTable:
    """An ACCESS EXCLUSIVE lock on ``table``, held by the test's own connection until released."""

    def __init__(self, url: str, table: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._conn = self._loop.run_until_complete(_connect(url))
        self._loop.run_until_complete(self._conn.execute(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))

    def release(self) -> None:
        self._loop.run_until_complete(self._conn.execute("COMMIT"))
        self._loop.run_until_complete(self._conn.close())
        self._loop.close()


async def _connect(url: str) -> Any:
    return await asyncpg.connect(_dsn(url))


class _SleepingTrigger:
    """A trigger on ``table`` that sleeps when a row is inserted (or, ``deferred``, when its
    transaction commits), so that the test can end the connection under the write."""

    def __init__(self, url: str, table: str, *, deferred: bool) -> None:
        self.url, self.table, self.deferred = url, table, deferred

    def __enter__(self) -> None:
        admin(self.url, """CREATE FUNCTION pk_test_sleep() RETURNS trigger LANGUAGE plpgsql AS $$
                           BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$""")
        timing = "DEFERRABLE INITIALLY DEFERRED" if self.deferred else ""
        admin(self.url, f"CREATE CONSTRAINT TRIGGER pk_test_sleep AFTER INSERT ON {self.table} {timing} "
                        "FOR EACH ROW EXECUTE FUNCTION pk_test_sleep()")

    def __exit__(self, *_: object) -> None:
        admin(self.url, f"DROP TRIGGER IF EXISTS pk_test_sleep ON {self.table}")
        admin(self.url, "DROP FUNCTION IF EXISTS pk_test_sleep()")
