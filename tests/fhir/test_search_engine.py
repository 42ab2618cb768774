"""The search engine against a real store: a page of matches in order, the total, the next page,
what ``_include``/``_revinclude`` add, and ``_summary=count``. (The HTTP form, every parameter
type and the access rules are tested in tests/api/test_search.py and tests/security.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from patientkontrakt.fhir.access import INTERNAL
from patientkontrakt.fhir.search.engine import SearchPage
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import make_settings


@pytest.fixture
def service(sqlite_url: str) -> Iterator[FhirService]:
    store = Store(create_engine(sqlite_url, pool_size=2))
    service = FhirService(make_settings(sqlite_url), store)

    async def load() -> None:
        async with store.writing(INTERNAL) as unit:
            for patient in ("p1", "p2"):
                await service.writer.update(unit, {"resourceType": "Patient", "id": patient})
            for n, patient in enumerate(("p1", "p1", "p1", "p2")):
                await service.writer.update(unit, {
                    "resourceType": "Goal", "id": f"g{n}", "lifecycleStatus": "active",
                    "description": {"text": f"Mål {n}"}, "subject": {"reference": f"Patient/{patient}"}})

    asyncio.run(load())
    yield service
    asyncio.run(store.dispose())


def find(service: FhirService, type_: str, pairs: list[tuple[str, str]]) -> SearchPage:
    async def go() -> SearchPage:
        query = service.parser.parse(type_, pairs, strict=True)
        async with service.store.reading(INTERNAL) as unit:
            return await service.search_engine.find(unit, query)
    return asyncio.run(go())


def ids(resources: Any) -> list[str]:
    return [f"{r.type}/{r.id}" for r in resources]


def test_a_page_its_total_and_the_next_page(service: FhirService) -> None:
    first = find(service, "Goal", [("patient", "p1"), ("_sort", "_id"), ("_count", "2"), ("_total", "accurate")])
    assert (ids(first.matches), first.total, first.has_next) == (["Goal/g0", "Goal/g1"], 3, True)
    last = find(service, "Goal", [("patient", "p1"), ("_sort", "_id"), ("_count", "2"), ("_offset", "2")])
    assert (ids(last.matches), last.has_next) == (["Goal/g2"], False)


def test_includes_add_what_the_matches_name_and_what_names_them(service: FhirService) -> None:
    goals = find(service, "Goal", [("_id", "g0,g3"), ("_include", "Goal:subject")])
    assert sorted(ids(goals.included)) == ["Patient/p1", "Patient/p2"]
    patients = find(service, "Patient", [("_id", "p2"), ("_revinclude", "Goal:subject")])
    assert (ids(patients.matches), ids(patients.included)) == (["Patient/p2"], ["Goal/g3"])


def test_a_count_returns_no_resources(service: FhirService) -> None:
    counted = find(service, "Goal", [("patient", "p1"), ("_summary", "count")])
    assert (counted.matches, counted.included, counted.total) == ([], [], 3)
