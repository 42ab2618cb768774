"""Interop: a Subscription and a Bulk Data ``$export`` through clients nobody here wrote, against
the live server and a ``patientkontrakt worker`` beside it.

* **Subscription** (R4 subscription.html, channel ``rest-hook``, ``criteria`` a search string,
  ``payload`` ``application/fhir+json``): fhirpy, fhirclient and fhir-kit-client each create one
  whose endpoint is a real HTTP server of the test on loopback (the server runs with
  ``PK_SUBSCRIPTION_ALLOWED_HOSTS=127.0.0.1``, which is what lets it deliver there). The
  ``requested → active`` handshake reaches the receiver; a change made through the same client
  that the criteria match is delivered with the new version and the channel's own header, and a
  change they do not match is not.
* **$export** (Bulk Data Access IG 2.0: kick-off with ``Prefer: respond-async`` → 202 and
  ``Content-Location`` → status polls → the manifest → ndjson files): fhir-kit-client with a
  token that a SMART Backend Services client (authlib, ``private_key_jwt``) got from
  ``/oauth/token``; what the files hold is counted against what the same token finds by
  searching, resource by resource; at the system, Patient and Group levels (the Group created
  through the same client by the unit's system).

One server and one worker for the module, over a PostgreSQL database of its own holding the demo
region.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from joserfc.jwk import ECKey, KeySet

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.domain.demo import DemoGenerator
from patientkontrakt.domain.identifiers import HSA_ID
from patientkontrakt.security.identity import identifier_value
from tests.conftest import SERVER_LOGS, demo_database, make_settings
from tests.interop.clients import CLIENTS, Client, FhirKit, Refused
from tests.interop.test_fhirpy import Server, serving
from tests.interop.test_smart_clients import BackendServicesJWT, _command, _environment, register_client
from tests.processes import loopback_site, stop
from tests.security.conftest import AGREEMENTS, World, _agreements

pytestmark = pytest.mark.slow

NAMES = list(CLIENTS)
WAIT_SECONDS = 30
RECEIVER_SECRET = "Bearer mottagarens-egen-nyckel"
BULK_UNIT = "demo-org-vc-bjorkbacken"
BULK_TYPES = ("Patient", "CarePlan", "CareTeam", "Goal")


# -- the live server and the worker ----------------------------------------------------------------


@pytest.fixture(scope="module")
def region() -> Iterator[str]:
    with demo_database(f"pk_interop_notify_{os.getpid()}", AGREEMENTS) as url:
        yield url


@pytest.fixture(scope="module")
def server(region: str, signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``patientkontrakt serve`` that may deliver to loopback, and ``patientkontrakt worker``
    beside it (same database, same settings; its output in the folder's worker.log)."""
    folder = tmp_path_factory.mktemp("notify-server")
    env = _environment(region, signing_key, PK_LOG_LEVEL="info", PK_TEST_IDP="true",
                       PK_SUBSCRIPTION_ALLOWED_HOSTS="127.0.0.1")
    with serving(_command(), env, folder) as running:
        worker_log = folder / "worker.log"
        SERVER_LOGS.append(worker_log)
        with worker_log.open("wb") as log:
            worker = subprocess.Popen([*_command(), "worker"], cwd=PROJECT_ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, env={**env, "PK_BASE_URL": running.base_url})
        running.worker = worker  # type: ignore[attr-defined]
        running.worker_log = worker_log  # type: ignore[attr-defined]
        try:
            yield running
        finally:
            stop(worker)


@pytest.fixture(scope="module")
def world(region: str, server: Server) -> World:
    return World(make_settings(region, base_url=server.base_url), DemoGenerator(seed=1),
                 _agreements(DemoGenerator(seed=1)))


@pytest.fixture
def served(server: Server) -> Iterator[Server]:
    """The server; its log and the worker's of the test printed afterwards (shown for failures)."""
    start = server.log_size()
    worker_log: Path = server.worker_log  # type: ignore[attr-defined]
    worker_start = worker_log.stat().st_size
    yield server
    print(f"--- server log ({server.base_url}) ---\n{server.log(start)}")
    print(f"--- worker log ---\n{worker_log.read_bytes()[worker_start:].decode(errors='replace')}")
    assert server.process.poll() is None, "the server died during the test"
    worker: subprocess.Popen[bytes] = server.worker  # type: ignore[attr-defined]
    assert worker.poll() is None, f"the worker exited with {worker.returncode}"


