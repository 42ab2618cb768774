"""``patientkontrakt audit verify``: the entries against the tree, the tree against its signed
checkpoints, and all of it against the last checkpoint exported out of the database's reach.

Two passes over one snapshot of the database, each a merge of streams read a page at a time
(O(n) time, memory bounded by a page and the tree's right edge):

1. By ``seq``: every entry's leaf hash is recomputed from its content and compared with its
   leaf (sealed) or with the hash queued with it (not yet sealed). A leaf or a queue row without
   its entry is an entry removed; an entry with neither was not written through the log.
2. By position: the positions run 0, 1, 2 … without gaps; the tree is rebuilt and its root at
   every checkpoint's size must be the signed root (each signature verified with the log's
   current or previous key), and so must its root at the exported checkpoint's size. A tree
   shorter than the exported checkpoint lost its tail.

What it cannot see: entries written after the last exported checkpoint and removed together
with their queue rows, leaves and checkpoints by someone who controls the database (docs/security.md).

Archived months (their partitions moved to cold storage; the leaves stay): with ``archived_before``
an entry that is gone counts as archived, not removed, if it was recorded before that date and
sealed before it too (its position lies within the last checkpoint signed by the next day), so
the bound cannot be used to hide a recent entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from patientkontrakt.audit.checkpoint import AuditKeys, Checkpoint, CheckpointError, open_note
from patientkontrakt.audit.merkle import EMPTY_ROOT, Frontier
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.repository import Store

MAX_PROBLEMS = 50


@dataclass
class Report:
    entries: int = 0
    leaves: int = 0
    checkpoints: int = 0
    unsealed: int = 0
    oldest_unsealed: datetime | None = None
    archived: int = 0
    archived_before: datetime | None = None
    latest: Checkpoint | None = None  # the last checkpoint in the database
    exported: Checkpoint | None = None  # the one verified against, from outside the database
    problems: list[str] = field(default_factory=list)
    unreported: int = 0

    @property
    def intact(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.unreported += 1

    def lines(self) -> list[str]:
        """What ``audit verify`` prints."""
        out: list[str] = []
        if self.intact:
            latest = f" (latest: size {self.latest.size}, {_when(self.latest)})" if self.latest else ""
            out.append(f"access log intact: {self.entries} entries, {self.leaves} sealed in the Merkle tree, "
                       f"{self.checkpoints} signed checkpoints verified{latest}")
            if self.exported is not None:
                out.append(f"  and the exported checkpoint of size {self.exported.size} ({_when(self.exported)}) "
                           "matches")
            else:
                out.append("  no exported checkpoint to verify against (--checkpoint or PK_AUDIT_CHECKPOINT_FILE): "
                           "a removal of the newest entries together with their checkpoints would not show")
        else:
            count = len(self.problems) + self.unreported
            out.append(f"access log BROKEN: {count} problem{'s' if count != 1 else ''} "
                       f"({self.entries} entries, {self.leaves} leaves, {self.checkpoints} checkpoints read)")
            out += [f"  - {p}" for p in self.problems]
            if self.unreported:
                out.append(f"  - … and {self.unreported} more")
        if self.archived:
            out.append(f"{self.archived} entries archived (recorded before {self.archived_before:%Y-%m-%d}): their "
                       "leaves verify, their content is in the archive")
        if self.unsealed:
            oldest = self.oldest_unsealed.isoformat(timespec="seconds") if self.oldest_unsealed else "?"
            out.append(f"{self.unsealed} entries not yet sealed (the oldest recorded {oldest}Z): not covered by any "
                       "checkpoint yet")
        return out


def _when(checkpoint: Checkpoint) -> str:
    return "signed " + checkpoint.time.strftime("%Y-%m-%dT%H:%M:%SZ")


async def verify(store: Store, keys: AuditKeys, exported_note: str | None = None, page: int = 5000,
                 archived_before: datetime | None = None) -> Report:
    """Verify the log; ``exported_note`` is the last checkpoint exported (a signed note); ``page``
    rows are read at a time; entries recorded before ``archived_before`` (naive UTC, as ``recorded``)
    may be archived."""
    report = Report(archived_before=archived_before)
    if exported_note is not None:
        try:
            report.exported = open_note(exported_note, keys.verifiers, keys.origin)
        except CheckpointError as exc:
            report.problem(f"the exported checkpoint is not valid: {exc}")
    async with sql.snapshot(store) as conn:
        sealed_by = 0 if archived_before is None else await _sealed_by(conn, keys, archived_before, page)
        await _entries(conn, report, page, sealed_by)
        await _tree(conn, keys, report, page)
    return report


async def _sealed_by(conn: Any, keys: AuditKeys, archived_before: datetime, page: int) -> int:
    """How many leaves the last checkpoint signed before the day after ``archived_before`` had:
    the entries an archive may hold. (Checkpoints that do not verify are not counted here; the
    pass over the tree reports them.)"""
    bound = (archived_before + timedelta(days=1)).replace(tzinfo=UTC).timestamp()
    size = 0
    async for row in sql.walk_checkpoints(conn, page):
        try:
            checkpoint = open_note(row.note, keys.verifiers, keys.origin)
        except CheckpointError:
            continue
        if checkpoint.timestamp >= bound:
            break
        size = checkpoint.size
    return size


async def _merged(*streams: AsyncIterator[Any]) -> AsyncIterator[tuple[int, list[Any]]]:
    """Rows of streams ordered by ``seq``, joined on it: (seq, [row of each stream or None])."""
    heads = [await anext(s, None) for s in streams]
    while any(h is not None for h in heads):
        seq = min(h.seq for h in heads if h is not None)
        current = [h if h is not None and h.seq == seq else None for h in heads]
        yield seq, current
        for i, row in enumerate(current):
            if row is not None:
                heads[i] = await anext(streams[i], None)


async def _entries(conn: Any, report: Report, page: int, sealed_by: int) -> None:
    archived_before = report.archived_before
    async for seq, (entry, leaf, queued) in _merged(sql.walk_entries(conn, page), sql.walk_leaves_by_seq(conn, page),
                                                    sql.walk_queue(conn, page)):
        if entry is None:
            if (leaf is not None and archived_before is not None and leaf.position < sealed_by
                    and leaf.recorded < archived_before):
                report.archived += 1
            elif leaf is not None:
                report.problem(f"entry {seq} (position {leaf.position}) is missing: removed after it was sealed")
            else:
                report.problem(f"entry {seq} is missing: removed before it was sealed (its queue row is there)")
            continue
        report.entries += 1
        content = sql.leaf_of(dict(entry._mapping))
        if leaf is not None:
            if bytes(leaf.leaf_hash) != content:
                report.problem(f"entry {seq} (position {leaf.position}) does not match its leaf in the tree: "
                               "changed after it was sealed")
            if queued is not None:
                report.problem(f"entry {seq} is sealed and still queued: the queue was written outside the log")
        elif queued is not None:
            report.unsealed += 1
            if report.oldest_unsealed is None or entry.recorded < report.oldest_unsealed:
                report.oldest_unsealed = entry.recorded
            if bytes(queued.leaf_hash) != content:
                report.problem(f"entry {seq}, not yet sealed, does not match the leaf hash written with it: changed "
                               "after it was written")
        else:
            report.problem(f"entry {seq} is neither sealed nor queued: it was not written by the access log "
                           "(or its queue row was removed)")


async def _tree(conn: Any, keys: AuditKeys, report: Report, page: int) -> None:
    frontier = Frontier()
    checkpoints = sql.walk_checkpoints(conn, page)
    pending = await anext(checkpoints, None)
    matched = 0  # the size of the last checkpoint that matched the tree
    mismatched: list[int] = []
    exported = report.exported

    def check(size: int, note: str, root: bytes) -> None:
        nonlocal matched
        report.checkpoints += 1
        try:
            checkpoint = open_note(note, keys.verifiers, keys.origin)
        except CheckpointError as exc:
            report.problem(f"the checkpoint at size {size} is not valid: {exc}")
            return
        report.latest = checkpoint
        if checkpoint.size != size:
            report.problem(f"the checkpoint stored at size {size} signs size {checkpoint.size}")
        elif checkpoint.root != root:
            if not mismatched:
                report.problem(f"the tree does not have the root the checkpoint at size {size} signed "
                               f"({_when(checkpoint)}): sealed entries at positions {matched} to {size - 1} were "
                               "changed, reordered, replaced or removed")
            mismatched.append(size)
        elif not mismatched:
            matched = size

    def check_exported(root: bytes) -> None:
        if exported is not None and exported.size == frontier.size and exported.root != root:
            report.problem(f"the tree does not have the root of the exported checkpoint at size {exported.size} "
                           f"({_when(exported)}): entries before position {exported.size} were changed, reordered, "
                           "replaced or removed")

    while pending is not None and pending.tree_size == 0:
        check(0, pending.note, EMPTY_ROOT)
        pending = await anext(checkpoints, None)
    check_exported(EMPTY_ROOT)
    expected = 0
    async for leaf in sql.walk_leaves(conn, page):
        if leaf.position != expected:
            report.problem(f"positions {expected} to {leaf.position - 1} are missing from the tree: sealed entries "
                           "were removed")
            expected = leaf.position
        frontier.append(bytes(leaf.leaf_hash))
        expected += 1
        if (pending is not None and pending.tree_size == frontier.size) or (
                exported is not None and exported.size == frontier.size):
            root = frontier.root()
            if pending is not None and pending.tree_size == frontier.size:
                check(frontier.size, pending.note, root)
                pending = await anext(checkpoints, None)
            check_exported(root)
    report.leaves = frontier.size
    if len(mismatched) > 1:
        report.problem(f"{len(mismatched) - 1} later checkpoints (up to size {mismatched[-1]}) do not match the "
                       "tree either")
    while pending is not None:
        report.checkpoints += 1
        report.problem(f"the checkpoint at size {pending.tree_size} is beyond the tree of {frontier.size} leaves: "
                       "sealed entries were removed")
        pending = await anext(checkpoints, None)
    latest = report.latest.size if report.latest is not None else 0
    if latest < frontier.size:
        report.problem(f"positions {latest} to {frontier.size - 1} are in the tree but in no signed checkpoint: "
                       "leaves were added outside the sealer")
    if exported is not None and exported.size > frontier.size:
        report.problem(f"the exported checkpoint at size {exported.size} ({_when(exported)}) is beyond the tree of "
                       f"{frontier.size} leaves: entries were removed from the end of the log, with their "
                       "checkpoints")
