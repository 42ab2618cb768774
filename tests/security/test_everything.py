"""``Patient/{id}/$everything``: the patient's record as the caller may see it, paged to the end
(patientkontrakt/fhir/everything.py; docs/api.md).

The demo region's agreement ``TARGET`` (Vårdcentralen Björkbacken's; the hospital's medicine
clinic, another unit of Region Exempel, takes part; Hemsjukvården Exempelstad is another care
provider). What the operation shows is compared with what the same caller can read one by one,
and what it must not show (another provider's goal without samtycke, the agreement under an inre
spärr) is looked for on every page and in every ``total``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.domain.demo import DemoGenerator
from tests.conftest import BASE_URL, _dsn, demo_database, make_settings
from tests.security.conftest import World, _agreements
from tests.security.test_consent_matrix import consent

VC = "demo-org-vc-bjorkbacken"  # owns the agreement
CLINIC = "demo-org-med-lanssjukhuset"  # another unit of the same provider, takes part
HOMECARE = "demo-org-hemsjukvard-exempelstad"  # another provider
OTHER_UNIT = "demo-org-vc-strandvagen"  # takes no part
TARGET = 2
OTHER = 8  # Strandvägen's agreement: another patient
DIRECTORY = {"Practitioner", "PractitionerRole", "Organization"}


@pytest.fixture(scope="module")
def module_db() -> Iterator[str]:
    with demo_database(f"pk_everything_{os.getpid()}", 10) as url:
        yield url


@pytest.fixture(scope="module")
def world(module_db: str) -> World:
    generator = DemoGenerator(seed=1)
    return World(make_settings(module_db), generator, _agreements(generator)[:10])


@pytest.fixture(scope="module")
def app(module_db: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(module_db)), base_url=BASE_URL) as client:
        client.headers.update({"content-type": "application/fhir+json"})
        yield client


@pytest.fixture(scope="module")
def kommun_goal(world: World, app: TestClient) -> str:
    """A goal the hemsjukvård (another provider) writes about the patient: the region's units
    have no samtycke to see it."""
    patient = world.agreements[TARGET].patient
    goal = {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Kommunens mål"},
            "subject": {"reference": f"Patient/{patient}"},
            "expressedBy": {"reference": f"PractitionerRole/{world.role_at(HOMECARE, 'nurse')}"}}
    response = app.post("/fhir/Goal", json=goal, headers=nurse(world, HOMECARE))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def nurse(world: World, org: str, scope: str | None = None) -> dict[str, str]:
    role = world.role_at(org, "nurse")
    return world.staff(role) if scope is None else world.staff(role, scope)


def relative(url: str) -> str:
    return urlsplit(url)._replace(scheme="", netloc="").geturl()


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((relative(x["url"]) for x in bundle.get("link", []) if x["relation"] == relation), None)


def names(bundle: dict[str, Any]) -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e["search"]["mode"] == "match"]


def walk(app: TestClient, url: str, headers: dict[str, str], relation: str = "next") -> list[dict[str, Any]]:
    """Every page from ``url`` following ``relation`` links to the end."""
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        assert len(pages) < 200, "paging ends"
        response = app.get(next_url, headers=headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        next_url = link(pages[-1], relation)
    return pages


def everything(app: TestClient, patient: str, headers: dict[str, str], query: str = "_count=1000") -> list[str]:
    """Every resource the operation shows, paged; each page's total is the number of them all."""
    pages = walk(app, f"/fhir/Patient/{patient}/$everything?{query}", headers)
    shown = [name for page in pages for name in names(page)]
    assert len(shown) == len(set(shown)), "each resource once"
    for page in pages:
        assert page["resourceType"] == "Bundle" and page["type"] == "searchset"
        assert page["total"] == len(shown), (page["total"], len(shown))
        for entry in page.get("entry", []):
            if entry["search"]["mode"] == "outcome":  # what is not shown, and why: not a match
                continue
            resource = entry["resource"]
            assert entry["fullUrl"] == f"{BASE_URL}/fhir/{resource['resourceType']}/{resource['id']}"
    return shown


def compartment(url: str, patient: str) -> list[tuple[str, str]]:
    """Every current resource in the patient's compartment, read from the database."""
    async def fetch() -> list[tuple[str, str]]:
        conn = await asyncpg.connect(_dsn(url))
        try:
            rows = await conn.fetch("SELECT res_type, res_id FROM resource WHERE patient_id = $1 AND NOT deleted",
                                    patient)
            return [(r["res_type"], r["res_id"]) for r in rows]
        finally:
            await conn.close()
    return asyncio.run(fetch())


