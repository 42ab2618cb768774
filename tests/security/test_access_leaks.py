"""The leaks people miss: what a caller may not see must not show through includes, chains,
history, conditional writes, totals, version probes, transactions, operations or references.

The setting: agreement 2 of the demo region (Vårdcentralen Björkbacken) is the other unit's
agreement; the prober is a nurse at Vårdcentralen Strandvägen, which takes no part in it. Some
tests give Strandvägen an agreement of its own with the same patient, so the patient is visible
to both units while each unit's agreement stays its own.

Every test runs on PostgreSQL and on SQLite (the embedded default), since the rules are SQL.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from patientkontrakt.domain import codes
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.access import INTERNAL
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.fhir.search import engine
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.security.conftest import AUTHOR, OTHER_UNIT, STAFF_SCOPES, TARGET, World, settings_on_each_database

settings = settings_on_each_database  # every test here runs on PostgreSQL and on SQLite


def _put(world: World, *resources: dict[str, Any]) -> None:
    """Write as the service itself: the set-up of a test, not what it tests."""
    async def run() -> None:
        store = Store(create_engine(world.settings.database_url, pool_size=1))
        try:
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                for r in resources]}
            await BundleProcessor(build_service(world.settings, store)).process(INTERNAL, bundle, Preferences())
        finally:
            await store.dispose()
    asyncio.run(run())


def _get(app: TestClient, world: World, type_: str, id_: str) -> dict[str, Any]:
    response = app.get(f"/fhir/{type_}/{id_}", headers=world.system(AUTHOR))
    assert response.status_code == 200, response.text
    return dict(response.json())


def _ids(bundle: dict[str, Any], type_: str | None = None) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") != "outcome"
            and (type_ is None or e["resource"]["resourceType"] == type_)}


def _target_plan_and_team(app: TestClient, world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    """The target agreement's CarePlan and CareTeam as stored."""
    target = world.agreements[TARGET]
    return _get(app, world, "CarePlan", target.plan), _get(app, world, "CareTeam", target.team)


def _other_units_draft(app: TestClient, world: World) -> dict[str, Any]:
    """A draft agreement of Strandvägen for the target's patient (its own, empty team)."""
    plan, team = _target_plan_and_team(app, world)
    nurse = world.role_at(OTHER_UNIT, "nurse")
    own_team = {**{k: v for k, v in team.items() if k != "meta"}, "id": "strandvagen-team",
                "managingOrganization": [{"reference": f"Organization/{OTHER_UNIT}"}],
                "participant": [{"role": [{"coding": [{"system": p["role"][0]["coding"][0]["system"],
                                                        "code": "fast-vardkontakt"}]}],
                                 "member": {"reference": f"PractitionerRole/{nurse}"},
                                 "period": {"start": "2024-01-01"}} for p in team["participant"][:1]]}
    own_plan = {**{k: v for k, v in plan.items() if k not in ("meta", "goal", "activity", "contributor")},
                "id": "strandvagen-plan", "status": "draft", "author": {"reference": f"Organization/{OTHER_UNIT}"},
                "careTeam": [{"reference": "CareTeam/strandvagen-team"}]}
    _put(world, own_team, own_plan)
    return own_plan


