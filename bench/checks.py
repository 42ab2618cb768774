"""Proof that the loaded data is what the server itself would hold.

``validate_sample`` runs generated resources through the server's ``prepare`` (the FHIR
validator and the Patientkontrakt profiles and rules). ``verify_against_writer`` replaces one
loaded agreement, inside a transaction that is rolled back, by writing it through the server's
write path, and compares the stored rows: bodies (apart from ``meta.lastUpdated``), the owner
(``owner_unit``, ``owner_provider``), versions, every index row and, of a Consent, its
``consent_rule`` rows.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import sqlalchemy as sa

from bench import synthetic
from bench.loader import local_base
from patientkontrakt.config import Settings
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store, Unit
from patientkontrakt.storage.tables import CONSENT_RULE, INDEX_TABLES, RESOURCE, RESOURCE_VERSION

# References point backwards in this order, so every write's references resolve.
_WRITE_ORDER = ("Patient", "Organization", "Practitioner", "PractitionerRole", "CareTeam", "Goal", "CarePlan",
                "Consent")
_RULE_COLUMNS = [c for c in CONSENT_RULE.c if c.name not in ("id", "consent_pk")]


def validate_sample(service: FhirService, agreements: list[int], extra: list[dict[str, Any]]) -> int:
    """Run the given agreements and ``extra`` bodies through the server's ``prepare`` (the FHIR
    validator, then the domain's profile validation and rules); the count checked."""
    checked = 0
    bodies = [r for i in agreements for r in synthetic.agreement(i)] + extra
    for resource in bodies:
        service.prepare(resource["resourceType"], copy.deepcopy(resource))
        checked += 1
    for i in agreements:
        if not synthetic.luhn_ok(synthetic.personnummer(i)):
            raise AssertionError(f"personnummer of agreement {i} fails the Luhn check")
    return checked


class _Rollback(Exception):
    pass


def _without_updated(body: str | None) -> Any:
    if body is None:
        return None
    data = orjson.loads(body)
    data.get("meta", {}).pop("lastUpdated", None)
    return data


