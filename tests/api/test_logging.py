"""The application log holds no patient data, and says each error once (docs/operations.md#logging).

The database is made to fail on a patient's own values, for real (a trigger, a constraint, a
unique index, a cancelled statement, a statement PostgreSQL cannot plan): its error quotes the
value, its DETAIL repeats the row or the key, and SQLAlchemy's text carries the statement's
parameters. The answer is a clean OperationOutcome, and the log says what failed (types, SQLSTATE,
the schema objects PostgreSQL names, where) in a few lines, without a personnummer or a name.

Over a live server (``patientkontrakt serve``, uvicorn, logging JSON): an unexpected error is logged once, by
the service, not again by uvicorn ("Exception in ASGI application" with the whole text); a
client that disconnects mid-request is not an error; the request log has method, route template,
status and duration, never an id or a query string.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.config import Settings
from patientkontrakt.domain.demo import DemoGenerator
from patientkontrakt.domain.identifiers import HSA_ID
from patientkontrakt.logs import JsonFormatter
from patientkontrakt.security.tokens import Grant
from tests.conftest import BASE_URL, engine_token, issue_token, make_settings
from tests.factories import PNR, patient
from tests.faults import admin, backends, wait_for
from tests.interop.test_fhirpy import Server, serving
from tests.interop.test_smart_clients import _command, _environment
from tests.patient_data import number_forms, patient_data_in

NUMBER = "194303050068"  # a demo patient's personnummer (DemoGenerator, seed 1)
FAMILY, GIVEN = "Fiktivsson", "Märta"
MAX_ERROR_LOG = 5000  # characters the log may spend on one failed request


@pytest.fixture
def engine(settings: Settings) -> Iterator[TestClient]:
    """The FHIR engine (plain R4, every scope), answering unexpected errors instead of raising
    them into the test, so that the log is what is tested."""
    with TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL,
                    raise_server_exceptions=False) as http:
        http.headers.update({"content-type": "application/fhir+json",
                             "authorization": f"Bearer {engine_token(settings)}"})
        yield http


@pytest.fixture
def service_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record at every level, but the test client's own: httpx logs each request the test
    sends, with its URL (and the test's values in it)."""
    caplog.set_level(logging.WARNING, logger="httpx")
    return caplog


def _someone() -> dict[str, Any]:
    return patient(NUMBER, family=FAMILY, given=GIVEN, telecom=[{"system": "phone", "value": "070-1234567"}])


def assert_clean_failure(response: httpx.Response, caplog: pytest.LogCaptureFixture, *, sqlstate: str | None) -> None:
    """A 5xx OperationOutcome without the data, and one bounded error line without it either."""
    assert response.status_code >= 500, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "exception"
    assert not patient_data_in(response.text), response.text
    text = caplog.text
    assert not patient_data_in(text), patient_data_in(text)
    assert "fiktivsson" not in text.lower() and "070-1234567" not in text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage()[:300] for r in errors]
    line = errors[0].getMessage()
    assert len(line) < MAX_ERROR_LOG, len(line)
    assert errors[0].exc_info is None and "Traceback" not in text
    assert errors[0].request_id == response.headers["x-request-id"]  # type: ignore[attr-defined]
    assert "POST /fhir/Patient" in line or "GET /fhir/Patient" in line, line
    if sqlstate:
        assert f"sqlstate {sqlstate}" in line, line


# -- the database fails on the patient's values ------------------------------------------------


