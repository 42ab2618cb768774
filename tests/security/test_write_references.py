"""A write cannot reach what its caller may not see, whichever door it comes through.

For every write interaction (create, update, conditional create and update, delete and
conditional delete), sent as a single request, as a batch entry and as a transaction entry (alone,
beside entries it references by ``urn:uuid``, and with conditional references), a reference to a
resource outside the caller's view is refused like a reference to nothing, and leaves nothing
behind: no new version anywhere, and the hidden resources stay hidden. The checks run against
what the caller could see *before* the write, never against rows the write itself just stored.

The setting is that of ``test_access_leaks``: agreement 2 of the demo region belongs to
Vårdcentralen Björkbacken; the prober acts for Vårdcentralen Strandvägen, which takes no part in
it but has agreements of its own. Every test runs on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from patientkontrakt.config import Settings
from patientkontrakt.domain.identifiers import PERSONNUMMER
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.security.conftest import AUTHOR, OTHER_UNIT, TARGET, World, settings_on_each_database

settings = settings_on_each_database  # every test here runs on PostgreSQL and on SQLite


def _stored_versions(settings: Settings) -> int:
    """Every version of every resource on the server: a refused write adds none."""
    async def count() -> int:
        store = Store(create_engine(settings.database_url, pool_size=1))
        try:
            async with store.reading() as unit:
                return int((await unit.conn.execute(sa.text("SELECT count(*) FROM resource_version"))).scalar_one())
        finally:
            await store.dispose()
    return asyncio.run(count())


def _body(app: TestClient, headers: dict[str, str], type_: str, id_: str) -> dict[str, Any]:
    response = app.get(f"/fhir/{type_}/{id_}", headers=headers)
    assert response.status_code == 200, response.text
    return {k: v for k, v in response.json().items() if k != "meta"}


@dataclass
class Write:
    """One write interaction: ``url`` relative to the FHIR base, ``resource`` for POST/PUT."""

    name: str
    method: str
    url: str
    resource: dict[str, Any] | None = None
    if_none_exist: str | None = None
    companions: list[dict[str, Any]] = field(default_factory=list)  # other transaction entries


def _answer(status: int, outcome: dict[str, Any] | None) -> tuple[int, str | None]:
    """The status and, for a refusal, the code of the OperationOutcome's first issue."""
    if status < 400:
        return status, None
    assert outcome is not None and outcome["resourceType"] == "OperationOutcome", outcome
    return status, str(outcome["issue"][0]["code"])


def _single(app: TestClient, headers: dict[str, str], write: Write) -> tuple[int, str | None]:
    extra = {"if-none-exist": write.if_none_exist} if write.if_none_exist else {}
    response = app.request(write.method, f"/fhir/{write.url}", json=write.resource, headers={**headers, **extra})
    return _answer(response.status_code, response.json() if response.content else None)


def _entry(write: Write) -> dict[str, Any]:
    request: dict[str, Any] = {"method": write.method, "url": write.url}
    if write.if_none_exist:
        request["ifNoneExist"] = write.if_none_exist
    entry: dict[str, Any] = {"request": request}
    if write.resource is not None:
        entry["resource"] = write.resource
    return entry


def _bundle(app: TestClient, headers: dict[str, str], kind: str, entries: list[dict[str, Any]]
            ) -> tuple[int, str | None]:
    response = app.post("/fhir", json={"resourceType": "Bundle", "type": kind, "entry": entries}, headers=headers)
    if kind == "batch":
        assert response.status_code == 200, response.text
        answer = response.json()["entry"][0]["response"]
        return _answer(int(answer["status"].split()[0]), answer.get("outcome"))
    return _answer(response.status_code, response.json())


Deliver = Callable[[TestClient, dict[str, str], Write], tuple[int, str | None]]
DELIVERIES: dict[str, Deliver] = {
    "single request": _single,
    "batch": lambda app, headers, write: _bundle(app, headers, "batch", [_entry(write)]),
    "transaction": lambda app, headers, write: _bundle(app, headers, "transaction",
                                                       [_entry(write), *write.companions]),
}


