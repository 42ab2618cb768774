"""The demo region (patientkontrakt/domain/demo.py): loaded through the full write path and rules."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.config import Settings
from patientkontrakt.domain import codes
from patientkontrakt.domain.demo import ANGEN, PLAN_STATES, DemoGenerator, load_demo
from patientkontrakt.domain.identifiers import HSA_ID, PERSONNUMMER, parse_person_number
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.service import RESOURCE_TYPES
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import BASE_URL, engine_token, make_settings
from tests.domain.support import search, versions_stored

HTEST = f"{codes.TEST_DATA_TAG['system']}|{codes.TEST_DATA_TAG['code']}"
AGREEMENT = f"{codes.CAREPLAN_CATEGORY}|{codes.PATIENTKONTRAKT}"  # not the SIPs
_SCRIPT = Path(sys.executable).parent / "patientkontrakt"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "patientkontrakt.cli"]


async def _load(settings: Settings, agreements: int) -> int:
    store = Store(create_engine(settings.database_url, pool_size=2))
    try:
        return await load_demo(BundleProcessor(build_service(settings, store)), agreements)
    finally:
        await store.dispose()


def load(settings: Settings, agreements: int) -> int:
    return asyncio.run(_load(settings, agreements))


def expected_resources(agreements: int) -> int:
    """The region, each agreement's Patient, CareTeam, three Goals and CarePlan, and its SIP and
    Consents if it has any."""
    generator = DemoGenerator(seed=1)
    total = len(generator.region.resources())
    for resources in generator.agreements(agreements):
        assert len(resources) == 6
        total += len(resources) + len(generator.sharing(resources))
    return total


def count(client: TestClient, type_: str, **params: str) -> int:
    response = client.get(f"/fhir/{type_}", params={**params, "_summary": "count"})
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def test_load_demo_stores_region_and_agreements_through_the_rules(pk_client: TestClient, settings: Settings) -> None:
    agreements = len(PLAN_STATES)
    loaded = load(settings, agreements)
    assert loaded == expected_resources(agreements)
    assert versions_stored(pk_client) == loaded

    totals = {type_: count(pk_client, type_) for type_ in RESOURCE_TYPES}
    assert sum(totals.values()) == loaded
    assert totals["Patient"] == count(pk_client, "CarePlan", category=AGREEMENT) == totals["CareTeam"] == agreements
    assert totals["Provenance"] == 0
    sips = search(pk_client, "CarePlan", category=f"{codes.CAREPLAN_CATEGORY}|{codes.SIP}")
    assert sorted(p["id"] for p in sips) == ["demo-sip-000000", "demo-sip-000003"]
    assert all(p["meta"]["profile"] == [codes.SIP_PROFILE] for p in sips)
    consents = {c["id"]: c["meta"]["profile"] for c in search(pk_client, "Consent")}
    assert consents == {"demo-consent-000000-1": [codes.SAMTYCKE_PROFILE],
                        "demo-consent-000003-1": [codes.SAMTYCKE_PROFILE],
                        "demo-consent-000003-2": [codes.SPARR_PROFILE]}
    for type_, total in totals.items():
        assert count(pk_client, type_, _tag=HTEST) == total, f"every {type_} is tagged HTEST"

    for status in ("draft", "active", "on-hold", "completed", "revoked"):
        plans = search(pk_client, "CarePlan", status=status, category=AGREEMENT)
        assert plans, f"an agreement in status {status}"
        assert all(p["meta"]["profile"] == [codes.profile_url("pk-patientkontrakt")] for p in plans)

    patients = search(pk_client, "Patient")
    assert len(patients) == agreements
    for patient in patients:
        [identifier] = patient["identifier"]
        identity = parse_person_number(identifier["value"])
        assert (identity.system, identity.value) == (PERSONNUMMER, identifier["value"])
        assert identity.birth_date.isoformat() == patient["birthDate"]

    active = search(pk_client, "CarePlan", status="active")[0]
    overview = pk_client.get(f"/fhir/{active['subject']['reference']}/$patientkontrakt")
    assert overview.status_code == 200
    assert {e["resource"]["resourceType"] for e in overview.json()["entry"]} >= {
        "Patient", "CarePlan", "CareTeam", "Goal", "PractitionerRole", "Practitioner", "Organization"}


def test_loading_twice_creates_no_new_versions(pk_client: TestClient, settings: Settings) -> None:
    first = load(settings, 2)
    stored = versions_stored(pk_client)
    assert stored == first
    assert load(settings, 2) == first
    assert versions_stored(pk_client) == stored
    assert all(p["meta"]["versionId"] == "1" for p in search(pk_client, "CarePlan"))


@pytest.fixture
def sqlite_database(tmp_path: Path) -> str:
    """A database file that does not exist yet: ``patientkontrakt migrate`` creates it."""
    return f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"


def _run(*args: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    environment["PK_DATABASE_URL"] = url
    environment["PK_SIGNING_KEY"] = str(cwd / "signing.pem")
    return subprocess.run([*COMMAND, *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=180, check=False)


def test_demo_command_loads_a_sqlite_database(sqlite_database: str, tmp_path: Path) -> None:
    migrated = _run("migrate", url=sqlite_database, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    demo = _run("demo", "--agreements", "3", url=sqlite_database, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    loaded = expected_resources(3)
    assert f"demo region loaded: {loaded} resources (3 agreements" in demo.stdout
    # the demo made the signing key, the access log's key and the demo EHR's key, and registered
    # the demo clients
    assert (tmp_path / "signing.pem").exists() and (tmp_path / "demo-ehr-key.pem").exists()
    assert (tmp_path / "patientkontrakt-audit-key.pem").exists()
    clients = _run("clients", "list", url=sqlite_database, cwd=tmp_path)
    assert sorted(line.split("\t")[0] for line in clients.stdout.splitlines()) == ["demo-ehr", "pk-mitt", "pk-personal"]
    settings = make_settings(sqlite_database, signing_key=tmp_path / "signing.pem")
    with TestClient(create_app(settings, care_unit_rules=False), base_url=BASE_URL,
                    headers={"authorization": f"Bearer {engine_token(settings)}"}) as client:
        assert versions_stored(client) == loaded
        assert count(client, "CarePlan", category=AGREEMENT) == 3
        entries = [e["resource"] for e in client.get("/fhir/Patient/demo-pat-000000/$patientkontrakt").json()["entry"]]
        assert [(r["resourceType"], r["id"]) for r in entries][:2] == [("Patient", "demo-pat-000000"),
                                                                     ("CarePlan", "demo-plan-000000")]
        assert {"CareTeam/demo-team-000000", "CarePlan/demo-sip-000000"} <= {
            f"{r['resourceType']}/{r['id']}" for r in entries}, "agreement 0's SIP is loaded with it"


def test_the_region_has_three_kinds_of_provider_and_a_private_vardcentral() -> None:
    region = DemoGenerator(seed=1).region
    orgs = {o["id"]: o for o in region.organizations}
    providers = [o for o in region.organizations if "partOf" not in o]
    kinds = {o["id"]: o["type"][0]["coding"][0]["code"] for o in providers}
    assert kinds == {"demo-org-region": "region", "demo-org-kommun-exempelstad": "kommun",
                     "demo-org-kommun-sjovik": "kommun", "demo-org-lakarhuset-angen": "privat-vardgivare"}

    angen = orgs[ANGEN]
    assert angen["name"] == "Ängens vårdcentral"
    assert region.provider(angen)["id"] == "demo-org-lakarhuset-angen"
    assert [c["coding"][0]["code"] for c in angen["type"]] == ["privat-vardgivare", "vardcentral"]
    # its HSA-ids are of its own organisationsnummer, not the region's
    [hsa] = angen["identifier"]
    assert hsa["system"] == HSA_ID
    assert hsa["value"].split("-")[0] == orgs["demo-org-lakarhuset-angen"]["identifier"][0]["value"].split("-")[0]
    assert hsa["value"].split("-")[0] != orgs["demo-org-region"]["identifier"][0]["value"].split("-")[0]
    # staffed like the region's vårdcentraler
    [unit] = [u for u in region.units["vardcentral"] if u.organization["id"] == ANGEN]
    assert sorted(kind for _, _, kind in unit.staff) == ["lakare", "lakare", "sjukskoterska", "sjukskoterska",
                                                        "sjukskoterska"]
    for unit_list in region.units.values():
        for unit in unit_list:
            assert region.provider(unit.organization) is not unit.organization, "every unit has a provider"


def test_some_agreements_are_at_the_private_vardcentral_and_the_others_unchanged() -> None:
    plans = [resources[-1] for resources in DemoGenerator(seed=1).agreements(16)]
    at_angen = [n for n, plan in enumerate(plans) if plan["author"]["reference"] == f"Organization/{ANGEN}"]
    assert at_angen == [1]  # the docstring of demo.py names them for the tests that use them
    # the region's agreements the security tests rely on
    authors = {n: plan["author"]["reference"].removeprefix("Organization/demo-org-") for n, plan in enumerate(plans)}
    assert [n for n, a in authors.items() if a == "vc-bjorkbacken"] == [2, 3, 7, 10]
    assert [n for n, a in authors.items() if a == "vc-strandvagen"] == [5, 8, 9, 13, 15]


# -- sharing: the SIP, samtycke and spärr (pure data until the service serves Consent) ---------

SHARING_AGREEMENTS = 50  # what `patientkontrakt demo` loads


def _sharing(seed: int = 1) -> dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Agreement number -> (its resources, its sharing resources), for the agreements that have any."""
    generator = DemoGenerator(seed=seed)
    out = {}
    for number, resources in enumerate(generator.agreements(SHARING_AGREEMENTS)):
        if shared := generator.sharing(resources):
            out[number] = (resources, shared)
    return out


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return own + [r for value in node.values() for r in _references(value)]
    if isinstance(node, list):
        return [r for value in node for r in _references(value)]
    return []


