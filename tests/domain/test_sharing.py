"""Who owns what the service stores, and what a Consent becomes for the access rules
(``patientkontrakt/domain/sharing.py``), on the demo region in PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from patientkontrakt.domain import sharing
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.reindex import reindex
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from patientkontrakt.storage.tables import CONSENT_RULE, RESOURCE
from tests.conftest import demo_database, make_settings

REGION_HSA = "SE2321990000-E001"  # the HSA-id of the demo's Region Exempel (its provider)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with demo_database(f"pk_sharing_{os.getpid()}", 3) as url:
        yield url


def _run(url: str, work: Any) -> Any:
    async def go() -> Any:
        store = Store(create_engine(url, pool_size=1))
        try:
            return await work(store)
        finally:
            await store.dispose()
    return asyncio.run(go())


def _owners(url: str) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    async def read(store: Store) -> dict[tuple[str, str], tuple[str | None, str | None]]:
        async with store.reading() as unit:
            rows = await unit.conn.execute(sa.select(RESOURCE.c.res_type, RESOURCE.c.res_id, RESOURCE.c.owner_unit,
                                                     RESOURCE.c.owner_provider))
            return {(t, i): (u, p) for t, i, u, p in rows}
    result: dict[tuple[str, str], tuple[str | None, str | None]] = _run(url, read)
    return result


def test_what_the_demo_loader_writes_gets_the_owner_its_content_names(url: str) -> None:
    owners = _owners(url)
    assert owners[("CarePlan", "demo-plan-000000")][1] is not None
    unit, provider = owners[("CarePlan", "demo-plan-000000")]
    assert unit is not None and unit.startswith("demo-org-vc-")
    assert owners[("CareTeam", "demo-team-000000")] == (unit, provider)
    # the care's goals are the unit's of the nurse who set them; the patient's own are no provider's
    assert owners[("Goal", "demo-goal-000000-1")][1] == provider
    assert owners[("Goal", "demo-goal-000000-0")] == (None, None)
    # the directory is no provider's record
    assert owners[("Organization", "demo-org-region")] == (None, None)


def test_the_provider_is_the_top_of_the_partof_chain(url: str) -> None:
    async def places(store: Store) -> list[Any]:
        async with store.reading() as unit:
            return [await sharing.place_of(unit, org) for org in
                    ("demo-org-region", "demo-org-vc-bjorkbacken", "demo-org-hemtjanst-exempelstad", "no-such-org")]
    region, vc, kommun_unit, unknown = _run(url, places)
    assert region == (True, REGION_HSA)
    assert vc == (False, REGION_HSA)
    assert kommun_unit is not None and kommun_unit[0] is False and kommun_unit[1] != REGION_HSA
    assert unknown is None


def _consent(kind: str, status: str, actors: list[tuple[str, str]], end: str | None = None) -> dict[str, Any]:
    return {"resourceType": "Consent", "status": status,
            "category": [{"coding": [{"system": sharing.CONSENT_CATEGORY, "code": kind}]}],
            "provision": {"period": {"start": "2024-01-01", **({"end": end} if end else {})},
                          "actor": [{"role": {"coding": [{"system": sharing.PARTICIPATION, "code": role}]},
                                     "reference": {"reference": f"Organization/{org}"}} for role, org in actors]}}


def test_a_consent_becomes_rules_only_while_active(url: str) -> None:
    async def rules(store: Store) -> list[list[dict[str, Any]]]:
        async with store.reading() as unit:
            return [
                await sharing.consent_rules(unit, _consent("samtycke", "active", [
                    ("IRCP", "demo-org-hemsjukvard-exempelstad"), ("CST", "demo-org-region")], "2030-06-30"), "p1"),
                await sharing.consent_rules(unit, _consent("inre-sparr", "active", [
                    ("CST", "demo-org-vc-bjorkbacken")]), "p1"),
                await sharing.consent_rules(unit, _consent("inre-sparr", "inactive", [
                    ("CST", "demo-org-vc-bjorkbacken")]), "p1"),
                await sharing.consent_rules(unit, _consent("samtycke", "active", [
                    ("IRCP", "demo-org-hemsjukvard-exempelstad")]), None),
            ]
    samtycke, sparr, revoked, no_patient = _run(url, rules)
    assert len(samtycke) == 1
    assert samtycke[0]["recipient_unit"] == "demo-org-hemsjukvard-exempelstad"
    assert samtycke[0]["custodian_provider"] == REGION_HSA and samtycke[0]["custodian_unit"] is None
    assert samtycke[0]["ends"].isoformat().startswith("2030-06-30T23:59:59")
    assert [(r["kind"], r["custodian_unit"]) for r in sparr] == [("inre-sparr", "demo-org-vc-bjorkbacken")]
    assert revoked == [] and no_patient == []


def test_reindex_derives_the_owners_of_rows_stored_without_them(url: str) -> None:
    before = _owners(url)

    async def forget_and_reindex(store: Store) -> None:
        async with store.writing() as unit:
            await unit.conn.execute(sa.update(RESOURCE).values(owner_unit=None, owner_provider=None))
            await unit.conn.execute(sa.delete(CONSENT_RULE))
        await reindex(build_service(make_settings(url), store))

    _run(url, forget_and_reindex)
    after = _owners(url)
    assert after == before
    assert any(provider is not None for _, provider in after.values())