def test_revinclude_from_a_shared_patient_shows_only_the_callers_agreement(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    _other_units_draft(app, world)
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    response = app.get("/fhir/Patient", params=[("_id", target.patient), ("_revinclude", "CarePlan:subject"),
                                                ("_revinclude", "Goal:subject"), ("_revinclude", "CareTeam:subject")],
                       headers=other)
    assert response.status_code == 200, response.text
    found = _ids(response.json())
    assert f"Patient/{target.patient}" in found  # visible to both units now
    assert "CarePlan/strandvagen-plan" in found and "CareTeam/strandvagen-team" in found
    assert f"CarePlan/{target.plan}" not in found and f"CareTeam/{target.team}" not in found
    assert not any(f"Goal/{g}" in found for g in target.goals)
    # the responsible unit sees its own agreement through the same search, and not Strandvägen's
    mine = _ids(app.get("/fhir/Patient", params=[("_id", target.patient), ("_revinclude", "CarePlan:subject")],
                        headers=world.staff(world.role_at(AUTHOR, "nurse"))).json())
    assert f"CarePlan/{target.plan}" in mine and "CarePlan/strandvagen-plan" not in mine


def test_include_never_adds_what_the_caller_may_not_see(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    own = _other_units_draft(app, world)
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    found = _ids(app.get("/fhir/CarePlan", params=[("_id", own["id"]), ("_include", "CarePlan:care-team"),
                                                   ("_include", "CarePlan:subject"),
                                                   ("_revinclude:iterate", "CarePlan:subject")],
                         headers=other).json())
    assert {"CarePlan/strandvagen-plan", "CareTeam/strandvagen-team", f"Patient/{target.patient}"} <= found
    assert f"CarePlan/{target.plan}" not in found


def test_a_chained_search_cannot_reach_another_units_agreement(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    patient = _get(app, world, "Patient", target.patient)
    number = patient["identifier"][0]["value"]
    criteria = {"patient.identifier": f"http://electronichealth.se/identifier/personnummer|{number}"}
    author = world.staff(world.role_at(AUTHOR, "nurse"))
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    assert _ids(app.get("/fhir/CarePlan", params=criteria, headers=author).json()) == {f"CarePlan/{target.plan}"}
    assert _ids(app.get("/fhir/CarePlan", params=criteria, headers=other).json()) == set()
    assert _ids(app.get("/fhir/Goal", params=criteria, headers=other).json()) == set()
    # a chain whose target the caller may not see matches nothing, even from a visible resource
    org = {"organization": f"Organization/{AUTHOR}"}
    assert app.get("/fhir/PractitionerRole", params=org, headers=other).json()["total"] > 0  # directory: visible
    assert _ids(app.get("/fhir/CarePlan", params={"subject:Patient.name": patient["name"][0]["family"],
                                                 "_id": target.plan}, headers=other).json()) == set()


def test_history_shows_nothing_of_another_units_agreement(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    author = world.staff(world.role_at(AUTHOR, "nurse"))
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    assert app.get(f"/fhir/CarePlan/{target.plan}/_history", headers=author).status_code == 200
    refused = app.get(f"/fhir/CarePlan/{target.plan}/_history", headers=other)
    assert refused.status_code == 404 and refused.json()["resourceType"] == "OperationOutcome"
    assert app.get(f"/fhir/CarePlan/{target.plan}/_history/1", headers=other).status_code == 404
    type_history = app.get("/fhir/CarePlan/_history", params={"_count": "100"}, headers=other).json()
    assert f"CarePlan/{target.plan}" not in _ids(type_history)
    strandvagen = {f"CarePlan/{a.plan}" for a in world.by_author(OTHER_UNIT)}
    assert _ids(type_history) == strandvagen and type_history["total"] == len(strandvagen)
    system_history = app.get("/fhir/_history", params={"_count": "1000"}, headers=other).json()
    assert not any(f"{t}/{i}" in _ids(system_history) for t, i in
                   (("CarePlan", target.plan), ("CareTeam", target.team), ("Goal", target.goals[1])))


def test_the_provenance_of_a_change_stays_with_the_agreement(world: World, app: TestClient) -> None:
    """A change of fast vårdkontakt leaves a Provenance (here the one the client sends in
    X-Provenance); the units of the agreement see it, no other unit does."""
    target = world.agreements[TARGET]
    author = world.staff(world.role_at(AUTHOR, "nurse"))
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    team = _get(app, world, "CareTeam", target.team)
    nurses = [r["id"] for r in world.generator.region.roles
              if r["organization"]["reference"] == f"Organization/{AUTHOR}"
              and r["code"][0]["coding"][0]["code"] == "nurse"]
    contact = next(p for p in team["participant"]
                   if any(c["code"] == codes.FAST_VARDKONTAKT for r in p["role"] for c in r["coding"])
                   and "end" not in p.get("period", {}))
    new = next(n for n in nurses if f"PractitionerRole/{n}" != contact["member"]["reference"])
    team["participant"] = [p for p in team["participant"] if p is not contact] + [
        {**contact, "member": {"reference": f"PractitionerRole/{new}"}, "period": {"start": "2026-01-01"}}]
    given = {"resourceType": "Provenance", "recorded": "2026-01-02T10:00:00Z",
             "agent": [{"who": {"reference": f"PractitionerRole/{new}"}}],
             "reason": [{"text": "Patienten bad om en ny fast vårdkontakt"}]}
    changed = app.put(f"/fhir/CareTeam/{target.team}", json=team,
                      headers={**author, "X-Provenance": json.dumps(given)})
    assert changed.status_code == 200, changed.text
    seen = app.get("/fhir/Provenance", params={"target": f"CareTeam/{target.team}"}, headers=author)
    assert seen.status_code == 200, seen.text
    [provenance] = [e["resource"] for e in seen.json()["entry"]]
    assert provenance["reason"] == given["reason"]
    assert app.get(f"/fhir/Provenance/{provenance['id']}", headers=author).status_code == 200
    assert app.get(f"/fhir/Provenance/{provenance['id']}", headers=other).status_code == 404
    assert f"Provenance/{provenance['id']}" not in _ids(app.get("/fhir/Provenance", headers=other).json())
    assert f"Provenance/{provenance['id']}" not in _ids(
        app.get("/fhir/_history", params={"_count": "1000"}, headers=other).json())
    assert f"Provenance/{provenance['id']}" in _ids(
        app.get("/fhir/_history", params={"_count": "1000"}, headers=author).json())
    # the Provenance of one of the agreement's goals stays with the agreement too
    goal = _get(app, world, "Goal", target.goals[1])
    changed = {**{k: v for k, v in goal.items() if k != "meta"}, "description": {"text": "Ändrat mål"}}
    written = app.put(f"/fhir/Goal/{goal['id']}", json=changed, headers={**author, "X-Provenance": json.dumps(given)})
    assert written.status_code == 200, written.text
    [record] = [e["resource"] for e in app.get("/fhir/Provenance", params={"target": f"Goal/{goal['id']}"},
                                               headers=author).json()["entry"]]
    assert record["target"] == [{"reference": f"Goal/{goal['id']}/_history/{written.json()['meta']['versionId']}"}]
    assert app.get(f"/fhir/Provenance/{record['id']}", headers=other).status_code == 404
    assert "entry" not in app.get("/fhir/Provenance", params={"target": f"Goal/{goal['id']}"}, headers=other).json()


def test_only_the_responsible_unit_hands_an_agreement_over(world: World, app: TestClient) -> None:
    """A unit that takes part in an agreement may change it, but not make itself responsible."""
    target = world.agreements[TARGET]
    contributor = target.contributors[0]
    plan = {k: v for k, v in _get(app, world, "CarePlan", target.plan).items() if k != "meta"}
    taken = {**plan, "author": {"reference": f"Organization/{contributor}"}}
    refused = app.put(f"/fhir/CarePlan/{target.plan}", json=taken, headers=world.system(contributor))
    assert refused.status_code == 403, refused.text
    assert "ansvarar" in refused.text
    assert _get(app, world, "CarePlan", target.plan)["author"] == plan["author"]
    handed = app.put(f"/fhir/CarePlan/{target.plan}", json=taken, headers=world.system(AUTHOR))
    assert handed.status_code == 200, handed.text
    assert app.get(f"/fhir/CarePlan/{target.plan}", headers=world.system(contributor)).json()["author"] == \
        taken["author"]


def test_totals_count_only_what_the_caller_may_see(world: World, app: TestClient) -> None:
    for unit in (AUTHOR, OTHER_UNIT):
        headers = world.staff(world.role_at(unit, "nurse"))
        expected = len(world.by_author(unit))
        for params in ({"_count": "0"}, {"_summary": "count"}, {"_total": "accurate", "_count": "1"}):
            assert app.get("/fhir/CarePlan", params=params, headers=headers).json()["total"] == expected, params


def test_version_probes_get_404_not_412(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    plan = _get(app, world, "CarePlan", target.plan)
    body = {k: v for k, v in plan.items() if k != "meta"}
    for etag in ('W/"1"', 'W/"999"'):
        probe = {**other, "if-match": etag}
        assert app.put(f"/fhir/CarePlan/{target.plan}", json=body, headers=probe).status_code == 404
        assert app.delete(f"/fhir/CarePlan/{target.plan}", headers=probe).status_code == 404
    assert _get(app, world, "CarePlan", target.plan)["meta"]["versionId"] == plan["meta"]["versionId"]


def test_conditional_writes_do_not_match_what_the_caller_may_not_see(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    patient = _get(app, world, "Patient", target.patient)
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    number = patient["identifier"][0]["value"]
    body = {k: v for k, v in patient.items() if k not in ("meta", "id", "managingOrganization")}
    # conditional update: the hidden patient is not matched, so Strandvägen registers its own record
    created = app.put("/fhir/Patient", params={"identifier": f"http://electronichealth.se/identifier/personnummer|{number}"},
                      json=body, headers=other)
    assert created.status_code == 201, created.text
    assert created.json()["id"] != target.patient
    assert created.json()["managingOrganization"]["reference"] == f"Organization/{OTHER_UNIT}"
    assert _get(app, world, "Patient", target.patient)["meta"]["versionId"] == patient["meta"]["versionId"]
    # conditional create: likewise a record of its own, not the hidden one
    again = app.post("/fhir/Patient", json=body, headers={**other, "if-none-exist": f"_id={target.patient}"})
    assert again.status_code == 201 and again.json()["id"] not in (target.patient, created.json()["id"])
    # conditional delete of the hidden agreement: no match
    assert app.delete("/fhir/CarePlan", params={"_id": target.plan}, headers=other).status_code == 404
    assert _get(app, world, "CarePlan", target.plan)["status"] == "active"
    # a body naming the hidden id cannot overwrite it
    plan = _get(app, world, "CarePlan", target.plan)
    hijack = app.put("/fhir/CarePlan", params={"_id": "nothing-matches"}, json={**plan, "title": "x"}, headers=other)
    assert hijack.status_code == 404
    assert _get(app, world, "CarePlan", target.plan)["title"] == plan["title"]


def test_a_transaction_with_one_entry_outside_access_stores_nothing(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    own = world.by_author(OTHER_UNIT)[0]
    before = app.get("/fhir/Goal", params={"patient": own.patient, "_summary": "count"}, headers=other).json()["total"]
    goal = {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Nytt mål"},
            "subject": {"reference": f"Patient/{own.patient}"},
            "expressedBy": {"reference": f"PractitionerRole/{world.role_at(OTHER_UNIT, 'nurse')}"}}
    plan = _get(app, world, "CarePlan", target.plan)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:4f0c0e4e-0000-4000-8000-000000000001", "resource": goal,
         "request": {"method": "POST", "url": "Goal"}},
        {"resource": {**{k: v for k, v in plan.items() if k != "meta"}, "title": "Kapat"},
         "request": {"method": "PUT", "url": f"CarePlan/{target.plan}"}},
    ]}
    response = app.post("/fhir", json=bundle, headers=other)
    assert response.status_code == 404, response.text
    assert response.json()["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    after = app.get("/fhir/Goal", params={"patient": own.patient, "_summary": "count"}, headers=other).json()["total"]
    assert after == before
    assert _get(app, world, "CarePlan", target.plan)["title"] == plan["title"]
    # the same transaction without the foreign entry goes through
    bundle["entry"] = bundle["entry"][:1]
    assert app.post("/fhir", json=bundle, headers=other).status_code == 200


def test_batch_entries_outside_access_fail_alone(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    own = world.by_author(OTHER_UNIT)[0]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"CarePlan/{target.plan}"}},
        {"request": {"method": "GET", "url": f"CarePlan/{own.plan}"}},
        {"request": {"method": "DELETE", "url": f"CarePlan/{target.plan}"}},
    ]}
    statuses = [e["response"]["status"] for e in app.post("/fhir", json=bundle, headers=other).json()["entry"]]
    assert [s.split()[0] for s in statuses] == ["404", "200", "404"]


def test_references_to_what_the_caller_may_not_see_are_refused_like_missing_ones(world: World,
                                                                                 app: TestClient) -> None:
    """Naming another unit's team or goal in one's own agreement would make them visible: refused."""
    target = world.agreements[TARGET]
    other = world.staff(world.role_at(OTHER_UNIT, "nurse"))
    own = world.by_author(OTHER_UNIT)[0]
    plan = app.get(f"/fhir/CarePlan/{own.plan}", headers=other).json()
    body = {k: v for k, v in plan.items() if k != "meta"}
    answers = []
    for change in ({"careTeam": [{"reference": f"CareTeam/{target.team}"}]},
                   {"goal": [*plan.get("goal", []), {"reference": f"Goal/{target.goals[1]}"}]},
                   {"careTeam": [{"reference": "CareTeam/nothing"}]}):
        response = app.put(f"/fhir/CarePlan/{own.plan}", json={**body, **change}, headers=other)
        assert response.status_code == 422, response.text
        answers.append(response.json()["issue"][0])
    hidden, _, missing = answers
    assert "does not exist" in hidden["diagnostics"] and "does not exist" in answers[1]["diagnostics"]
    # a hidden team and a missing one get the same answer
    assert hidden["diagnostics"].replace(target.team, "X") == missing["diagnostics"].replace("nothing", "X")
    assert hidden["details"] == missing["details"] or hidden["details"]["text"].replace(target.team, "X") == \
        missing["details"]["text"].replace("nothing", "X")


def test_patientkontrakt_operation_obeys_the_rules(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    cases = [
        (world.staff(world.role_at(AUTHOR, "nurse")), 200), (world.staff(world.role_at(OTHER_UNIT, "nurse")), 404),
        (world.patient(target.patient), 200), (world.patient(world.agreements[8].patient), 404),
    ]
    for headers, status in cases:
        for path in (f"/fhir/Patient/{target.patient}/$patientkontrakt",
                     f"/fhir/CarePlan/{target.plan}/$patientkontrakt"):
            response = app.get(path, headers=headers)
            assert response.status_code == status, (path, response.text)
            if status == 200:
                found = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in response.json()["entry"]}
                assert f"CarePlan/{target.plan}" in found and f"CareTeam/{target.team}" in found


def test_a_new_agreement_gets_the_callers_unit_as_author(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    author = world.staff(world.role_at(AUTHOR, "nurse"))
    plan = _get(app, world, "CarePlan", target.plan)
    body = {k: v for k, v in plan.items() if k not in ("meta", "id", "goal", "activity")}
    created = app.post("/fhir/CarePlan", json={**body, "status": "draft",
                                               "author": {"reference": f"Organization/{OTHER_UNIT}"}}, headers=author)
    assert created.status_code == 201, created.text
    assert created.json()["author"]["reference"] == f"Organization/{AUTHOR}"


def test_scopes_limit_types_and_interactions(world: World, app: TestClient) -> None:
    target = world.agreements[TARGET]
    role = world.role_at(AUTHOR, "nurse")
    plans_only = world.staff(role, scope="user/CarePlan.rs")
    assert app.get(f"/fhir/CarePlan/{target.plan}", headers=plans_only).status_code == 200
    assert app.get(f"/fhir/Patient/{target.patient}", headers=plans_only).status_code == 403
    plan = _get(app, world, "CarePlan", target.plan)
    body = {k: v for k, v in plan.items() if k != "meta"}
    assert app.put(f"/fhir/CarePlan/{target.plan}", json=body, headers=plans_only).status_code == 403
    # an include naming a type the scopes do not cover is refused; one that does not name it
    # leaves those resources out
    assert app.get("/fhir/CarePlan", params={"_include": "CarePlan:subject:Patient"},
                   headers=plans_only).status_code == 403
    included = app.get("/fhir/CarePlan", params={"_include": "CarePlan:subject", "_id": target.plan},
                       headers=plans_only)
    assert included.status_code == 200 and _ids(included.json()) == {f"CarePlan/{target.plan}"}
    # v1 scopes
    read_only = world.staff(role, scope="user/*.read")
    assert app.get(f"/fhir/CareTeam/{target.team}", headers=read_only).status_code == 200
    assert app.put(f"/fhir/CarePlan/{target.plan}", json=body, headers=read_only).status_code == 403
    write = world.staff(role, scope="user/*.read user/CarePlan.write")
    renamed = {**body, "title": "Ny titel"}
    assert app.put(f"/fhir/CarePlan/{target.plan}", json=renamed, headers=write).status_code == 200
    # patient/ scopes do not work for staff, user/ scopes not for patients
    assert app.get(f"/fhir/CarePlan/{target.plan}", headers=world.staff(role, scope="patient/*.rs")).status_code == 403
    assert app.get(f"/fhir/CarePlan/{target.plan}",
                   headers=world.patient(target.patient, scope="user/*.rs")).status_code == 403


def test_a_scope_narrowed_by_a_query_sees_only_matching_resources(world: World, app: TestClient) -> None:
    role = world.role_at(AUTHOR, "nurse")
    active_only = world.staff(role, scope="user/CarePlan.rs?status=active user/CarePlan.u?status=active")
    plans = world.by_author(AUTHOR)
    active = [a for a in plans if a.status == "active"]
    inactive = [a for a in plans if a.status != "active"]
    assert active and inactive
    found = _ids(app.get("/fhir/CarePlan", params={"_count": "50"}, headers=active_only).json())
    assert found == {f"CarePlan/{a.plan}" for a in active}
    assert app.get(f"/fhir/CarePlan/{inactive[0].plan}", headers=active_only).status_code == 404
    assert app.get(f"/fhir/CarePlan/{active[0].plan}", headers=active_only).status_code == 200
    # an update that would take the agreement out of the scope's reach is refused and rolled back
    plan = _get(app, world, "CarePlan", active[0].plan)
    body = {k: v for k, v in plan.items() if k != "meta"}
    moved = app.put(f"/fhir/CarePlan/{active[0].plan}", json={**body, "status": "on-hold"}, headers=active_only)
    assert moved.status_code == 403, moved.text
    assert _get(app, world, "CarePlan", active[0].plan)["status"] == "active"


def test_a_narrowed_scope_sees_no_version_outside_it(world: World, app: TestClient) -> None:
    """The red team's finding: a ``CarePlan.rs?status=active`` token read a non-active older
    version through ``_history/n``. A narrowed scope admits a resource by its current content,
    so such a token sees current versions only: vread, instance, type and system history, and
    a Bundle's GET of a version."""
    role = world.role_at(AUTHOR, "nurse")
    full = world.staff(role)
    active_only = world.staff(role, scope="user/CarePlan.rs?status=active")
    plan_id = next(a.plan for a in world.by_author(AUTHOR) if a.status == "active")
    body = {k: v for k, v in _get(app, world, "CarePlan", plan_id).items() if k != "meta"}
    for status in ("on-hold", "active"):  # version 2 is on hold, version 3 active again
        assert app.put(f"/fhir/CarePlan/{plan_id}", json={**body, "status": status}, headers=full).status_code == 200
    assert app.get(f"/fhir/CarePlan/{plan_id}/_history/2", headers=full).json()["status"] == "on-hold"
    assert app.get(f"/fhir/CarePlan/{plan_id}/_history/3", headers=active_only).status_code == 200
    for version in ("1", "2"):
        refused = app.get(f"/fhir/CarePlan/{plan_id}/_history/{version}", headers=active_only)
        assert refused.status_code == 404 and refused.json()["resourceType"] == "OperationOutcome"
    for path in (f"/fhir/CarePlan/{plan_id}/_history", "/fhir/CarePlan/_history", "/fhir/_history"):
        history = app.get(path, params={"_count": "1000"}, headers=active_only).json()
        versions = [e["resource"]["meta"]["versionId"] for e in history["entry"]
                    if e["resource"]["id"] == plan_id]
        assert versions == ["3"], (path, versions)
        assert all(e["resource"]["status"] == "active" for e in history["entry"]), path
        assert history["total"] == len(history["entry"]), path
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "GET", "url": f"CarePlan/{plan_id}/_history/{v}"}} for v in "23"]}
    answers = app.post("/fhir", json=bundle, headers=active_only).json()["entry"]
    assert [e["response"]["status"].split()[0] for e in answers] == ["404", "200"]
    # the other side: without the narrowing every version is there
    full_history = app.get(f"/fhir/CarePlan/{plan_id}/_history", headers=full).json()
    assert [e["resource"]["meta"]["versionId"] for e in full_history["entry"]] == ["3", "2", "1"]


