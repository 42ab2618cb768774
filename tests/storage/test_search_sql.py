"""The statements storage runs for a search and for the access rules' look-ups, on both backends
(``storage/search_sql.py``, ``storage/access_sql.py``); the search's FHIR semantics are tested
through the API (tests/api/test_search.py), the rules' in tests/security."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.fhir.definitions import load_definitions
from patientkontrakt.fhir.search.params import SearchParser, SearchQuery
from patientkontrakt.fhir.service import RESOURCE_TYPES
from patientkontrakt.storage.access_sql import ORG
from patientkontrakt.storage.repository import Store, StoredResource
from patientkontrakt.storage.search_sql import QueryBuilder
from tests.storage.test_repository import T0, put

DEFS = load_definitions(PROJECT_ROOT / "fhir_profiles")


def parse(type_: str, *pairs: tuple[str, str]) -> SearchQuery:
    return SearchParser(DEFS, frozenset(RESOURCE_TYPES), 20, 1000).parse(type_, list(pairs), strict=True)


@pytest.fixture
async def plans(store: Store) -> Store:
    """cp1 (author o1, subject p1), cp2 (its team t1 managed by o1, subject p1), cp3 (author o2,
    subject p2, deleted), and the patients p1 and p2."""
    async with store.writing() as unit:
        await put(unit, "Patient", "p1")
        await put(unit, "Patient", "p2")
        await put(unit, "CareTeam", "t1", refs=[("managing-organization", "Organization", "o1")])
        cp1 = await put(unit, "CarePlan", "cp1", refs=[("author", "Organization", "o1"), ("subject", "Patient", "p1")])
        cp2 = await put(unit, "CarePlan", "cp2", refs=[("care-team", "CareTeam", "t1"), ("subject", "Patient", "p1")])
        cp3 = await put(unit, "CarePlan", "cp3", refs=[("author", "Organization", "o2"), ("subject", "Patient", "p2")])
        await unit.set_patient(cp1, "p1")
        await unit.set_patient(cp2, "p1")
        await unit.set_patient(cp3, "p2")
        await unit.update(cp3, 2, T0, "{}", deleted=True)
    return store


async def test_a_page_is_in_the_querys_order_with_one_row_more_and_the_count_is_of_all(plans: Store) -> None:
    builder = QueryBuilder("http://testserver/fhir")
    query = parse("Patient", ("_sort", "-_id"), ("_count", "1"))
    async with plans.reading() as unit:
        where = builder.conditions(query)
        found = await builder.page(unit, query, where, DEFS.params_for("Patient"))
        assert [r.id for r in found] == ["p2", "p1"]  # one more than _count: there is a next page
        assert all(isinstance(r, StoredResource) for r in found)
        assert await builder.count(unit, where) == 2
        assert await builder.count(unit, builder.conditions(parse("CarePlan"))) == 2  # not the deleted one
    await plans.ping()


async def test_the_candidates_are_counted_up_to_the_limit(plans: Store) -> None:
    builder = QueryBuilder("http://testserver/fhir")
    query = parse("CarePlan", ("subject", "Patient/p1"), ("author", "Organization/o1"), ("care-team", "CareTeam/x"))
    async with plans.reading() as unit:
        assert await builder.counts(unit, query, [0, 1, 2], None, 10) == [2, 1, 0]
        assert await builder.counts(unit, query, [2, 0], None, 1) == [0, 1]


async def test_the_access_rules_look_ups(plans: Store) -> None:
    async with plans.reading() as unit:
        assert await unit.has_care_plan("p1")
        assert not await unit.has_care_plan("p2")  # deleted
        assert not await unit.has_care_plan("p3")
    async with plans.reading(SimpleNamespace(parameters={ORG: "o1"})) as unit:
        assert await unit.count_reached(10) == 2  # as author, and through the team it manages
        assert await unit.count_reached(1) == 1
    async with plans.reading(SimpleNamespace(parameters={ORG: "o2"})) as unit:
        assert await unit.count_reached(10) == 1  # the reach is a superset: deleted plans count too