def _category(resource: dict[str, Any]) -> str:
    return str(resource["category"][0]["coding"][0]["code"])


def _of(shared: list[dict[str, Any]], category: str) -> list[dict[str, Any]]:
    return [r for r in shared if _category(r) == category]


def _actors(consent: dict[str, Any], role: str) -> list[str]:
    return [a["reference"]["reference"] for a in consent["provision"]["actor"]
            if a["role"]["coding"][0]["code"] == role]


def test_which_agreements_have_a_sip_samtycke_or_sparr() -> None:
    """The numbers the module docstring gives the browser and access tests."""
    sharing = _sharing()
    sip = [n for n, (_, shared) in sharing.items() if _of(shared, "sip")]
    assert sip == [0, 3, 9, 18, 24, 27, 33, 42, 48]
    assert all(PLAN_STATES[n % len(PLAN_STATES)] == "active" for n in sip)
    pending = [n for n, (_, shared) in sharing.items()
               if any(c["status"] == "proposed" for c in _of(shared, "samtycke"))]
    assert pending == [9, 33]
    assert [n for n, (_, shared) in sharing.items() if _of(shared, "inre-sparr")] == [11, 35]
    assert [n for n, (_, shared) in sharing.items() if _of(shared, "yttre-sparr")] == [3, 27]
    assert [r["id"] for r in sharing[3][1]] == ["demo-consent-000003-1", "demo-consent-000003-2", "demo-sip-000003"]
    assert [r["id"] for r in sharing[11][1]] == ["demo-consent-000011-1"]


