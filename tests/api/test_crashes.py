"""PostgreSQL restarted and crashed under a write load, and a server process killed in the middle of a
transaction: what clients were told, what the database holds (docs/operations.md, "When the
database is unavailable").

tests/api/test_outage.py plays outages through a proxy and ``pg_terminate_backend`` on the shared
server; here the server itself goes away, for real, in a private cluster (tests/pgcluster.py) that
holds the demo region, served by two ``patientkontrakt serve`` processes:

* While writers keep creating and updating Goals, PostgreSQL is stopped (``fast``) and started,
  then crashed (``immediate``) and started. Every answer is a 2xx or a 503 OperationOutcome with
  ``Retry-After``; the same server process writes again once PostgreSQL is back; every write a
  client got a 2xx for (the client's ledger) is in the database at its version with its text, and
  no resource lacks a version row, an index row or its access-log entry.
* ``kill -9`` of a server process while its transaction Bundle is in the database: none of the
  Bundle's entries is stored, nothing is left locked, and the other process serves the same Bundle.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api.test_processes import (
    FHIR_JSON,
    Process,
    _environment,
    _start,
    _wait_until_ready,
    load_region,
    new_goal,
    private_cluster,
)
from tests.conftest import _dsn, make_settings
from tests.faults import admin, backends, wait_for
from tests.pgcluster import Cluster
from tests.processes import free_port, stop
from tests.security import audit_tools
from tests.security.conftest import World

pytestmark = pytest.mark.slow  # live servers

AUTHOR = "demo-org-vc-bjorkbacken"
TARGET = 2
RETRY_AFTER = "3"
WRITERS = 4
BUNDLE_ENTRIES = 30
AGREEMENTS = 3  # the demo region with its first agreements (TARGET among them): enough here


@dataclass
class Site:
    cluster: Cluster
    url: str
    world: World
    servers: list[Process]

    def http(self, server: Process) -> httpx.Client:
        return httpx.Client(base_url=server.origin, headers={**self.world.system(AUTHOR), **FHIR_JSON}, timeout=60)


def serve(name: str, env: dict[str, str], folder: Path) -> Process:
    """``patientkontrakt serve`` (one process: its pid is the server's) on a free loopback port."""
    port = free_port()
    command = [sys.executable, "-m", "patientkontrakt.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = folder / f"{name}.log"
    return Process(name, f"http://127.0.0.1:{port}", _start(command, env, log), log)


@pytest.fixture(scope="module")
def site(signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("crashes")
    servers: list[Process] = []
    with private_cluster(folder / "pg") as cluster:
        url = cluster.url("pk")
        settings = make_settings(url, base_url=f"http://127.0.0.1:{free_port()}")
        # no background sealer: every transaction in the database is a request's
        env = _environment(url, settings.base_url, signing_key, PK_RETRY_AFTER=RETRY_AFTER,
                           PK_AUDIT_SEAL_INTERVAL="0", PK_DB_CONNECT_TIMEOUT="2")
        servers = [serve("one", env, folder), serve("two", env, folder)]
        try:
            world = load_region(settings, AGREEMENTS)  # while they start
            for server in servers:
                _wait_until_ready(server)
            yield Site(cluster, url, world, servers)
        finally:
            for server in servers:
                stop(server.process)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text[:500]
    assert response.headers.get("retry-after") == RETRY_AFTER, response.headers
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "transient", outcome


# -- the database restarted and crashed under a write load --------------------------------------------


@dataclass
class Ledger:
    """What the clients were told: every acknowledged write (id, version, text), and the rest."""

    acknowledged: list[tuple[str, int, str]] = field(default_factory=list)
    refused: int = 0
    answered: int = 0  # reads and searches
    wrong: list[str] = field(default_factory=list)  # anything but a 2xx or a clean 503
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def refusals(self) -> int:
        with self.lock:
            return self.refused

    def wait_acknowledged(self, more: int, what: str) -> None:
        """Until ``more`` writes more than now are acknowledged."""
        target = self.count() + more
        wait_for(lambda: self.count() >= target, what)

    def wait_refused(self, what: str, fault: Callable[[str], None], mode: str) -> None:
        """``fault(mode)``, then until a write more than before is refused."""
        before = self.refusals()
        fault(mode)
        wait_for(lambda: self.refusals() > before, what)


def _writer(site: Site, server: Process, number: int, ledger: Ledger, done: threading.Event) -> None:
    """In turn: create a Goal, update it, read it, update it in a transaction Bundle that also
    creates one, search; every answer into the ledger."""
    goal: dict[str, Any] = {}
    with site.http(server) as http:
        for n in range(100_000):
            if done.is_set():
                return
            text = f"Skrivare {number}, skrivning {n}"
            step = n % 5 if goal else 0
            try:
                response = _send(site, http, step, goal, text)
            except httpx.TransportError as exc:
                with ledger.lock:
                    ledger.wrong.append(f"{type(exc).__name__}: {exc}")
                return
            with ledger.lock:
                if response.status_code in (200, 201):
                    if step == 3:
                        updated, created = (e["response"] for e in response.json()["entry"])
                        ledger.acknowledged.append((goal["id"], int(updated["etag"].strip('W/"')), text))
                        _, id_, _, version = created["location"].rsplit("/", 3)
                        ledger.acknowledged.append((id_, int(version), f"{text}, ny"))
                    elif step in (0, 1):
                        goal = response.json()
                        ledger.acknowledged.append((goal["id"], int(goal["meta"]["versionId"]), text))
                    else:
                        ledger.answered += 1
                elif response.status_code == 503:
                    ledger.refused += 1
                    try:
                        assert_unavailable(response)
                    except AssertionError as exc:
                        ledger.wrong.append(str(exc))
                else:
                    ledger.wrong.append(f"{response.status_code}: {response.text[:300]}")


def _send(site: Site, http: httpx.Client, step: int, goal: dict[str, Any], text: str) -> httpx.Response:
    if step == 0:
        return http.post("/fhir/Goal", json=new_goal(site.world, text))
    changed = {**_plain(goal), "description": {"text": text}}
    if step == 1:
        return http.put(f"/fhir/Goal/{goal['id']}", json=changed)
    if step == 2:
        return http.get(f"/fhir/Goal/{goal['id']}")
    if step == 3:
        return http.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": changed, "request": {"method": "PUT", "url": f"Goal/{goal['id']}"}},
            {"resource": new_goal(site.world, f"{text}, ny"), "request": {"method": "POST", "url": "Goal"}}]})
    return http.get("/fhir/Goal", params={"patient": site.world.agreements[TARGET].patient, "_count": "5"})


