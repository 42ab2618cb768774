"""The interaction pipeline: every FHIR interaction runs through the same stages, in one place.

An interaction is described once (``Interaction``: its kind, its type, the request as the access
log names it, and every permission it needs) and run inside ``Pipeline.run``, which

1. checks the caller's scopes for every permission the interaction needs (403),
2. gives every plugged-in ``Stage`` its ``before`` (what later issues add, consent and spärr,
   plugs in here without touching a handler),
3. hands the handler an ``Exchange``, through which it reports what it did: ``written`` at the
   end of each write unit, inside the write's own transaction (the caller must be able to see
   what it wrote; the stages' ``written``; the access log entry, committed with the write or not
   at all), ``shown`` for what it returns (the stages' ``shown``; the access log entry, before
   the response is sent),
4. logs every refusal once the handler has given up (after its transaction rolled back and its
   connection went back to the pool): a resource the caller may not see or that does not exist
   (404, ``HiddenResource``, with the hidden resource's patient), missing permission (403).

The access rule itself is not a stage: it is a condition in every query (``Access.restriction``
as SQL, filtered before paging) and a check before every write (``Access.admit``), applied by the
storage layer and the writer to whatever the handler touches, so no handler can forget it.

Modelled on both HAPI FHIR and Medplum (``docs/architecture.md``): HAPI's interceptor pointcuts
give the named places where cross-cutting work plugs in (``STORAGE_PRESHOW_RESOURCES``,
``STORAGE_PRECOMMIT_RESOURCE_*``, ``SERVER_INCOMING_REQUEST_PRE_HANDLED``: our ``shown``,
``written``, ``before``); Medplum's repository applies the access policy inside every query,
which is where our restriction lives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from patientkontrakt.fhir.access import Access, AccessLog, access_of
from patientkontrakt.fhir.errors import Forbidden, HiddenResource
from patientkontrakt.storage.repository import StoredResource, Unit


@dataclass(frozen=True)
class Interaction:
    """One interaction as the pipeline sees it.

    ``kind``: the access log's and the scopes' name (``read``, ``search-type``, ``create``,
    ``transaction``…); ``type``: the resource type (None at system level); ``request``: what the
    access log records as the request; ``needs``: every (type, interaction) the scopes must grant
    before anything is read or written (a conditional update needs ``update`` and
    ``search-type``; a search with ``_include`` the included types too).
    """

    kind: str
    type: str | None
    request: str
    needs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, kind: str, type_: str | None, request: str, *also: tuple[str, str]) -> Interaction:
        """The interaction ``kind`` on ``type_``, needing that permission and ``also``."""
        own = ((type_, kind),) if type_ is not None else ()
        return cls(kind, type_, request, own + also)


class Stage(Protocol):
    """What plugs into every interaction. Each method may raise a ``FhirError`` to refuse."""

    async def before(self, access: Access, interaction: Interaction) -> None:
        """Before the handler runs, once the scopes allow the interaction."""
        ...

    async def written(self, unit: Unit, interaction: Interaction, status: int) -> None:
        """After a write unit's writes, in its transaction (``unit.written``, ``unit.touched``)."""
        ...

    async def shown(self, access: Access, interaction: Interaction, resources: Sequence[StoredResource]) -> None:
        """Before ``resources`` are returned to the caller."""
        ...


class Exchange:
    """A running interaction: how its handler reports what it wrote and what it returns."""

    def __init__(self, pipeline: Pipeline, access: Access, interaction: Interaction) -> None:
        self.pipeline, self.access, self.interaction = pipeline, access, interaction

    def require(self, type_: str, kind: str) -> None:
        """A permission that only the handler can know of (a Bundle entry's, an include's)."""
        self.access.require(type_, kind)

    async def written(self, unit: Unit, status: int = 200, *, kind: str | None = None,
                      request: str | None = None) -> None:
        """The end of a write unit: what was written must be visible to its writer (otherwise the
        whole unit is refused and rolled back), and it is logged in the same transaction, with
        the status the interaction answers."""
        access = access_of(unit)
        await access.confirm(unit, unit.written)
        for stage in self.pipeline.stages:
            await stage.written(unit, self.interaction, status)
        await self.pipeline.log.record(access, kind or self.interaction.kind, request or self.interaction.request,
                                       unit.touched, status=status, unit=unit)

    async def shown(self, resources: Iterable[StoredResource], status: int = 200, *,
                    request: str | None = None) -> None:
        """What the interaction returns (or, with a status such as 410, what it answered about)."""
        shown = list(resources)
        for stage in self.pipeline.stages:
            await stage.shown(self.access, self.interaction, shown)
        await self.pipeline.log.record(self.access, self.interaction.kind, request or self.interaction.request,
                                       shown, status=status)


    async def refused(self, error: HiddenResource | Forbidden) -> None:
        """A refusal the handler answers without raising (``$validate`` answers an issue)."""
        await self.pipeline.refused(self.access, self.interaction, error)


class Pipeline:
    """Runs interactions through the stages (see the module's docstring)."""

    def __init__(self, log: AccessLog, stages: Sequence[Stage] = ()) -> None:
        self.log = log
        self.stages = tuple(stages)

    @asynccontextmanager
    async def run(self, access: Access, interaction: Interaction) -> AsyncIterator[Exchange]:
        try:
            for type_, kind in interaction.needs:
                access.require(type_, kind)
            for stage in self.stages:
                await stage.before(access, interaction)
            yield Exchange(self, access, interaction)
        except (HiddenResource, Forbidden) as error:
            await self.refused(access, interaction, error)
            raise

    async def refused(self, access: Access, interaction: Interaction, error: HiddenResource | Forbidden) -> None:
        """404 for a resource hidden or absent (with the hidden one's patient), 403 for a missing
        permission."""
        if isinstance(error, HiddenResource):
            await self.log.refused(access, interaction.kind, interaction.request, 404, error.resource)
        else:
            await self.log.refused(access, interaction.kind, interaction.request, 403)