def test_sharing_draws_nothing_from_the_random_stream_and_is_stable() -> None:
    with_sharing = DemoGenerator(seed=1)
    agreements = []
    for resources in with_sharing.agreements(12):
        with_sharing.sharing(resources)
        agreements.append(resources)
    assert agreements == list(DemoGenerator(seed=1).agreements(12))
    assert _sharing() == _sharing()


def test_the_sip_and_its_samtycke_have_the_shape_of_the_contract() -> None:
    generator = DemoGenerator(seed=1)
    region = generator.region
    directory = {f"{r['resourceType']}/{r['id']}": r for r in region.resources()}
    for number, (resources, shared) in _sharing().items():
        known = {**directory, **{f"{r['resourceType']}/{r['id']}": r for r in [*resources, *shared]}}
        patient, plan = resources[0], resources[-1]
        for resource in shared:
            assert resource["meta"]["tag"] == [codes.TEST_DATA_TAG]
            for reference in _references(resource):
                assert reference in known, f"{resource['id']} points at {reference}, which the demo does not have"
        for consent in (r for r in shared if r["resourceType"] == "Consent"):
            assert consent["scope"]["coding"][0]["code"] == "patient-privacy"
            assert consent["patient"] == {"reference": f"Patient/{patient['id']}"}
            assert consent["performer"] == [consent["patient"]]
            [recorded_at] = consent["organization"]
            assert "partOf" in known[recorded_at["reference"]], "recorded at a care unit"
            sparr = _category(consent) != "samtycke"
            assert consent["policyRule"]["coding"][0]["code"] == ("OPTOUT" if sparr else "OPTIN")
            assert "§" in consent["policyRule"]["text"], "names the paragraph it rests on"
            assert consent["provision"]["type"] == ("deny" if sparr else "permit")
            assert consent["meta"]["profile"] == [codes.profile_url("pk-sparr" if sparr else "pk-samtycke")]
        if not (sips := _of(shared, "sip")):
            continue
        [sip] = sips
        assert sip["id"] == f"demo-sip-{number:06d}"
        assert sip["meta"]["profile"] == [codes.profile_url("pk-sip")]
        assert sip["partOf"] == [{"reference": f"CarePlan/{plan['id']}"}]
        assert sip["subject"]["reference"] == f"Patient/{patient['id']}"
        author = known[sip["author"]["reference"]]
        assert region.provider(author)["type"][0]["coding"][0]["code"] == "kommun"
        assert author["type"][1]["coding"][0]["code"] in ("hemsjukvard", "hemtjanst")
        [responsibility] = sip["extension"]
        assert responsibility["valueCodeableConcept"]["coding"][0]["code"] in ("region", "kommun")
        assert 2 <= len(sip["activity"]) <= 3
        huvudmän = []
        for activity in sip["activity"]:
            [huvudman] = activity["extension"]
            code = huvudman["valueCodeableConcept"]["coding"][0]["code"]
            [performer] = activity["detail"]["performer"]
            kind = region.provider(known[performer["reference"]])["type"][0]["coding"][0]["code"]
            assert code == {"privat-vardgivare": "region"}.get(kind, kind)
            huvudmän.append(code)
        assert huvudmän.count("region") == 1 and 1 <= huvudmän.count("kommun") <= 2

        [samtycke] = _of(shared, "samtycke")
        assert sip["supportingInfo"] == [{"reference": f"Consent/{samtycke['id']}"}]
        assert samtycke["organization"] == [sip["author"]], "recorded by the kommun unit that wrote the SIP"
        assert _actors(samtycke, "IRCP") == [sip["author"]["reference"]]
        custodians = _actors(samtycke, "CST")
        assert "Organization/demo-org-region" in custodians
        assert all("partOf" not in known[c] for c in custodians), "the samtycke covers the region's vårdgivare"
        assert (samtycke["status"], sip["status"]) == (("proposed", "draft") if number % 24 == 9 else
                                                       ("active", "active"))


