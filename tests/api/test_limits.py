"""Limits on what one request may ask (docs/security.md, "Limits"), over HTTP against PostgreSQL.

Each limit from both sides: at the limit the request is served, one over it is refused with an
OperationOutcome that names the limit's setting; the sizes the red team sent (issue 11: 10,000
``name=`` parameters, 2,000 chains, 10,000 ``_sort`` keys, 10,000 ``_include=*``, 1,000
``_include:iterate=*``) are refused the same way. The caps on what includes add mark the Bundle
incomplete instead (an OperationOutcome entry with a warning ``incomplete``, as the Microsoft FHIR
server does).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from api.app import create_app
from patientkontrakt.config import PROJECT_ROOT, Settings
from patientkontrakt.security.tokens import Grant
from tests.conftest import BASE_URL, SERVER_LOGS, audit_key_file, engine_token, issue_token, make_settings
from tests.factories import care_plan, care_team, organization, patient, practitioner
from tests.processes import free_port, stop

FORM = {"content-type": "application/x-www-form-urlencoded"}
Pairs = list[tuple[str, str]]


# -- helpers -------------------------------------------------------------------------------


def _client(settings: Settings) -> TestClient:
    client = TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL)
    client.headers.update({"content-type": "application/fhir+json",
                           "authorization": f"Bearer {engine_token(settings)}"})
    return client


@pytest.fixture
def small(clean_pg: str) -> Iterator[TestClient]:
    """The engine with small limits, so that both sides of each are cheap to reach."""
    settings = make_settings(clean_pg, max_bundle_entries=3, max_json_depth=10, max_included_resources=2,
                             max_include_iterations=1)
    with _client(settings) as client:
        yield client


def search(client: TestClient, type_: str, pairs: Pairs) -> Any:
    """POST _search with a form body: what a client sends when the parameters do not fit a URL."""
    return client.post(f"/fhir/{type_}/_search", content=urlencode(pairs), headers=FORM)


def found(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["resourceType"] == "Bundle"
    return bundle


def refused(response: Any, setting: str, status: int = 400, code: str = "too-costly") -> dict[str, Any]:
    """A 4xx OperationOutcome naming the limit's setting, in English, with Swedish details."""
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["severity"] == "error" and issue["code"] == code
    assert setting in issue["diagnostics"], issue
    assert issue["details"]["text"] and "högst" in issue["details"]["text"], issue
    return outcome


def ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e["search"]["mode"] == mode}


