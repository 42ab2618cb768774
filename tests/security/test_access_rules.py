"""The access rules, role × resource × interaction, allowed and refused (docs/security.md).

One agreement of the demo region is the target: agreement 2, active, authored by Vårdcentralen
Björkbacken, with the hospital's medicine clinic and Hemtjänsten Exempelstad among its
contributors; the kommun contact of Hemtjänsten Exempelstad is in its team. The kommun is
another care provider and the patient has given it no samtycke: it sees the patient and what no
provider owns (the patient's own goal), not the region's records; with samtycke, spärr and
emergency access see ``test_consent_matrix.py``. Each case is one
request by one role; ``MATRIX`` is the table in docs/security.md, and
``test_the_documented_matrix_is_this_one`` keeps the two the same.

The region is loaded once for the module into a database of its own; cases that change data
either keep what other cases depend on (updates) or act on resources made for them (creates,
deletes).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.domain import codes
from patientkontrakt.domain.demo import DemoGenerator
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.access import INTERNAL
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import BASE_URL, demo_database, make_settings
from tests.security.conftest import World, _agreements

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
AUTHOR = "demo-org-vc-bjorkbacken"
CONTRIBUTOR = "demo-org-med-lanssjukhuset"
TEAM_MEMBER_UNIT = "demo-org-hemtjanst-exempelstad"
OTHER_UNIT = "demo-org-vc-strandvagen"
TARGET = 2  # the agreement every case is about
OTHER_PATIENT_AGREEMENT = 8  # authored by Strandvägen: shares nothing with the target's staff

ROLES = {
    "staff-author": "nurse at the responsible vårdcentral",
    "staff-contributor": "nurse at a contributing unit (hospital clinic)",
    "staff-team-member": "kommun staff member in the agreement's team (another care provider, no samtycke)",
    "staff-other": "nurse at another vårdcentral",
    "system-author": "EHR system acting for the responsible vårdcentral",
    "system-directory": "the region's directory client (HSA synchronisation)",
    "patient-own": "the agreement's patient",
    "patient-other": "another patient",
}
RESOURCES = ("Patient", "CarePlan", "CareTeam", "Goal", "Goal (patient's own)", "Organization", "Practitioner")
INTERACTIONS = ("read", "search", "update", "create", "delete")

# (role, interaction) -> expected outcome per resource column; "ok" = allowed (200/201/204),
# "found"/"hidden" = the search result holds the resource or not, "n/a" = not a case.
MATRIX: dict[tuple[str, str], tuple[str, ...]] = {
    ("staff-author", "read"): ("ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    ("staff-contributor", "read"): ("ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    ("staff-team-member", "read"): ("ok", "404", "404", "404", "ok", "ok", "ok"),
    ("staff-other", "read"): ("404", "404", "404", "404", "404", "ok", "ok"),
    ("system-author", "read"): ("ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    ("system-directory", "read"): ("403", "403", "403", "403", "403", "ok", "ok"),
    ("patient-own", "read"): ("ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    ("patient-other", "read"): ("404", "404", "404", "404", "404", "404", "404"),
    ("staff-author", "search"): ("found", "found", "found", "found", "found", "found", "found"),
    ("staff-contributor", "search"): ("found", "found", "found", "found", "found", "found", "found"),
    ("staff-team-member", "search"): ("found", "hidden", "hidden", "hidden", "found", "found", "found"),
    ("staff-other", "search"): ("hidden", "hidden", "hidden", "hidden", "hidden", "found", "found"),
    ("system-author", "search"): ("found", "found", "found", "found", "found", "found", "found"),
    ("system-directory", "search"): ("403", "403", "403", "403", "403", "found", "found"),
    ("patient-own", "search"): ("found", "found", "found", "found", "found", "found", "found"),
    ("patient-other", "search"): ("hidden", "hidden", "hidden", "hidden", "hidden", "hidden", "hidden"),
    ("staff-author", "update"): ("ok", "ok", "ok", "ok", "ok", "ok", "403"),
    ("staff-contributor", "update"): ("ok", "ok", "ok", "ok", "ok", "403", "403"),
    ("staff-team-member", "update"): ("ok", "404", "404", "404", "ok", "403", "403"),
    ("staff-other", "update"): ("404", "404", "404", "404", "404", "403", "403"),
    ("system-author", "update"): ("ok", "ok", "ok", "ok", "ok", "403", "403"),
    ("system-directory", "update"): ("403", "403", "403", "403", "403", "ok", "ok"),
    ("patient-own", "update"): ("403", "403", "403", "403", "ok", "403", "403"),
    ("patient-other", "update"): ("403", "403", "403", "404", "404", "403", "403"),
    ("staff-author", "create"): ("ok", "ok", "n/a", "ok", "n/a", "403", "403"),
    ("staff-contributor", "create"): ("ok", "ok", "n/a", "ok", "n/a", "403", "403"),
    ("staff-team-member", "create"): ("ok", "422", "n/a", "ok", "n/a", "403", "403"),
    ("staff-other", "create"): ("ok", "422", "n/a", "422", "n/a", "403", "403"),
    ("system-author", "create"): ("ok", "ok", "n/a", "ok", "n/a", "403", "403"),
    ("system-directory", "create"): ("403", "403", "n/a", "403", "n/a", "ok", "ok"),
    ("patient-own", "create"): ("403", "403", "n/a", "403", "ok", "403", "403"),
    ("patient-other", "create"): ("403", "403", "n/a", "403", "403", "403", "403"),
    ("staff-author", "delete"): ("n/a", "ok", "n/a", "ok", "n/a", "403", "403"),
    ("staff-contributor", "delete"): ("n/a", "404", "n/a", "ok", "n/a", "403", "403"),
    ("staff-team-member", "delete"): ("n/a", "404", "n/a", "404", "n/a", "403", "403"),
    ("staff-other", "delete"): ("n/a", "404", "n/a", "404", "n/a", "403", "403"),
    ("system-author", "delete"): ("n/a", "ok", "n/a", "ok", "n/a", "n/a", "n/a"),
    ("system-directory", "delete"): ("n/a", "403", "n/a", "403", "n/a", "n/a", "n/a"),
    ("patient-own", "delete"): ("n/a", "403", "n/a", "403", "n/a", "403", "403"),
    ("patient-other", "delete"): ("n/a", "403", "n/a", "403", "n/a", "403", "403"),
}
_NOTES = {
    "create": "Create: Patient is a new patient (registered at the caller's unit); CarePlan a new draft agreement for "
              "the target's patient and team (the caller's unit becomes its author); Goal a new goal for the "
              "target's patient; the patient's own goal one they state themselves.",
    "delete": "Delete: a draft agreement of the responsible unit with the target's team but no contributors "
              "(so the clinic takes no part in it and the kommun member does, through the team, but only the "
              "responsible unit may delete it), and a goal of the target's patient that no agreement names, both "
              "made for the case.",
    "update": "Update of the Organization: the responsible unit's own, changing only its contact details (telecom); "
              "a unit's staff may change their own unit's telecom and address and nothing else of the directory.",
}


# -- the module's database ------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_db() -> Iterator[str]:
    with demo_database(f"pk_rules_{os.getpid()}", 16) as url:
        yield url


@pytest.fixture(scope="module")
def rules_world(module_db: str) -> World:
    generator = DemoGenerator(seed=1)
    return World(make_settings(module_db), DemoGenerator(seed=1), _agreements(generator))


@pytest.fixture(scope="module")
def service_app(module_db: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(module_db)), base_url=BASE_URL) as client:
        client.headers.update({"content-type": "application/fhir+json"})
        yield client


@dataclass
class Case:
    world: World
    app: TestClient

    @property
    def target(self) -> Any:
        return self.world.agreements[TARGET]

    def headers(self, role: str) -> dict[str, str]:
        w = self.world
        if role == "staff-author":
            return w.staff(w.role_at(AUTHOR, "nurse"))
        if role == "staff-contributor":
            return w.staff(w.role_at(CONTRIBUTOR, "nurse"))
        if role == "staff-team-member":
            return w.staff(w.role_at(TEAM_MEMBER_UNIT))
        if role == "staff-other":
            return w.staff(w.role_at(OTHER_UNIT, "nurse"))
        if role == "system-author":
            return w.system(AUTHOR)
        if role == "system-directory":
            return w.directory()
        if role == "patient-own":
            return w.patient(self.target.patient)
        if role == "patient-other":
            return w.patient(w.agreements[OTHER_PATIENT_AGREEMENT].patient)
        raise AssertionError(role)

    def ids(self, column: str) -> tuple[str, str]:
        t = self.target
        return {
            "Patient": ("Patient", t.patient), "CarePlan": ("CarePlan", t.plan), "CareTeam": ("CareTeam", t.team),
            "Goal": ("Goal", t.goals[1]), "Goal (patient's own)": ("Goal", t.patient_goal),
            "Organization": ("Organization", AUTHOR),
            "Practitioner": ("Practitioner", self._practitioner_of(t.staff_roles[0])),
        }[column]

    def _practitioner_of(self, role_id: str) -> str:
        role = next(r for r in self.world.generator.region.roles if r["id"] == role_id)
        return str(role["practitioner"]["reference"].split("/")[1])

    def internal_get(self, type_: str, id_: str) -> dict[str, Any]:
        response = self.app.get(f"/fhir/{type_}/{id_}", headers=self.world.system(AUTHOR))
        assert response.status_code == 200, response.text
        return dict(response.json())

    def internal_put(self, resource: dict[str, Any]) -> None:
        """Write as the service itself (set-up of a case, outside the rules under test)."""
        async def put() -> None:
            store = Store(create_engine(self.world.settings.database_url, pool_size=1))
            try:
                service = build_service(self.world.settings, store)
                bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                    {"resource": resource, "request": {"method": "PUT",
                                                       "url": f"{resource['resourceType']}/{resource['id']}"}}]}
                await BundleProcessor(service).process(INTERNAL, bundle, Preferences())
            finally:
                await store.dispose()
        asyncio.run(put())


def _changed(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with a harmless change, so an update makes a new version."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    marker = uuid.uuid4().hex[:8]
    if body["resourceType"] in ("Patient", "Organization", "Practitioner"):
        body["telecom"] = [{"system": "email", "value": f"{marker}@example.invalid"}]
    elif body["resourceType"] == "CarePlan":
        body["description"] = f"Reviderad {marker}"
    elif body["resourceType"] == "CareTeam":
        body["name"] = f"Vårdteam {marker}"
    elif body["resourceType"] == "Goal":
        body["description"] = {"text": f"Mål {marker}"}
    return body


def _outcome(response: httpx.Response) -> str:
    if response.status_code in (200, 201, 204):
        return "ok"
    assert response.headers["content-type"].startswith("application/fhir+json"), response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    return str(response.status_code)


def _new(case: Case, column: str, role: str) -> tuple[str, dict[str, Any]]:
    t = case.target
    if column == "Patient":
        number = f"19{uuid.uuid4().int % 80 + 20:02d}0101"
        from stdnum import luhn
        serial = f"{uuid.uuid4().int % 900 + 100:03d}"
        pnr = number + serial + luhn.calc_check_digit((number + serial)[2:])
        system = "http://electronichealth.se/identifier/personnummer"
        return "Patient", {"resourceType": "Patient", "identifier": [{"system": system, "value": pnr}],
                           "name": [{"family": "Nyregistrerad", "given": ["Test"]}]}
    if column == "CarePlan":
        plan = case.internal_get("CarePlan", t.plan)
        body = {k: v for k, v in plan.items() if k not in ("meta", "id", "goal", "activity")}
        return "CarePlan", {**body, "status": "draft"}
    if column in ("Goal", "Goal (patient's own)"):
        expressed = f"Patient/{t.patient}" if column != "Goal" else f"PractitionerRole/{t.staff_roles[0]}"
        if column == "Goal (patient's own)" and role == "patient-other":
            expressed = f"Patient/{case.world.agreements[OTHER_PATIENT_AGREEMENT].patient}"
        return "Goal", {"resourceType": "Goal", "lifecycleStatus": "active",
                        "description": {"text": "Orka gå en promenad varje dag"},
                        "subject": {"reference": f"Patient/{t.patient}"}, "expressedBy": {"reference": expressed},
                        "meta": {"tag": [dict(codes.TEST_DATA_TAG)]}}
    if column == "Organization":
        return "Organization", {"resourceType": "Organization", "active": True, "name": "Ny enhet",
                                "identifier": [{"system": "urn:oid:1.2.752.29.4.19", "value": "SE2321000016-NY01"}],
                                "type": [{"coding": [{"system": codes.ORGANIZATION_KIND, "code": "region"}]}]}
    if column == "Practitioner":
        return "Practitioner", {"resourceType": "Practitioner", "active": True,
                                "identifier": [{"system": "urn:oid:1.2.752.29.4.19",
                                                "value": f"SE2321000016-N{uuid.uuid4().int % 9999:04d}"}],
                                "name": [{"family": "Nyanställd", "given": ["Test"]}]}
    raise AssertionError(column)


def _throwaway(case: Case, column: str) -> tuple[str, str]:
    """A resource made for a delete case: a draft agreement of the responsible unit, or a goal
    of the target's patient that no agreement names."""
    t = case.target
    key = uuid.uuid4().hex[:12]
    if column == "CarePlan":
        plan = case.internal_get("CarePlan", t.plan)
        body = {k: v for k, v in plan.items() if k not in ("meta", "goal", "activity", "contributor")}
        case.internal_put({**body, "id": f"del-plan-{key}", "status": "draft"})
        return "CarePlan", f"del-plan-{key}"
    if column == "Goal":
        _, goal = _new(case, "Goal", "staff-author")
        case.internal_put({**goal, "id": f"del-goal-{key}"})
        return "Goal", f"del-goal-{key}"
    return case.ids(column)


