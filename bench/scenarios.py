"""The measured interactions, as request files for the load generator, and their preflight checks.

The consent scenarios (issue 14) repeat read and search with the same requests in another state
of the patients' Consents, as another caller (``Scenario.grant``, ``synthetic.GRANTS``):

* ``read``/``search``: the regional clinic reads agreements its own care provider (the region)
  owns; no Consent is in force. Its rule tests for an inre spärr on the owning unit and finds no
  row. The baseline of the others.
* ``read-control``/``search-control``: the same again, measured the way the consent scenarios
  are (on a server started for them, the other servers with an access log stopped, right before
  them): what each consent scenario is compared with, so that a fresh server or drift since the
  first measurements does not pass for the Consents' cost.
* ``read-samtycke``/``search-samtycke``: the kommun's hemsjukvård, another provider, reads the
  same agreements under every patient's samtycke (IRCP the hemsjukvård, CST the region): the
  rule tests for an inre and a yttre spärr and finds the samtycke.
* ``read-sparr``/``search-sparr``: the clinic again, with an inre spärr in force for every
  patient on another unit of the region (``synthetic.sparr``): the spärr probe finds the rule
  and it does not cover the owner, so the data is still shown (the preflight checks it is).
"""

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


def _check_nothing_found(response: httpx.Response) -> str | None:
    bundle = response.json()
    if bundle.get("total") != 0 or bundle.get("entry"):
        return f"expected nothing found, got total={bundle.get('total')} and {len(bundle.get('entry', []))} entries"
    return None


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    mode: str  # "random" or "sequence" (see bench/lua/requests.lua)
    lines: Callable[[int], list[Line]]
    status: int
    check: Callable[[httpx.Response], str | None] | None = None
    writes: bool = False  # changes the run database (measured after the read-only ones)
    grant: str = "clinic"  # whose token (synthetic.GRANTS)
    # The Consent every patient has while it runs (synthetic.CONSENTS; "none": measured as if)
    consents: str | None = None
    baseline: str | None = None  # the scenario it is reported against
    # The answer without ``consents`` (status, check), where it differs: what shows that the
    # Consents are what lets the request through.
    refused: tuple[int, Callable[[httpx.Response], str | None] | None] | None = None

    def preflight(self, base_url: str, line: Line, token: str | None = None, *, without_consents: bool = False
                  ) -> None:
        """One request before measuring: the right status and shape, or the run stops here.
        ``without_consents``: the request before its Consents are loaded, which must get the
        ``refused`` answer (404 for a read, nothing found for a search)."""
        method, target, body = line
        headers = {"Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body:
            headers["Content-Type"] = "application/fhir+json"
        response = httpx.request(method, base_url + target, headers=headers, timeout=30.0,
                                 content=body.replace("__REV__", "preflight").encode() if body else None)
        if without_consents:
            assert self.refused is not None
            status, check = self.refused
        else:
            status, check = self.status, self.check
        problem = None if response.status_code == status else f"status {response.status_code}, expected {status}"
        if problem is None and check is not None:
            problem = check(response)
        if problem:
            when = " before its Consents were loaded" if without_consents else ""
            raise RuntimeError(
                f"preflight of {self.name}{when} ({method} {target}) failed: {problem}\n{response.text[:2000]}")


SCENARIOS = {
    "read": Scenario("read", "read CarePlan by id", "random", read_lines, 200),
    "search": Scenario("search", "search CarePlan?patient&_include", "random", search_lines, 200, _check_search),
    "read-control": Scenario("read-control", "read, again (control)", "random", read_lines, 200, consents="none",
                             baseline="read"),
    "search-control": Scenario("search-control", "search, again (control)", "random", search_lines, 200,
                               _check_search, consents="none", baseline="search"),
    "read-samtycke": Scenario("read-samtycke", "read, other provider + samtycke", "random", read_lines, 200,
                              grant="kommun", consents="samtycke", baseline="read-control",
                              refused=(404, None)),
    "search-samtycke": Scenario("search-samtycke", "search, other provider + samtycke", "random", search_lines, 200,
                                _check_search, grant="kommun", consents="samtycke", baseline="search-control",
                                refused=(200, _check_nothing_found)),
    "read-sparr": Scenario("read-sparr", "read, inre spärr on another unit", "random", read_lines, 200,
                           consents="sparr", baseline="read-control"),
    "search-sparr": Scenario("search-sparr", "search, inre spärr on another unit", "random", search_lines, 200,
                             _check_search, consents="sparr", baseline="search-control"),
    "create": Scenario("create", "create CarePlan (draft)", "random", create_lines, 201, writes=True),
    "update": Scenario("update", "update CarePlan", "random", update_lines, 200, writes=True),
    "transaction": Scenario("transaction", "transaction, 10 entries", "sequence", transaction_lines, 200,
                            _check_transaction, writes=True),
}