def _plain(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def test_writes_across_a_restart_and_a_crash_of_postgresql(site: Site) -> None:
    server = site.servers[0]
    pid = server.process.pid
    ledger, done = Ledger(), threading.Event()
    with ThreadPoolExecutor(WRITERS) as pool:
        writers = [pool.submit(_writer, site, server, n, ledger, done) for n in range(WRITERS)]
        try:
            for mode in ("fast", "immediate"):
                ledger.wait_acknowledged(12, "writes to be acknowledged")
                ledger.wait_refused("a write to be refused while PostgreSQL is down", site.cluster.stop, mode)
                site.cluster.start()
            ledger.wait_acknowledged(12, "writes acknowledged once PostgreSQL is back")
        finally:
            done.set()
            for writer in writers:
                writer.result(timeout=60)
    assert not ledger.wrong, (ledger.wrong[:5], [line for line in server.log().splitlines() if "ERROR" in line])
    assert ledger.answered > 0
    # the same server process, never restarted
    assert server.process.poll() is None and server.process.pid == pid

    ids = sorted({goal for goal, _, _ in ledger.acknowledged})
    stored = {(r["res_id"], r["version_id"]): r["text"] for r in admin(
        site.url, "SELECT res_id, version_id, body->'description'->>'text' AS text FROM resource_version "
                  "WHERE res_type = 'Goal' AND res_id = ANY($1::text[])", ids)}
    current = {r["res_id"]: r["version_id"] for r in admin(
        site.url, "SELECT res_id, version_id FROM resource WHERE res_type = 'Goal' AND res_id = ANY($1::text[])", ids)}
    lost = [(g, v, t) for g, v, t in ledger.acknowledged if stored.get((g, v)) != t or current.get(g, 0) < v]
    assert not lost, lost[:5]
    assert_consistent(site.url)
    written = Counter(goal for goal, _, _ in ledger.acknowledged)
    logged = Counter(str(r["resource"]) for r in admin(
        site.url, "SELECT jsonb_array_elements_text(resources::jsonb) AS resource FROM audit_log "
                  "WHERE interaction IN ('create', 'update', 'transaction') AND status IN (200, 201)"))
    unlogged = [goal for goal, n in written.items() if logged[f"Goal/{goal}"] < n]
    assert not unlogged, unlogged[:5]


def assert_consistent(url: str) -> None:
    """No resource without all its version rows, none without index rows, and an access log that
    verifies once sealed: nothing half-written."""
    gaps = admin(url, """SELECT r.res_type, r.res_id FROM resource r
                         JOIN resource_version v ON v.res_type = r.res_type AND v.res_id = r.res_id
                         GROUP BY r.res_type, r.res_id, r.version_id
                         HAVING count(*) <> r.version_id OR max(v.version_id) <> r.version_id""")
    assert not gaps, gaps[:5]
    orphans = admin(url, """SELECT v.res_type, v.res_id FROM resource_version v
                            WHERE NOT EXISTS (SELECT 1 FROM resource r
                                              WHERE r.res_type = v.res_type AND r.res_id = v.res_id)""")
    assert not orphans, orphans[:5]
    unindexed = admin(url, """SELECT r.res_id FROM resource r WHERE r.res_type = 'Goal' AND NOT r.deleted
                              AND (NOT EXISTS (SELECT 1 FROM idx_reference i WHERE i.resource_pk = r.pk)
                                   OR NOT EXISTS (SELECT 1 FROM idx_token t WHERE t.resource_pk = r.pk))""")
    assert not unindexed, unindexed[:5]
    settings = make_settings(url)
    audit_tools.seal(settings)
    report = audit_tools.check(settings)
    assert report.intact, report


# -- a server process killed in the middle of a transaction -------------------------------------------


HOLD = 4242  # the advisory lock the test holds and the trigger waits for


class _HeldAt:
    """The test holds an advisory lock, and a trigger makes the transaction that writes the Goal
    whose text is ``text`` wait for it: after the Bundle's entries before that one were written in
    the same transaction, for as long as the test wants (``release``)."""

    def __init__(self, url: str, text: str) -> None:
        self.url, self.text = url, text
        self._loop = asyncio.new_event_loop()
        self._conn: Any = None

    def __enter__(self) -> _HeldAt:
        admin(self.url, f"""CREATE FUNCTION pk_test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
                            BEGIN IF NEW.body->'description'->>'text' = '{self.text}' THEN
                            PERFORM pg_advisory_xact_lock({HOLD}); END IF; RETURN NULL; END $$""")
        admin(self.url, "CREATE TRIGGER pk_test_hold AFTER INSERT ON resource_version "
                        "FOR EACH ROW EXECUTE FUNCTION pk_test_hold()")
        self._conn = self._loop.run_until_complete(asyncpg.connect(_dsn(self.url)))
        self._loop.run_until_complete(self._conn.execute(f"SELECT pg_advisory_lock({HOLD})"))
        return self

    def release(self) -> None:
        if self._conn is not None:
            self._loop.run_until_complete(self._conn.close())
            self._conn = None

    def __exit__(self, *_: object) -> None:
        self.release()
        self._loop.close()
        admin(self.url, "DROP TRIGGER IF EXISTS pk_test_hold ON resource_version")
        admin(self.url, "DROP FUNCTION IF EXISTS pk_test_hold()")


def test_a_server_killed_in_the_middle_of_a_transaction_leaves_nothing_of_it(site: Site) -> None:
    survivor, victim = site.servers
    mark = f"Transaktion {uuid.uuid4().hex[:8]}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": new_goal(site.world, f"{mark} {n}"),
         "request": {"method": "POST", "url": "Goal"}} for n in range(BUNDLE_ENTRIES)]}
    answers: list[httpx.Response | Exception] = []

    def send() -> None:
        try:
            with site.http(victim) as http:
                answers.append(http.post("/fhir", json=bundle))
        except httpx.TransportError as exc:
            answers.append(exc)

    with _HeldAt(site.url, f"{mark} {BUNDLE_ENTRIES // 2}") as held:
        sender = threading.Thread(target=send)
        sender.start()
        [pid] = wait_for(lambda: backends(site.url, "wait_event = 'advisory'"), "the transaction to be half-way")
        in_transaction = admin(site.url, "SELECT backend_xid IS NOT NULL AS writing FROM pg_stat_activity "
                                         "WHERE pid = $1", pid)
        assert in_transaction == [{"writing": True}]
        os.kill(victim.process.pid, signal.SIGKILL)
        assert victim.process.wait(timeout=30) == -signal.SIGKILL
        sender.join(timeout=60)
        assert len(answers) == 1 and isinstance(answers[0], httpx.TransportError), answers
        # the backend goes on once the lock is free, finds its client gone, and rolls back
        held.release()
        wait_for(lambda: pid not in backends(site.url), "the killed server's transaction to end")

    stored = admin(site.url, "SELECT count(*) AS n FROM resource_version WHERE res_type = 'Goal' "
                             "AND body->'description'->>'text' LIKE $1", f"{mark} %")
    assert stored == [{"n": 0}]
    assert_consistent(site.url)
    with site.http(survivor) as http:
        answer = http.post("/fhir", json=bundle)
    assert answer.status_code == 200, answer.text[:500]
    assert [e["response"]["status"][:3] for e in answer.json()["entry"]] == ["201"] * BUNDLE_ENTRIES