class Probe:
    """The prober (Strandvägen), its own agreement, and the hidden agreement 2 of Björkbacken."""

    def __init__(self, world: World, app: TestClient) -> None:
        self.world, self.app = world, app
        self.target = world.agreements[TARGET]
        self.own = world.by_author(OTHER_UNIT)[0]
        self.headers = world.staff(world.role_at(OTHER_UNIT, "nurse"))
        self.author = world.staff(world.role_at(AUTHOR, "nurse"))
        self.plan = _body(app, self.headers, "CarePlan", self.own.plan)
        self.team = _body(app, self.headers, "CareTeam", self.own.team)
        self.hidden = [("Patient", self.target.patient), ("CarePlan", self.target.plan),
                       ("CareTeam", self.target.team), *(("Goal", g) for g in self.target.goals)]
        for type_, id_ in self.hidden:
            assert app.get(f"/fhir/{type_}/{id_}", headers=self.headers).status_code == 404
            assert app.get(f"/fhir/{type_}/{id_}", headers=self.author).status_code == 200
        pnr = _body(app, self.author, "Patient", self.target.patient)["identifier"][0]["value"]
        self.hidden_patient_criteria = f"Patient?identifier={PERSONNUMMER}|{pnr}"

    def still_hidden(self) -> None:
        for type_, id_ in self.hidden:
            assert self.app.get(f"/fhir/{type_}/{id_}", headers=self.headers).status_code == 404, (type_, id_)

    # -- resources naming a hidden one -----------------------------------------------------

    def new_team(self, subject: str) -> dict[str, Any]:
        """A valid new team of the caller's unit (its nurse as fast vårdkontakt) for ``subject``."""
        member = copy.deepcopy(self.team["participant"][0])
        member["member"] = {"reference": f"PractitionerRole/{self.world.role_at(OTHER_UNIT, 'nurse')}"}
        return {"resourceType": "CareTeam", "status": "proposed", "subject": {"reference": subject},
                "participant": [member], "managingOrganization": [{"reference": f"Organization/{OTHER_UNIT}"}]}

    def new_plan(self, team: str, goals: list[str] | None = None, subject: str | None = None) -> dict[str, Any]:
        """A new draft agreement of the caller's unit; its patient is the caller's own unless given."""
        plan = {k: v for k, v in copy.deepcopy(self.plan).items()
                if k not in ("id", "goal", "activity", "contributor", "identifier")}
        plan.update(status="draft", careTeam=[{"reference": team}])
        if subject is not None:
            plan["subject"] = {"reference": subject}
        if goals:
            plan["goal"] = [{"reference": g} for g in goals]
        return plan

    def own_plan_with_goal(self, goal: str) -> dict[str, Any]:
        plan = copy.deepcopy(self.plan)
        plan["goal"] = [*plan.get("goal", []), {"reference": goal}]
        return plan

    def own_team_about(self, subject: str) -> dict[str, Any]:
        return {**copy.deepcopy(self.team), "subject": {"reference": subject}}

    def new_goal(self, subject: str) -> dict[str, Any]:
        return {"resourceType": "Goal", "lifecycleStatus": "proposed", "description": {"text": "Nytt mål"},
                "subject": {"reference": subject},
                "expressedBy": {"reference": f"PractitionerRole/{self.world.role_at(OTHER_UNIT, 'nurse')}"}}

    def writes(self) -> list[Write]:
        """Every write form, each naming something hidden (as a plain, urn:uuid or conditional
        reference) or aimed at something hidden."""
        t = self.target
        hidden_patient, hidden_team, hidden_goal = f"Patient/{t.patient}", f"CareTeam/{t.team}", f"Goal/{t.goals[1]}"
        urn = "urn:uuid:0e6a1a52-7c4b-4a8e-9d55-000000000001"
        own_goal = {"fullUrl": urn, "resource": self.new_goal(f"Patient/{self.own.patient}"),
                    "request": {"method": "POST", "url": "Goal"}}
        nothing = "identifier=http://example.org/pk-test|no-such-thing"
        return [
            Write("create CareTeam about a hidden patient", "POST", "CareTeam", self.new_team(hidden_patient)),
            Write("create Goal about a hidden patient", "POST", "Goal", self.new_goal(hidden_patient)),
            Write("create CarePlan naming a hidden CareTeam and Goal", "POST", "CarePlan",
                  self.new_plan(hidden_team, [hidden_goal], subject=hidden_patient)),
            Write("create CarePlan naming a hidden CareTeam", "POST", "CarePlan", self.new_plan(hidden_team)),
            Write("conditional create naming a hidden CareTeam", "POST", "CarePlan",
                  self.new_plan(hidden_team, subject=hidden_patient), if_none_exist=nothing),
            Write("update of the caller's plan adding a hidden Goal", "PUT", f"CarePlan/{self.own.plan}",
                  self.own_plan_with_goal(hidden_goal)),
            Write("update of the caller's team moving it to a hidden patient", "PUT", f"CareTeam/{self.own.team}",
                  self.own_team_about(hidden_patient)),
            Write("conditional update adding a hidden Goal", "PUT", f"CarePlan?_id={self.own.plan}",
                  self.own_plan_with_goal(hidden_goal)),
            Write("conditional update creating a CareTeam about a hidden patient", "PUT",
                  f"CareTeam?{nothing}", self.new_team(hidden_patient)),
            Write("update of a hidden CareTeam", "PUT", f"CareTeam/{t.team}",
                  {**_body(self.app, self.author, "CareTeam", t.team)}),
            Write("delete of a hidden CarePlan", "DELETE", f"CarePlan/{t.plan}"),
            Write("conditional delete of a hidden Goal", "DELETE", f"Goal?_id={t.goals[1]}"),
            Write("create CarePlan naming a urn:uuid Goal and a hidden one", "POST", "CarePlan",
                  self.new_plan(f"CareTeam/{self.own.team}", [urn, hidden_goal]), companions=[own_goal]),
            Write("create CareTeam about a hidden patient by a conditional reference", "POST", "CareTeam",
                  self.new_team(self.hidden_patient_criteria)),
            Write("create CarePlan naming a hidden CareTeam by a conditional reference", "POST", "CarePlan",
                  self.new_plan(f"CareTeam?_id={t.team}", subject=self.hidden_patient_criteria)),
        ]


