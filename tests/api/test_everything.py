"""``Patient/{id}/$everything`` on the bare FHIR engine, on PostgreSQL and SQLite: what it
returns, its paging and its parameters (the access rules: tests/security/test_everything.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.config import Settings
from tests.conftest import BASE_URL, engine_token, make_settings
from tests.factories import care_plan, care_team, create, goal, organization, patient, practitioner


@pytest.fixture(params=["postgresql", "sqlite"])
def each_client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    url = request.getfixturevalue("clean_pg" if request.param == "postgresql" else "sqlite_url")
    settings: Settings = make_settings(str(url))
    with TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL) as client:
        client.headers.update({"content-type": "application/fhir+json",
                               "authorization": f"Bearer {engine_token(settings)}"})
        yield client


def _names(bundle: dict[str, Any]) -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e["search"]["mode"] == "match"]


def _next(bundle: dict[str, Any]) -> str | None:
    return next((urlsplit(x["url"])._replace(scheme="", netloc="").geturl() for x in bundle["link"]
                 if x["relation"] == "next"), None)


def test_the_record_and_what_it_names_paged_to_the_end(each_client: TestClient) -> None:
    client = each_client
    org = create(client, organization())
    doctor = create(client, practitioner())
    unrelated = create(client, practitioner(hsa="SE2321000016-2999", family="Annan"))
    pat = create(client, patient(managingOrganization={"reference": f"Organization/{org['id']}"}))
    other = create(client, patient(pnr="191010101010", family="Annan"))
    team = create(client, care_team(pat["id"], [f"Practitioner/{doctor['id']}"]))
    plan = create(client, care_plan(pat["id"], team["id"]))
    goals = [create(client, goal(pat["id"], f"Mål {n}")) for n in range(3)]
    create(client, goal(other["id"], "Någon annans mål"))
    expected = {f"Patient/{pat['id']}", f"CareTeam/{team['id']}", f"CarePlan/{plan['id']}",
                *(f"Goal/{g['id']}" for g in goals), f"Organization/{org['id']}", f"Practitioner/{doctor['id']}"}

    url: str | None = f"/fhir/Patient/{pat['id']}/$everything?_count=2"
    shown: list[str] = []
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "searchset" and bundle["total"] == len(expected)
        assert len(_names(bundle)) <= 2
        shown += _names(bundle)
        url = _next(bundle)
    assert sorted(shown) == sorted(expected) and len(shown) == len(set(shown))
    assert f"Practitioner/{unrelated['id']}" not in shown

    only = client.get(f"/fhir/Patient/{pat['id']}/$everything?_type=Goal,Organization").json()
    assert set(_names(only)) == {f"Goal/{g['id']}" for g in goals} | {f"Organization/{org['id']}"}
    since = goals[2]["meta"]["lastUpdated"].replace("+", "%2B")
    recent = client.get(f"/fhir/Patient/{pat['id']}/$everything?_since={since}").json()
    assert f"Goal/{goals[2]['id']}" in _names(recent) and f"Patient/{pat['id']}" not in _names(recent)
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404
    assert client.get(f"/fhir/Patient/{pat['id']}/$everything?_count=x").status_code == 400