async def _snapshot(unit: Unit, resources: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [(r["resourceType"], r["id"]) for r in resources]
    R, V = RESOURCE.c, RESOURCE_VERSION.c
    out: dict[str, Any] = {}
    for type_, id_ in keys:
        row = (await unit.conn.execute(
            sa.select(R.pk, R.version_id, R.deleted, R.body, R.patient_id, R.owner_unit, R.owner_provider)
            .where(R.res_type == type_, R.res_id == id_)
        )).one()
        versions = (await unit.conn.execute(
            sa.select(V.version_id, V.method, V.deleted, V.body).where(V.res_type == type_, V.res_id == id_)
        )).all()
        entry: dict[str, Any] = {
            "resource": (row.version_id, row.deleted, _without_updated(row.body), row.patient_id),
            "owner": (row.owner_unit, row.owner_provider),
            "versions": [(v.version_id, v.method, v.deleted, _without_updated(v.body)) for v in versions],
            "consent_rule": sorted(tuple(str(v) for v in r) for r in (await unit.conn.execute(
                sa.select(*_RULE_COLUMNS).where(CONSENT_RULE.c.consent_pk == row.pk))).all()),
        }
        for name, table in INDEX_TABLES.items():
            columns = [c for c in table.c if c.name not in ("id", "resource_pk")]
            rows = (await unit.conn.execute(sa.select(*columns).where(table.c.resource_pk == row.pk))).all()
            entry[name] = sorted(tuple(str(v) for v in r) for r in rows)
        out[f"{type_}/{id_}"] = entry
    return out


async def verify_against_writer(url: str, agreement: int, resources: list[dict[str, Any]] | None = None) -> int:
    """Compare loaded agreement ``agreement`` (or the loaded ``resources``) with the same
    resources created through the server's write path (``prepare``, then ``Writer.store`` with
    reference checks and the domain rules, without a caller: what the service itself writes, so
    storage derives the owner from the content), inside a transaction that is rolled back.

    Returns the number of index and consent rule rows compared, plus one per owner that is set;
    raises AssertionError on any difference.
    """
    settings = Settings(database_url=url, base_url=local_base().removesuffix("/fhir"))
    store = Store(create_engine(url, pool_size=2))
    service = build_service(settings, store)
    resources = synthetic.agreement(agreement) if resources is None else resources
    keys = [(r["resourceType"], r["id"]) for r in resources]
    written: dict[str, Any] = {}
    try:
        async with store.reading() as unit:
            loaded = await _snapshot(unit, resources)
        try:
            async with store.writing() as unit:
                R, V = RESOURCE.c, RESOURCE_VERSION.c
                pks = [v for (v,) in (await unit.conn.execute(
                    sa.select(R.pk).where(sa.tuple_(R.res_type, R.res_id).in_(keys)))).all()]
                for table in INDEX_TABLES.values():
                    await unit.conn.execute(sa.delete(table).where(table.c.resource_pk.in_(pks)))
                await unit.conn.execute(sa.delete(CONSENT_RULE).where(CONSENT_RULE.c.consent_pk.in_(pks)))
                await unit.conn.execute(sa.delete(RESOURCE).where(R.pk.in_(pks)))
                await unit.conn.execute(sa.delete(RESOURCE_VERSION).where(sa.tuple_(V.res_type, V.res_id).in_(keys)))
                for resource in sorted(resources, key=lambda r: _WRITE_ORDER.index(r["resourceType"])):
                    prepared = service.prepare(resource["resourceType"], copy.deepcopy(resource))
                    await service.writer.store(unit, prepared, None, "POST")
                written = await _snapshot(unit, resources)
                raise _Rollback
        except _Rollback:
            pass
    finally:
        await store.dispose()
    compared = 0
    for key, expected in written.items():
        got = loaded[key]
        for part, value in expected.items():
            if got[part] != value:
                raise AssertionError(f"{key}: loaded {part} differs from what Writer.store writes:\n"
                                     f"loaded:  {got[part]}\nwritten: {value}")
            if part in INDEX_TABLES or part == "consent_rule":
                compared += len(value)
            if part == "owner" and value != (None, None):
                compared += 1
    return compared



def expected_owners(agreement: int) -> dict[str, tuple[str | None, str | None]]:
    """Who owns what of agreement ``agreement`` (domain.sharing.derived_owner, design of issue
    14): the vårdcentral and its provider, the region, own the plan, the team and the nurse's
    goals; the Patient (no managingOrganization), the patient's own goal and the directory
    belong to no provider."""
    unit = (synthetic.organization_id(agreement), synthetic.REGION_HSA_ID)
    nobody = (None, None)
    owners = {"Patient": nobody, "Organization": nobody, "Practitioner": nobody, "PractitionerRole": nobody,
              "CareTeam": unit, "CarePlan": unit}
    out = {}
    for resource in synthetic.agreement(agreement):
        type_ = resource["resourceType"]
        stated_by_patient = type_ == "Goal" and resource["expressedBy"]["reference"].startswith("Patient/")
        out[f"{type_}/{resource['id']}"] = nobody if stated_by_patient else owners.get(type_, unit)
    return out


async def check_owners(url: str, agreement: int) -> int:
    """The loaded owners of agreement ``agreement`` are ``expected_owners``: not NULL where a
    provider owns the record (``verify_against_writer`` shows they are the writer's too)."""
    engine = create_engine(url, pool_size=1)
    R = RESOURCE.c
    try:
        async with engine.connect() as conn:
            expected = expected_owners(agreement)
            for key, owner in expected.items():
                type_, id_ = key.split("/", 1)
                row = (await conn.execute(sa.select(R.owner_unit, R.owner_provider)
                                          .where(R.res_type == type_, R.res_id == id_))).one()
                if tuple(row) != owner:
                    raise AssertionError(f"{key}: owner {tuple(row)}, expected {owner}")
    finally:
        await engine.dispose()
    return sum(1 for owner in expected.values() if owner != (None, None))