def client_for(name: str, served: Server, world: World, unit: str) -> Client:
    token = world.system(unit)["authorization"].removeprefix("Bearer ")
    return CLIENTS[name](served.fhir_base, token)


def eventually(what: str, check: Callable[[], Any], seconds: float = WAIT_SECONDS) -> Any:
    """``check()``'s first truthy answer, asked every 0.2 s for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds} s")
        time.sleep(0.2)


# -- the receiver: a real HTTP server on loopback ------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else None

    def resources(self) -> list[dict[str, Any]]:
        """The resources the notification carries: the body itself (R4 rest-hook with a payload:
        ``PUT [endpoint]/[type]/[id]``), or the entries of a notification Bundle other than its
        status ``Parameters`` (the Backport IG's form)."""
        body = self.json()
        if not isinstance(body, dict):
            return []
        if body.get("resourceType") == "Bundle":
            status = ("Parameters", "SubscriptionStatus")
            return [e["resource"] for e in body.get("entry", [])
                    if "resource" in e and e["resource"].get("resourceType") not in status]
        return [body]


@dataclass
class Receiver:
    """Every request that reaches the endpoint, answered 200."""

    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Endpoint(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver.lock:
                    receiver.received.append(Received(self.command, self.path,
                                                      {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Endpoint

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def about(self, resource_type: str, id_: str) -> list[Received]:
        """The notifications naming ``resource_type/id_`` (in the URL or a resource they carry)."""
        return [r for r in self.snapshot()
                if f"/{resource_type}/{id_}" in r.path
                or any((x.get("resourceType"), x.get("id")) == (resource_type, id_) for x in r.resources())]


def rest_hook(endpoint: str, criteria: str) -> dict[str, Any]:
    return {"resourceType": "Subscription", "status": "requested",
            "reason": "Journalsystemet följer ändringar i patientkontraktet", "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                        "header": [f"Authorization: {RECEIVER_SECRET}"]}}


@pytest.mark.parametrize("name", NAMES)
def test_a_rest_hook_subscription_delivers_a_change_made_through_the_client(
        name: str, served: Server, world: World) -> None:
    agreement = world.agreements[NAMES.index(name)]
    client = client_for(name, served, world, agreement.author)
    receiver = Receiver()
    with loopback_site(receiver.handler()) as origin:
        endpoint = f"{origin}/ehr/{name}"
        created = client.create(rest_hook(endpoint, f"CarePlan?patient={agreement.patient}"))
        assert created.get("resourceType") == "Subscription" and created.get("id"), created
        assert created["status"] in ("requested", "active")
        assert created["channel"]["endpoint"] == endpoint
        subscription = created["id"]

        # requested → active after the handshake, which the receiver got (with the channel's header)
        eventually("the Subscription active", lambda: client.read("Subscription", subscription)["status"] == "active")
        handshakes = receiver.snapshot()
        assert handshakes, "the handshake did not reach the endpoint"
        assert (handshakes[0].method, handshakes[0].path, handshakes[0].body) == ("POST", f"/ehr/{name}", b"")
        assert handshakes[0].headers.get("authorization") == RECEIVER_SECRET

        # a change the criteria do not match (the patient's CareTeam), then one they do (the CarePlan)
        client.patch("CareTeam", agreement.team, [{"op": "replace", "path": "/name", "value": f"Vårdteam ({name})"}])
        text = f"Ändrat av {name}, och journalsystemet får veta det."
        patched = client.patch("CarePlan", agreement.plan, [{"op": "replace", "path": "/description", "value": text}])
        version = patched["meta"]["versionId"]

        def delivered() -> Received | None:
            return next((r for r in receiver.about("CarePlan", agreement.plan)
                         if any(x.get("meta", {}).get("versionId") == version for x in r.resources())), None)

        notification = eventually("the change delivered to the receiver", delivered)
        # R4 rest-hook with a payload: the resource as an update, the endpoint taken as a base
        assert (notification.method, notification.path) == ("PUT", f"/ehr/{name}/CarePlan/{agreement.plan}")
        assert notification.headers.get("authorization") == RECEIVER_SECRET
        assert notification.headers.get("x-subscription-resource-version") == version
        plan = next(x for x in notification.resources() if x.get("resourceType") == "CarePlan")
        assert plan["id"] == agreement.plan and plan["description"] == text
        assert plan["subject"]["reference"] == f"Patient/{agreement.patient}"
        assert "x-subscription-event-number" in notification.headers

        # the CareTeam change was never announced; the Subscription is still active
        time.sleep(1)
        assert receiver.about("CareTeam", agreement.team) == []
        assert client.read("Subscription", subscription)["status"] == "active"


@pytest.mark.parametrize("endpoint", ["http://10.1.2.3/ehr", "http://localhost/ehr", "http://169.254.169.254/ehr"])
def test_a_subscription_to_an_internal_address_is_refused(endpoint: str, served: Server, world: World) -> None:
    """Only 127.0.0.1 is allowed here (PK_SUBSCRIPTION_ALLOWED_HOSTS): a private, a loopback name
    and a link-local (cloud metadata) address are refused with an OperationOutcome (fhirpy)."""
    mine = world.agreements[0]
    client = client_for("fhirpy", served, world, mine.author)
    with pytest.raises(Refused) as refused:
        client.create(rest_hook(endpoint, f"CarePlan?patient={mine.patient}"))
    assert refused.value.outcome["resourceType"] == "OperationOutcome"
    assert any(i["severity"] == "error" for i in refused.value.outcome["issue"])


def test_nothing_of_a_patient_the_unit_cannot_see_reaches_its_endpoint(served: Server, world: World) -> None:
    """A Subscription whose criteria name a patient outside the unit's agreements: changes of
    that patient's agreement (by the unit responsible for it) never reach the endpoint."""
    mine = world.agreements[0]
    outside = next(a for a in world.not_involving(mine.author) if a.status == "active")
    client = client_for("fhir-kit-client", served, world, mine.author)
    receiver = Receiver()
    with loopback_site(receiver.handler()) as origin:
        try:
            created = client.create(rest_hook(f"{origin}/ehr", f"CarePlan?patient={outside.patient}"))
        except Refused as refused:  # refusing it outright would do too
            assert refused.outcome["resourceType"] == "OperationOutcome"
            return
        eventually("the Subscription active", lambda: client.read("Subscription", created["id"])["status"] == "active")
        other = client_for("fhir-kit-client", served, world, outside.author)
        changed = other.patch("CarePlan", outside.plan, [{"op": "replace", "path": "/description",
                                                          "value": "Ändrat av den ansvariga enheten"}])
        assert changed["meta"]["versionId"]
        time.sleep(3)
        assert receiver.about("CarePlan", outside.plan) == []
        assert [r.method for r in receiver.snapshot()] == ["POST"]  # the handshake only


# -- the topic-based form of the Subscriptions R5 Backport IG ------------------------------------

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC = "https://patientkontrakt.se/fhir/SubscriptionTopic/patientkontrakt"


def topic_subscription(endpoint: str, patient: str) -> dict[str, Any]:
    """A Subscription to the topic *a Patientkontrakt changed* for one patient, full resources."""
    return {
        "resourceType": "Subscription", "status": "requested",
        "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
        "reason": "Journalsystemet följer patientens patientkontrakt",
        "criteria": TOPIC,
        "_criteria": {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria",
                                     "valueString": f"CarePlan?patient=Patient/{patient}"}]},
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content",
                                                "valueCode": "full-resource"}]},
                    "header": [f"Authorization: {RECEIVER_SECRET}"]},
    }


