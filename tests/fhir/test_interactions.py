"""The interaction pipeline's stages, in order and alone: scopes before the handler, the stages'
``before``/``written``/``shown``, the access-log entry of a write in the write's transaction (gone
when it rolls back), refusals logged with their status once the handler gave up.

Against a real SQLite store and a real ``FhirService``; the access and the log are small
implementations of their protocols that record what the pipeline asked of them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from patientkontrakt.fhir.access import Internal, Principal
from patientkontrakt.fhir.errors import Forbidden, HiddenResource, NotFound
from patientkontrakt.fhir.interactions import Interaction
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store, StoredResource, Unit
from tests.conftest import make_settings

PATIENT = {"resourceType": "Patient", "name": [{"family": "Testsson"}]}


@dataclass
class Recorded:
    kind: str
    interaction: str
    request: str
    status: int
    ids: list[str] = field(default_factory=list)
    in_transaction: bool = False


class RecordingLog:
    """An ``AccessLog`` that keeps what it was asked to record."""

    def __init__(self) -> None:
        self.entries: list[Recorded] = []

    async def record(self, access: Any, interaction: str, request: str, resources: list[StoredResource],
                     *, status: int = 200, unit: Unit | None = None) -> None:
        self.entries.append(Recorded("record", interaction, request, status, [r.id for r in resources],
                                     in_transaction=unit is not None))

    async def refused(self, access: Any, interaction: str, request: str, status: int,
                      resource: StoredResource | None = None) -> None:
        self.entries.append(Recorded("refused", interaction, request, status,
                                     [resource.id] if resource is not None else []))


class Caller(Internal):
    """Everything allowed but ``denied``; ``confirm`` refuses when ``refuse_writes``."""

    principal = Principal(kind="system", id="test")
    logged = True

    def __init__(self, denied: set[tuple[str, str]] | None = None, refuse_writes: bool = False) -> None:
        self.denied = denied or set()
        self.refuse_writes = refuse_writes

    def require(self, type_: str, interaction: str) -> None:
        if (type_, interaction) in self.denied:
            raise Forbidden(f"no {interaction} of {type_}")

    async def confirm(self, unit: Unit, written: list[StoredResource]) -> None:
        if self.refuse_writes:
            raise Forbidden("not yours")


class RecordingStage:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def before(self, access: Any, interaction: Interaction) -> None:
        self.calls.append(("before", interaction.kind))

    async def written(self, unit: Unit, interaction: Interaction, status: int) -> None:
        self.calls.append(("written", interaction.kind))

    async def shown(self, access: Any, interaction: Interaction, resources: Any) -> None:
        self.calls.append(("shown", interaction.kind))


@pytest.fixture
def service(sqlite_url: str) -> Any:
    store = Store(create_engine(sqlite_url, pool_size=2))
    log = RecordingLog()
    stage = RecordingStage()
    service = FhirService(make_settings(sqlite_url), store, log=log, stages=[stage])
    yield service, log, stage
    asyncio.run(store.dispose())


def test_scopes_are_checked_before_the_handler_runs_and_the_refusal_is_logged(service: Any) -> None:
    fhir, log, stage = service
    ran = []

    async def attempt() -> None:
        interaction = Interaction.of("update", "Patient", "Patient?identifier=x", ("Patient", "search-type"))
        async with fhir.pipeline.run(Caller({("Patient", "search-type")}), interaction):
            ran.append(True)

    with pytest.raises(Forbidden):
        asyncio.run(attempt())
    assert ran == [] and stage.calls == []
    assert [(e.kind, e.interaction, e.request, e.status) for e in log.entries] == [
        ("refused", "update", "Patient?identifier=x", 403)]


def test_a_write_is_logged_in_its_transaction_after_the_stages(service: Any) -> None:
    fhir, log, stage = service
    created = asyncio.run(fhir.create(Caller(), "Patient", dict(PATIENT), if_none_exist=None, prefer=Preferences()))
    assert created.status == 201
    assert stage.calls == [("before", "create"), ("written", "create")]
    [entry] = log.entries
    assert (entry.kind, entry.interaction, entry.request, entry.status, entry.in_transaction) == \
        ("record", "create", "Patient", 201, True)
    assert len(entry.ids) == 1


def test_a_write_its_writer_may_not_keep_is_rolled_back_and_logged_as_refused(service: Any) -> None:
    fhir, log, stage = service
    with pytest.raises(Forbidden):
        asyncio.run(fhir.create(Caller(refuse_writes=True), "Patient", dict(PATIENT), if_none_exist=None,
                                prefer=Preferences()))
    assert [(e.kind, e.status) for e in log.entries] == [("refused", 403)]
    search = asyncio.run(fhir.search(Caller(), "Patient", [], Preferences()))
    assert b'"total":0' in search.body


def test_a_read_is_shown_and_logged_and_an_absent_one_is_a_logged_refusal(service: Any) -> None:
    fhir, log, stage = service
    created = asyncio.run(fhir.create(Caller(), "Patient", dict(PATIENT), if_none_exist=None, prefer=Preferences()))
    patient_id = created.location.split("/Patient/")[1].split("/")[0]
    log.entries.clear()
    stage.calls.clear()
    asyncio.run(fhir.read(Caller(), "Patient", patient_id))
    assert stage.calls == [("before", "read"), ("shown", "read")]
    assert [(e.kind, e.interaction, e.request, e.ids) for e in log.entries] == [
        ("record", "read", f"Patient/{patient_id}", [patient_id])]
    log.entries.clear()
    with pytest.raises(NotFound) as refused:
        asyncio.run(fhir.read(Caller(), "Patient", "no-such-patient"))
    assert isinstance(refused.value, HiddenResource)
    assert [(e.kind, e.interaction, e.status, e.ids) for e in log.entries] == [("refused", "read", 404, [])]


def test_every_batch_entry_runs_through_the_pipeline(service: Any) -> None:
    from patientkontrakt.fhir.bundles import BundleProcessor

    fhir, log, stage = service
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": dict(PATIENT), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": "Patient/whatever"}},
    ]}
    answer = asyncio.run(BundleProcessor(fhir).process(Caller({("Patient", "delete")}), bundle, Preferences()))
    assert answer.status == 200
    assert [(e.kind, e.interaction, e.request, e.status) for e in log.entries] == [
        ("record", "create", "batch entry 0", 201), ("record", "search-type", "batch entry 1", 200),
        ("refused", "delete", "batch entry 2", 403)]
    assert stage.calls == [("before", "create"), ("written", "create"), ("before", "search-type"),
                           ("shown", "search-type")]
