"""The demo region (patientkontrakt/domain/demo.py): loaded through the full write path and rules."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def count(client: TestClient, type_: str, **params: str) -> int:
    response = client.get(f"/fhir/{type_}", params={**params, "_summary": "count"})
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def test_load_demo_stores_region_and_agreements_through_the_rules(pk_client: TestClient, settings: Settings) -> None:
    agreements = len(PLAN_STATES)
    loaded = load(settings, agreements)
    region = DemoGenerator(seed=1).region.resources()
    assert loaded == len(region) + 6 * agreements  # Patient, CareTeam, three Goals, CarePlan each
    assert versions_stored(pk_client) == loaded

    totals = {type_: count(pk_client, type_) for type_ in RESOURCE_TYPES}
    assert sum(totals.values()) == loaded
    assert totals["Patient"] == totals["CarePlan"] == totals["CareTeam"] == agreements
    assert totals["Provenance"] == 0
    for type_, total in totals.items():
        assert count(pk_client, type_, _tag=HTEST) == total, f"every {type_} is tagged HTEST"

    for status in ("draft", "active", "on-hold", "completed", "revoked"):
        plans = search(pk_client, "CarePlan", status=status)
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
    region = len(DemoGenerator(seed=1).region.resources())
    assert f"demo region loaded: {region + 3 * 6} resources (3 agreements" in demo.stdout
    # the demo made the signing key, the access log's key and the demo EHR's key, and registered
    # the demo clients
    assert (tmp_path / "signing.pem").exists() and (tmp_path / "demo-ehr-key.pem").exists()
    assert (tmp_path / "patientkontrakt-audit-key.pem").exists()
    clients = _run("clients", "list", url=sqlite_database, cwd=tmp_path)
    assert sorted(line.split("\t")[0] for line in clients.stdout.splitlines()) == ["demo-ehr", "pk-mitt", "pk-personal"]
    settings = make_settings(sqlite_database, signing_key=tmp_path / "signing.pem")
    with TestClient(create_app(settings, care_unit_rules=False), base_url=BASE_URL,
                    headers={"authorization": f"Bearer {engine_token(settings)}"}) as client:
        assert versions_stored(client) == region + 3 * 6
        assert count(client, "CarePlan") == 3
        entries = client.get("/fhir/Patient/demo-pat-000000/$patientkontrakt").json()["entry"]
        assert [e["resource"]["resourceType"] for e in entries][:3] == ["Patient", "CarePlan", "CareTeam"]


def _provider(orgs: dict[str, dict[str, Any]], org: dict[str, Any]) -> dict[str, Any]:
    """The top of ``org``'s ``partOf`` chain: its vårdgivare (or kommun)."""
    while "partOf" in org:
        org = orgs[org["partOf"]["reference"].removeprefix("Organization/")]
    return org


def test_the_region_has_three_kinds_of_provider_and_a_private_vardcentral() -> None:
    region = DemoGenerator(seed=1).region
    orgs = {o["id"]: o for o in region.organizations}
    providers = [o for o in region.organizations if "partOf" not in o]
    kinds = {o["id"]: o["type"][0]["coding"][0]["code"] for o in providers}
    assert kinds == {"demo-org-region": "region", "demo-org-kommun-exempelstad": "kommun",
                     "demo-org-kommun-sjovik": "kommun", "demo-org-lakarhuset-angen": "privat-vardgivare"}

    angen = orgs[ANGEN]
    assert angen["name"] == "Ängens vårdcentral"
    assert _provider(orgs, angen)["id"] == "demo-org-lakarhuset-angen"
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
            assert _provider(orgs, unit.organization) is not unit.organization, "every unit has a provider"


def test_some_agreements_are_at_the_private_vardcentral_and_the_others_unchanged() -> None:
    plans = [resources[-1] for resources in DemoGenerator(seed=1).agreements(16)]
    at_angen = [n for n, plan in enumerate(plans) if plan["author"]["reference"] == f"Organization/{ANGEN}"]
    assert at_angen == [1]  # the docstring of demo.py names them for the tests that use them
    # the region's agreements the security tests rely on
    authors = {n: plan["author"]["reference"].removeprefix("Organization/demo-org-") for n, plan in enumerate(plans)}
    assert [n for n, a in authors.items() if a == "vc-bjorkbacken"] == [2, 3, 7, 10]
    assert [n for n, a in authors.items() if a == "vc-strandvagen"] == [5, 8, 9, 13, 15]
