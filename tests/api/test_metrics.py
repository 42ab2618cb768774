"""``GET /metrics`` (patientkontrakt/metrics.py): Prometheus's text format, parsed with
prometheus_client's own parser; counters move for the route template and status a request had,
never for its path; the database's figures are read at scrape time; only with the token. Under
gunicorn with two processes (``deploy/gunicorn.conf.py``, ``PROMETHEUS_MULTIPROC_DIR``) every
scrape, whichever process answers it, counts the requests of both."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from patientkontrakt.config import PROJECT_ROOT, Settings
from patientkontrakt.metrics import exposition
from tests.conftest import BASE_URL, engine_token, make_settings
from tests.faults import admin, wait_for

TOKEN = "scrape-me-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _served(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL) as client:
        client.headers.update({"content-type": "application/fhir+json",
                               "authorization": f"Bearer {engine_token(settings)}"})
        yield client


@pytest.fixture(scope="module")
def shared(pg_url: str) -> Iterator[TestClient]:
    """One service for the tests that compare counters before and after (the database as the
    module's other tests leave it)."""
    yield from _served(make_settings(pg_url, metrics_token=TOKEN))


@pytest.fixture
def settings(clean_pg: str) -> Settings:
    return make_settings(clean_pg, metrics_token=TOKEN, subscription_allowed_hosts="127.0.0.1",
                         audit_seal_interval=0.2)


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    """A service of its own over the emptied database, sealing the access log every 0.2 s."""
    yield from _served(settings)


def scrape(http: TestClient | httpx.Client) -> Samples:
    response = http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_template_and_status(shared: TestClient) -> None:
    http = shared
    created = http.post("/fhir/Patient", json={"resourceType": "Patient", "active": True})
    assert created.status_code == 201
    id_ = created.json()["id"]
    before = scrape(http)
    read = {"method": "GET", "route": "/fhir/Patient/{id_}"}
    for _ in range(3):
        assert http.get(f"/fhir/Patient/{id_}").status_code == 200
    assert http.get("/fhir/Patient/no-such-patient").status_code == 404
    assert http.get("/no/such/path").status_code == 404
    after = scrape(http)

    assert value(after, "pk_http_requests_total", **read, status="200") \
        - value(before, "pk_http_requests_total", **read, status="200") == 3
    assert value(after, "pk_http_requests_total", **read, status="404") \
        - value(before, "pk_http_requests_total", **read, status="404") == 1
    unrouted = {"method": "GET", "route": "(no route)", "status": "404"}
    assert value(after, "pk_http_requests_total", **unrouted) - value(before, "pk_http_requests_total", **unrouted) == 1
    assert value(after, "pk_http_request_duration_seconds_count", **read) \
        - value(before, "pk_http_request_duration_seconds_count", **read) == 4
    assert value(after, "pk_http_request_duration_seconds_bucket", **read, le="+Inf") \
        == value(after, "pk_http_request_duration_seconds_count", **read)
    # the scrape itself is a request too, and no label holds a path or an id
    assert value(after, "pk_http_requests_total", method="GET", route="/metrics", status="200") >= 1
    assert not [key for key in after if any(id_ in v or "no-such" in v for _, v in key[1])]

    # the access log's appends: the reads' entries are committed before each answer
    committed = {"mode": "committed"}
    assert value(after, "pk_audit_append_duration_seconds_count", **committed) \
        > value(before, "pk_audit_append_duration_seconds_count", **committed)
    assert value(after, "pk_db_pool_size") == 20 and value(after, "pk_database_up") == 1


def test_the_database_figures_are_read_at_scrape_time(http: TestClient, settings: Settings) -> None:
    empty = scrape(http)
    assert value(empty, "pk_outbox_pending") == 0
    assert value(empty, "pk_subscriptions", status="requested") == 0
    assert ("pk_worker_heartbeat_age_seconds", frozenset()) not in empty  # no worker ever beat

    subscription = {"resourceType": "Subscription", "status": "requested", "reason": "metrics",
                    "criteria": "Patient", "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"}}
    assert http.post("/fhir/Subscription", json=subscription).status_code == 201
    admin(settings.database_url, "UPDATE subscription SET failures = 3")
    admin(settings.database_url, "INSERT INTO server_state (key, value) VALUES ('worker_heartbeat', "
                                 "to_char(now() AT TIME ZONE 'utc' - interval '42 seconds', "
                                 "'YYYY-MM-DD\"T\"HH24:MI:SS.MS'))")
    found = scrape(http)
    assert value(found, "pk_outbox_pending") >= 1  # the handshake
    assert value(found, "pk_outbox_oldest_pending_age_seconds") >= 0
    assert value(found, "pk_subscriptions", status="requested") == 1
    assert value(found, "pk_subscription_consecutive_failures") == 3
    assert 42 <= value(found, "pk_worker_heartbeat_age_seconds") < 42 + 30

    # the sealer (every 0.2 s here) signs a checkpoint over the access log's entries: a read's
    assert ("pk_audit_checkpoint_age_seconds", frozenset()) not in found
    patient = http.post("/fhir/Patient", json={"resourceType": "Patient", "active": True}).json()
    assert http.get(f"/fhir/Patient/{patient['id']}").status_code == 200
    sealed = wait_for(lambda: ("pk_audit_checkpoint_age_seconds", frozenset()) in (s := scrape(http)) and s,
                      "a signed checkpoint")
    assert 0 <= value(sealed, "pk_audit_checkpoint_age_seconds") < 30