def test_a_patient_without_an_agreement_cannot_add_goals(world: World, app: TestClient) -> None:
    lonely = {"resourceType": "Patient", "id": "utan-avtal", "active": True,
              "identifier": [{"system": "http://electronichealth.se/identifier/personnummer", "value": "191212121212"}],
              "name": [{"family": "Tolvansson", "given": ["Tolvan"]}]}
    _put(world, lonely)
    goal = {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Bli starkare"},
            "subject": {"reference": "Patient/utan-avtal"}, "expressedBy": {"reference": "Patient/utan-avtal"}}
    response = app.post("/fhir/Goal", json=goal, headers=world.patient("utan-avtal"))
    assert response.status_code == 404, response.text
    assert "inget patientkontrakt" in response.json()["issue"][0]["details"]["text"]
    # the same goal from a patient who has an agreement is accepted
    target = world.agreements[TARGET]
    own = {**goal, "subject": {"reference": f"Patient/{target.patient}"},
           "expressedBy": {"reference": f"Patient/{target.patient}"}}
    assert app.post("/fhir/Goal", json=own, headers=world.patient(target.patient)).status_code == 201


def test_staff_scopes_are_those_of_the_demo_pages(world: World, app: TestClient) -> None:
    """The scopes the demo registers for the staff pages are enough for the staff's work."""
    target = world.agreements[TARGET]
    headers = world.staff(world.role_at(AUTHOR, "nurse"), scope=STAFF_SCOPES)
    assert app.get(f"/fhir/Patient/{target.patient}/$patientkontrakt", headers=headers).status_code == 200
    assert app.get("/fhir/AuditEvent", params={"patient": target.patient}, headers=headers).status_code == 200


