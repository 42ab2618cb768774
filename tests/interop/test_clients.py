"""Interop: fhirpy, fhirclient and fhir-kit-client (npm) against the live server, each with its
own API: a whole Patientkontrakt as one transaction Bundle and read back, ``Patient/$everything``
paged to the end and checked against the searches the same client makes, and a JSON Patch
applied, read back, and a bad one refused with an OperationOutcome.

One server for the module (``patientkontrakt serve`` in a subprocess, as an operator starts it)
over a PostgreSQL database of its own holding the demo region (16 agreements). Each client works
on its own agreement, so the tests do not depend on each other's order. Tokens are those of a
backend system acting for the agreement's responsible vårdcentral, signed with the server's key
(tests/security/conftest.py ``World.system``; the OAuth flows themselves are in
test_smart_clients.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhirpy.base.exceptions import OperationOutcome

from patientkontrakt.domain.demo import DemoGenerator
from tests.conftest import demo_database, make_settings
from tests.interop.clients import CLIENTS, Client, Refused
from tests.interop.test_fhirpy import Server
from tests.interop.test_smart_clients import live_server
from tests.security.conftest import AGREEMENTS, World, _agreements

pytestmark = pytest.mark.slow

COMPARTMENT = ("CarePlan", "CareTeam", "Goal", "Appointment", "Provenance", "Consent")
DIRECTORY = ("Organization", "Practitioner", "PractitionerRole")
NAMES = list(CLIENTS)


@pytest.fixture(scope="module")
def region() -> Iterator[str]:
    with demo_database(f"pk_interop_{os.getpid()}", AGREEMENTS) as url:
        yield url


@pytest.fixture(scope="module")
def server(region: str, signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with live_server(region, signing_key, tmp_path_factory.mktemp("clients-server")) as running:
        yield running


@pytest.fixture(scope="module")
def world(region: str, server: Server) -> World:
    return World(make_settings(region, base_url=server.base_url), DemoGenerator(seed=1),
                 _agreements(DemoGenerator(seed=1)))


@pytest.fixture
def served(server: Server) -> Iterator[Server]:
    """The server; its log of the test printed afterwards (pytest shows it for failures)."""
    start = server.log_size()
    yield server
    print(f"--- server log ({server.base_url}) ---\n{server.log(start)}")
    assert server.process.poll() is None, "the server died during the test"


def client_for(name: str, served: Server, world: World, unit: str) -> Client:
    """Client ``name`` with a token of a backend system acting for the care unit ``unit``."""
    token = world.system(unit)["authorization"].removeprefix("Bearer ")
    return CLIENTS[name](served.fhir_base, token)


# -- a whole agreement as one transaction ---------------------------------------------------------


def _rewrite(node: Any, urns: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: urns.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, urns)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(item, urns) for item in node]
    return node


def new_agreement(number: int) -> list[dict[str, Any]]:
    """The demo's agreement ``number`` (after those loaded: a new patient), as the demo makes it:
    Patient, CareTeam, Goals and the CarePlan with its activities, at the vårdcentral the demo
    chose; references to the region's units and staff."""
    assert number >= AGREEMENTS
    *_, resources = DemoGenerator(seed=1).agreements(number + 1)
    return resources


