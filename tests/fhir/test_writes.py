"""The write pipeline (``Writer``) against a real store, one unit of work at a time: versions,
``If-Match``, unchanged content, deletion, the conditional forms' match counts, and the patient a
stored resource is filed under (a Provenance's is its targets')."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import orjson
import pytest

from patientkontrakt.fhir.access import INTERNAL
from patientkontrakt.fhir.errors import PreconditionFailed
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.fhir.writes import WriteOutcome
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store, Unit
from tests.conftest import make_settings

T = TypeVar("T")
PATIENT = {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "1"}],
           "name": [{"family": "Testsson"}]}


@pytest.fixture
def write(sqlite_url: str) -> Iterator[Callable[[Callable[[Unit, FhirService], Awaitable[T]]], T]]:
    """Runs ``work(unit, service)`` in one write unit of the service's store (committed)."""
    store = Store(create_engine(sqlite_url, pool_size=2))
    service = FhirService(make_settings(sqlite_url), store)

    def run(work: Callable[[Unit, FhirService], Awaitable[T]]) -> T:
        async def go() -> T:
            async with store.writing(INTERNAL) as unit:
                return await work(unit, service)
        return asyncio.run(go())

    yield run
    asyncio.run(store.dispose())


def _create(resource: dict[str, Any]) -> Callable[[Unit, FhirService], Awaitable[WriteOutcome]]:
    return lambda unit, service: service.writer.create(unit, dict(resource))


def test_each_change_is_a_new_version_and_unchanged_content_is_not(write: Any) -> None:
    created = write(_create(PATIENT))
    assert (created.status, created.resource.version_id) == (201, 1)
    body = {**orjson.loads(created.resource.body), "name": [{"family": "Andersson"}]}
    changed = write(lambda unit, service: service.writer.update(unit, body, if_match='W/"1"'))
    assert (changed.status, changed.resource.version_id) == (200, 2)
    assert orjson.loads(changed.resource.body)["meta"]["versionId"] == "2"
    again = write(lambda unit, service: service.writer.update(unit, body))
    assert again.resource.version_id == 2  # the same content again: no new version


def test_a_stale_if_match_changes_nothing(write: Any) -> None:
    created = write(_create(PATIENT))
    body = {**orjson.loads(created.resource.body), "gender": "female"}
    write(lambda unit, service: service.writer.update(unit, body))
    stale = {**body, "gender": "male"}
    with pytest.raises(PreconditionFailed):
        write(lambda unit, service: service.writer.update(unit, stale, if_match='W/"1"'))
    current = write(lambda unit, service: unit.get("Patient", created.resource.id))
    assert (current.version_id, orjson.loads(current.body)["gender"]) == (2, "female")


def test_a_deletion_is_a_version_and_a_second_one_changes_nothing(write: Any) -> None:
    created = write(_create(PATIENT))
    deleted = write(lambda unit, service: service.writer.delete(unit, "Patient", created.resource.id))
    assert deleted.resource.version_id == 2
    again = write(lambda unit, service: service.writer.delete(unit, "Patient", created.resource.id))
    assert again.resource.version_id == 2
    current = write(lambda unit, service: unit.get("Patient", created.resource.id))
    assert current.deleted


def test_the_conditional_forms_count_their_matches(write: Any) -> None:
    def conditional_create(unit: Unit, service: FhirService) -> Awaitable[WriteOutcome]:
        return service.writer.create(unit, dict(PATIENT), if_none_exist="identifier=urn:test|1")

    first, again = write(conditional_create), write(conditional_create)
    assert (first.status, again.status, again.resource.id) == (201, 200, first.resource.id)
    write(_create({**PATIENT, "name": [{"family": "Tvilling"}]}))  # a second record with the identifier
    with pytest.raises(PreconditionFailed):
        write(conditional_create)
    nothing = write(lambda unit, service: service.writer.conditional_update(
        unit, "Patient", "identifier=urn:test|2", {**PATIENT, "identifier": [{"system": "urn:test", "value": "2"}]}))
    assert (nothing.status, nothing.created) == (201, True)


def test_a_provenance_is_filed_under_its_targets_patient(write: Any) -> None:
    patient = write(_create(PATIENT)).resource
    goal = write(_create({"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Gå"},
                          "subject": {"reference": f"Patient/{patient.id}"}})).resource
    assert goal.patient_id == patient.id
    provenance = write(_create({
        "resourceType": "Provenance", "recorded": "2026-12-05T10:00:00Z",
        "target": [{"reference": f"Goal/{goal.id}/_history/1"}],
        "agent": [{"who": {"reference": f"Patient/{patient.id}"}}]})).resource
    assert provenance.patient_id == patient.id