def outcome_issues(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [issue for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"
            for issue in e["resource"]["issue"]]


def put(client: TestClient, id_: str, resource: dict[str, Any]) -> None:
    response = client.put(f"/fhir/{resource['resourceType']}/{id_}", json={**resource, "id": id_})
    assert response.status_code in (200, 201), response.text


# -- the red team's requests ---------------------------------------------------------------


RED_TEAM = {
    "10,000 name=": ("Patient", [("name", f"namn{i}") for i in range(10_000)]),
    "2,000 chains": ("CarePlan", [("subject:Patient.name", f"namn{i}") for i in range(2_000)]),
    "10,000 _sort keys": ("Patient", [("_sort", ",".join(["_id", "-_lastUpdated"] * 5_000))]),
    "10,000 _include=*": ("CarePlan", [("_include", "*")] * 10_000),
    "1,000 _include:iterate=*": ("CarePlan", [("_include:iterate", "*")] * 1_000),
}


@pytest.mark.parametrize("name", list(RED_TEAM))
def test_the_red_team_searches_are_refused(client: TestClient, name: str) -> None:
    """Each was served before (issue 11: a 500 or minutes of work on the demo region); now each is
    refused before any work, with a 400 naming a limit."""
    type_, pairs = RED_TEAM[name]
    outcome = refused(search(client, type_, pairs), "PK_MAX_")
    assert "at most" in outcome["issue"][0]["diagnostics"]


# -- the shape of a search, from both sides ------------------------------------------------


def test_search_parameters(client: TestClient) -> None:
    put(client, "p1", patient())
    assert ids(found(search(client, "Patient", [("_id", "p1")] * 100))) == {"Patient/p1"}
    refused(search(client, "Patient", [("_id", "p1")] * 101), "PK_MAX_SEARCH_PARAMETERS")
    # query string and form body count together
    response = client.post("/fhir/Patient/_search?_id=p1", content=urlencode([("_id", "p1")] * 100), headers=FORM)
    refused(response, "PK_MAX_SEARCH_PARAMETERS")


def test_values_of_one_parameter(client: TestClient) -> None:
    put(client, "p1", patient())
    values = ["p1", *(f"x{i}" for i in range(99))]
    assert ids(found(client.get("/fhir/Patient", params={"_id": ",".join(values)}))) == {"Patient/p1"}
    outcome = refused(client.get("/fhir/Patient", params={"_id": ",".join([*values, "x99"])}),
                      "PK_MAX_SEARCH_VALUES")
    assert outcome["issue"][0]["expression"] == ["_id"]
    # an escaped comma is part of a value, not a separator: 101 commas, 100 values
    names = ",".join([r"Tolv\,an", *(f"n{i}" for i in range(99))])
    found(client.get("/fhir/Patient", params={"name": names}))
    refused(client.get("/fhir/Patient", params={"name": names + ",n99"}), "PK_MAX_SEARCH_VALUES")


def test_chained_parameters(client: TestClient) -> None:
    put(client, "p1", patient())
    put(client, "cp1", care_plan("p1"))
    chain = [("subject:Patient.name", "Tolvan")]
    assert ids(found(search(client, "CarePlan", chain * 5))) == {"CarePlan/cp1"}
    refused(search(client, "CarePlan", chain * 6), "PK_MAX_CHAINED_PARAMETERS")


def test_include_parameters(client: TestClient) -> None:
    put(client, "p1", patient())
    put(client, "cp1", care_plan("p1"))
    includes = [("_include", "CarePlan:subject")] * 10 + [("_revinclude", "Provenance:target")] * 9
    bundle = found(search(client, "CarePlan", [("_id", "cp1"), *includes, ("_include:iterate", "*")]))
    assert ids(bundle, "include") == {"Patient/p1"}
    refused(search(client, "CarePlan", [("_id", "cp1"), *includes, ("_include:iterate", "*"),
                                        ("_revinclude", "Provenance:target")]), "PK_MAX_INCLUDE_PARAMETERS")


def test_sort_keys(client: TestClient) -> None:
    put(client, "p1", patient())
    assert ids(found(client.get("/fhir/Patient", params={"_sort": "_id,-_lastUpdated,name,birthdate,gender"}))) \
        == {"Patient/p1"}
    # keys of repeated _sort parameters count together
    found(client.get("/fhir/Patient", params=[("_sort", "_id,name"), ("_sort", "-birthdate,gender,_lastUpdated")]))
    refused(client.get("/fhir/Patient", params=[("_sort", "_id,name,family"), ("_sort", "-birthdate,gender,given")]),
            "PK_MAX_SORT_KEYS")


def test_elements(client: TestClient) -> None:
    put(client, "p1", patient())
    fifty = ",".join(["name", "gender", *(f"x{i}" for i in range(48))])
    bundle = found(client.get("/fhir/Patient", params={"_elements": fifty}))
    assert set(bundle["entry"][0]["resource"]) >= {"name", "gender"}
    assert client.get("/fhir/Patient/p1", params={"_elements": fifty}).status_code == 200
    refused(client.get("/fhir/Patient", params={"_elements": fifty + ",x48"}), "PK_MAX_ELEMENTS")
    refused(client.get("/fhir/Patient/p1", params={"_elements": fifty + ",x48"}), "PK_MAX_ELEMENTS")


def test_count_is_capped_at_the_page_size(client: TestClient) -> None:
    """``_count`` over ``PK_MAX_PAGE_SIZE`` is not an error: the server returns a smaller page
    (R4 search.html#count) and says so in the links."""
    self_link = found(client.get("/fhir/Patient", params={"_count": "1000"}))["link"][0]["url"]
    assert "_count=1000" in self_link
    self_link = found(client.get("/fhir/Patient", params={"_count": "1000000"}))["link"][0]["url"]
    assert "_count=1000" in self_link and "_count=1000000" not in self_link


def test_conditional_criteria_are_limited_too(client: TestClient) -> None:
    response = client.put("/fhir/Patient?" + urlencode([("_id", "p1")] * 101), json=patient())
    refused(response, "PK_MAX_SEARCH_PARAMETERS")
    assert found(client.get("/fhir/Patient"))["total"] == 0


# -- the body: Bundle entries and JSON depth -----------------------------------------------


def _bundle(kind: str, entries: int) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind,
            "entry": [{"request": {"method": "GET", "url": "Patient/p1"}} for _ in range(entries)]}