FAULTS = {
    # the value in the error's message: invalid input syntax for type bigint: "194303050068-x"
    "cast": ["""CREATE FUNCTION pk_test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM (NEW.code || '-x')::bigint; RETURN NEW; END $$""",
             f"""CREATE TRIGGER pk_test_fault BEFORE INSERT ON idx_token FOR EACH ROW
                WHEN (NEW.code = '{NUMBER}') EXECUTE FUNCTION pk_test_fault()"""],
    # the whole row in DETAIL: Failing row contains (…, fiktivsson, Fiktivsson)
    "check": [f"ALTER TABLE idx_string ADD CONSTRAINT pk_test_fault CHECK (value <> '{FAMILY.lower()}') NOT VALID"],
    # the key in DETAIL: Key (code)=(194303050068) already exists
    "unique": ["CREATE UNIQUE INDEX pk_test_fault ON idx_token (code) WHERE param = 'identifier'"],
}
UNDO = {
    "cast": ["DROP TRIGGER IF EXISTS pk_test_fault ON idx_token", "DROP FUNCTION IF EXISTS pk_test_fault()"],
    "check": ["ALTER TABLE idx_string DROP CONSTRAINT IF EXISTS pk_test_fault"],
    "unique": ["DROP INDEX IF EXISTS pk_test_fault"],
}
SQLSTATES = {"cast": "22P02", "check": "23514", "unique": "23505"}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_database_error_quoting_patient_data_is_answered_and_logged_without_it(
        engine: TestClient, settings: Settings, service_log: pytest.LogCaptureFixture, fault: str) -> None:
    if fault == "unique":
        assert engine.post("/fhir/Patient", json=_someone()).status_code == 201
    for statement in FAULTS[fault]:
        admin(settings.database_url, statement)
    try:
        response = engine.post("/fhir/Patient", json=_someone())
    finally:
        for statement in UNDO[fault]:
            admin(settings.database_url, statement)
    assert_clean_failure(response, service_log, sqlstate=SQLSTATES[fault])
    found = engine.get("/fhir/Patient", params={"identifier": f"{PNR}|{NUMBER}"}).json()
    assert found.get("total", len(found.get("entry", []))) == (1 if fault == "unique" else 0)


def test_a_cancelled_statement_is_answered_and_logged_without_its_parameters(
        engine: TestClient, settings: Settings, service_log: pytest.LogCaptureFixture) -> None:
    """A statement cancelled while it runs (``pg_cancel_backend``, as an operator or a timeout
    does) carried the patient's body and index values as parameters."""
    url = settings.database_url
    admin(url, """CREATE FUNCTION pk_test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$""")
    admin(url, "CREATE TRIGGER pk_test_fault BEFORE INSERT ON resource FOR EACH ROW EXECUTE FUNCTION pk_test_fault()")

    def cancel() -> None:
        [pid] = wait_for(lambda: backends(url, "wait_event = 'PgSleep'"), "the insert to sleep in its trigger")
        admin(url, "SELECT pg_cancel_backend($1)", pid)

    canceller = threading.Thread(target=cancel)
    canceller.start()
    try:
        response = engine.post("/fhir/Patient", json=_someone())
    finally:
        canceller.join()
        admin(url, "DROP TRIGGER IF EXISTS pk_test_fault ON resource")
        admin(url, "DROP FUNCTION IF EXISTS pk_test_fault()")
    assert_clean_failure(response, service_log, sqlstate="57014")


def test_a_search_postgresql_cannot_plan_is_answered_and_logged_without_its_values(
        engine: TestClient, service_log: pytest.LogCaptureFixture) -> None:
    """The finding: 1,700 ``name`` criteria are more than PostgreSQL's 1,664 target list entries.
    The traceback printed every parameter, ``'fiktivsson%'`` and the personnummer; three such
    requests wrote 33 MB. (A limit on search parameters may refuse this earlier with a 4xx.)"""
    response = engine.get("/fhir/Patient", params=[("name", FAMILY.lower())] * 1700 + [("identifier", NUMBER)])
    assert response.json()["resourceType"] == "OperationOutcome"
    assert not patient_data_in(response.text)
    assert not patient_data_in(service_log.text), patient_data_in(service_log.text)[:3]
    assert len(service_log.text) < MAX_ERROR_LOG + 1000
    if response.status_code >= 500:
        assert_clean_failure(response, service_log, sqlstate="54011")
    else:
        assert 400 <= response.status_code < 500


def test_the_forms_of_a_personnummer_are_all_looked_for() -> None:
    assert number_forms(NUMBER) == {NUMBER, "4303050068", "19430305-0068", "430305-0068", "430305+0068"}


