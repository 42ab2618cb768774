"""``patientkontrakt audit …``: verify, seal, checkpoint, key (the parser is in ``cli.py``).

* ``verify [--checkpoint FILE] [--archived-before DATE]``: the log against its tree, checkpoints
  and the last exported checkpoint (FILE, default ``PK_AUDIT_CHECKPOINT_FILE``); entries of the
  months before DATE may have been archived; exit 1 when anything is wrong.
* ``seal``: seal what is queued now (and keep the partitions ahead), as the API does every
  ``PK_AUDIT_SEAL_INTERVAL`` seconds; for ``PK_AUDIT_SEAL_INTERVAL=0`` deployments, from cron.
* ``checkpoint``: print the latest signed checkpoint (for a cron job that ships it elsewhere, or
  a witness); exit 1 if there is none or it does not verify.
* ``key [--generate]``: print the checkpoint key's verifier key, or make a new key.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from patientkontrakt.audit.checkpoint import (
    AuditKeyError,
    AuditKeys,
    CheckpointError,
    generate_key,
    open_note,
    split_notes,
)
from patientkontrakt.audit.sealer import Sealer, SealError
from patientkontrakt.audit.verify import verify
from patientkontrakt.config import Settings
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.database import create_engine, ensure_migrated
from patientkontrakt.storage.repository import Store

T = TypeVar("T")


def load_keys(settings: Settings) -> AuditKeys:
    return AuditKeys.load(settings.audit_log_origin, settings.audit_key, settings.previous_audit_keys)


async def _with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        await ensure_migrated(engine)
        return await work(Store(engine))
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "key":
        return _key(args, settings)
    try:
        keys = load_keys(settings)
    except AuditKeyError as exc:
        print(f"patientkontrakt: {exc}", file=sys.stderr)
        return 1
    if args.action == "seal":
        return await _with_store(settings, lambda store: _seal(store, keys, settings))
    if args.action == "checkpoint":
        return await _with_store(settings, lambda store: _checkpoint(store, keys))
    return await _verify(args, settings, keys)


def _key(args: argparse.Namespace, settings: Settings) -> int:
    path = settings.audit_key
    if args.generate:
        if path.exists() and not args.force:
            print(f"patientkontrakt: {path} exists; use --force to replace it (see docs/security.md on rotating "
                  "the checkpoint key)", file=sys.stderr)
            return 1
        generate_key(path)
        print(f"wrote a new Ed25519 checkpoint key to {path}", file=sys.stderr)
    try:
        keys = load_keys(settings)
    except AuditKeyError as exc:
        print(f"patientkontrakt: {exc}", file=sys.stderr)
        return 1
    print(keys.signer.verifier.vkey())
    return 0


async def _seal(store: Store, keys: AuditKeys, settings: Settings) -> int:
    sealer = Sealer(store, keys, settings.audit_checkpoint_file)
    try:
        for name in await sealer.maintain():
            print(f"partition {name} created")
        written = await sealer.seal()
    except SealError as exc:
        print(f"patientkontrakt: not sealing: {exc}. Run `patientkontrakt audit verify`.", file=sys.stderr)
        return 1
    if written:
        print(f"sealed: the tree has {written[-1].size} entries ({len(written)} new checkpoint"
              f"{'s' if len(written) > 1 else ''})")
    else:
        print("nothing to seal (or another sealer is at work)")
    return 0


async def _checkpoint(store: Store, keys: AuditKeys) -> int:
    async with store.reading() as unit:
        latest = await sql.latest_checkpoint(unit.conn)
    if latest is None:
        print("patientkontrakt: the access log has no checkpoint yet (`patientkontrakt audit seal`)", file=sys.stderr)
        return 1
    try:
        open_note(latest.note, keys.verifiers, keys.origin)
    except CheckpointError as exc:
        print(f"patientkontrakt: the latest checkpoint (size {latest.tree_size}) is not valid: {exc}",
              file=sys.stderr)
        return 1
    sys.stdout.write(latest.note)
    return 0


async def _verify(args: argparse.Namespace, settings: Settings, keys: AuditKeys) -> int:
    path = args.checkpoint or settings.audit_checkpoint_file
    exported: str | None = None
    if path is not None and (args.checkpoint or path.exists()):
        try:
            notes = split_notes(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            print(f"patientkontrakt: cannot read the exported checkpoint {path}: {exc}", file=sys.stderr)
            return 2
        if not notes:
            print(f"patientkontrakt: {path} holds no checkpoint", file=sys.stderr)
            return 2
        exported = notes[-1]
    archived = datetime.combine(args.archived_before, datetime.min.time()) if args.archived_before else None
    report = await _with_store(settings, lambda store: verify(store, keys, exported, archived_before=archived))
    print("\n".join(report.lines()))
    return 0 if report.intact else 1
