"""Writing the access log (Patientdatalagen 4 kap 3 §, HSLF-FS 2016:40; design §6).

Every request that reads or writes patient data leaves one entry per patient it touched: when,
who (HSA-id or personnummer, name, role), for which care unit, through which client, what
(interaction, request, the resources), which patient, the outcome and the purpose. Refused
attempts are logged too.

* **Writes** are logged inside the write's own transaction: no write without its entry.
* **Reads** are logged before the response is sent, and the read fails if that fails. Concurrent
  reads share a transaction (*group commit*): each request hands its entries to the writer and
  waits until the transaction holding them has committed; while one transaction is being
  written the next batch gathers. The cost of a commit is paid once per batch, not per read.

An append is plain INSERTs (``storage.audit.append``): writers never wait on each other. The
entries are then sealed into a Merkle tree under signed checkpoints (``audit.sealer``), which
``patientkontrakt audit verify`` checks (``audit.verify``; docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from patientkontrakt.fhir.access import Access
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.fhir.errors import ServerError
from patientkontrakt.logs import REQUEST_ID, describe
from patientkontrakt.metrics import AUDIT_APPEND_SECONDS
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.errors import DatabaseUnavailable
from patientkontrakt.storage.repository import Store, StoredResource, Unit

log = logging.getLogger("patientkontrakt.audit")
MAX_RESOURCES_PER_ENTRY = 200
# v3 ActReason HCOMPL (health compliance): the purpose of a log reviewer's reading of the log.
REVIEW_PURPOSE = "HCOMPL"


def _entries(access: Access, interaction: str, request: str, resources: Iterable[StoredResource],
             status: int, outcome: str, recorded: datetime) -> list[dict[str, Any]]:
    """One entry per patient among ``resources`` (the order of first appearance)."""
    by_patient: dict[str, list[str]] = {}
    for resource in resources:
        if resource.patient_id is not None:
            names = by_patient.setdefault(resource.patient_id, [])
            name = f"{resource.type}/{resource.id}"
            if name not in names and len(names) < MAX_RESOURCES_PER_ENTRY:
                names.append(name)
    return [_entry(access, interaction, request, names, patient, status, outcome, recorded)
            for patient, names in by_patient.items()]


def _entry(access: Access, interaction: str, request: str, resources: list[str], patient_id: str | None,
           status: int, outcome: str, recorded: datetime) -> dict[str, Any]:
    who = access.principal
    return {
        "recorded": recorded, "user_id": who.id, "user_name": who.name, "user_kind": who.kind, "role": who.role,
        "fhir_user": who.fhir_user, "care_unit": who.care_unit, "care_unit_name": who.care_unit_name,
        "care_provider": who.care_provider, "client_id": who.client_id, "interaction": interaction,
        "request": request[:2000].replace("\x00", "\\0"), "resources": orjson.dumps(resources).decode(),
        "patient_id": patient_id,
        "outcome": outcome, "status": status, "purpose": who.purpose, "reason": who.reason,
        "request_id": REQUEST_ID.get(),
    }


class AuditLog:
    """The engine's ``AccessLog`` for this service."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, access: Access, interaction: str, request: str, resources: list[StoredResource],
                     *, status: int = 200, unit: Unit | None = None) -> None:
        if not access.logged:
            return
        entries = _entries(access, interaction, request, resources, status, "success", now_utc())
        if not entries:
            return
        if unit is not None:
            with AUDIT_APPEND_SECONDS.labels("in_transaction").time():
                await sql.append(unit, entries)
        else:
            await self._commit(entries)

    async def refused(self, access: Access, interaction: str, request: str, status: int,
                      resource: StoredResource | None = None) -> None:
        """A refused attempt (401, 403, or 404 for what the caller may not see)."""
        if not access.logged:
            return
        names = [f"{resource.type}/{resource.id}"] if resource is not None else []
        patient = resource.patient_id if resource is not None else None
        await self._commit([_entry(access, interaction, request, names, patient, status, "refused", now_utc())])

    async def reviewed(self, access: Access, interaction: str, request: str,
                       patient_ids: Iterable[str | None]) -> None:
        """A log reviewer read the log: one entry per patient asked about (``None``: one entry
        naming no patient), purpose ``HCOMPL``, committed before the answer is shown. The
        reviewer's own reviews are then in the provider's log for the next review, and a search
        for one patient's entries is in that patient's log extract."""
        if not access.logged:
            return
        recorded = now_utc()
        entries = [{**_entry(access, interaction, request, [], patient, 200, "success", recorded),
                    "purpose": REVIEW_PURPOSE, "reason": None} for patient in dict.fromkeys(patient_ids)]
        if entries:
            await self._commit(entries)

    # -- group commit ----------------------------------------------------------------------

    async def _commit(self, entries: list[dict[str, Any]]) -> None:
        """Return once ``entries`` are committed; if they cannot be, nothing is shown: raise
        ``DatabaseUnavailable`` (503) in an outage, else a ``ServerError``."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)
        self._pending.append((entries, done))
        if self._writer is None or self._writer.done():
            # in a context of its own: not the request's that happened to start it (its request id
            # would be on every record the writer logs for as long as the process runs)
            self._writer = asyncio.create_task(self._write_batches(), context=contextvars.Context())
        try:
            with AUDIT_APPEND_SECONDS.labels("committed").time():
                await asyncio.shield(done)
        except (ServerError, DatabaseUnavailable):
            raise
        except Exception as exc:  # the database failed: no log, no data
            log.error("access log write failed: %s", describe(exc))
            raise ServerError("The access log could not be written, so nothing is shown",
                              details_sv="Åtkomstloggen kunde inte skrivas, därför visas ingenting.") from None

    async def _write_batches(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await sql.append_committed(self._store, [entry for entries, _ in batch for entry in entries])
            except Exception as exc:  # handed to every waiter; the writer itself goes on
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)



def _retrieved(done: asyncio.Future[None]) -> None:
    """Mark a failure as seen even if its request is gone (a client that disconnected): asyncio
    would otherwise log it, message and all, as never retrieved."""
    if not done.cancelled():
        done.exception()