def test_an_access_log_entry_is_counted_until_it_is_sealed(db_url: str) -> None:
    """``pk_audit_oldest_unsealed_age_seconds`` (deploy/prometheus/alerts.yaml alerts on it): absent
    while nothing waits, the age of the oldest entry waiting while no sealer runs
    (``PK_AUDIT_SEAL_INTERVAL=0``), absent again once a process that seals has sealed it. On both
    databases."""
    name = "pk_audit_oldest_unsealed_age_seconds"
    unsealed = (name, frozenset())
    with contextmanager(_served)(make_settings(db_url, metrics_token=TOKEN, audit_seal_interval=0)) as http:
        assert unsealed not in scrape(http)
        patient = http.post("/fhir/Patient", json={"resourceType": "Patient", "active": True}).json()
        assert http.get(f"/fhir/Patient/{patient['id']}").status_code == 200
        time.sleep(1.1)  # an age, not a flag: at least the time since the entries were recorded
        waiting = scrape(http)
        assert 1 <= value(waiting, name) < 30
        assert ("pk_audit_checkpoint_age_seconds", frozenset()) not in waiting
    with contextmanager(_served)(make_settings(db_url, metrics_token=TOKEN, audit_seal_interval=0.2)) as http:
        sealed = wait_for(lambda: unsealed not in (s := scrape(http)) and s, "the queue sealed")
        assert ("pk_audit_checkpoint_age_seconds", frozenset()) in sealed


def test_metrics_need_the_token(shared: TestClient) -> None:
    """Off without ``PK_METRICS_TOKEN``: tests/api/test_readiness.py (its service has none)."""
    assert shared.get("/metrics").status_code == 401  # the FHIR token is not the scraper's
    wrong = shared.get("/metrics", headers={"authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert shared.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200


# -- several processes ------------------------------------------------------------------------

_COUNTING = """
import sys
from patientkontrakt import metrics
metrics.REQUESTS.labels("GET", "/fhir/metadata", "200").inc(int(sys.argv[1]))
metrics.POOL_SIZE.set(20)
print("counted", flush=True)
"""


def test_in_multiprocess_mode_a_scrape_sums_every_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``PROMETHEUS_MULTIPROC_DIR`` (as gunicorn's processes run, ``deploy/gunicorn.conf.py``),
    a scrape in any process counts what every process counted; the config's ``child_exit`` drops a
    dead process's live gauges, ``on_starting`` empties the directory, and without the variable
it makes a directory of its own. (Two gunicorn workers
    take longer to start than this file's budget; the processes here count as they would.)"""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    counters = [subprocess.Popen([sys.executable, "-c", _COUNTING, str(n)], cwd=PROJECT_ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for n in (3, 4)]
    for counter in counters:
        output = counter.communicate(timeout=60)[0].decode()
        assert counter.returncode == 0 and "counted" in output, output
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    metadata = {"method": "GET", "route": "/fhir/metadata", "status": "200"}

    def scraped() -> Samples:
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(exposition(None).decode())
                for sample in family.samples}

    found = scraped()
    assert value(found, "pk_http_requests_total", **metadata) == 3 + 4
    assert value(found, "pk_db_pool_size") == 20 + 20 and value(found, "pk_database_up") == 0

    config = _gunicorn_config()
    config["child_exit"](None, types.SimpleNamespace(pid=counters[0].pid))
    found = scraped()
    assert value(found, "pk_db_pool_size") == 20  # the live gauge of the exited process is gone
    assert value(found, "pk_http_requests_total", **metadata) == 7  # what it counted stays counted
    config["on_starting"](None)
    assert not list(folder.glob("*.db"))

    # unset, the config makes a directory of its own, and removes it when gunicorn exits
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    config = _gunicorn_config()
    made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert made.is_dir() and made != folder
    config["on_exit"](None)
    assert not made.exists()


def _gunicorn_config() -> dict[str, Any]:
    with warnings.catch_warnings():  # uvicorn.workers' deprecation (the deploy files' own matter)
        warnings.simplefilter("ignore", DeprecationWarning)
        return runpy.run_path(str(PROJECT_ROOT / "deploy" / "gunicorn.conf.py"))