def readable(app: TestClient, headers: dict[str, str], keys: list[tuple[str, str]]) -> set[str]:
    found = set()
    for type_, id_ in keys:
        status = app.get(f"/fhir/{type_}/{id_}", headers=headers).status_code
        assert status in (200, 404), status
        if status == 200:
            found.add(f"{type_}/{id_}")
    return found


def log_entries(url: str, patient: str) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(_dsn(url))
        try:
            rows = await conn.fetch("SELECT interaction, request, resources, patient_id, outcome, status "
                                    "FROM audit_log WHERE patient_id = $1 ORDER BY seq", patient)
            return [dict(r) for r in rows]
        finally:
            await conn.close()
    return asyncio.run(fetch())


# -- what each caller is shown -------------------------------------------------------------------


@pytest.mark.parametrize("unit", [VC, CLINIC, HOMECARE])
def test_a_unit_gets_the_patients_resources_it_may_read_and_no_others(
        world: World, app: TestClient, module_db: str, kommun_goal: str, unit: str) -> None:
    patient = world.agreements[TARGET].patient
    headers = nurse(world, unit)
    shown = everything(app, patient, headers, "_count=7")
    own = {n for n in shown if n.split("/")[0] not in DIRECTORY}
    assert own == readable(app, headers, compartment(module_db, patient))
    assert f"Patient/{patient}" in shown
    if unit == HOMECARE:  # no samtycke: the kommun's own goal, not the region's agreement
        assert f"Goal/{kommun_goal}" in shown and f"CarePlan/{world.agreements[TARGET].plan}" not in shown
    else:
        assert f"Goal/{kommun_goal}" not in shown and f"CarePlan/{world.agreements[TARGET].plan}" in shown
    # the directory resources the record names: the agreement's unit and team members
    directory = {n for n in shown if n.split("/")[0] in DIRECTORY}
    assert directory == readable(app, headers, [tuple(n.split("/")) for n in directory])  # type: ignore[misc]
    if unit != HOMECARE:
        assert f"Organization/{VC}" in shown
        assert any(n.startswith("PractitionerRole/") for n in shown)
        assert any(n.startswith("Practitioner/") for n in shown)


def test_an_inre_sparr_hides_the_units_part_on_every_page_and_in_the_total(
        world: World, app: TestClient, module_db: str) -> None:
    a = world.agreements[TARGET]
    clinic = nurse(world, CLINIC)
    before = everything(app, a.patient, clinic, "_count=2")
    assert f"CarePlan/{a.plan}" in before and f"CareTeam/{a.team}" in before
    recorded = app.post("/fhir/Consent", json=consent(a.patient, "inre-sparr", "CST", VC), headers=nurse(world, VC))
    assert recorded.status_code == 201, recorded.text
    try:
        during = everything(app, a.patient, clinic, "_count=2")
        hidden = {f"CarePlan/{a.plan}", f"CareTeam/{a.team}", f"Goal/{a.goals[1]}"}
        assert not hidden & set(during), hidden & set(during)
        assert f"Patient/{a.patient}" in during and f"Goal/{a.patient_goal}" in during  # no provider's
        own = {n for n in during if n.split("/")[0] not in DIRECTORY}
        assert own == readable(app, clinic, compartment(module_db, a.patient))
    finally:
        body = {**recorded.json(), "status": "inactive"}
        revoked = app.put(f"/fhir/Consent/{body['id']}", json=body, headers=nurse(world, VC))
        assert revoked.status_code == 200, revoked.text
    assert f"CarePlan/{a.plan}" in everything(app, a.patient, clinic, "_count=2")


def test_a_patient_gets_their_own_everything_and_no_one_elses(world: World, app: TestClient, module_db: str) -> None:
    a, other = world.agreements[TARGET], world.agreements[OTHER]
    headers = world.patient(a.patient)
    shown = everything(app, a.patient, headers, "_count=5")
    own = {n for n in shown if n.split("/")[0] not in DIRECTORY}
    assert own == readable(app, headers, compartment(module_db, a.patient))
    assert {f"Patient/{a.patient}", f"CarePlan/{a.plan}", *(f"Goal/{g}" for g in a.goals)} <= set(shown)
    assert any(n.startswith("PractitionerRole/") for n in shown)
    refused = app.get(f"/fhir/Patient/{other.patient}/$everything", headers=headers)
    absent = app.get("/fhir/Patient/no-such-patient/$everything", headers=headers)
    assert refused.status_code == absent.status_code == 404, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert refused.text.replace(other.patient, "X") == absent.text.replace("no-such-patient", "X")