def _status(notification: Received) -> dict[str, Any]:
    """The SubscriptionStatus parameters of a Backport notification Bundle, by name."""
    bundle = notification.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history", bundle
    first = bundle["entry"][0]["resource"]
    assert first["resourceType"] == "Parameters"
    return {p["name"]: p for p in first["parameter"]}


@pytest.mark.parametrize("name", ["fhirpy", "fhir-kit-client"])
def test_a_topic_subscription_announces_a_change_of_the_agreement(name: str, served: Server, world: World) -> None:
    """The Backport IG's form: a handshake Bundle, then an event-notification Bundle whose status
    names the changed Goal as its focus and which carries the Goal (full-resource)."""
    # active agreements other than those of the rest-hook tests (0, 1, 2)
    agreement = [a for a in world.agreements if a.status == "active"][3 + ["fhirpy", "fhir-kit-client"].index(name)]
    client = client_for(name, served, world, agreement.author)
    receiver = Receiver()
    with loopback_site(receiver.handler()) as origin:
        created = client.create(topic_subscription(f"{origin}/topic", agreement.patient))
        assert created["criteria"] == TOPIC
        assert f"{BACKPORT}/backport-subscription" in created["meta"]["profile"]
        eventually("the Subscription active", lambda: client.read("Subscription", created["id"])["status"] == "active")
        handshake = receiver.snapshot()[0]
        assert handshake.method == "POST" and handshake.path == "/topic"
        assert _status(handshake)["type"]["valueCode"] == "handshake"

        goal = agreement.goals[1]
        patched = client.patch("Goal", goal, [{"op": "replace", "path": "/lifecycleStatus", "value": "on-hold"}])
        version = patched["meta"]["versionId"]

        def delivered() -> Received | None:
            return next((r for r in receiver.about("Goal", goal)
                         if any(x.get("meta", {}).get("versionId") == version for x in r.resources())), None)

        notification = eventually("the Goal's change announced", delivered)
        assert notification.method == "POST" and notification.path == "/topic"
        assert notification.headers.get("authorization") == RECEIVER_SECRET
        status = _status(notification)
        assert status["type"]["valueCode"] == "event-notification"
        assert status["topic"]["valueCanonical"] == TOPIC
        event = {p["name"]: p for p in status["notification-event"]["part"]}
        assert event["focus"]["valueReference"]["reference"] == f"{served.fhir_base}/Goal/{goal}"
        assert event["event-number"]["valueString"] == notification.headers["x-subscription-event-number"]
        carried = next(x for x in notification.resources() if x["resourceType"] == "Goal")
        assert carried["lifecycleStatus"] == "on-hold"

        # $status through the client: active, and the events counted
        answer = client.operation("Subscription", created["id"], "status")
        parameters = next(e["resource"] for e in answer["entry"] if e["resource"]["resourceType"] == "Parameters")
        named = {p["name"]: p for p in parameters["parameter"]}
        assert named["status"]["valueCode"] == "active"
        assert int(named["events-since-subscription-start"]["valueString"]) >= 1


