"""What watches every stored write, in the write's own transaction: the notifications
(``patientkontrakt.notify``: a Subscription's own state, and the outbox rows a change owes).

Unlike ``WriteHooks`` (the domain's rules, absent from the bare engine), an observer sees every
write of every engine: single interactions, PATCH, conditional writes, each entry of a batch or
transaction. ``Writer`` calls it; a reindex does not (nothing changed).
"""

from __future__ import annotations

from typing import Any, Protocol

from patientkontrakt.storage.repository import StoredResource, Unit


class WriteObserver(Protocol):
    async def before_store(self, unit: Unit, resource: dict[str, Any], existing: StoredResource | None
                           ) -> dict[str, Any]:
        """Before a create or update is stored (after the access rules admitted it): may
        complete the resource or refuse it."""
        ...

    async def stored(self, unit: Unit, stored: StoredResource, existing: StoredResource | None) -> None:
        """``stored`` was written (its index rows too) over ``existing``."""
        ...

    async def deleted(self, unit: Unit, gone: StoredResource) -> None:
        """``gone`` is the new, deleted version (its index rows are kept)."""
        ...


class NoObserver:
    async def before_store(self, unit: Unit, resource: dict[str, Any], existing: StoredResource | None
                           ) -> dict[str, Any]:
        return resource

    async def stored(self, unit: Unit, stored: StoredResource, existing: StoredResource | None) -> None:
        return None

    async def deleted(self, unit: Unit, gone: StoredResource) -> None:
        return None