def as_transaction(resources: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """A transaction Bundle POSTing ``resources`` (the server assigns the ids; references among
    them are ``urn:uuid``\\ s); and the urns in entry order."""
    urns = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{uuid.uuid4()}" for r in resources}
    entries = [{"fullUrl": urns[f"{r['resourceType']}/{r['id']}"],
                "resource": _rewrite({k: v for k, v in r.items() if k not in ("id", "meta")}, urns),
                "request": {"method": "POST", "url": r["resourceType"]}} for r in resources]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, list(urns.values())


@pytest.mark.parametrize("name", NAMES)
def test_a_whole_agreement_as_one_transaction(name: str, served: Server, world: World) -> None:
    resources = new_agreement(AGREEMENTS + NAMES.index(name))
    plan = resources[-1]
    assert plan["resourceType"] == "CarePlan" and plan["status"] == "active"
    author = plan["author"]["reference"].split("/")[1]
    client = client_for(name, served, world, author)
    bundle, urns = as_transaction(resources)

    answer = client.transaction(bundle)
    assert answer["resourceType"] == "Bundle" and answer["type"] == "transaction-response"
    assert len(answer["entry"]) == len(resources)
    created: dict[str, str] = {}  # urn -> Type/id
    for urn, source, entry in zip(urns, resources, answer["entry"], strict=True):
        response = entry["response"]
        assert response["status"].startswith("201"), entry
        type_, id_ = response["location"].split("/_history/")[0].split("/")[-2:]
        assert type_ == source["resourceType"] and id_ != source["id"]
        assert entry["fullUrl"] == f"{served.fhir_base}/{type_}/{id_}"
        created[urn] = f"{type_}/{id_}"
    patient, team, *goals, stored_plan = created.values()

    # read back through the client: the references resolved to what the transaction created
    read = client.read(*stored_plan.split("/"))
    assert read["meta"]["versionId"] == "1"
    assert read["subject"]["reference"] == patient
    assert [r["reference"] for r in read["careTeam"]] == [team]
    assert sorted(r["reference"] for r in read["goal"]) == sorted(goals)
    assert read["author"] == plan["author"]
    assert len(read["activity"]) == len(plan["activity"]) > 0
    assert read["title"] == plan["title"]
    stored_team = client.read(*team.split("/"))
    assert stored_team["subject"]["reference"] == patient
    assert {p["member"]["reference"] for p in stored_team["participant"]} >= {patient}
    assert client.read(*patient.split("/"))["identifier"] == resources[0]["identifier"]

    # and found by searching: the patient's agreement, team and goals, nothing else
    patient_id = patient.split("/")[1]
    assert client.search("CarePlan", {"patient": patient_id}) == [stored_plan]
    assert client.search("CareTeam", {"patient": patient_id}) == [team]
    assert sorted(client.search("Goal", {"patient": patient_id})) == sorted(goals)

    # a Bundle with one bad entry (a CarePlan with an activity status R4 does not have) is
    # refused whole: the client gets an OperationOutcome, and not even the Patient is stored
    broken = [*resources[:-1], {**plan, "activity": [{**plan["activity"][0], "detail": {
        **plan["activity"][0]["detail"], "status": "kanske"}}]}]
    bad, _ = as_transaction(broken)
    with pytest.raises(Refused) as refused:
        client.transaction(bad)
    _assert_error(refused.value, 400)
    assert any("Bundle.entry" in e for i in refused.value.outcome["issue"] for e in i.get("expression", []))
    identifier = resources[0]["identifier"][0]
    assert client.search("Patient", {"identifier": f"{identifier['system']}|{identifier['value']}"}) == [patient]


# -- Patient/$everything, paged to the end ------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_everything_paged_to_the_end_is_what_the_searches_give(name: str, served: Server, world: World) -> None:
    agreement = world.agreements[NAMES.index(name)]
    client = client_for(name, served, world, agreement.author)

    record = client.everything(agreement.patient, 4)
    assert record.pages > 1, "a small page size, so the client has next links to follow"
    assert len(record.ids) == len(set(record.ids)), "a resource on two pages"
    assert record.total == len(record.ids)
    assert record.pages == -(-record.total // 4)

    # the compartment: exactly what the client's searches by patient find, and the Patient
    searched = {f"Patient/{agreement.patient}"}
    for type_ in COMPARTMENT:
        found = client.search(type_, {"patient": agreement.patient})
        assert len(found) == len(set(found))
        searched |= set(found)
    assert {i for i in record.ids if i.split("/")[0] not in DIRECTORY} == searched
    assert f"CarePlan/{agreement.plan}" in searched and f"CareTeam/{agreement.team}" in searched
    assert {f"Goal/{g}" for g in agreement.goals} <= searched

    # and the directory resources the agreement names
    directory = {i for i in record.ids if i.split("/")[0] in DIRECTORY}
    assert f"Organization/{agreement.author}" in directory
    assert {f"PractitionerRole/{r}" for r in agreement.staff_roles} <= directory



# -- JSON Patch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_json_patch_applied_read_back_and_a_bad_one_refused(name: str, served: Server, world: World) -> None:
    agreement = world.agreements[NAMES.index(name)]
    assert agreement.status == "active"
    client = client_for(name, served, world, agreement.author)
    before = client.read("CarePlan", agreement.plan)
    version = int(before["meta"]["versionId"])
    text = f"Ändrad med JSON Patch av {name}."

    patched = client.patch("CarePlan", agreement.plan, [
        {"op": "test", "path": "/status", "value": "active"},
        {"op": "replace", "path": "/description", "value": text},
        {"op": "add", "path": "/note", "value": [{"text": f"Anteckning från {name}"}]},
    ])
    assert patched["resourceType"] == "CarePlan" and patched["id"] == agreement.plan
    assert patched["meta"]["versionId"] == str(version + 1)
    assert patched["description"] == text
    read = client.read("CarePlan", agreement.plan)
    assert read["meta"]["versionId"] == str(version + 1)
    assert read["description"] == text and read["note"] == [{"text": f"Anteckning från {name}"}]
    assert read["activity"] == before["activity"] and read["subject"] == before["subject"]

    # a test that fails: 422, nothing stored
    with pytest.raises(Refused) as failed:
        client.patch("CarePlan", agreement.plan, [
            {"op": "test", "path": "/status", "value": "completed"},
            {"op": "replace", "path": "/description", "value": "Ska inte sparas"},
        ])
    _assert_error(failed.value, 422)
    # a result our profiles refuse (a CarePlan must have a subject): 422, nothing stored
    with pytest.raises(Refused) as invalid:
        client.patch("CarePlan", agreement.plan, [{"op": "remove", "path": "/subject"}])
    _assert_error(invalid.value, 422)
    # not a JSON Patch document at all: 400
    with pytest.raises(Refused) as malformed:
        client.patch("CarePlan", agreement.plan, {"op": "replace", "path": "/description", "value": "x"})
    _assert_error(malformed.value, 400)
    after = client.read("CarePlan", agreement.plan)
    assert after["meta"]["versionId"] == str(version + 1) and after["description"] == text


def _assert_error(refused: Refused, status: int) -> None:
    """An OperationOutcome with an error; the status where the client reports it (fhirpy
    reports none, only the OperationOutcome)."""
    assert refused.outcome["resourceType"] == "OperationOutcome", refused.outcome
    assert any(i["severity"] in ("error", "fatal") for i in refused.outcome["issue"])
    assert refused.status in (None, status), refused


def test_fhirpys_own_patch_is_a_merge_patch_and_is_refused_as_such(served: Server, world: World) -> None:
    """fhirpy's ``patch()`` sends its arguments as a JSON merge patch with ``Content-Type:
    application/json``, which R4 does not define: a 415 OperationOutcome naming JSON Patch, and
    nothing is stored."""
    agreement = world.agreements[NAMES.index("fhirpy")]
    client = client_for("fhirpy", served, world, agreement.author)
    assert isinstance(client, CLIENTS["fhirpy"])
    version = client.read("CarePlan", agreement.plan)["meta"]["versionId"]
    with pytest.raises(OperationOutcome) as refused:
        client.client.patch("CarePlan", agreement.plan, description="Sammanfogad")  # type: ignore[attr-defined]
    outcome = refused.value.resource
    assert outcome["resourceType"] == "OperationOutcome"
    assert "json-patch" in str(outcome).lower()
    assert client.read("CarePlan", agreement.plan)["meta"]["versionId"] == version
