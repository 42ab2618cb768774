"""Fixtures for the security tests: the demo region in the database, the service as deployed
(care-unit and patient rules, access log), and real tokens for its people.

Tokens are issued by the server's own ``AccessTokens`` with grants built by its ``Directory``
from the loaded demo data, exactly what signing in through the test IdP yields (the OAuth flows
themselves are tested in ``test_oauth.py`` and over a live server in ``tests/interop``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from api.app import create_app
from patientkontrakt.config import Settings
from patientkontrakt.domain.demo import DemoGenerator, load_demo
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.security.identity import Directory
from patientkontrakt.security.tokens import Grant
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests import snapshot
from tests.conftest import BASE_URL, issue_token, make_settings

AGREEMENTS = 16
STAFF_SCOPES = "openid fhirUser user/*.cruds user/AuditEvent.rs"
PATIENT_SCOPES = "openid fhirUser launch/patient patient/*.rs patient/Goal.cu patient/AuditEvent.rs"
SYSTEM_SCOPES = "system/*.cruds system/AuditEvent.rs"

AUTHOR = "demo-org-vc-bjorkbacken"  # the care unit responsible for agreement TARGET
OTHER_UNIT = "demo-org-vc-strandvagen"  # a care unit with no part in agreement TARGET
TARGET = 2  # an active agreement of Björkbacken


@pytest.fixture(params=["postgresql", "sqlite"])
def settings_on_each_database(request: pytest.FixtureRequest) -> Settings:
    """Settings for a fresh PostgreSQL database and a fresh SQLite file in turn.

    A module runs its tests on both by binding it as its own ``settings`` fixture:
    ``settings = settings_on_each_database``.
    """
    url = request.getfixturevalue("clean_pg" if request.param == "postgresql" else "sqlite_url")
    return make_settings(str(url))


@dataclass
class Agreement:
    number: int
    patient: str
    plan: str
    team: str
    goals: list[str]
    author: str  # Organization id of the responsible vårdcentral
    contributors: list[str]
    status: str
    staff_roles: list[str]  # PractitionerRole ids in the team

    @property
    def patient_goal(self) -> str:
        return self.goals[0]


@dataclass
class World:
    """The loaded demo region as the tests need it."""

    settings: Settings
    generator: DemoGenerator
    agreements: list[Agreement]
    roles_by_unit: dict[str, list[str]] = field(default_factory=dict)  # org id -> PractitionerRole ids

    def by_author(self, org: str) -> list[Agreement]:
        return [a for a in self.agreements if a.author == org]

    def not_involving(self, org: str) -> list[Agreement]:
        return [a for a in self.agreements if a.author != org and org not in a.contributors]

    def vardcentraler(self) -> list[str]:
        return [u.organization["id"] for u in self.generator.region.units["vardcentral"]]

    def role_at(self, org: str, title: str | None = None) -> str:
        roles = [r for r in self.generator.region.roles if r["organization"]["reference"] == f"Organization/{org}"]
        if title:
            roles = [r for r in roles if r["code"][0]["coding"][0]["code"] == title]
        return str(roles[0]["id"])

    # -- tokens ----------------------------------------------------------------------------

    def _run(self, coro: Any) -> Any:
        async def go() -> Any:
            store = Store(create_engine(self.settings.database_url, pool_size=2))
            try:
                return await coro(Directory(build_service(self.settings, store)))
            finally:
                await store.dispose()
        return asyncio.run(go())

    def staff(self, role_id: str, scope: str = STAFF_SCOPES) -> dict[str, str]:
        """Headers of a staff member signed in with the commission ``role_id``."""
        grant: Grant | None = self._run(lambda d: d.commission(role_id))
        assert grant is not None, role_id
        return {"authorization": f"Bearer {issue_token(self.settings, grant, scope, 'pk-personal')}"}

    def patient(self, patient_id: str, scope: str = PATIENT_SCOPES) -> dict[str, str]:
        grant: Grant | None = self._run(lambda d: d.patient(patient_id))
        assert grant is not None, patient_id
        return {"authorization": f"Bearer {issue_token(self.settings, grant, scope, 'pk-mitt')}"}

    def system(self, org: str, scope: str = SYSTEM_SCOPES, client_id: str = "test-ehr") -> dict[str, str]:
        """Headers of a backend system (``client_id``) acting for the unit ``org`` (an Organization id)."""
        unit = self._run(lambda d: d.care_unit_by_id(org))
        grant = Grant(kind="system", sub="test-ehr", name="Test EHR", care_unit=unit[0], care_unit_name=unit[1],
                      care_unit_org=org, care_provider=unit[2])
        return {"authorization": f"Bearer {issue_token(self.settings, grant, scope, client_id)}"}

    def directory(self, scope: str = SYSTEM_SCOPES) -> dict[str, str]:
        """Headers of the region's directory client (it acts for no care unit)."""
        return _directory_headers(self.settings, scope)


def _directory_headers(settings: Settings, scope: str = SYSTEM_SCOPES) -> dict[str, str]:
    grant = Grant(kind="directory", sub="hsa-sync", name="HSA-synk")
    return {"authorization": f"Bearer {issue_token(settings, grant, scope, 'hsa-sync')}"}


def _agreements(generator: DemoGenerator) -> list[Agreement]:
    out = []
    for number, resources in enumerate(generator.agreements(AGREEMENTS)):
        plan = resources[-1]
        team = resources[1]
        out.append(Agreement(
            number=number, patient=resources[0]["id"], plan=plan["id"], team=team["id"],
            goals=[r["id"] for r in resources if r["resourceType"] == "Goal"],
            author=plan["author"]["reference"].split("/")[1],
            contributors=[c["reference"].split("/")[1] for c in plan["contributor"]],
            status=plan["status"],
            staff_roles=[p["member"]["reference"].split("/")[1] for p in team["participant"]
                         if p["member"]["reference"].startswith("PractitionerRole/")],
        ))
    return out


# The demo region as loaded, by database kind and settings (tests/snapshot.py): loaded through the
# full write path once per process and kind (1.3 s on PostgreSQL, 2.3 s on SQLite), its rows put
# back before every other test that needs it (0.08 s and 0.01 s).
_LOADED: dict[str, snapshot.Snapshot] = {}


@pytest.fixture
def world(settings: Settings) -> World:
    """The demo region with 16 agreements, loaded through the full write path (or its rows, as
    that load left them, put back into the test's emptied database)."""
    async def load() -> None:
        store = Store(create_engine(settings.database_url, pool_size=2))
        try:
            await load_demo(BundleProcessor(build_service(settings, store)), AGREEMENTS)
        finally:
            await store.dispose()

    kind = make_url(settings.database_url).get_backend_name()
    key = repr((kind, settings.model_dump(exclude={"database_url"})))
    if key in _LOADED:
        snapshot.restore(_LOADED[key], settings.database_url)
    else:
        asyncio.run(load())
        _LOADED[key] = snapshot.take(settings.database_url)
    generator = DemoGenerator(seed=1)
    return World(settings, DemoGenerator(seed=1), _agreements(generator))


@pytest.fixture
def app(settings: Settings) -> Iterator[TestClient]:
    """The service as deployed, in-process; requests send their own ``authorization``."""
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        client.headers.update({"content-type": "application/fhir+json"})
        yield client