# -- Bulk Data $export -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bulk_token(server: Server, world: World, region: str, signing_key: Path,
               tmp_path_factory: pytest.TempPathFactory) -> str:
    """An access token from ``/oauth/token`` for a SMART Backend Services client (authlib,
    ``private_key_jwt`` ES384) registered for the Björkbacken vårdcentral, scope ``system/*.rs``."""
    organization = next(o for o in world.generator.region.organizations if o["id"] == BULK_UNIT)
    hsa = identifier_value(organization, HSA_ID)
    assert hsa
    key = ECKey.generate_key("P-384", private=True)
    kid = key.thumbprint()
    public = ECKey.import_key(key.as_dict(private=False), parameters={"kid": kid, "alg": "ES384", "use": "sig"})
    jwks = tmp_path_factory.mktemp("bulk-client") / "interop-bulk.jwks.json"
    jwks.write_text(json.dumps(KeySet([public]).as_dict(private=False)))
    register_client(region, signing_key, "interop-bulk", "--kind", "backend", "--name", "Interop bulk export",
                    "--jwks", str(jwks), "--scope", "system/*.rs", "--care-unit", hsa)
    token_endpoint = f"{server.base_url}/oauth/token"
    with OAuth2Client("interop-bulk", key, token_endpoint_auth_method=BackendServicesJWT(
            token_endpoint, alg="ES384", headers={"kid": kid}), timeout=30) as backend:
        token = backend.fetch_token(token_endpoint, grant_type="client_credentials", scope="system/*.rs")
    assert token["scope"] == "system/*.rs"
    return str(token["access_token"])


def _check_flow(served: Server, result: dict[str, Any], kickoff_url: str) -> dict[str, Any]:
    """The IG's flow as the client saw it; the manifest."""
    assert result["kickoff"]["status"] == 202
    status_url = result["kickoff"]["contentLocation"]
    assert status_url.startswith(served.fhir_base)
    polls = result["polls"]
    assert polls[-1]["status"] == 200
    assert all(p["status"] == 202 and p["retryAfter"] for p in polls[:-1]), polls
    manifest: dict[str, Any] = result["manifest"]
    assert manifest["transactionTime"] and manifest["requiresAccessToken"] is True
    assert manifest["request"].startswith(kickoff_url)
    for output in manifest["output"]:
        assert output["url"].startswith(served.fhir_base)
    for file in result["files"]:
        assert file["status"] == 200 and file["contentType"].startswith("application/fhir+ndjson"), file
        if file["count"] is not None:
            assert file["count"] == file["lines"], file
    return manifest


