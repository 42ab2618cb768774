"""Helpers shared by the Patientkontrakt behaviour tests: demo data, writes, and outcome checks.

The fixtures come from ``DemoGenerator``: the fictional region is loaded with one transaction
Bundle of PUTs, and an agreement (Patient, CareTeam, Goals, CarePlan) is taken from
``DemoGenerator(seed, today).agreement(n)`` and modified per test. Agreement ``n`` has the status
``PLAN_STATES[n % 8]``: 0–3 active, 4 draft, 5 on-hold, 6 completed, 7 revoked.
"""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from patientkontrakt.domain import codes
from patientkontrakt.domain.demo import DemoGenerator, transaction

SEED = 7
TODAY = datetime.datetime.now(datetime.UTC).date()  # the server decides "current" in UTC
EXAMPLES = Path(__file__).resolve().parents[2] / "fhir_profiles" / "profiles"
PRACTITIONER_ROLE = codes.PRACTITIONER_ROLE


def generator(seed: int = SEED) -> DemoGenerator:
    return DemoGenerator(seed=seed, today=TODAY)


def commit(client: TestClient, resources: list[dict[str, Any]]) -> dict[str, Any]:
    """PUT ``resources`` in one transaction; it must succeed."""
    response = client.post("/fhir", json=transaction(resources))
    assert response.status_code == 200, response.text
    return dict(response.json())


def load_region(client: TestClient, gen: DemoGenerator) -> None:
    commit(client, gen.region.resources())


def put(client: TestClient, resource: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource, **kwargs)


def read(client: TestClient, type_: str, id_: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{type_}/{id_}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def versions_stored(client: TestClient) -> int:
    """Every version of every resource on the server: unchanged means a write stored nothing."""
    response = client.get("/fhir/_history", params={"_count": "1"})
    assert response.status_code == 200
    return int(response.json()["total"])


def search(client: TestClient, type_: str, **params: str) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/{type_}", params={**params, "_count": "100"})
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", []) if e.get("search", {}).get("mode") != "include"]


def issues(response: httpx.Response, status: int) -> list[dict[str, Any]]:
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return list(outcome["issue"])


def assert_issue(found: list[dict[str, Any]], *, code: str, expression: str, swedish: str, english: str,
                 severity: str = "error") -> dict[str, Any]:
    """One issue has this code and expression, Swedish ``details.text`` and English ``diagnostics``."""
    matching = [i for i in found if expression in i.get("expression", [])]
    assert matching, f"no issue at {expression}: {json.dumps(found, ensure_ascii=False)}"
    issue = matching[0]
    assert issue["severity"] == severity
    assert issue["code"] == code
    assert swedish in issue["details"]["text"], issue
    assert english in issue["diagnostics"], issue
    return issue


def refused(client: TestClient, response: httpx.Response, before: int, *, status: int, code: str,
            expression: str, swedish: str, english: str) -> list[dict[str, Any]]:
    """The write was refused with this issue, and the server stores no more versions than before."""
    found = issues(response, status)
    assert_issue(found, code=code, expression=expression, swedish=swedish, english=english)
    assert versions_stored(client) == before
    return found


def example(name: str) -> dict[str, Any]:
    """One of our published examples (``fhir_profiles/profiles/<Type>-<id>.json``) as a resource to write."""
    resource = json.loads((EXAMPLES / f"{name}.json").read_text())
    resource.pop("meta", None)
    resource.pop("text", None)
    return dict(resource)


def by_type(resources: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == type_]


def role_code(role: dict[str, Any]) -> str:
    return str(role["code"][0]["coding"][0]["code"])


def participant(role: str, member: str, start: str, end: str | None = None) -> dict[str, Any]:
    period = {"start": start, **({"end": end} if end else {})}
    return {"role": [{"coding": [{"system": codes.CARETEAM_ROLE, "code": role}]}],
            "member": {"reference": member}, "period": period}


def members(team: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [p for p in team["participant"]
            if any(c.get("code") == role for r in p.get("role", []) for c in r.get("coding", []))]


def deep(resource: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(resource)


def _references(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            found.add(node["reference"])
        for value in node.values():
            found |= _references(value)
    elif isinstance(node, list):
        for value in node:
            found |= _references(value)
    return found


def region_for(gen: DemoGenerator, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The region resources among ``resources`` and those they reach (following references), in region order."""
    pool = {f"{r['resourceType']}/{r['id']}": r for r in gen.region.resources()}
    wanted: set[str] = set()
    frontier = _references(resources) | {f"{r['resourceType']}/{r['id']}" for r in resources}
    while frontier:
        key = frontier.pop()
        if key in pool and key not in wanted:
            wanted.add(key)
            frontier |= _references(pool[key])
    return [r for key, r in pool.items() if key in wanted]


def store_agreement(client: TestClient, gen: DemoGenerator, number: int) -> list[dict[str, Any]]:
    """Load the part of the region agreement ``number`` needs, with all staff of its responsible
    unit (to swap contacts), then PUT the agreement: [Patient, CareTeam, Goal×3, CarePlan]."""
    resources = gen.agreement(number)
    unit = resources[-1]["author"]["reference"]
    staff = [r for r in gen.region.roles if r["organization"]["reference"] == unit]
    commit(client, region_for(gen, [*resources, *staff]))
    commit(client, resources)
    return resources