def test_a_patient_the_unit_may_not_see_is_answered_as_absent(world: World, app: TestClient) -> None:
    a = world.agreements[TARGET]
    headers = nurse(world, OTHER_UNIT)
    refused = app.get(f"/fhir/Patient/{a.patient}/$everything", headers=headers)
    absent = app.get("/fhir/Patient/no-such-patient/$everything", headers=headers)
    assert refused.status_code == absent.status_code == 404
    assert refused.text.replace(a.patient, "X") == absent.text.replace("no-such-patient", "X")
    by_post = app.post(f"/fhir/Patient/{a.patient}/$everything", headers=headers)
    assert by_post.status_code == 404


# -- the parameters ---------------------------------------------------------------------------------


def test_type_filters_and_a_type_without_scope_is_refused(world: World, app: TestClient) -> None:
    a = world.agreements[TARGET]
    headers = nurse(world, VC)
    shown = everything(app, a.patient, headers, "_type=Goal,Patient")
    assert {n.split("/")[0] for n in shown} == {"Goal", "Patient"}
    assert {f"Goal/{g}" for g in a.goals} <= set(shown)
    assert {n.split("/")[0] for n in everything(app, a.patient, headers, "_type=Organization")} == {"Organization"}
    unknown = app.get(f"/fhir/Patient/{a.patient}/$everything?_type=Observation", headers=headers)
    assert unknown.status_code == 400 and unknown.json()["issue"][0]["expression"] == ["_type"]
    no_goals = nurse(world, VC, "openid fhirUser user/Patient.rs user/CarePlan.rs user/CareTeam.rs")
    assert app.get(f"/fhir/Patient/{a.patient}/$everything?_type=Goal", headers=no_goals).status_code == 403
    left_out = everything(app, a.patient, no_goals)  # what the scopes do not cover is left out
    assert {n.split("/")[0] for n in left_out} == {"Patient", "CarePlan", "CareTeam"}
    no_patient = nurse(world, VC, "openid fhirUser user/Goal.rs")
    assert app.get(f"/fhir/Patient/{a.patient}/$everything", headers=no_patient).status_code == 403


def test_since_returns_only_what_changed(world: World, app: TestClient) -> None:
    a = world.agreements[TARGET]
    headers = nurse(world, VC)
    goal = app.get(f"/fhir/Goal/{a.goals[1]}", headers=headers).json()
    changed = app.put(f"/fhir/Goal/{goal['id']}", json={**goal, "description": {"text": "Ändrat mål"}},
                      headers=headers)
    assert changed.status_code == 200, changed.text
    since = changed.json()["meta"]["lastUpdated"]
    shown = everything(app, a.patient, headers, f"_since={since.replace('+', '%2B')}")
    assert f"Goal/{goal['id']}" in shown
    assert f"CarePlan/{a.plan}" not in shown
    bad = app.get(f"/fhir/Patient/{a.patient}/$everything?_since=yesterday", headers=headers)
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["_since"]


def test_start_and_end_are_ignored_and_the_bundle_says_so(world: World, app: TestClient) -> None:
    a = world.agreements[TARGET]
    headers = nurse(world, VC)
    bundle = app.get(f"/fhir/Patient/{a.patient}/$everything?start=2024-01-01&end=2024-12-31",
                     headers=headers).json()
    outcome = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert [i["expression"] for i in outcome[0]["issue"] if i["code"] != "suppressed"] == [["start"], ["end"]]
    assert set(names(bundle)) == set(everything(app, a.patient, headers))
    assert app.get(f"/fhir/Patient/{a.patient}/$everything?start=soon", headers=headers).status_code == 400
    strict = app.get(f"/fhir/Patient/{a.patient}/$everything?colour=blue",
                     headers={**headers, "prefer": "handling=strict"})
    assert strict.status_code == 400, strict.text


def test_post_takes_its_parameters_in_a_parameters_body(world: World, app: TestClient) -> None:
    a = world.agreements[TARGET]
    headers = nurse(world, VC)
    body = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Goal"},
                                                        {"name": "_count", "valueInteger": 1}]}
    response = app.post(f"/fhir/Patient/{a.patient}/$everything", json=body, headers=headers)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert len(names(bundle)) == 1 and names(bundle)[0].startswith("Goal/")
    assert bundle["total"] == len(everything(app, a.patient, headers, "_type=Goal"))
    assert link(bundle, "next") is not None  # paging links are GET links
    empty = app.post(f"/fhir/Patient/{a.patient}/$everything", headers=headers)
    assert empty.status_code == 200 and empty.json()["total"] == len(everything(app, a.patient, headers))
    for wrong in ({"resourceType": "Patient"},
                  {"resourceType": "Parameters", "parameter": [{"name": "_count", "valueInteger": 1,
                                                                "valueString": "1"}]},
                  {"resourceType": "Parameters", "parameter": [{"name": "_count", "valueInteger": -1}]}):
        refused = app.post(f"/fhir/Patient/{a.patient}/$everything", json=wrong, headers=headers)
        assert refused.status_code == 400, refused.text
        assert refused.json()["resourceType"] == "OperationOutcome"