def run_case(case: Case, role: str, interaction: str, column: str) -> str:
    headers = case.headers(role)
    app = case.app
    if interaction in ("read", "search", "update"):
        type_, id_ = case.ids(column)
        if interaction == "read":
            return _outcome(app.get(f"/fhir/{type_}/{id_}", headers=headers))
        if interaction == "search":
            response = app.get(f"/fhir/{type_}", params={"_id": id_}, headers=headers)
            if response.status_code == 403:
                return _outcome(response)
            assert response.status_code == 200, response.text
            found = [e["resource"]["id"] for e in response.json().get("entry", [])]
            return "found" if found == [id_] else "hidden"
        current = case.internal_get(type_, id_)
        return _outcome(app.put(f"/fhir/{type_}/{id_}", json=_changed(current), headers=headers))
    if interaction == "create":
        type_, body = _new(case, column, role)
        return _outcome(app.post(f"/fhir/{type_}", json=body, headers=headers))
    type_, id_ = _throwaway(case, column)
    return _outcome(app.delete(f"/fhir/{type_}/{id_}", headers=headers))


CASES = [(role, interaction, column, expected)
         for (role, interaction), row in MATRIX.items()
         for column, expected in zip(RESOURCES, row, strict=True) if expected != "n/a"]


@pytest.mark.parametrize(("role", "interaction", "column", "expected"), CASES,
                         ids=[f"{r}-{i}-{c}" for r, i, c, _ in CASES])