def test_no_write_reaches_what_its_caller_may_not_see(world: World, app: TestClient) -> None:
    probe = Probe(world, app)
    before = _stored_versions(world.settings)
    for write in probe.writes():
        for delivery, deliver in DELIVERIES.items():
            if write.companions and delivery != "transaction":
                continue
            if "conditional reference" in write.name and delivery != "transaction":
                continue  # conditional references resolve only inside a transaction (refused elsewhere too)
            status, code = deliver(app, probe.headers, copy.deepcopy(write))
            # refused as a reference to (or a write of) nothing: not for any other reason
            assert (status, code) in ((404, "not-found"), (422, "not-found")), (write.name, delivery, status, code)
            assert _stored_versions(world.settings) == before, (write.name, delivery)
            probe.still_hidden()


def test_the_same_writes_without_the_hidden_reference_go_through(world: World, app: TestClient) -> None:
    """The other side: each form is allowed when it names only what the caller may see."""
    probe = Probe(world, app)
    own_patient, own_team = f"Patient/{probe.own.patient}", f"CareTeam/{probe.own.team}"
    own_goal = f"Goal/{probe.own.goals[1]}"
    urn = "urn:uuid:0e6a1a52-7c4b-4a8e-9d55-000000000002"
    pnr = _body(app, probe.headers, "Patient", probe.own.patient)["identifier"][0]["value"]
    cases = [
        Write("create CareTeam", "POST", "CareTeam", probe.new_team(own_patient)),
        Write("create Goal", "POST", "Goal", probe.new_goal(own_patient)),
        Write("update own plan with own goal", "PUT", f"CarePlan/{probe.own.plan}", probe.own_plan_with_goal(own_goal)),
        Write("urn:uuid", "POST", "CarePlan", probe.new_plan(own_team, [urn]), companions=[
            {"fullUrl": urn, "resource": probe.new_goal(own_patient), "request": {"method": "POST", "url": "Goal"}}]),
        Write("conditional reference", "POST", "CareTeam",
              probe.new_team(f"Patient?identifier={PERSONNUMMER}|{pnr}")),
    ]
    for write in cases:
        delivery = "transaction" if write.companions or write.name == "conditional reference" else "single request"
        status, code = DELIVERIES[delivery](app, probe.headers, copy.deepcopy(write))
        assert status in (200, 201), (write.name, status, code)
    probe.still_hidden()