def test_the_sparrar_are_recorded_at_the_vardcentral_and_block_its_part() -> None:
    region = DemoGenerator(seed=1).region
    orgs = {f"Organization/{o['id']}": o for o in region.organizations}
    for resources, shared in _sharing().values():
        vc = resources[-1]["author"]
        hospital = resources[-1]["contributor"][0]
        for sparr in [*_of(shared, "inre-sparr"), *_of(shared, "yttre-sparr")]:
            assert sparr["organization"] == [vc]
            assert _actors(sparr, "CST") == [vc["reference"]] and _actors(sparr, "IRCP") == []
            assert sparr["status"] == "active"
        for _ in _of(shared, "inre-sparr"):  # inside one vårdgivare: the hospital is of the same
            assert region.provider(orgs[vc["reference"]]) is region.provider(orgs[hospital["reference"]])


class _Recorder:
    """A BundleProcessor that keeps the Bundles it is given."""

    def __init__(self) -> None:
        self.bundles: list[dict[str, Any]] = []

    async def process(self, _access: object, body: dict[str, Any], _prefer: object) -> None:
        self.bundles.append(body)


def test_load_demo_loads_the_sharing_in_a_transaction_of_its_own_after_its_agreement() -> None:
    recorder = _Recorder()
    count = asyncio.run(load_demo(cast(BundleProcessor, recorder), agreements=4))
    ids = [[e["resource"]["id"] for e in bundle["entry"]] for bundle in recorder.bundles]
    assert [b[0] for b in ids[1:]] == ["demo-pat-000000", "demo-consent-000000-1", "demo-pat-000001",
                                       "demo-pat-000002", "demo-pat-000003", "demo-consent-000003-1"]
    assert ids[2] == ["demo-consent-000000-1", "demo-sip-000000"]
    assert ids[-1] == ["demo-consent-000003-1", "demo-consent-000003-2", "demo-sip-000003"]
    assert count == sum(len(b) for b in ids)
    assert all(bundle["type"] == "transaction" for bundle in recorder.bundles)
