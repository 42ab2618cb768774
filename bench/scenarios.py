"""The measured interactions, as request files for the load generator, and their preflight checks."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from bench import synthetic

READ_SAMPLE = 20_000  # distinct ids a read/search run draws from (uniformly over all N)
WRITE_SAMPLE = 2_000
TRANSACTIONS = 500

Line = tuple[str, str, str]


def _json(data: dict[str, Any]) -> str:
    return orjson.dumps(data).decode()


def _sample(agreements: int, size: int, seed: int) -> list[int]:
    return random.Random(seed).sample(range(agreements), min(agreements, size))


def read_lines(agreements: int) -> list[Line]:
    return [("GET", f"/fhir/CarePlan/{synthetic.careplan_id(i)}", "") for i in _sample(agreements, READ_SAMPLE, 1)]


def search_lines(agreements: int) -> list[Line]:
    return [
        ("GET", f"/fhir/CarePlan?patient={synthetic.patient_id(i)}&_include=CarePlan:care-team", "")
        for i in _sample(agreements, READ_SAMPLE, 2)
    ]


def create_lines(agreements: int) -> list[Line]:
    """A new draft Patientkontrakt for an existing patient, team and goals: the server checks
    the references and the profile (a second *active* one per patient and unit would be refused)."""
    lines = []
    for i in _sample(agreements, WRITE_SAMPLE, 3):
        body = {k: v for k, v in synthetic.care_plan(i).items() if k != "id"}
        body["status"] = "draft"
        lines.append(("POST", "/fhir/CarePlan", _json(body)))
    return lines


def update_lines(agreements: int) -> list[Line]:
    """A changed description on an existing CarePlan: every PUT makes a new version."""
    lines = []
    for i in _sample(agreements, WRITE_SAMPLE, 4):
        body = {**synthetic.care_plan(i), "description": "Ändrad överenskommelse __REV__"}
        lines.append(("PUT", f"/fhir/CarePlan/{body['id']}", _json(body)))
    return lines


def transaction_lines(agreements: int) -> list[Line]:
    """New agreements (numbers after the loaded ones) at existing units and with their staff, as
    10-entry transactions (with four booked visits)."""
    return [("POST", "/fhir", _json(synthetic.transaction_bundle(agreements + k, k % agreements)))
            for k in range(TRANSACTIONS)]


def _check_search(response: httpx.Response) -> str | None:
    bundle = response.json()
    modes = sorted(e.get("search", {}).get("mode") for e in bundle.get("entry", []))
    if bundle.get("total") != 1 or modes != ["include", "match"]:
        return f"expected 1 match and 1 included CareTeam, got total={bundle.get('total')} modes={modes}"
    return None


def _check_transaction(response: httpx.Response) -> str | None:
    statuses = [e["response"]["status"] for e in response.json().get("entry", [])]
    if len(statuses) != synthetic.TRANSACTION_ENTRIES or any(not s.startswith("201") for s in statuses):
        return f"expected {synthetic.TRANSACTION_ENTRIES} entries created, got {statuses}"
    return None


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    mode: str  # "random" or "sequence" (see bench/lua/requests.lua)
    lines: Callable[[int], list[Line]]
    status: int
    check: Callable[[httpx.Response], str | None] | None = None

    def preflight(self, base_url: str, line: Line, token: str | None = None) -> None:
        """One request before measuring: the right status and shape, or the run stops here."""
        method, target, body = line
        headers = {"Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body:
            headers["Content-Type"] = "application/fhir+json"
        response = httpx.request(method, base_url + target, headers=headers, timeout=30.0,
                                 content=body.replace("__REV__", "preflight").encode() if body else None)
        problem = None if response.status_code == self.status else f"status {response.status_code}"
        if problem is None and self.check is not None:
            problem = self.check(response)
        if problem:
            raise RuntimeError(
                f"preflight of {self.name} ({method} {target}) failed: {problem}\n{response.text[:2000]}")


SCENARIOS = {
    "read": Scenario("read", "read CarePlan by id", "random", read_lines, 200),
    "search": Scenario("search", "search CarePlan?patient&_include", "random", search_lines, 200, _check_search),
    "create": Scenario("create", "create CarePlan (draft)", "random", create_lines, 201),
    "update": Scenario("update", "update CarePlan", "random", update_lines, 200),
    "transaction": Scenario("transaction", "transaction, 10 entries", "sequence", transaction_lines, 200,
                            _check_transaction),
}