# -- over a live server (uvicorn) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(pg_url: str, signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The log as JSON (``PK_LOG_FORMAT=json``): what the tests below look for is in its messages,
    and the whole file is searched for patient data last, like every server's log."""
    env = _environment(pg_url, signing_key, PK_LOG_LEVEL="info", PK_TEST_IDP="true", PK_LOG_FORMAT="json")
    with serving(_command(), env, tmp_path_factory.mktemp("logging-server")) as running:
        yield running


@pytest.fixture
def directory(server: Server, clean_pg: str) -> dict[str, str]:
    """Headers of the region's directory client (it writes Organizations) for the live server."""
    settings = make_settings(clean_pg, base_url=server.base_url)
    token = issue_token(settings, Grant(kind="directory", sub="hsa-sync", name="HSA sync"), "system/*.cruds",
                        client_id="hsa-sync")
    return {"authorization": f"Bearer {token}", "content-type": "application/fhir+json"}


def _organization(value: str, hsa: str = "SE2321000016-E901") -> dict[str, Any]:
    """A region (as the demo region's), with ``value`` as a second identifier."""
    region = {k: v for k, v in DemoGenerator(seed=1).region.organizations[0].items() if k != "id"}
    return {**region, "identifier": [{"system": HSA_ID, "value": hsa}, {"system": "urn:test", "value": value}]}


def test_an_unexpected_error_is_logged_once_by_the_service_and_not_again_by_uvicorn(
        server: Server, directory: dict[str, str], clean_pg: str) -> None:
    start = server.log_size()
    for statement in FAULTS["cast"]:
        admin(clean_pg, statement)
    try:
        response = httpx.post(f"{server.fhir_base}/Organization", json=_organization(NUMBER), headers=directory,
                              timeout=30)
    finally:
        for statement in UNDO["cast"]:
            admin(clean_pg, statement)
    assert response.status_code == 500, response.text
    assert response.json()["issue"][0]["code"] == "exception"
    log = wait_for(lambda: (text := server.log(start)) and any(
        mark in text for mark in ("POST /fhir/Organization 500", "Exception in ASGI", "Traceback")) and text,
        "the error in the server log")
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log
    assert log.count("unexpected error on POST /fhir/Organization") == 1, log
    assert "sqlstate 22P02" in log
    assert NUMBER not in log and not patient_data_in(log), log