# -- paging -----------------------------------------------------------------------------------------


def test_paging_reaches_every_resource_once_both_ways(world: World, app: TestClient) -> None:
    a = world.agreements[TARGET]
    headers = nurse(world, VC)
    whole = everything(app, a.patient, headers)
    pages = walk(app, f"/fhir/Patient/{a.patient}/$everything?_count=3", headers)
    forward = [n for page in pages for n in names(page)]
    assert forward == whole and len(pages) == -(-len(whole) // 3)
    assert all(len(names(page)) == 3 for page in pages[:-1])
    assert link(pages[0], "previous") is None and link(pages[-1], "next") is None
    last = link(pages[-1], "self")
    assert last is not None
    back = walk(app, last, headers, "previous")
    assert [n for page in reversed(back) for n in names(page)] == whole
    zero = app.get(f"/fhir/Patient/{a.patient}/$everything?_count=0", headers=headers).json()
    assert zero["total"] == len(whole) and "entry" not in zero


def test_paging_is_stable_while_the_record_changes(world: World, app: TestClient) -> None:
    """An update of what was already shown does not show it again, nor move what is still to come;
    what is created meanwhile comes last."""
    a = world.agreements[TARGET]
    headers = nurse(world, VC)
    whole = everything(app, a.patient, headers)
    first = app.get(f"/fhir/Patient/{a.patient}/$everything?_count=4", headers=headers).json()
    seen = names(first)
    for name in seen[:2]:
        type_, id_ = name.split("/")
        if type_ in ("Goal", "CarePlan"):
            current = app.get(f"/fhir/{name}", headers=headers).json()
            assert app.put(f"/fhir/{name}", json=current, headers=headers).status_code == 200
    new_goal = {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Nytt under tiden"},
                "subject": {"reference": f"Patient/{a.patient}"}, "expressedBy": {"reference": f"Patient/{a.patient}"}}
    created = app.post("/fhir/Goal", json=new_goal, headers=headers)
    assert created.status_code == 201, created.text
    next_url = link(first, "next")
    assert next_url is not None
    rest = [n for page in walk(app, next_url, headers) for n in names(page)]
    together = seen + rest
    assert len(together) == len(set(together)), "none twice"
    assert set(whole) <= set(together) and together[-1] == f"Goal/{created.json()['id']}"


def test_the_access_log_has_the_entry(world: World, app: TestClient, module_db: str) -> None:
    a = world.agreements[TARGET]
    before = len(log_entries(module_db, a.patient))
    everything(app, a.patient, nurse(world, VC), "_type=CarePlan,Patient")
    entries = log_entries(module_db, a.patient)[before:]
    assert [(e["interaction"], e["outcome"], e["status"]) for e in entries] == [("operation", "success", 200)]
    assert entries[0]["request"].startswith(f"Patient/{a.patient}/$everything?")
    assert f"CarePlan/{a.plan}" in json.loads(entries[0]["resources"])
    # the refused attempt of a unit that may not see the patient: logged with the patient
    app.get(f"/fhir/Patient/{a.patient}/$everything", headers=nurse(world, OTHER_UNIT))
    refused = log_entries(module_db, a.patient)[before + 1:]
    assert [(e["interaction"], e["outcome"], e["status"]) for e in refused] == [("operation", "refused", 404)]


def test_a_deleted_patient_is_gone(world: World, app: TestClient, module_db: str) -> None:
    from stdnum import luhn

    number = "19400101" + "123"
    body = {"resourceType": "Patient", "name": [{"family": "Borttagen", "given": ["Test"]}],
            "identifier": [{"system": "http://electronichealth.se/identifier/personnummer",
                            "value": number + luhn.calc_check_digit(number[2:])}]}
    headers = world.system(VC)
    created = app.post("/fhir/Patient", json=body, headers=headers)
    assert created.status_code == 201, created.text
    patient = created.json()["id"]
    assert everything(app, patient, headers, "_type=Patient") == [f"Patient/{patient}"]
    assert app.delete(f"/fhir/Patient/{patient}", headers=headers).status_code == 204
    gone = app.get(f"/fhir/Patient/{patient}/$everything", headers=headers)
    assert gone.status_code == 410 and gone.json()["resourceType"] == "OperationOutcome"
    assert [(e["interaction"], e["status"]) for e in log_entries(module_db, patient)][-1] == ("operation", 410)