def test_access_matrix(rules_world: World, service_app: TestClient, role: str, interaction: str, column: str,
                       expected: str) -> None:
    assert run_case(Case(rules_world, service_app), role, interaction, column) == expected


def test_a_request_without_token_is_401_everywhere(service_app: TestClient, rules_world: World) -> None:
    case = Case(rules_world, service_app)
    for column in RESOURCES:
        type_, id_ = case.ids(column)
        for method, path in (("GET", f"/fhir/{type_}/{id_}"), ("GET", f"/fhir/{type_}"),
                             ("PUT", f"/fhir/{type_}/{id_}"), ("DELETE", f"/fhir/{type_}/{id_}"),
                             ("POST", f"/fhir/{type_}")):
            response = service_app.request(method, path, json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["issue"][0]["code"] == "login"


# -- the table in docs/security.md ------------------------------------------------------------


_BEGIN = "<!-- access-matrix:begin (generated from tests/security/test_access_rules.py: MATRIX) -->"
_END = "<!-- access-matrix:end -->"
_SHOW = {"ok": "✓", "found": "✓ found", "hidden": "– not found", "403": "403", "404": "404", "422": "422",
         "n/a": ""}


def render_matrix() -> str:
    lines = [_BEGIN, "", "| role | interaction | " + " | ".join(RESOURCES) + " |",
             "|---|---|" + "---|" * len(RESOURCES)]
    for (role, interaction), row in MATRIX.items():
        lines.append(f"| {ROLES[role]} | {interaction} | " + " | ".join(_SHOW[c] for c in row) + " |")
    lines += ["", "| no token | any | " + " | ".join("401" for _ in RESOURCES) + " |", ""]
    lines += [f"- {note}" for note in _NOTES.values()]
    lines += ["", _END]
    return "\n".join(lines)


def test_the_documented_matrix_is_this_one() -> None:
    """docs/security.md shows exactly the cases tested here. To refresh it after changing
    MATRIX: ``.venv/bin/python -m tests.security.test_access_rules``."""
    text = DOCS.read_text(encoding="utf-8")
    assert _BEGIN in text and _END in text, f"{DOCS} has no access matrix section"
    documented = text[text.index(_BEGIN): text.index(_END) + len(_END)]
    assert documented == render_matrix(), \
        "docs/security.md is out of date: run .venv/bin/python -m tests.security.test_access_rules"


def _write_docs(render: Callable[[], str] = render_matrix) -> None:
    text = DOCS.read_text(encoding="utf-8")
    start, end = text.index(_BEGIN), text.index(_END) + len(_END)
    DOCS.write_text(text[:start] + render() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    _write_docs()
