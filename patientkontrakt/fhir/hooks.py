"""Extension points of the write pipeline, so domain rules stay out of the generic FHIR engine.

``patientkontrakt.fhir`` knows nothing of Patientkontrakt; ``patientkontrakt.domain`` implements
``WriteHooks`` and the application passes it to ``FhirService``. Every write (single
interaction, batch entry or transaction entry) goes through the same hooks:

1. ``prepare`` — after the structural validation, before any database work: normalise
   (e.g. identifier forms), stamp profiles, validate against profiles. No database.
2. ``before_store`` — inside the transaction, with the current stored version: may transform
   the resource (e.g. keep a closed participant instead of losing it).
3. ``verify`` — rules across resources (e.g. one active agreement per patient and unit); the
   writer is passed for its search. In a transaction Bundle it runs once every entry is
   written, like the reference check.
4. ``after_store`` — inside the same transaction: follow-up writes (e.g. a Provenance).
5. ``warnings`` — once the write is stored: issues of severity ``warning`` about an accepted
   write (e.g. a new activity planned in the past). They reach the client as R4 http.html#return
   and bundle.html#transaction-response describe: in the OperationOutcome of ``Prefer:
   return=OperationOutcome``, and in a batch or transaction always in ``entry.response.outcome``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from patientkontrakt.fhir.errors import Issue
from patientkontrakt.storage.repository import StoredResource, Unit

if TYPE_CHECKING:
    from patientkontrakt.fhir.writes import Writer


@dataclass(frozen=True)
class WriteContext:
    """Per-request facts a write may need.

    ``provenance``: the ``X-Provenance`` header (R4 http.html#provenance), stored by the writer as
    a Provenance of the new version. ``transaction``: in a transaction Bundle, the resources its
    entries write (ids assigned, references resolved), so that a rule may find the other way R4
    gives a client to say why it writes: a Provenance entry in the same transaction that targets
    the resource.
    """

    provenance: dict[str, Any] | None = None
    transaction: tuple[dict[str, Any], ...] = ()


NO_CONTEXT = WriteContext()


class WriteHooks(Protocol):
    def prepare(self, resource: dict[str, Any]) -> dict[str, Any]: ...

    def profile_issues(self, resource: dict[str, Any], profile_url: str) -> list[Issue] | None:
        """Issues against a named profile (``$validate?profile=``); None for a profile we don't know."""
        ...

    async def before_store(self, unit: Unit, resource: dict[str, Any], existing: StoredResource | None,
                           context: WriteContext) -> dict[str, Any]: ...

    async def verify(self, unit: Unit, resource: dict[str, Any], writer: Writer) -> None: ...

    async def after_store(self, unit: Unit, stored: StoredResource, existing: StoredResource | None,
                          context: WriteContext, writer: Writer) -> None: ...

    def warnings(self, resource: dict[str, Any], existing: StoredResource | None) -> list[Issue]:
        """Warnings about an accepted write of ``resource`` over ``existing``; no database."""
        ...

    async def reindexed(self, unit: Unit, stored: StoredResource) -> None:
        """``stored`` had its index rows re-extracted (``fhir/reindex.py``): derive again what the
        domain keeps beside them."""
        ...


class NoHooks:
    """The generic FHIR server: no domain rules."""

    def prepare(self, resource: dict[str, Any]) -> dict[str, Any]:
        return resource

    def profile_issues(self, resource: dict[str, Any], profile_url: str) -> list[Issue] | None:
        return None

    async def before_store(self, unit: Unit, resource: dict[str, Any], existing: StoredResource | None,
                           context: WriteContext) -> dict[str, Any]:
        return resource

    async def verify(self, unit: Unit, resource: dict[str, Any], writer: Writer) -> None:
        return None

    async def after_store(self, unit: Unit, stored: StoredResource, existing: StoredResource | None,
                          context: WriteContext, writer: Writer) -> None:
        return None

    def warnings(self, resource: dict[str, Any], existing: StoredResource | None) -> list[Issue]:
        return []

    async def reindexed(self, unit: Unit, stored: StoredResource) -> None:
        return None
