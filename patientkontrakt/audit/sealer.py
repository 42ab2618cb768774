"""The sealer: gives committed log entries their positions in the Merkle tree and signs checkpoints.

Appending never waits on another writer: a write's entries are INSERTs in its own transaction,
each queued with its leaf hash (``storage.audit.append``). The sealer, like the *sequencer* of
Trillian, turns the queue into the tree: in one transaction it takes the try-lock that makes it
the only sealer in any process or machine (``SEAL_LOCK``; the others skip the round), checks that
the stored tree is the one the last checkpoint signed (signature, right edge, leaf count: a sealer
never builds on a tampered tree), gives the oldest queued entries the next positions in ``seq``
order, extends the right edge (O(batch · log n)), signs a checkpoint with the key the database does
not hold, and takes the entries off the queue. After the commit it appends the checkpoint to the
export file (``PK_AUDIT_CHECKPOINT_FILE``), where whoever controls the database cannot reach it.

Every API process runs one (``run``, every ``PK_AUDIT_SEAL_INTERVAL`` seconds) and so does
``patientkontrakt audit seal``; each also keeps the monthly partitions ahead (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from patientkontrakt.audit.checkpoint import AuditKeys, Checkpoint, CheckpointError, export, open_note, sign
from patientkontrakt.audit.merkle import HASH_SIZE, Frontier
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.repository import Store

log = logging.getLogger("patientkontrakt.audit")
BATCH = 5000  # entries per seal transaction (and per checkpoint)
MAINTENANCE_EVERY = 3600.0  # seconds between checks of the partitions ahead


class SealError(RuntimeError):
    """The stored tree is not the one its last checkpoint signed: the sealer stops extending it
    (``patientkontrakt audit verify`` says what is wrong)."""


class Sealer:
    def __init__(self, store: Store, keys: AuditKeys, export_to: Path | None = None, batch: int = BATCH) -> None:
        self._store = store
        self._keys = keys
        self._export = export_to
        self._batch = batch

    async def seal(self) -> list[Checkpoint]:
        """Seal everything committed and queued now; the checkpoints signed (one per batch).
        Nothing if another sealer holds the lock."""
        written: list[Checkpoint] = []
        while True:
            checkpoint, more = await self._seal_batch()
            if checkpoint is not None:
                written.append(checkpoint)
                self._export_one(checkpoint)
            if not more:
                return written

    async def _seal_batch(self) -> tuple[Checkpoint | None, bool]:
        async with self._store.writing() as unit:
            if not await sql.try_seal_lock(unit):
                return None, False
            frontier = await self._tree(unit.conn)
            queued = await sql.queued(unit, self._batch)
            if not queued:
                return None, False
            sealed = await sql.sealed_among(unit, [q.seq for q in queued])
            fresh = []
            for entry in queued:
                if entry.seq in sealed or len(entry.leaf_hash) != HASH_SIZE:
                    # not from the write path: left out of the tree, which `audit verify` reports
                    log.error("access log: queued entry %s is %s; not sealed", entry.seq,
                              "sealed already" if entry.seq in sealed else "without a valid leaf hash")
                    continue
                fresh.append(entry)
            first = frontier.size
            for entry in fresh:
                frontier.append(entry.leaf_hash)
            checkpoint = sign(self._keys.signer, frontier.size, frontier.root(), int(time.time())) if fresh else None
            await sql.seal(unit, first, fresh, [q.seq for q in queued],
                           (checkpoint.size, checkpoint.note, frontier.to_bytes()) if checkpoint else None)
        return checkpoint, len(queued) == self._batch

    async def _tree(self, conn: AsyncConnection) -> Frontier:
        """The right edge of the stored tree, once it is the tree the last checkpoint signed."""
        head = await sql.latest_checkpoint(conn)
        size = await sql.tree_size(conn)
        if head is None:
            if size:
                raise SealError(f"the tree has {size} leaves and no checkpoint signs them")
            return Frontier()
        try:
            checkpoint = open_note(head.note, self._keys.verifiers, self._keys.origin)
            frontier = Frontier.from_bytes(head.tree_size, head.frontier)
        except (CheckpointError, ValueError) as exc:
            raise SealError(f"the last checkpoint (size {head.tree_size}) is not valid: {exc}") from None
        if checkpoint.size != head.tree_size or frontier.root() != checkpoint.root:
            raise SealError(f"the stored right edge of the tree does not give the root the checkpoint at size "
                            f"{head.tree_size} signed")
        if size != head.tree_size:
            raise SealError(f"the tree has {size} leaves, the last checkpoint signed {head.tree_size}")
        return frontier

    def _export_one(self, checkpoint: Checkpoint) -> None:
        if self._export is None:
            return
        try:
            export(self._export, checkpoint)
        except OSError as exc:  # the checkpoint is in the database; a later one will cover it
            log.error("access log: cannot export the checkpoint of size %s to %s: %s", checkpoint.size,
                      self._export, exc.strerror)

    async def maintain(self) -> list[str]:
        """Create the monthly partitions ahead (PostgreSQL), as the one sealer at work."""
        async with self._store.writing() as unit:
            if not await sql.try_seal_lock(unit):
                return []
            created = await sql.ensure_partitions(unit, datetime.now(UTC).date())
        for name in created:
            log.info("access log: partition %s created", name)
        return created

    async def run(self, interval: float) -> None:
        """Seal every ``interval`` seconds until cancelled (the API's background task). Errors
        are logged and the next round tries again: a database that is away, a lock not had."""
        maintained = float("-inf")
        while True:
            try:
                if time.monotonic() - maintained >= MAINTENANCE_EVERY:
                    await self.maintain()
                    maintained = time.monotonic()
                await self.seal()
            except SealError as exc:
                log.error("access log: not sealing: %s. Run `patientkontrakt audit verify`.", exc)
            except Exception as exc:  # the loop outlives a failed round
                log.warning("access log: sealing failed, retrying in %ss: %s", interval, exc)
            await asyncio.sleep(interval)
