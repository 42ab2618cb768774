"""Several server processes, one database (design §9; docs/architecture.md, "State and processes").

Two production servers as an operator starts them (gunicorn with ``deploy/gunicorn.conf.py``, one
worker each, on two ports) and a ``patientkontrakt worker``, over one PostgreSQL database (in a
cluster of the test's own) holding the demo region. Both servers have the same settings, the base
URL of the load balancer in front of them included (``PK_BASE_URL``: nothing listens there; the
test sends each request to the process it chooses). What one process does, the other sees:

* a write on one is read on the other, at the same version;
* ``If-Match`` with a version the other process has replaced is 412, and two processes racing
  with the same ``If-Match`` never both win;
* the paging links of one process's searchset are followed on the other;
* a Subscription created on one delivers a change written on the other;
* afterwards ``patientkontrakt audit verify`` passes over a log both processes appended to.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from patientkontrakt.config import PROJECT_ROOT, Settings
from patientkontrakt.domain import codes
from patientkontrakt.domain.demo import DemoGenerator, load_demo
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.storage.database import create_engine, migrate
from patientkontrakt.storage.repository import Store
from tests.conftest import SERVER_LOGS, audit_key_file, make_settings
from tests.faults import admin
from tests.pgcluster import Cluster
from tests.processes import free_port, loopback_site, stop
from tests.security.audit_tools import cli
from tests.security.conftest import World, _agreements

pytestmark = pytest.mark.slow  # live servers

AUTHOR = "demo-org-vc-bjorkbacken"
TARGET = 2  # an active agreement of Björkbacken
AGREEMENTS = 8  # the demo region with its first agreements: three of them Björkbacken's
STARTUP_SECONDS = 60
FHIR_JSON = {"content-type": "application/fhir+json"}


@dataclass
class Process:
    name: str
    origin: str  # where this process listens
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")


@dataclass
class Deployment:
    world: World
    a: Process
    b: Process
    worker: subprocess.Popen[bytes]
    folder: Path

    @property
    def base_url(self) -> str:
        return self.world.settings.base_url

    def http(self, process: Process) -> httpx.Client:
        """A client of ``process`` alone, with a token of Björkbacken's EHR naming the process
        as its client (so that the access log tells the two apart)."""
        headers = {**self.world.system(AUTHOR, client_id=f"ehr-via-{process.name}"), **FHIR_JSON}
        return httpx.Client(base_url=process.origin, headers=headers, timeout=30)


def _environment(url: str, base_url: str, signing_key: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    return {**env, "PK_DATABASE_URL": url, "PK_BASE_URL": base_url, "PK_SIGNING_KEY": str(signing_key),
            "PK_AUDIT_KEY": str(audit_key_file()), "PK_LOG_LEVEL": "info",
            "PK_SUBSCRIPTION_ALLOWED_HOSTS": "127.0.0.1", "PK_AUDIT_SEAL_INTERVAL": "1", **settings}


def _start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    SERVER_LOGS.append(log_path)
    with log_path.open("wb") as log:
        return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_until_ready(server: Process) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server {server.name} exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.origin}/fhir/metadata", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server {server.name} did not answer within {STARTUP_SECONDS} s:\n{server.log()}")


def gunicorn(name: str, env: dict[str, str], folder: Path) -> Process:
    """``gunicorn -c deploy/gunicorn.conf.py`` with one worker on a free loopback port."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "api.app:create_app()"]
    process = _start(command, {**env, "PK_BIND": f"127.0.0.1:{port}", "PK_WORKERS": "1"}, folder / f"{name}.log")
    return Process(name, f"http://127.0.0.1:{port}", process, folder / f"{name}.log")


@contextmanager
def private_cluster(root: Path) -> Iterator[Cluster]:
    """A PostgreSQL cluster of its own (tests/pgcluster.py: no other test's load, and gone with its
    directory rather than by a DROP DATABASE's checkpoint) holding the migrated database ``pk``."""
    cluster = Cluster.create(root)
    try:
        cluster.sql("CREATE DATABASE pk")
        migrate(cluster.url("pk"))
        yield cluster
    finally:
        cluster.destroy()