def test_bundle_entries_red_team_size(client: TestClient) -> None:
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Unknown/{i}"}} for i in range(10_000)]})
    refused(response, "PK_MAX_BUNDLE_ENTRIES", 413, "too-long")


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_bundle_entries(small: TestClient, kind: str) -> None:
    put(small, "p1", patient())
    entries = found(small.post("/fhir", json=_bundle(kind, 3)))["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK"] * 3
    outcome = refused(small.post("/fhir", json=_bundle(kind, 4)), "PK_MAX_BUNDLE_ENTRIES", 413, "too-long")
    assert outcome["issue"][0]["expression"] == ["Bundle.entry"]


def _nested_patient(depth: int) -> dict[str, Any]:
    """A valid Patient whose JSON nests objects and arrays ``depth`` levels deep (the Patient
    itself is level 1; each nested extension adds an array and an object)."""
    assert depth % 2 == 1
    extension: dict[str, Any] = {"url": "http://example.org/level", "valueString": "innerst"}
    for _ in range((depth - 3) // 2):
        extension = {"url": "http://example.org/level", "extension": [extension]}
    return {**patient(), "extension": [extension]}


def test_json_depth(small: TestClient) -> None:
    assert small.post("/fhir/Patient", json=_nested_patient(9)).status_code == 201
    deeper = {**patient(), "extension": [{"url": "http://example.org/level",
                                          "extension": [_nested_patient(9)["extension"][0]]}]}
    refused(small.post("/fhir/Patient", json=deeper), "PK_MAX_JSON_DEPTH", 413, "too-long")
    assert found(small.get("/fhir/Patient"))["total"] == 1


# -- AuditEvent search ---------------------------------------------------------------------


@pytest.fixture
def unit_log(settings: Settings, client: TestClient) -> TestClient:
    """``client`` with a token of a system acting for a care unit: it may search the unit's log."""
    grant = Grant(kind="system", sub="ehr", name="EHR", care_unit="SE2321000016-1001")
    client.headers["authorization"] = f"Bearer {issue_token(settings, grant, 'system/AuditEvent.rs')}"
    return client


def test_audit_event_search(unit_log: TestClient) -> None:
    found(unit_log.get("/fhir/AuditEvent", params=[("entity", "Patient/p1")] * 100))
    refused(unit_log.get("/fhir/AuditEvent", params=[("entity", "Patient/p1")] * 101), "PK_MAX_SEARCH_PARAMETERS")
    refused(unit_log.post("/fhir/AuditEvent/_search", content=urlencode([("agent", "x")] * 10_000), headers=FORM),
            "PK_MAX_SEARCH_PARAMETERS")
    values = ",".join(f"Patient/p{i}" for i in range(100))
    found(unit_log.get("/fhir/AuditEvent", params={"entity": values}))
    refused(unit_log.get("/fhir/AuditEvent", params={"entity": values + ",Patient/x"}), "PK_MAX_SEARCH_VALUES")


# -- what includes add: capped, and the Bundle says so -------------------------------------


def _incomplete(bundle: dict[str, Any], setting: str) -> None:
    issues = outcome_issues(bundle)
    assert [(i["severity"], i["code"]) for i in issues] == [("warning", "incomplete")], issues
    assert setting in issues[0]["diagnostics"] and issues[0]["details"]["text"]


def test_revinclude_fan_out_is_capped(small: TestClient) -> None:
    put(small, "p1", patient())
    put(small, "cp1", care_plan("p1"))
    put(small, "cp2", care_plan("p1"))
    bundle = found(small.get("/fhir/Patient", params={"_id": "p1", "_revinclude": "CarePlan:subject"}))
    assert ids(bundle, "include") == {"CarePlan/cp1", "CarePlan/cp2"} and outcome_issues(bundle) == []
    # what the Bundle holds already does not count: following the plans back to p1 cuts nothing
    bundle = found(small.get("/fhir/Patient", params=[("_id", "p1"), ("_revinclude", "CarePlan:subject"),
                                                      ("_include:iterate", "CarePlan:subject")]))
    assert ids(bundle, "include") == {"CarePlan/cp1", "CarePlan/cp2"} and outcome_issues(bundle) == []
    put(small, "cp3", care_plan("p1"))
    bundle = found(small.get("/fhir/Patient", params={"_id": "p1", "_revinclude": "CarePlan:subject"}))
    assert len(ids(bundle, "include")) == 2 and ids(bundle, "include") < {"CarePlan/cp1", "CarePlan/cp2",
                                                                            "CarePlan/cp3"}
    assert ids(bundle) == {"Patient/p1"}
    _incomplete(bundle, "PK_MAX_INCLUDED_RESOURCES")


def test_include_fan_out_is_capped(small: TestClient) -> None:
    put(small, "p1", patient())
    put(small, "org1", organization())
    put(small, "pr1", practitioner())
    put(small, "team1", care_team("p1", ["Practitioner/pr1", "Organization/org1"]))
    bundle = found(small.get("/fhir/CareTeam", params={"_include": "CareTeam:participant"}))
    assert ids(bundle, "include") == {"Practitioner/pr1", "Organization/org1"} and outcome_issues(bundle) == []
    put(small, "pr2", practitioner("SE2321000016-2002"))
    put(small, "team1", care_team("p1", ["Practitioner/pr1", "Organization/org1", "Practitioner/pr2"]))
    bundle = found(small.get("/fhir/CareTeam", params={"_include": "CareTeam:participant"}))
    assert len(ids(bundle, "include")) == 2
    _incomplete(bundle, "PK_MAX_INCLUDED_RESOURCES")


def test_iterate_depth_is_capped(small: TestClient) -> None:
    """``PK_MAX_INCLUDE_ITERATIONS`` = 1: the matches' includes and one round of ``:iterate``."""
    put(small, "p1", patient())
    put(small, "pr1", practitioner())
    put(small, "team1", care_team("p1", ["Practitioner/pr1"]))
    put(small, "cp1", care_plan("p1", "team1"))
    two_steps = [("_id", "cp1"), ("_include:iterate", "CarePlan:care-team"),
                 ("_include:iterate", "CareTeam:participant")]
    bundle = found(small.get("/fhir/CarePlan", params=two_steps))
    assert ids(bundle, "include") == {"CareTeam/team1", "Practitioner/pr1"} and outcome_issues(bundle) == []
    three_steps = [("_id", "p1"), ("_revinclude:iterate", "CarePlan:subject"),
                   ("_include:iterate", "CarePlan:care-team"), ("_include:iterate", "CareTeam:participant")]
    bundle = found(small.get("/fhir/Patient", params=three_steps))
    assert ids(bundle, "include") == {"CarePlan/cp1", "CareTeam/team1"}
    _incomplete(bundle, "PK_MAX_INCLUDE_ITERATIONS")


# -- PK_STATEMENT_TIMEOUT ------------------------------------------------------------------


class TableLock:
    """An ACCESS EXCLUSIVE lock on a table, held by another PostgreSQL session (in a thread of its
    own) until released, or for 20 s at most (a server without a statement timeout would wait that
    long): every statement of the service that touches the table waits for it."""

    def __init__(self, url: str, table: str) -> None:
        self._url, self._table = url, table
        self._locked, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        conn = await asyncpg.connect(make_url(self._url).set(drivername="postgresql").render_as_string(False))
        try:
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {self._table} IN ACCESS EXCLUSIVE MODE")
                self._locked.set()
                give_up = time.monotonic() + 20
                while not self._release.is_set() and time.monotonic() < give_up:
                    await asyncio.sleep(0.02)
        finally:
            await conn.close()

    def __enter__(self) -> TableLock:
        self._thread.start()
        assert self._locked.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._release.set()
        self._thread.join(10)


@pytest.fixture
def timed(clean_pg: str) -> Iterator[TestClient]:
    with _client(make_settings(clean_pg, statement_timeout=0.3)) as client:
        yield client


def test_a_statement_over_the_timeout_is_an_operation_outcome(timed: TestClient, clean_pg: str) -> None:
    """A search and a read whose statements wait past ``PK_STATEMENT_TIMEOUT`` (here on a lock
    another session holds) are cancelled by PostgreSQL and answered 400 ``too-costly``, not 500;
    once the lock is gone the same requests are served."""
    put(timed, "p1", patient())
    with TableLock(clean_pg, "resource"):
        refused(timed.get("/fhir/Patient", params={"name": "Tolvan"}), "PK_STATEMENT_TIMEOUT")
        refused(timed.get("/fhir/Patient/p1"), "PK_STATEMENT_TIMEOUT")
        refused(timed.put("/fhir/Patient/p2", json={**patient(), "id": "p2"}), "PK_STATEMENT_TIMEOUT")
    assert ids(found(timed.get("/fhir/Patient", params={"name": "Tolvan"}))) == {"Patient/p1"}
    assert timed.get("/fhir/Patient/p1").status_code == 200
    assert timed.get("/fhir/Patient/p2").status_code == 404


# -- slow clients, against a real server process -------------------------------------------


@dataclass
class LiveServer:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    token: str


@pytest.fixture(scope="module", params=["serve", "gunicorn"])
def live(request: pytest.FixtureRequest, pg_url: str, signing_key: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``patientkontrakt serve`` (uvicorn) and gunicorn with ``deploy/gunicorn.conf.py``, as an
    operator starts them, with one-second header and body timeouts."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PK_DATABASE_URL": pg_url, "PK_BASE_URL": base_url, "PK_SIGNING_KEY": str(signing_key),
           "PK_AUDIT_KEY": str(audit_key_file()), "PK_HEADER_TIMEOUT": "1", "PK_BODY_TIMEOUT": "1",
           "PK_BIND": f"127.0.0.1:{port}", "PK_WORKERS": "1"}
    if request.param == "serve":
        command = [sys.executable, "-m", "patientkontrakt.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "api.app:create_app()"]
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    SERVER_LOGS.append(log_path)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    grant = Grant(kind="system", sub="slow-ehr", name="Slow EHR", care_unit="SE2321000016-1001",
                  care_unit_org="org1")
    token = issue_token(make_settings(pg_url, base_url=base_url), grant, "system/*.cruds")
    try:
        for _ in range(150):
            if process.poll() is not None:
                pytest.fail(f"the server exited:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base_url}/fhir/metadata", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail(f"the server did not start:\n{log_path.read_text()}")
        yield LiveServer(port, process, log_path, token)
    finally:
        stop(process)


def dribble(port: int, head: bytes, trickle: bytes, pause: float = 0.05) -> tuple[bytes, bool]:
    """Send ``head`` at once, then ``trickle`` a byte at a time until the server answers or hangs
    up; return what it sent and whether it closed the connection. Gives up (False) after 30 s."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(pause)
        sock.sendall(head)
        received, sent, give_up = b"", 0, time.monotonic() + 30
        while time.monotonic() < give_up:
            if sent < len(trickle):
                try:
                    sock.sendall(trickle[sent:sent + 1])
                    sent += 1
                except OSError:
                    pass  # the server closed its side; read what it said
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return received, True
            if not chunk:
                return received, True
            received += chunk
        return received, False


def _timeout_answer(received: bytes, setting: str) -> None:
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), received[:500]
    assert b"connection: close" in head.lower()
    outcome = json.loads(body)
    assert outcome["issue"][0]["code"] == "timeout" and setting in outcome["issue"][0]["diagnostics"]
    assert "högst 1 s" in outcome["issue"][0]["details"]["text"]


@pytest.mark.slow
def test_slow_headers_are_cut_off(live: LiveServer) -> None:
    """Headers sent a byte at a time: 408 after ``PK_HEADER_TIMEOUT``, then the connection closes
    (uvicorn alone waited as long as the client kept sending)."""
    received, closed = dribble(live.port, b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 200)
    assert closed
    _timeout_answer(received, "PK_HEADER_TIMEOUT")


@pytest.mark.slow
def test_a_silent_connection_is_closed(live: LiveServer) -> None:
    """A connection that never sends a byte is closed after ``PK_HEADER_TIMEOUT``, without an answer."""
    received, closed = dribble(live.port, b"", b"")
    assert closed and received == b""


@pytest.mark.slow
def test_a_slow_body_is_cut_off(live: LiveServer) -> None:
    body = json.dumps({**patient(), "text": {"status": "generated", "div": "<div>" + "x" * 200 + "</div>"}}).encode()
    head = (f"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live.token}\r\n"
            f"Content-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    received, closed = dribble(live.port, head, body)
    assert closed
    _timeout_answer(received, "PK_BODY_TIMEOUT")


@pytest.mark.slow
def test_slow_clients_do_not_hold_up_others(live: LiveServer) -> None:
    """While several clients dribble their headers, other requests are answered, and before the
    slow ones are cut off."""
    finished: list[str] = []

    def slow() -> None:
        dribble(live.port, b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 200)
        finished.append("slow")

    threads = [threading.Thread(target=slow) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    assert httpx.get(f"http://127.0.0.1:{live.port}/fhir/metadata", timeout=30).status_code == 200
    finished.append("fast")
    for thread in threads:
        thread.join(60)
    assert finished == ["fast", *["slow"] * 5]


# -- CPU-heavy requests do not hold up the others ------------------------------------------


def _heavy_patient(size: int) -> bytes:
    """A Patient of ``size`` bytes that fails validation only once all of it is validated: a
    request that is CPU work from its first byte to its 400, with nothing to wait for."""
    addresses = [{"use": "old", "line": [f"Gamla vägen {i}", f"lägenhet {i}"], "city": "Göteborg",
                  "postalCode": "411 01", "period": {"start": "1990-01-01", "end": "1991-01-01"}}
                 for i in range(size // 150)]
    return json.dumps({**patient(), "address": addresses, "gender": "okänt"}).encode()


@pytest.mark.slow
def test_a_large_body_does_not_hold_up_other_requests(live: LiveServer) -> None:
    """While the server parses and validates a 3 MB resource (seconds of CPU work), a small
    request sent after it is answered first: the work runs off the event loop. Before, the loop
    was blocked until the large request was done."""
    body = _heavy_patient(3_000_000)
    head = (f"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live.token}\r\n"
            f"Content-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    finished: list[str] = []

    def heavy() -> None:
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(head + body)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
        finished.append("large")

    thread = threading.Thread(target=heavy)
    thread.start()
    time.sleep(0.5)  # the large request is being worked on (it takes seconds)
    assert httpx.get(f"http://127.0.0.1:{live.port}/", timeout=60).status_code == 200
    finished.append("small")
    thread.join(120)
    assert finished == ["small", "large"]
