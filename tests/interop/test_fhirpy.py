"""Interop: the ``fhirpy`` client against the real server process (uvicorn on a free port).

The server is started the way an operator starts it (``python -m patientkontrakt.cli serve``)
on the session's PostgreSQL database; each test gets that database emptied (``clean_pg``). The
server enforces the Patientkontrakt profiles and rules, so the resources are our profile
examples, created through fhirpy (the server assigns the ids; references are rewritten).

fhirpy 2.x cannot send ``If-Match`` from ``save()``/``update()``; the version-checked update
goes through ``SyncFHIRClient._do_request(..., extra_headers={"If-Match": ...})``, the method
every fhirpy call ends in, so status mapping and error handling are still fhirpy's own (it
reports 412 as ``MultipleResourcesFound``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, ResourceNotFound
from fhirpy.lib import SyncFHIRResource

from patientkontrakt.config import PROJECT_ROOT, Settings
from patientkontrakt.security.tokens import Grant
from tests.conftest import SERVER_LOGS, audit_key_file, issue_token, make_settings
from tests.processes import free_port, stop

pytestmark = pytest.mark.slow

STARTUP_SECONDS = 30
# Creation order of the examples: every reference points at something created before.
_ORDER = ["Organization", "Practitioner", "PractitionerRole", "Patient", "CareTeam", "Goal", "Appointment", "CarePlan"]


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def fhir_base(self) -> str:
        return f"{self.base_url}/fhir"

    def log(self, since: int = 0) -> str:
        return self.log_path.read_bytes()[since:].decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size


def _wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.fhir_base}/metadata", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not answer /fhir/metadata within {STARTUP_SECONDS} s:\n{server.log()}")


@contextmanager
def serving(command: list[str], env: dict[str, str], folder: Path) -> Iterator[Server]:
    """``COMMAND serve`` on a free loopback port in a subprocess, its output in ``folder``'s
    server.log, ``env`` with the port's base URL as PK_BASE_URL; always terminated."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = folder / "server.log"
    SERVER_LOGS.append(log_path)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "serve", "--host", "127.0.0.1", "--port", str(port), "--access-log"],
            cwd=PROJECT_ROOT, env={**env, "PK_BASE_URL": base_url}, stdout=log, stderr=subprocess.STDOUT,
        )
    running = Server(base_url, process, log_path)
    try:
        _wait_until_ready(running)
        yield running
    finally:
        stop(process)