def load_region(settings: Settings, agreements: int) -> World:
    """The demo region with its first ``agreements`` agreements, through the full write path."""
    async def load() -> None:
        store = Store(create_engine(settings.database_url, pool_size=2))
        try:
            await load_demo(BundleProcessor(build_service(settings, store)), agreements)
        finally:
            await store.dispose()

    asyncio.run(load())
    return World(settings, DemoGenerator(seed=1), _agreements(DemoGenerator(seed=1))[:agreements])


@pytest.fixture(scope="module")
def deployment(signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("processes")
    base_url = f"http://127.0.0.1:{free_port()}"  # the load balancer's address (nothing listens there)
    with private_cluster(folder / "pg") as cluster:
        url = cluster.url("pk")
        env = _environment(url, base_url, signing_key)
        a = gunicorn("a", env, folder)
        b = gunicorn("b", env, folder)
        worker = _start([sys.executable, "-m", "patientkontrakt.cli", "worker"], env, folder / "worker.log")
        try:
            world = load_region(make_settings(url, base_url=base_url), AGREEMENTS)  # while they start
            _wait_until_ready(a)
            _wait_until_ready(b)
            yield Deployment(world, a, b, worker, folder)
        finally:
            for process in (worker, a.process, b.process):
                stop(process)


@pytest.fixture
def site(deployment: Deployment) -> Iterator[Deployment]:
    yield deployment
    for server in (deployment.a, deployment.b):
        assert server.process.poll() is None, f"server {server.name} died:\n{server.log()}"
    assert deployment.worker.poll() is None, (deployment.folder / "worker.log").read_text()


def new_goal(world: World, text: str) -> dict[str, Any]:
    """A Goal on the test agreement's patient, by its first staff role (tests/api/test_crashes.py too)."""
    target = world.agreements[TARGET]
    return {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": text},
            "subject": {"reference": f"Patient/{target.patient}"},
            "expressedBy": {"reference": f"PractitionerRole/{target.staff_roles[0]}"},
            "meta": {"tag": [dict(codes.TEST_DATA_TAG)]}}


def _plain(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


# -- the tests --------------------------------------------------------------------------------------


def test_a_write_on_one_process_is_read_on_the_other(site: Deployment) -> None:
    with site.http(site.a) as a, site.http(site.b) as b:
        created = a.post("/fhir/Goal", json=new_goal(site.world, "Skrivet på A"))
        assert created.status_code == 201, created.text
        goal = created.json()
        assert created.headers["location"].startswith(f"{site.base_url}/fhir/Goal/{goal['id']}/_history/1")

        read = b.get(f"/fhir/Goal/{goal['id']}")
        assert read.status_code == 200, read.text
        assert read.headers["etag"] == 'W/"1"' and read.json() == goal

        changed = b.put(f"/fhir/Goal/{goal['id']}", json={**_plain(goal), "description": {"text": "Ändrat på B"}})
        assert changed.status_code == 200, changed.text
        again = a.get(f"/fhir/Goal/{goal['id']}")
        assert again.json()["meta"]["versionId"] == "2" and again.json()["description"]["text"] == "Ändrat på B"


def test_if_match_conflicts_are_found_across_processes(site: Deployment) -> None:
    with site.http(site.a) as a, site.http(site.b) as b:
        goal = a.post("/fhir/Goal", json=new_goal(site.world, "Villkorat")).json()
        body = _plain(goal)
        first = a.put(f"/fhir/Goal/{goal['id']}", json={**body, "description": {"text": "A först"}},
                      headers={"if-match": 'W/"1"'})
        assert first.status_code == 200 and first.headers["etag"] == 'W/"2"', first.text
        stale = b.put(f"/fhir/Goal/{goal['id']}", json={**body, "description": {"text": "B för sent"}},
                      headers={"if-match": 'W/"1"'})
        assert stale.status_code == 412, stale.text
        assert stale.json()["resourceType"] == "OperationOutcome"
        assert b.get(f"/fhir/Goal/{goal['id']}").json()["description"]["text"] == "A först"

        # the two processes race with the same If-Match, over and over: exactly one wins each time
        with ThreadPoolExecutor(2) as pool:
            for version in range(2, 8):
                racing = [pool.submit(client.put, f"/fhir/Goal/{goal['id']}",
                                      json={**body, "description": {"text": f"{name} {version}"}},
                                      headers={"if-match": f'W/"{version}"'})
                          for name, client in (("A", a), ("B", b))]
                statuses = sorted(f.result().status_code for f in racing)
                assert statuses == [200, 412], [f.result().text for f in racing]
        final = a.get(f"/fhir/Goal/{goal['id']}").json()
        assert final["meta"]["versionId"] == "8"
        history = b.get(f"/fhir/Goal/{goal['id']}/_history", params={"_count": "50"}).json()
        assert sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"]) == list(range(1, 9))


def _next(bundle: dict[str, Any]) -> str | None:
    return next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)


def test_paging_links_of_one_process_are_followed_on_the_other(site: Deployment) -> None:
    with site.http(site.a) as a, site.http(site.b) as b:
        whole = a.get("/fhir/CarePlan", params={"_count": "100", "_sort": "_id"})
        assert whole.status_code == 200, whole.text
        expected = [e["resource"]["id"] for e in whole.json()["entry"]]
        assert len(expected) >= 3, "Björkbacken should take part in several agreements"

        page = a.get("/fhir/CarePlan", params={"_count": "1", "_sort": "_id"}).json()
        seen = [e["resource"]["id"] for e in page["entry"]]
        clients, turn = (b, a), 0
        while (link := _next(page)) is not None:
            assert link.startswith(f"{site.base_url}/fhir/CarePlan?"), link  # the load balancer's address
            parts = urlsplit(link)
            answer = clients[turn % 2].get(f"{parts.path}?{parts.query}")  # B, A, B, …
            assert answer.status_code == 200, answer.text
            page, turn = answer.json(), turn + 1
            seen += [e["resource"]["id"] for e in page.get("entry", [])]
        assert turn >= 2
        assert seen == expected


@dataclass
class Receiver:
    """An EHR's endpoint on loopback: every request, answered 200."""

    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Endpoint(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    receiver.received.append((self.command, self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Endpoint

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, _, body in self.received if body.strip()]


def eventually(what: str, check: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while not (answer := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds} s")
        time.sleep(0.1)
    return answer


def test_a_subscription_created_on_one_process_delivers_a_change_written_on_the_other(site: Deployment) -> None:
    target = site.world.agreements[TARGET]
    receiver = Receiver()
    with site.http(site.a) as a, site.http(site.b) as b, loopback_site(receiver.handler()) as origin:
        created = a.post("/fhir/Subscription", json={
            "resourceType": "Subscription", "status": "requested", "reason": "Journalsystemet följer målen",
            "criteria": f"Goal?patient={target.patient}",
            "channel": {"type": "rest-hook", "endpoint": f"{origin}/ehr", "payload": "application/fhir+json"}})
        assert created.status_code == 201, created.text
        subscription = created.json()["id"]
        eventually("the Subscription active, as the other process reads it",
                   lambda: b.get(f"/fhir/Subscription/{subscription}").json()["status"] == "active")

        goal = b.post("/fhir/Goal", json=new_goal(site.world, "Skrivet på B, bevakat från A")).json()
        delivered = eventually("the change written on B delivered", lambda: [
            r for r in receiver.bodies() if r.get("resourceType") == "Goal" and r.get("id") == goal["id"]])
        assert delivered[0]["meta"]["versionId"] == "1"
        assert a.delete(f"/fhir/Subscription/{subscription}").status_code in (200, 204)


def test_the_access_log_both_processes_wrote_verifies(site: Deployment) -> None:
    target = site.world.agreements[TARGET]
    url = site.world.settings.database_url
    with site.http(site.a) as a, site.http(site.b) as b:
        for client in (a, b):
            assert client.get(f"/fhir/CarePlan/{target.plan}").status_code == 200
            assert client.get("/fhir/Goal", params={"patient": target.patient}).status_code == 200
    rows = admin(url, "SELECT client_id, count(*) AS n FROM audit_log WHERE client_id LIKE 'ehr-via-%' "
                      "GROUP BY client_id")
    counts = {r["client_id"]: r["n"] for r in rows}
    assert counts.get("ehr-via-a", 0) >= 2 and counts.get("ehr-via-b", 0) >= 2, counts
    # each process seals every second; whichever did, the tree and its checkpoints are one
    eventually("every entry sealed", lambda: not admin(url, "SELECT 1 FROM audit_queue LIMIT 1"))
    verified = cli(site.world.settings, "audit", "verify", cwd=site.folder)
    assert verified.returncode == 0, verified.stdout + verified.stderr