def test_a_client_that_disconnects_mid_request_is_not_an_error(server: Server, directory: dict[str, str]) -> None:
    start = server.log_size()
    host, port = server.base_url.removeprefix("http://").split(":")
    head = (f"POST /fhir/Organization HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: {directory['authorization']}\r\nContent-Type: application/fhir+json\r\n"
            f"Content-Length: 4000\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b'{"resourceType": "Organization", "name": "')
    log = wait_for(lambda: (text := server.log(start)) and ("/fhir/Organization 499" in text or "Traceback" in text
                                                            or "Exception in ASGI" in text) and text,
                   "the server to notice the client is gone")
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    assert " 500 " not in log and "ERROR" not in log, log
    assert "client disconnected before its request was read: POST /fhir/Organization" in log, log
    assert "POST /fhir/Organization 499" in log, log


def test_the_request_log_has_routes_and_statuses_never_ids_or_queries(server: Server, directory: dict[str, str]
                                                                      ) -> None:
    start = server.log_size()
    auth = {"authorization": directory["authorization"]}
    created = httpx.post(f"{server.fhir_base}/Organization", json=_organization("a second", "SE2321000016-E902"),
                         headers=directory, timeout=30)
    assert created.status_code == 201, created.text
    org = created.json()["id"]
    requests = [
        ("GET", f"/fhir/Organization/{org}", {}), ("GET", f"/fhir/Patient/{NUMBER}", {}),
        ("GET", "/fhir/Patient", {"identifier": f"{PNR}|{NUMBER}", "name": FAMILY}),
        ("GET", f"/fhir/{FAMILY}", {"name": GIVEN}), ("GET", f"/fhir/Patient/{NUMBER}/_history/1", {}),
        ("GET", f"/personal/avtal/{NUMBER}", {}), ("GET", f"/nowhere/{NUMBER}", {"q": FAMILY}),
        ("HEAD", f"/fhir/Organization/{org}", {}), ("GET", "/fhir/Organization/", {"name": FAMILY}),
    ]
    for method, path, params in requests:
        httpx.request(method, server.base_url + path, params=params, headers=auth, timeout=30)
    form = httpx.post(f"{server.fhir_base}/Patient/_search", data={"identifier": NUMBER, "family": FAMILY},
                      headers=auth, timeout=30)
    assert form.status_code < 500
    wait_for(lambda: "POST /fhir/Patient/_search " in server.log(start), "the request lines")
    log = server.log(start)
    for line in ("POST /fhir/Organization 201", "GET /fhir/Organization/{id_} 200", "GET /fhir/Patient/{id_} ",
                 "GET /fhir/Patient ", "GET /fhir/{type_} ", "GET /fhir/Patient/{id_}/_history/{version} ",
                 "GET /personal/avtal/{plan_id} ", "GET (no route) 404", "POST /fhir/Patient/_search ",
                 "HEAD /fhir/Organization/{id_} 200", "GET /fhir/Organization 200"):
        assert line in log, (line, log)
    assert org not in log and NUMBER not in log and FAMILY not in log and GIVEN not in log, log
    assert "HTTP/1.1" not in log and "identifier" not in log and "?" not in log, log
    assert not patient_data_in(log)
    # HEAD through uvicorn: the GET's headers, Content-Length included, and no body (api/rest.py)
    get = httpx.get(f"{server.fhir_base}/Organization/{org}", headers=auth, timeout=30)
    head = httpx.head(f"{server.fhir_base}/Organization/{org}", headers=auth, timeout=30)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(get.content)) and head.headers["etag"] == get.headers["etag"]


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_json_record_names_an_exception_by_type_never_by_text() -> None:
    """A library that logs with ``exc_info``: the JSON line has its types and frames, not its
    message (the value it failed on), and no traceback text."""
    try:
        int(f"{NUMBER}-{FAMILY}")
    except ValueError:
        record = logging.getLogger("some.library").makeRecord(
            "some.library", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line and entry["message"] == "failed" and entry["error"] == "ValueError"
    assert "test_logging.py" in entry["where"] and not patient_data_in(line), line
    # non-ASCII as itself, so that the search of the logs for names finds them as written
    assert GIVEN in JsonFormatter().format(logging.makeLogRecord({"msg": GIVEN}))


def test_the_json_log_is_one_object_a_line_with_the_request_id(server: Server, directory: dict[str, str]) -> None:
    """Every line of the server's output is a JSON object (uvicorn's own lines too); a request's
    records carry its id: the client's ``X-Request-ID`` when it is an opaque id, else a new one,
    echoed in the answer either way."""
    start = server.log_size()
    auth = {"authorization": directory["authorization"]}
    sent = "6f1c2e9a-3b7d-4c1e-9f2a-0b1c2d3e4f50"
    given = httpx.get(f"{server.fhir_base}/Patient/{NUMBER}", headers={**auth, "x-request-id": sent}, timeout=30)
    assert given.headers["x-request-id"] == sent
    # not an opaque id (too long, a name, empty, a name in id-like letters), or one holding a personnummer
    refused = ("a" * 65, f"{FAMILY} {NUMBER}", "", FAMILY, "ehr-7.trace_0001", f"abcdef{NUMBER[2:]}abcdef",
               f"{NUMBER[:8]}-{NUMBER[8:]}")
    made = [httpx.get(f"{server.fhir_base}/Organization", headers={**auth, "x-request-id": offered}, timeout=30)
            .headers["x-request-id"] for offered in refused]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made) and len(set(made)) == len(refused), made
    wait_for(lambda: server.log(start).count("GET /fhir/Organization 200") == len(refused), "the request lines")
    records = _records(server.log(start))
    assert all(set(r) >= {"time", "level", "logger", "message", "request_id"} for r in records), records
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]) for r in records)
    lines = {r["request_id"]: r["message"] for r in records if r["logger"] == "patientkontrakt.requests"}
    assert lines[sent].startswith("GET /fhir/Patient/{id_} ")
    assert all(lines[rid].startswith("GET /fhir/Organization 200") for rid in made)
    startup = _records(server.log(0))
    assert any(r["logger"].startswith("uvicorn") for r in startup), startup[:5]
