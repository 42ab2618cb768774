"""The benchmark's loader stores what storage stores for the same data written by the service
itself: owners derived by ``domain.sharing`` (not NULL where a care provider owns the record) and
a Consent's ``consent_rule`` rows. Offline (no database); ``bench.checks.verify_against_writer``
compares with the real write path on every load."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench import checks, loader, synthetic
from patientkontrakt.domain import sharing
from patientkontrakt.storage.tables import CONSENT_RULE, RESOURCE


@pytest.fixture(scope="module", autouse=True)
def worker() -> Iterator[None]:
    loader._init_worker(loader.local_base())
    yield


def _rows(records: loader.Records, table: str, columns: list[str]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in records.get(table, [])]


def test_agreement_owners_are_the_unit_and_the_region() -> None:
    records = loader.build_chunk((0, 3))
    owners = {f"{r['res_type']}/{r['res_id']}": (r["owner_unit"], r["owner_provider"])
              for r in _rows(records, RESOURCE.name, loader.RESOURCE_COLUMNS)}
    for i in range(3):
        for key, owner in checks.expected_owners(i).items():
            assert owners[key] == owner, key
    assert owners[f"CarePlan/{synthetic.careplan_id(2)}"] == (synthetic.organization_id(2), synthetic.REGION_HSA_ID)
    shared = [r for r in _rows(records, RESOURCE.name, loader.RESOURCE_COLUMNS) if r["pk"] <= loader.SHARED_PKS]
    assert {r["res_id"] for r in shared} == {r["id"] for r in synthetic.shared()}
    # Every key is positive and unique, as the service's own (keyset scans begin after 0).
    pks = [r["pk"] for r in _rows(records, RESOURCE.name, loader.RESOURCE_COLUMNS)]
    assert min(pks) >= 1 and len(set(pks)) == len(pks)
    assert len(synthetic.shared()) <= loader.SHARED_PKS


@pytest.mark.parametrize(("kind", "expected"), [
    ("samtycke", {"kind": sharing.SAMTYCKE, "recipient_unit": synthetic.HOMECARE_ID, "recipient_provider": None,
                  "custodian_unit": None, "custodian_provider": synthetic.REGION_HSA_ID}),
    ("sparr", {"kind": sharing.INRE_SPARR, "recipient_unit": None, "recipient_provider": None,
               "custodian_unit": synthetic.MOTTAGNING_ID, "custodian_provider": None}),
])
def test_consents_load_with_their_rules_and_owner(kind: str, expected: dict[str, Any]) -> None:
    records = loader.build_consent_chunk((4, 6, kind, 1_000))
    resources = _rows(records, RESOURCE.name, loader.RESOURCE_COLUMNS)
    rules = _rows(records, CONSENT_RULE.name, loader.CONSENT_RULE_COLUMNS)
    assert [r["pk"] for r in resources] == [1_004, 1_005]
    recorder = synthetic.HOMECARE_ID if kind == "samtycke" else synthetic.MOTTAGNING_ID
    provider = synthetic.KOMMUN_HSA_ID if kind == "samtycke" else synthetic.REGION_HSA_ID
    assert {(r["owner_unit"], r["owner_provider"]) for r in resources} == {(recorder, provider)}
    assert [r["patient_id"] for r in resources] == [synthetic.patient_id(4), synthetic.patient_id(5)]
    assert len(rules) == 2
    for i, rule in zip((4, 5), rules, strict=True):
        assert rule["consent_pk"] == 1_000 + i
        assert rule["patient_id"] == synthetic.patient_id(i)
        assert rule["ends"] is None and rule["starts"] is not None
        assert {k: rule[k] for k in expected} == expected


def test_bench_tokens_carry_their_care_provider() -> None:
    assert synthetic.bench_grant().care_provider == synthetic.REGION_HSA_ID
    assert synthetic.kommun_grant().care_provider == synthetic.KOMMUN_HSA_ID