@pytest.fixture(scope="module")
def server(pg_url: str, signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``patientkontrakt serve`` in a subprocess; always terminated, however the tests end."""
    env = {**os.environ, "PK_DATABASE_URL": pg_url, "PK_LOG_LEVEL": "info",
           "PK_SIGNING_KEY": str(signing_key), "PK_AUDIT_KEY": str(audit_key_file())}
    with serving([sys.executable, "-m", "patientkontrakt.cli"], env, tmp_path_factory.mktemp("server")) as running:
        yield running


@dataclass
class Clients:
    """fhirpy clients of the directory system and of an EHR acting for the example care unit."""

    server: Server
    settings: Settings
    directory: SyncFHIRClient
    ehr: SyncFHIRClient | None = None

    def act_for(self, organization_id: str) -> SyncFHIRClient:
        grant = Grant(kind="system", sub="interop-ehr", name="Interop EHR", care_unit="SE2321000016-E001",
                      care_unit_name="Vårdcentralen Norr", care_unit_org=organization_id)
        token = issue_token(self.settings, grant, "system/*.cruds", client_id="interop-ehr")
        self.ehr = SyncFHIRClient(self.server.fhir_base, authorization=f"Bearer {token}")
        return self.ehr


@pytest.fixture
def clients(server: Server, clean_pg: str) -> Iterator[Clients]:
    """fhirpy clients with tokens signed by the server's key, on an empty database; the server's
    log of this test is printed at the end, so a failing test shows it (pytest shows captured
    output of failures only)."""
    start = server.log_size()
    settings = make_settings(clean_pg, base_url=server.base_url)
    directory_token = issue_token(settings, Grant(kind="directory", sub="hsa-sync", name="HSA sync"),
                                  "system/*.cruds", client_id="hsa-sync")
    yield Clients(server, settings, SyncFHIRClient(server.fhir_base, authorization=f"Bearer {directory_token}"))
    print(f"--- server log ({server.base_url}) ---\n{server.log(start)}")
    assert server.process.poll() is None, "the server died during the test"


def _examples() -> list[dict[str, Any]]:
    examples = [json.loads(path.read_text()) for path in
                (PROJECT_ROOT / "fhir_profiles" / "profiles").glob("*-pk-example-*.json")]
    # The agreement and what it names; the SIP (pk-sip) and the Consents it needs are another
    # provider's part (Exempels kommun), not the example care unit's to write.
    sip = "https://patientkontrakt.se/fhir/StructureDefinition/pk-sip"
    return sorted((e for e in examples if e["resourceType"] in _ORDER and sip not in e["meta"]["profile"]),
                  key=lambda e: (_ORDER.index(e["resourceType"]), "partOf" in e, e["id"]))


def _rewrite(node: Any, ids: dict[str, str]) -> Any:
    """``node`` with every reference to an example replaced by the created resource."""
    if isinstance(node, dict):
        return {k: ids.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, ids)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(item, ids) for item in node]
    return node


_DIRECTORY = ("Organization", "Practitioner", "PractitionerRole")


def _create_examples(clients: Clients) -> dict[str, SyncFHIRResource]:
    """Every example, POSTed by fhirpy (the directory by the directory system, the rest by the
    EHR acting for the example vårdcentral); keyed by the example's ``Type/id``."""
    created: dict[str, SyncFHIRResource] = {}
    ids: dict[str, str] = {}
    client = clients.directory
    for example in _examples():
        if example["resourceType"] not in _DIRECTORY and client is clients.directory:
            client = clients.act_for(created["Organization/pk-example-org-vc-norr"].id)
        key = f"{example['resourceType']}/{example['id']}"
        body = {k: v for k, v in _rewrite(example, ids).items() if k not in ("resourceType", "id")}
        resource = client.resource(example["resourceType"], **body)
        resource.save()
        assert resource.id and resource.id != example["id"] and resource["meta"]["versionId"] == "1"
        created[key], ids[key] = resource, f"{example['resourceType']}/{resource.id}"
    return created


def _outcome(error: Exception) -> dict[str, Any]:
    """The OperationOutcome fhirpy put in an exception's message."""
    outcome: dict[str, Any] = json.loads(str(error))
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome


def test_metadata_names_the_configured_base(clients: Clients, server: Server) -> None:
    statement = SyncFHIRClient(server.fhir_base).execute("metadata", method="get")
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["implementation"]["url"] == server.fhir_base


def test_create_read_search_include_update_delete(clients: Clients) -> None:
    created = _create_examples(clients)
    fhir = clients.ehr
    assert fhir is not None
    org = created["Organization/pk-example-org-vc-norr"]
    pat = created["Patient/pk-example-patient-tolvan"]
    team = created["CareTeam/pk-example-vardteam-tolvan"]
    plan = created["CarePlan/pk-example-patientkontrakt-tolvan"]

    # read: by reference and by type/id
    read = fhir.reference("Patient", pat.id).to_resource()
    assert read["name"][0]["family"] == "Tolvansson"
    assert read["generalPractitioner"][0]["reference"] == f"Organization/{org.id}"
    stored_plan = fhir.get("CarePlan", plan.id)
    assert stored_plan["careTeam"][0]["reference"] == f"CareTeam/{team.id}"
    assert stored_plan["author"]["reference"] == f"Organization/{org.id}"

    # search: token, and reference with _include
    identifier = read["identifier"][0]
    found = fhir.resources("Patient").search(identifier=f"{identifier['system']}|{identifier['value']}").get()
    assert found.id == pat.id
    plans = fhir.resources("CarePlan").search(patient=pat).include("CarePlan", "care-team")
    assert [p.id for p in plans.fetch()] == [plan.id]
    bundle = plans.fetch_raw()
    modes = {(e["resource"]["resourceType"], e["resource"]["id"]): e["search"]["mode"] for e in bundle["entry"]}
    assert modes == {("CarePlan", plan.id): "match", ("CareTeam", team.id): "include"}

    # update: fhirpy's save() is unconditional; version 1 becomes 2
    stale = dict(plan.serialize())
    plan["title"] = "Patientkontrakt, reviderat"
    plan.save()
    assert plan["meta"]["versionId"] == "2"

    # a version-checked update with the stale version is refused (412) and changes nothing
    stale["title"] = "Lost update"
    with pytest.raises(MultipleResourcesFound) as refused:
        fhir._do_request("put", f"CarePlan/{plan.id}", data=stale, extra_headers={"If-Match": 'W/"1"'})
    assert _outcome(refused.value)["issue"][0]["code"] == "conflict"
    current = fhir.get("CarePlan", plan.id)
    assert (current["title"], current["meta"]["versionId"]) == ("Patientkontrakt, reviderat", "2")

    # ... and with the current version it is accepted
    current["title"] = "Patientkontrakt, version 3"
    updated = fhir._do_request("put", f"CarePlan/{plan.id}", data=dict(current), extra_headers={"If-Match": 'W/"2"'})
    assert updated["meta"]["versionId"] == "3"

    # delete, then read: gone (410, reported by fhirpy as ResourceNotFound)
    plan.delete()
    with pytest.raises(ResourceNotFound) as gone:
        fhir.reference("CarePlan", plan.id).to_resource()
    assert _outcome(gone.value)["issue"][0]["code"] == "deleted"
    assert fhir.resources("CarePlan").search(patient=pat).fetch() == []
