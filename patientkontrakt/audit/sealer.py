"""The sealer: gives committed log entries their positions in the Merkle tree and signs checkpoints.

Appending never waits on another writer: a write's entries are INSERTs in its own transaction,
each queued with its leaf hash (``storage.audit.append``). The sealer, like the *sequencer* of
Trillian, turns the queue into the tree: in one transaction it takes the try-lock that makes it
the only sealer in any process or machine (``SEAL_LOCK``; the others skip the round), checks that
the stored tree is the one the last checkpoint signed (signature, right edge, leaf count) and that
it extends the last checkpoint this sealer knows was signed (a sealer never builds on a tampered
or truncated tree), gives the oldest queued entries the next positions in ``seq``
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from patientkontrakt.audit.checkpoint import (
    AuditKeys,
    Checkpoint,
    CheckpointError,
    export,
    open_note,
    sign,
    split_notes,
)
from patientkontrakt.audit.merkle import HASH_SIZE, Frontier
from patientkontrakt.logs import describe
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.repository import Store

log = logging.getLogger("patientkontrakt.audit")
BATCH = 5000  # entries per seal transaction (and per checkpoint)
MAINTENANCE_EVERY = 3600.0  # seconds between checks of the partitions ahead


class SealError(RuntimeError):
    """The stored tree is not the one its last checkpoint signed: the sealer stops extending it
    (``patientkontrakt audit verify`` says what is wrong)."""


class Sealer:
    def __init__(self, store: Store, keys: AuditKeys, export_to: Path | None = None, batch: int = BATCH,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock  # the time a checkpoint is signed at (POSIX seconds)
        self._keys = keys
        self._export = export_to
        self._batch = batch
        # The latest checkpoint this sealer knows was signed (by itself, or the last one exported):
        # it never signs a tree that does not extend it, so a database whose tail was removed (or
        # whose history was rewritten and queued again) is not sealed anew under our key.
        self._known: Checkpoint | None = self._last_exported()

    async def seal(self) -> list[Checkpoint]:
        """Seal everything committed and queued now; the checkpoints signed (one per batch).
        Nothing if another sealer holds the lock."""
        written: list[Checkpoint] = []
        while True:
            checkpoint, more = await self._seal_batch()
            if checkpoint is not None:
                written.append(checkpoint)
                self._known = checkpoint
                self._export_one(checkpoint)
            if not more:
                if written:
                    await sql.vacuum_queue(self._store)
                return written

    async def _seal_batch(self) -> tuple[Checkpoint | None, bool]:
        async with self._store.writing() as unit:
            if not await sql.try_seal_lock(unit):
                return None, False
            frontier = await self._tree(unit.conn)
            queued = await sql.queued(unit, self._batch)
            if not queued:
                return None, False
            fresh = []
            for entry in queued:
                if entry.sealed or len(entry.leaf_hash) != HASH_SIZE:
                    # not from the write path: left out of the tree, which `audit verify` reports
                    log.error("access log: queued entry %s is %s; not sealed", entry.seq,
                              "sealed already" if entry.sealed else "without a valid leaf hash")
                    continue
                fresh.append(entry)
            first = frontier.size
            for entry in fresh:
                frontier.append(entry.leaf_hash)
            checkpoint = sign(self._keys.signer, frontier.size, frontier.root(), int(self._clock())) if fresh else None
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
            await self._extends_known(conn, None)
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
        await self._extends_known(conn, checkpoint)
        return frontier

    async def _extends_known(self, conn: AsyncConnection, head: Checkpoint | None) -> None:
        known = self._known
        if known is None:
            return
        size = head.size if head is not None else 0
        if size < known.size:
            raise SealError(f"the tree has {size} leaves, but the checkpoint of size {known.size} was signed "
                            f"({known.time:%Y-%m-%dT%H:%M:%SZ}): entries were removed from its end")
        stored = head if head is not None and head.size == known.size else None
        if stored is None:
            row = await sql.checkpoint_at(conn, known.size)
            try:
                stored = open_note(row, self._keys.verifiers, self._keys.origin) if row is not None else None
            except CheckpointError:
                stored = None
        if stored is None or stored.root != known.root:
            raise SealError(f"the checkpoint of size {known.size} that was signed is gone from the database or "
                            "changed: the tree it signed was replaced")

    def _last_exported(self) -> Checkpoint | None:
        """The last checkpoint in the export file (read from its end), if there is one."""
        if self._export is None or not self._export.exists():
            return None
        try:
            with self._export.open("rb") as handle:
                handle.seek(max(0, handle.seek(0, 2) - 16384))
                notes = split_notes(handle.read().decode("utf-8", errors="replace"))
            return open_note(notes[-1], self._keys.verifiers, self._keys.origin) if notes else None
        except (OSError, CheckpointError) as exc:
            log.error("access log: the last exported checkpoint in %s is not usable: %s", self._export, exc)
            return None

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
                log.warning("access log: sealing failed, retrying in %ss: %s", interval, describe(exc))
            await asyncio.sleep(interval)
