"""The application log holds no patient data (docs/operations.md#logging).

Over a live server (``patientkontrakt serve``, uvicorn): the request log has method, route
template, status and duration, never an id or a query string.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from patientkontrakt.domain.demo import DemoGenerator
from patientkontrakt.domain.identifiers import HSA_ID
from patientkontrakt.security.tokens import Grant
from tests.conftest import issue_token, make_settings
from tests.factories import PNR
from tests.faults import wait_for
from tests.interop.test_fhirpy import Server
from tests.interop.test_smart_clients import live_server
from tests.patient_data import patient_data_in

NUMBER = "194303050068"  # a demo patient's personnummer (DemoGenerator, seed 1)
FAMILY, GIVEN = "Fiktivsson", "Märta"


# -- over a live server (uvicorn) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(pg_url: str, signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with live_server(pg_url, signing_key, tmp_path_factory.mktemp("logging-server")) as running:
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
                 "GET /personal/avtal/{plan_id} ", "GET (no route) 404", "POST /fhir/Patient/_search "):
        assert line in log, (line, log)
    assert org not in log and NUMBER not in log and FAMILY not in log and GIVEN not in log, log
    assert "HTTP/1.1" not in log and "identifier" not in log and "?" not in log, log
    assert not patient_data_in(log)