def test_a_transaction_cannot_name_a_hidden_team_and_then_take_it_over(world: World, app: TestClient) -> None:
    """The red team's take-over: a new plan naming another unit's CareTeam, then a PUT of that
    team adding one of the caller's PractitionerRoles. In one transaction, its entries in either
    order, and in two."""
    probe = Probe(world, app)
    target = probe.target
    team = _body(app, probe.author, "CareTeam", target.team)
    nurse = world.role_at(OTHER_UNIT, "nurse")
    taken = {**team, "participant": [*team["participant"], {
        "role": [{"coding": [{"system": team["participant"][0]["role"][0]["coding"][0]["system"],
                              "code": "ovrig"}]}],
        "member": {"reference": f"PractitionerRole/{nurse}"}}]}
    plan_entry = {"resource": probe.new_plan(f"CareTeam/{target.team}", [f"Goal/{g}" for g in target.goals]),
                  "request": {"method": "POST", "url": "CarePlan"}}
    team_entry = {"resource": taken, "request": {"method": "PUT", "url": f"CareTeam/{target.team}"}}
    before = _stored_versions(world.settings)
    for entries in ([plan_entry, team_entry], [team_entry, plan_entry], [plan_entry]):
        status, code = _bundle(app, probe.headers, "transaction", copy.deepcopy(entries))
        assert (status, code) in ((404, "not-found"), (422, "not-found")), (len(entries), status, code)
    assert app.put(f"/fhir/CareTeam/{target.team}", json=taken, headers=probe.headers).status_code == 404
    assert _stored_versions(world.settings) == before
    probe.still_hidden()
    # the responsible unit's agreement is as it was
    assert _body(app, probe.author, "CareTeam", target.team) == team


def test_a_backend_system_cannot_take_over_through_a_transaction(world: World, app: TestClient) -> None:
    """The red team's first finding, as they ran it: an EHR acting for one unit, a CareTeam about
    another unit's patient as the single entry of a transaction."""
    target = world.agreements[TARGET]
    ehr = world.system(OTHER_UNIT)
    team = Probe(world, app).new_team(f"Patient/{target.patient}")
    single = app.post("/fhir/CareTeam", json=team, headers=ehr)
    assert single.status_code == 422, single.text
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": team, "request": {"method": "POST", "url": "CareTeam"}}]}
    in_transaction = app.post("/fhir", json=bundle, headers=ehr)
    assert in_transaction.status_code == 422, in_transaction.text
    # the same answer as alone, pointing at the entry
    assert in_transaction.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.subject.reference"]
    assert app.get(f"/fhir/Patient/{target.patient}", headers=ehr).status_code == 404


def test_a_provenance_cannot_name_what_its_writer_may_not_see(world: World, app: TestClient) -> None:
    """``X-Provenance`` is checked before the write it records, like the write itself."""
    probe = Probe(world, app)
    provenance = {"resourceType": "Provenance",
                  "agent": [{"who": {"reference": f"PractitionerRole/{world.role_at(OTHER_UNIT, 'nurse')}"}}],
                  "entity": [{"role": "source", "what": {"reference": f"Goal/{probe.target.goals[1]}"}}]}
    before = _stored_versions(world.settings)
    changed = {**probe.team, "name": "Nytt namn"}
    response = app.put(f"/fhir/CareTeam/{probe.own.team}", json=changed,
                       headers={**probe.headers, "x-provenance": json.dumps(provenance)})
    assert response.status_code == 422, response.text
    assert _stored_versions(world.settings) == before
    probe.still_hidden()