def test_a_search_of_a_units_agreements_starts_from_the_unit_and_finds_what_the_rule_admits(
        world: World, app: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit's search of CarePlan starts from the index entries that name the unit
    (``Access.reach``) instead of testing every agreement of the region against the rule. Both
    ways must find the same agreements, for every unit and every way of taking part: author,
    contributor, a team the unit manages or is a member of, a team member's PractitionerRole."""
    target = world.agreements[TARGET]
    plan, team = _target_plan_and_team(app, world)
    member = world.role_at(OTHER_UNIT, "nurse")
    via_role = {**{k: v for k, v in team.items() if k != "meta"}, "id": "team-with-a-member-from-strandvagen",
                "managingOrganization": [{"reference": f"Organization/{AUTHOR}"}],
                "participant": [*team["participant"], {**team["participant"][0],
                                                        "member": {"reference": f"PractitionerRole/{member}"}}]}
    _put(world, via_role, {**{k: v for k, v in plan.items() if k not in ("meta", "contributor")},
                           "id": "plan-via-role", "status": "draft",
                           "careTeam": [{"reference": "CareTeam/team-with-a-member-from-strandvagen"}]})
    chosen: list[int | None] = []
    choose = engine.SearchEngine.driver

    async def recording(self: engine.SearchEngine, *args: Any) -> int | None:
        chosen.append(await choose(self, *args))
        return chosen[-1]

    async def rule_only(self: engine.SearchEngine, *args: Any) -> int | None:
        return None

    units = sorted({a.author for a in world.agreements} | {c for a in world.agreements for c in a.contributors})
    assert OTHER_UNIT in units and len(units) > 3
    for org in units:
        headers = world.system(org)
        for params in ([("_count", "100")], [("status", "active"), ("_count", "100")],
                       [("_summary", "count")]):
            monkeypatch.setattr(engine.SearchEngine, "driver", recording)
            chosen.clear()
            reached = app.get("/fhir/CarePlan", params=params, headers=headers).json()
            if params[0][0] != "status":
                assert chosen == [engine.REACH], (org, params)
            monkeypatch.setattr(engine.SearchEngine, "driver", rule_only)
            tested = app.get("/fhir/CarePlan", params=params, headers=headers).json()
            assert _ids(reached) == _ids(tested) and reached.get("total") == tested.get("total"), (org, params)
        found = _ids(app.get("/fhir/CarePlan", params={"_count": "100"}, headers=headers).json())
        assert {f"CarePlan/{a.plan}" for a in world.by_author(org)} <= found, org
        if org == OTHER_UNIT:  # through its nurse's role only; the agreement copied stays hidden
            assert "CarePlan/plan-via-role" in found and f"CarePlan/{target.plan}" not in found