def test_a_system_export_holds_what_the_same_token_finds_by_searching(served: Server, bulk_token: str) -> None:
    kit = FhirKit(served.fhir_base, bulk_token)
    types = ",".join(BULK_TYPES)
    result = kit.export("$export", f"_type={types}")
    manifest = _check_flow(served, result, f"{served.fhir_base}/$export")
    assert {o["type"] for o in manifest["output"]} <= set(BULK_TYPES)
    exported: dict[str, list[str]] = result["ids"]
    assert set(exported) <= set(BULK_TYPES)
    for type_ in BULK_TYPES:
        ids = exported.get(type_, [])
        assert len(ids) == len(set(ids)), f"{type_}: a resource twice in the export"
        searched = kit.search(type_, {})
        assert sorted(f"{type_}/{i}" for i in ids) == sorted(searched), type_
    assert exported["CarePlan"], "the unit has agreements: the export is not empty"

    # the files need the token (requiresAccessToken)
    first = manifest["output"][0]["url"]
    assert httpx.get(first, timeout=10).status_code == 401
    # another client may not see the job: a stranger's status poll is 401/404, never the manifest
    assert httpx.get(result["kickoff"]["contentLocation"], timeout=10).status_code in (401, 404)


def test_a_patient_level_export_of_the_agreements(served: Server, bulk_token: str) -> None:
    kit = FhirKit(served.fhir_base, bulk_token)
    result = kit.export("Patient/$export", "_type=CarePlan,Goal")
    _check_flow(served, result, f"{served.fhir_base}/Patient/$export")
    for type_ in ("CarePlan", "Goal"):
        ids = result["ids"].get(type_, [])
        assert len(ids) == len(set(ids))
        assert sorted(f"{type_}/{i}" for i in ids) == sorted(kit.search(type_, {})), type_
    assert set(result["ids"]) <= {"CarePlan", "Goal"}


def test_a_group_level_export_of_the_units_list(served: Server, world: World, bulk_token: str) -> None:
    """A Group of two of the unit's patients, created through the client by the unit's system,
    exported at Group level by the bulk client of the same unit: those patients' data only."""
    members = sorted({a.patient for a in world.by_author(BULK_UNIT)})[:2]
    maker = FhirKit(served.fhir_base, world.system(BULK_UNIT)["authorization"].removeprefix("Bearer "))
    group = maker.create({"resourceType": "Group", "type": "person", "actual": True, "name": "Interop-listan",
                          "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members]})
    kit = FhirKit(served.fhir_base, bulk_token)
    path = f"Group/{group['id']}/$export"
    result = kit.export(path, "_type=Patient,CarePlan")
    _check_flow(served, result, f"{served.fhir_base}/{path}")
    assert sorted(result["ids"]["Patient"]) == members
    plans = sorted(f"CarePlan/{i}" for i in result["ids"]["CarePlan"])
    assert plans and plans == sorted(p for m in members for p in kit.search("CarePlan", {"patient": m}))
    assert len(plans) < len(kit.search("CarePlan", {}))


def test_an_export_cancelled_and_a_group_export_refused(served: Server, bulk_token: str) -> None:
    """The IG's DELETE of the status URL (202; the job is gone: 404 afterwards), and the Group
    level for a Group nobody has: 404 with an OperationOutcome, through the client."""
    kit = FhirKit(served.fhir_base, bulk_token)
    result = kit.run("export-cancel", "$export", "_type=CarePlan")
    assert result["kickoff"]["status"] == 202
    assert result["cancel"]["status"] == 202
    assert result["after"]["status"] == 404
    assert result["after"]["outcome"]["resourceType"] == "OperationOutcome"
    with pytest.raises(Refused) as group:
        kit.export("Group/vardcentralens-listade/$export")
    assert group.value.status == 404 and group.value.outcome["resourceType"] == "OperationOutcome"
