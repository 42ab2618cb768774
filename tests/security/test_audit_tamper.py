"""Attacks on the access log by someone who can write to the database (its superuser, triggers
off) but does not hold the checkpoint key: what ``patientkontrakt audit verify`` finds, and the
one thing it cannot (docs/security.md, "What an attacker can hide").

The red team's findings on the hash chain, each reproduced here: the newest entries removed,
TRUNCATE, and a row rewritten with every later hash recomputed — all reported "intact" before.
Then what a stronger attacker tries against the tree: reordering, removing the tail together
with its checkpoints, re-queueing a rewritten history for the service to seal again, and
checkpoints signed with a key of their own. Most run on PostgreSQL and SQLite (``db_url``).
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.audit.checkpoint import AuditKeys, generate_key, open_note, sign, split_notes
from patientkontrakt.audit.log import AuditLog, _entry
from patientkontrakt.audit.merkle import Frontier
from patientkontrakt.audit.sealer import SealError
from patientkontrakt.audit.verify import verify
from patientkontrakt.config import Settings
from patientkontrakt.fhir.access import Principal
from patientkontrakt.storage import audit as sql
from patientkontrakt.storage.repository import Store, StoredResource
from tests.conftest import BASE_URL, _dsn, engine_token, make_settings
from tests.security import audit_tools
from tests.security.audit_tools import check, cli, query, seal, tamper, with_store

NURSE = Principal(kind="staff", id="SE2321000016-P001", name="Test Sjuksköterska", role="Sjuksköterska",
                  fhir_user="PractitionerRole/r1", care_unit="SE2321000016-E001", care_unit_name="Vårdcentralen Test",
                  care_provider="SE2321000016-0001", client_id="pk-personal")


class _Caller:
    principal = NURSE
    logged = True


def _fill(url: str, count: int, first: int = 1) -> None:
    """``count`` reads, one entry each (every fifth a refusal), for the patients pat-<first> …"""
    async def run(store: Store) -> None:
        log = AuditLog(store)
        for n in range(first, first + count):
            plan = StoredResource(pk=n, type="CarePlan", id=f"p{n}", version_id=1, last_updated=datetime(2026, 1, 1),
                                  deleted=False, body="{}", patient_id=f"pat-{n}")
            if n % 5:
                await log.record(_Caller(), "read", f"CarePlan/p{n}", [plan])
            else:
                await log.refused(_Caller(), "read", f"CarePlan/p{n}", 404, plan)
    with_store(url, run)


def _param(url: str) -> str:
    """The first bound parameter in ``tamper``'s SQL."""
    return "$1" if url.startswith("postgresql") else "?"


def _sealed(url: str, tmp_path: Path, *batches: int) -> tuple[Settings, Path]:
    """The log filled and sealed batch by batch, every checkpoint exported to a file of its own."""
    settings = make_settings(url)
    exported = tmp_path / "exported" / "checkpoints"
    first = 1
    for count in batches:
        _fill(url, count, first)
        first += count
        assert seal(settings, exported)[-1].size == first - 1
    return settings, exported


def _verify(settings: Settings, tmp_path: Path, exported: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = ("--checkpoint", str(exported)) if exported is not None else ()
    return cli(settings, "audit", "verify", *args, cwd=tmp_path)


def _broken(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "access log BROKEN" in result.stdout
    for text in expected:
        assert text in result.stdout, (text, result.stdout)


def _last(exported: Path) -> str:
    return split_notes(exported.read_text())[-1]


# -- the red team's findings ------------------------------------------------------------------


def test_removing_the_newest_entries_is_found(clean_pg: str, tmp_path: Path) -> None:
    settings, exported = _sealed(clean_pg, tmp_path, 12)
    _fill(clean_pg, 3, 13)  # written, not yet sealed
    ok = _verify(settings, tmp_path, exported)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "access log intact: 15 entries, 12 sealed" in ok.stdout and "3 entries not yet sealed" in ok.stdout

    # the red team's attack: the last three rows deleted with the triggers off
    tamper(clean_pg, "DELETE FROM audit_log WHERE seq > 12")
    _broken(_verify(settings, tmp_path, exported),
            *(f"entry {seq} is missing: removed before it was sealed" for seq in (13, 14, 15)))
    # and the newest sealed ones
    tamper(clean_pg, "DELETE FROM audit_log WHERE seq > 9")
    _broken(_verify(settings, tmp_path), *(f"entry {seq} (position {seq - 1}) is missing: removed after it was sealed"
                                           for seq in (10, 11, 12)))


def test_truncate_is_refused_and_a_forced_one_is_found(clean_pg: str, tmp_path: Path) -> None:
    settings, exported = _sealed(clean_pg, tmp_path, 12)
    _fill(clean_pg, 2, 13)
    month = sql.partition_name(datetime.now(UTC).date())

    async def truncate(table: str) -> None:
        conn = await asyncpg.connect(_dsn(clean_pg))  # the superuser, triggers on
        try:
            with pytest.raises(asyncpg.RaiseError, match="append-only: TRUNCATE refused"):
                await conn.execute(f"TRUNCATE {table}")
        finally:
            await conn.close()

    for table in ("audit_log", month, "audit_log_default", "audit_leaf", "audit_checkpoint", "audit_queue"):
        asyncio.run(truncate(table))
    assert query(clean_pg, "SELECT count(*) AS n FROM audit_log") == [{"n": 14}]
    assert _verify(settings, tmp_path, exported).returncode == 0

    # forced, with the triggers off: the database alone has nothing left to tell
    tamper(clean_pg, "TRUNCATE audit_log, audit_leaf, audit_checkpoint, audit_queue")
    alone = _verify(settings, tmp_path)
    assert alone.returncode == 0 and "access log intact: 0 entries" in alone.stdout
    assert "no exported checkpoint to verify against" in alone.stdout
    _broken(_verify(settings, tmp_path, exported),
            "the exported checkpoint at size 12", "is beyond the tree of 0 leaves: entries were removed from the end")


def _rewrite(url: str, seq: int, patient: str) -> None:
    """What an attacker without the key can recompute after rewriting entry ``seq``: its leaf
    hash, and the right edge stored with every checkpoint."""
    [row] = query(url, f"SELECT {', '.join(sql.FIELDS)} FROM audit_log WHERE seq = $1", seq)
    leaf = sql.leaf_of({**row, "patient_id": patient})
    leaves = [bytes(r["leaf_hash"]) for r in query(url, "SELECT leaf_hash FROM audit_leaf ORDER BY position")]
    [position] = [r["position"] for r in query(url, "SELECT position FROM audit_leaf WHERE seq = $1", seq)]
    leaves[position] = leaf
    edges = []
    for size in [r["tree_size"] for r in query(url, "SELECT tree_size FROM audit_checkpoint")]:
        tree = Frontier()
        for hash_ in leaves[:size]:
            tree.append(hash_)
        edges.append(("UPDATE audit_checkpoint SET frontier = $1 WHERE tree_size = $2", (tree.to_bytes(), size)))
    tamper(url, ("UPDATE audit_log SET patient_id = $1 WHERE seq = $2", (patient, seq)),
           ("UPDATE audit_leaf SET leaf_hash = $1 WHERE seq = $2", (leaf, seq)), *edges)


def _roots(url: str) -> dict[int, bytes]:
    """The root of the stored leaves at every checkpoint's size."""
    leaves = [bytes(r["leaf_hash"]) for r in query(url, "SELECT leaf_hash FROM audit_leaf ORDER BY position")]
    roots, tree = {}, Frontier()
    sizes = {r["tree_size"] for r in query(url, "SELECT tree_size FROM audit_checkpoint")}
    for hash_ in leaves:
        tree.append(hash_)
        if tree.size in sizes:
            roots[tree.size] = tree.root()
    return roots


def test_a_rewritten_entry_is_found_whatever_is_recomputed_without_the_key(clean_pg: str, tmp_path: Path) -> None:
    settings, exported = _sealed(clean_pg, tmp_path, 4, 4, 4)  # checkpoints at 4, 8 and 12
    _rewrite(clean_pg, 6, "pat-someone-else")  # position 5
    report = check(settings)
    assert report.problems[0].startswith("the tree does not have the root the checkpoint at size 8 signed")
    assert "positions 4 to 7 were changed, reordered, replaced or removed" in report.problems[0]
    assert report.problems[1:] == ["1 later checkpoints (up to size 12) do not match the tree either"]
    _broken(_verify(settings, tmp_path, exported), "the root the checkpoint at size 8 signed")

    # the roots in the checkpoints replaced too: their signatures no longer verify
    notes = {r["tree_size"]: r["note"] for r in query(clean_pg, "SELECT tree_size, note FROM audit_checkpoint")}
    keys = audit_tools.keys(settings)
    forged = {size: notes[size].replace(base64.b64encode(open_note(notes[size], keys.verifiers,
                                                                   keys.origin).root).decode(),
                                        base64.b64encode(root).decode()) for size, root in _roots(clean_pg).items()}
    tamper(clean_pg, *(("UPDATE audit_checkpoint SET note = $1 WHERE tree_size = $2", (note, size))
                       for size, note in forged.items()))
    assert "the checkpoint at size 8 is not valid: the signature of testserver/audit does not verify: the " \
           "checkpoint was changed or forged" in check(settings).problems

    # signed anew with a key of the attacker's own, under the log's name
    theirs = AuditKeys.load(settings.audit_log_origin, generate_key(tmp_path / "attacker.pem"))
    resigned = {size: sign(theirs.signer, size, root, int(time.time())).note for size, root in _roots(clean_pg).items()}
    tamper(clean_pg, *(("UPDATE audit_checkpoint SET note = $1 WHERE tree_size = $2", (note, size))
                       for size, note in resigned.items()))
    problems = check(settings).problems
    assert "the checkpoint at size 4 is not valid: the checkpoint is not signed by the access log's key (nor by " \
           "a previous one)" in problems
    _broken(_verify(settings, tmp_path, exported), "not signed by the access log's key")


def test_a_rewritten_history_queued_again_is_not_sealed_again(db_url: str, tmp_path: Path) -> None:
    """The strongest rewrite: the tree and its checkpoints removed and every entry queued again,
    so the database holds a log that looks written but never sealed. The exported checkpoint
    gives it away, and a sealer that knows it refuses to sign the rewritten history."""
    settings, exported = _sealed(db_url, tmp_path, 6, 6)
    tamper(db_url, "UPDATE audit_log SET user_name = 'Någon annan' WHERE seq = 3",
           "INSERT INTO audit_queue (seq, recorded, leaf_hash) SELECT seq, recorded, leaf_hash FROM audit_leaf",
           "DELETE FROM audit_leaf", "DELETE FROM audit_checkpoint")
    report = check(settings)
    # alone, the database shows one changed entry among twelve never sealed...
    assert report.problems == ["entry 3, not yet sealed, does not match the leaf hash written with it: changed "
                               "after it was written"]
    assert (report.entries, report.leaves, report.unsealed) == (12, 0, 12)
    # ... and had the attacker also recomputed that queued hash, nothing at all
    [row] = [r for r in audit_tools.with_store(db_url, audit_tools.entries) if r.seq == 3]
    tamper(db_url, (f"UPDATE audit_queue SET leaf_hash = {_param(db_url)} WHERE seq = 3",
                    (sql.leaf_of({name: getattr(row, name) for name in sql.FIELDS}),)))
    assert check(settings).intact
    # the exported checkpoint does not agree
    assert check(settings, _last(exported)).problems == [
        f"the exported checkpoint at size 12 ({_when(_last(exported), settings)}) is beyond the tree of 0 leaves: "
        "entries were removed from the end of the log, with their checkpoints"]
    # and a sealer that knows that checkpoint (from the export file) will not sign it again
    with pytest.raises(SealError, match="the checkpoint of size 12 was signed"):
        seal(settings, exported)
    assert check(settings).leaves == 0
    # a sealer that does not, does; the tree it makes does not have the exported root at size 12
    seal(settings)
    assert check(settings, _last(exported)).problems == [
        f"the tree does not have the root of the exported checkpoint at size 12 ({_when(_last(exported), settings)}):"
        " entries before position 12 were changed, reordered, replaced or removed"]


def test_a_queue_row_for_a_sealed_entry_is_taken_off_the_queue_and_not_sealed_twice(
        db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings, _ = _sealed(db_url, tmp_path, 4)
    tamper(db_url, "INSERT INTO audit_queue (seq, recorded, leaf_hash) SELECT seq, recorded, leaf_hash FROM audit_leaf "
                   "WHERE seq = 2")
    _fill(db_url, 3, 5)
    [checkpoint] = seal(settings)
    assert checkpoint.size == 7  # 4 + 3: entry 2 once
    report = check(settings)
    assert report.intact and (report.entries, report.leaves, report.unsealed) == (7, 7, 0)
    assert "queued entry 2 is sealed already; not sealed" in caplog.text  # and off the queue: verify would
    # report "entry 2 is sealed and still queued" otherwise


def _when(note: str, settings: Settings) -> str:
    keys = audit_tools.keys(settings)
    return "signed " + open_note(note, keys.verifiers, keys.origin).time.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- what else an attacker tries ----------------------------------------------------------------


def test_removing_the_tail_with_its_checkpoints_is_found_against_the_exported_checkpoint(db_url: str,
                                                                                         tmp_path: Path) -> None:
    settings, exported = _sealed(db_url, tmp_path, 8, 6)  # checkpoints at 8 and 14, both exported
    # entries 12-14 removed; so that the database is whole again, the leaves after the checkpoint at
    # 8 go too, its later checkpoint with them, and entries 9-11 are queued again as if never sealed
    tamper(db_url, "INSERT INTO audit_queue (seq, recorded, leaf_hash) "
                   "SELECT seq, recorded, leaf_hash FROM audit_leaf WHERE position >= 8 AND position < 11",
           "DELETE FROM audit_log WHERE seq > 11", "DELETE FROM audit_leaf WHERE position >= 8",
           "DELETE FROM audit_checkpoint WHERE tree_size > 8")
    alone = check(settings)
    assert alone.intact and (alone.entries, alone.leaves, alone.unsealed) == (11, 8, 3)
    assert check(settings, _last(exported)).problems == [
        f"the exported checkpoint at size 14 ({_when(_last(exported), settings)}) is beyond the tree of 8 leaves: "
        "entries were removed from the end of the log, with their checkpoints"]
    _broken(_verify(settings, tmp_path, exported), "is beyond the tree of 8 leaves")
    # the first exported checkpoint (size 8) still matches: what was exported then is intact
    assert check(settings, split_notes(exported.read_text())[0]).intact


def test_reordered_entries_are_found(db_url: str, tmp_path: Path) -> None:
    settings, _ = _sealed(db_url, tmp_path, 8)
    # two leaves change places in the tree
    tamper(db_url, "UPDATE audit_leaf SET position = -1 WHERE position = 2",
           "UPDATE audit_leaf SET position = 2 WHERE position = 5",
           "UPDATE audit_leaf SET position = 5 WHERE position = -1")
    [note] = [r[0] for r in _rows(db_url, "SELECT note FROM audit_checkpoint")]
    assert check(settings).problems == [
        f"the tree does not have the root the checkpoint at size 8 signed ({_when(note, settings)}): sealed entries "
        "at positions 0 to 7 were changed, reordered, replaced or removed"]
    tamper(db_url, "UPDATE audit_leaf SET position = -1 WHERE position = 2",
           "UPDATE audit_leaf SET position = 2 WHERE position = 5",
           "UPDATE audit_leaf SET position = 5 WHERE position = -1")
    assert check(settings).intact
    # two entries exchange their ids (so the AuditEvent of one shows the other's access)
    # (in three steps: two reads logged within a millisecond share ``recorded``, and the key is
    # (seq, recorded), which a single swapping UPDATE would break half-way through on SQLite)
    tamper(db_url, "UPDATE audit_log SET seq = -1 WHERE seq = 3", "UPDATE audit_log SET seq = 3 WHERE seq = 6",
           "UPDATE audit_log SET seq = 6 WHERE seq = -1")
    assert check(settings).problems == [
        "entry 3 (position 2) does not match its leaf in the tree: changed after it was sealed",
        "entry 6 (position 5) does not match its leaf in the tree: changed after it was sealed"]


def test_a_forged_exported_checkpoint_is_refused(clean_pg: str, tmp_path: Path) -> None:
    settings, exported = _sealed(clean_pg, tmp_path, 5)
    theirs = AuditKeys.load(settings.audit_log_origin, generate_key(tmp_path / "attacker.pem"))
    forged = tmp_path / "forged"
    forged.write_text(sign(theirs.signer, 3, bytes(32), int(time.time())).note)
    _broken(_verify(settings, tmp_path, forged), "the exported checkpoint is not valid: the checkpoint is not signed "
                                                 "by the access log's key")
    other_log = AuditKeys.load("elsewhere.example/audit", settings.audit_key)  # our key, another log's name
    forged.write_text(sign(other_log.signer, 5, bytes(32), int(time.time())).note)
    _broken(_verify(settings, tmp_path, forged), "the checkpoint is of the log 'elsewhere.example/audit', not "
                                                 "'testserver/audit'")
    unreadable = _verify(settings, tmp_path, tmp_path / "nothing")
    assert unreadable.returncode == 2 and "cannot read the exported checkpoint" in unreadable.stderr


def test_what_an_exported_checkpoint_cannot_cover(clean_pg: str, tmp_path: Path) -> None:
    """The limit of the design (docs/security.md): entries written after the last exported
    checkpoint can be removed without a trace by whoever controls the database, together with
    their queue rows, before they are sealed and exported."""
    settings, exported = _sealed(clean_pg, tmp_path, 10)
    _fill(clean_pg, 3, 11)
    tamper(clean_pg, "DELETE FROM audit_log WHERE seq > 10", "DELETE FROM audit_queue WHERE seq > 10")
    result = _verify(settings, tmp_path, exported)
    assert result.returncode == 0 and "access log intact: 10 entries" in result.stdout


# -- the sealer -----------------------------------------------------------------------------


def test_the_sealer_does_not_build_on_a_tampered_tree(db_url: str, tmp_path: Path) -> None:
    settings, _ = _sealed(db_url, tmp_path, 5)
    _fill(db_url, 2, 6)
    [edge] = [bytes(r[0]) for r in _rows(db_url, "SELECT frontier FROM audit_checkpoint")]
    tamper(db_url, (f"UPDATE audit_checkpoint SET frontier = {_param(db_url)}", (bytes(32) + edge[32:],)))
    with pytest.raises(SealError, match="does not give the root the checkpoint at size 5 signed"):
        seal(settings)
    tamper(db_url, (f"UPDATE audit_checkpoint SET frontier = {_param(db_url)}", (edge,)),
           "DELETE FROM audit_checkpoint")
    with pytest.raises(SealError, match="the tree has 5 leaves and no checkpoint signs them"):
        seal(settings)
    failed = cli(settings, "audit", "seal", cwd=tmp_path)
    assert failed.returncode == 1 and "not sealing" in failed.stderr
    assert check(settings).leaves == 5


def _rows(url: str, statement: str) -> list[tuple[Any, ...]]:
    if url.startswith("postgresql"):
        return [tuple(r.values()) for r in query(url, statement)]
    with sqlite3.connect(url.split("///", 1)[1]) as conn:
        return list(conn.execute(statement))


def test_sealer_processes_racing_build_one_tree(clean_pg: str, tmp_path: Path) -> None:
    """Three `patientkontrakt audit seal` processes at once over 12,000 queued entries (three
    batches): one at a time seals, the others skip; one tree, each position once."""
    settings = make_settings(clean_pg)
    entries = [_entry(_Caller(), "read", f"CarePlan/p{n}", [f"CarePlan/p{n}"], f"pat-{n}", 200, "success",
                      datetime(2026, 1, 1) + timedelta(seconds=n)) for n in range(12000)]
    with_store(clean_pg, lambda store: sql.append_committed(store, entries))
    processes = [subprocess.Popen([*audit_tools.COMMAND, "audit", "seal"], cwd=tmp_path,
                                  env=audit_tools.environment(settings),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    seal(settings)  # whatever a skipping process left
    positions = query(clean_pg, "SELECT min(position) AS lo, max(position) AS hi, count(*) AS n, "
                                "count(DISTINCT seq) AS seqs FROM audit_leaf")
    assert positions == [{"lo": 0, "hi": 11999, "n": 12000, "seqs": 12000}]
    report = check(settings)
    assert report.intact and report.leaves == 12000 and report.checkpoints >= 3


def test_the_service_seals_in_the_background_and_exports(clean_pg: str, tmp_path: Path) -> None:
    exported = tmp_path / "exported" / "checkpoints"
    settings = make_settings(clean_pg, audit_seal_interval=0.05, audit_checkpoint_file=exported)
    with TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL) as client:
        client.headers.update({"content-type": "application/fhir+json",
                               "authorization": f"Bearer {engine_token(settings)}"})
        created = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Testsson"}]})
        assert created.status_code == 201, created.text
        assert client.get(f"/fhir/Patient/{created.json()['id']}").status_code == 200
        deadline = time.monotonic() + 60
        while not (exported.exists() and split_notes(exported.read_text())
                   and check(settings).leaves == 2) and time.monotonic() < deadline:
            time.sleep(0.05)
    keys = audit_tools.keys(settings)
    assert open_note(_last(exported), keys.verifiers, keys.origin).size == 2
    result = cli(settings, "audit", "verify", cwd=tmp_path)  # PK_AUDIT_CHECKPOINT_FILE is not set for the command
    assert result.returncode == 0 and "intact: 2 entries, 2 sealed" in result.stdout
    assert _verify(settings, tmp_path, exported).returncode == 0


def test_the_checkpoint_and_key_commands(clean_pg: str, tmp_path: Path) -> None:
    settings = make_settings(clean_pg)
    none = cli(settings, "audit", "checkpoint", cwd=tmp_path)
    assert none.returncode == 1 and "no checkpoint yet" in none.stderr
    _fill(clean_pg, 3)
    sealed = cli(settings, "audit", "seal", cwd=tmp_path)
    assert sealed.returncode == 0 and "the tree has 3 entries" in sealed.stdout
    printed = cli(settings, "audit", "checkpoint", cwd=tmp_path)
    assert printed.returncode == 0
    assert printed.stdout == query(clean_pg, "SELECT note FROM audit_checkpoint WHERE tree_size = 3")[0]["note"]
    (tmp_path / "witness").write_text(printed.stdout)
    assert _verify(settings, tmp_path, tmp_path / "witness").returncode == 0
    vkey = cli(settings, "audit", "key", cwd=tmp_path)
    assert vkey.stdout.strip() == audit_tools.keys(settings).signer.verifier.vkey()
    assert vkey.stdout.startswith("testserver/audit+")
    refused = cli(settings, "audit", "key", "--generate", cwd=tmp_path)
    assert refused.returncode == 1 and "exists" in refused.stderr
    fresh = make_settings(clean_pg, audit_key=tmp_path / "new" / "audit.pem")
    made = cli(fresh, "audit", "key", "--generate", cwd=tmp_path)
    assert made.returncode == 0 and (tmp_path / "new" / "audit.pem").stat().st_mode & 0o777 == 0o600


def test_a_rotated_key_verifies_the_old_checkpoints_with_the_previous_one(clean_pg: str, tmp_path: Path) -> None:
    old = make_settings(clean_pg)
    _fill(clean_pg, 4)
    seal(old)
    rotated = make_settings(clean_pg, audit_key=generate_key(tmp_path / "new.pem"),
                            audit_keys_previous=str(old.audit_key))
    _fill(clean_pg, 4, 5)
    seal(rotated)
    report = check(rotated)
    assert report.intact and report.checkpoints == 2
    assert _verify(rotated, tmp_path).returncode == 0
    forgotten = make_settings(clean_pg, audit_key=tmp_path / "new.pem")
    assert check(forgotten).problems[0].startswith("the checkpoint at size 4 is not valid: the checkpoint is not "
                                                   "signed by the access log's key")


# -- partitions (PostgreSQL) ------------------------------------------------------------------


def test_every_month_has_a_partition_and_none_is_needed_for_an_insert(clean_pg: str) -> None:
    def partitions() -> set[str]:
        return {r["relname"] for r in query(clean_pg, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON "
                                                      "c.oid = i.inhrelid WHERE i.inhparent = 'audit_log'::regclass")}
    today = datetime.now(UTC).date()
    ahead = [sql.partition_name(m) for m in sql._months(today, sql.PARTITIONS_AHEAD)]
    assert set(ahead) <= partitions() and "audit_log_default" in partitions()

    far = datetime(2031, 5, 5, 12)
    entries = [_entry(_Caller(), "read", "CarePlan/f", ["CarePlan/f"], "pat-f", 200, "success", when)
               for when in (far, datetime.now(UTC).replace(tzinfo=None))]
    with_store(clean_pg, lambda store: sql.append_committed(store, entries))
    placed = query(clean_pg, "SELECT tableoid::regclass::text AS part FROM audit_log ORDER BY seq")
    assert [r["part"] for r in placed] == ["audit_log_default", sql.partition_name(today)]

    async def maintain(store: Store) -> list[str]:
        async with store.writing() as unit:
            return await sql.ensure_partitions(unit, date(2031, 4, 10), ahead=3)
    # May 2031 has an entry in the default partition: it keeps it; the other months get theirs
    assert with_store(clean_pg, maintain) == ["audit_log_y2031m04", "audit_log_y2031m06", "audit_log_y2031m07"]
    assert with_store(clean_pg, maintain) == []
    with_store(clean_pg, lambda store: sql.append_committed(store, [{**entries[0], "recorded": datetime(2031, 6, 1)}]))
    assert query(clean_pg, "SELECT tableoid::regclass::text AS part FROM audit_log WHERE seq = 3") == [
        {"part": "audit_log_y2031m06"}]

    async def truncate() -> None:
        conn = await asyncpg.connect(_dsn(clean_pg))
        try:
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("TRUNCATE audit_log_y2031m06")
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("DELETE FROM audit_log_y2031m06")
        finally:
            await conn.close()
    asyncio.run(truncate())
    settings = make_settings(clean_pg)
    seal(settings)
    assert check(settings).intact


def test_verify_reads_a_page_at_a_time(db_url: str, tmp_path: Path) -> None:
    settings, exported = _sealed(db_url, tmp_path, 7, 6)
    _fill(db_url, 4, 14)
    keys = audit_tools.keys(settings)
    whole = with_store(db_url, lambda store: verify(store, keys, _last(exported)))
    paged = with_store(db_url, lambda store: verify(store, keys, _last(exported), page=2))
    assert whole.intact and paged.intact
    assert (paged.entries, paged.leaves, paged.checkpoints, paged.unsealed) == (17, 13, 2, 4)
    tamper(db_url, "DELETE FROM audit_log WHERE seq = 7")
    assert with_store(db_url, lambda store: verify(store, keys, None, page=2)).problems == [
        "entry 7 (position 6) is missing: removed after it was sealed"]


def test_an_archived_month_still_verifies_and_hides_nothing_newer(clean_pg: str, tmp_path: Path) -> None:
    """The retention procedure (docs/security.md): a month's partition detached and moved to cold
    storage; its leaves stay, so the tree and every checkpoint still verify."""
    settings = make_settings(clean_pg)

    async def partitions(store: Store) -> list[str]:
        async with store.writing() as unit:
            return await sql.ensure_partitions(unit, date(2025, 11, 1), ahead=1)
    assert with_store(clean_pg, partitions) == ["audit_log_y2025m11", "audit_log_y2025m12"]

    def append(*when: datetime) -> None:
        entries = [_entry(_Caller(), "read", f"CarePlan/p{i}", [f"CarePlan/p{i}"], f"pat-{i}", 200, "success", t)
                   for i, t in enumerate(when)]
        with_store(clean_pg, lambda store: sql.append_committed(store, entries))
    append(*(datetime(2025, 11, 3 + i, 9) for i in range(4)))
    seal(settings, at=datetime(2025, 11, 29, 9, tzinfo=UTC).timestamp())  # sealed when they were written
    append(datetime(2025, 12, 5, 9), datetime.now(UTC).replace(tzinfo=None))
    exported = tmp_path / "checkpoints"
    seal(settings, exported)

    # archived: the partition detached, dumped elsewhere (pg_dump -t) and dropped
    query(clean_pg, "ALTER TABLE audit_log DETACH PARTITION audit_log_y2025m11")
    query(clean_pg, "DROP TABLE audit_log_y2025m11")
    assert check(settings).problems == [f"entry {seq} (position {seq - 1}) is missing: removed after it was sealed"
                                        for seq in range(1, 5)]
    archived = with_store(clean_pg, lambda store: verify(store, audit_tools.keys(settings), _last(exported),
                                                         archived_before=datetime(2025, 12, 1)))
    assert archived.intact and (archived.archived, archived.entries, archived.leaves) == (4, 2, 6)
    result = cli(settings, "audit", "verify", "--checkpoint", str(exported), "--archived-before", "2025-12-01",
                 cwd=tmp_path)
    assert result.returncode == 0 and "4 entries archived (recorded before 2025-12-01)" in result.stdout

    # the bound hides nothing recent: today's entry removed and its leaf dated into the archived month
    tamper(clean_pg, "DELETE FROM audit_log WHERE seq = 6",
           "UPDATE audit_leaf SET recorded = '2025-11-15' WHERE seq = 6")
    assert with_store(clean_pg, lambda store: verify(store, audit_tools.keys(settings), _last(exported),
                                                     archived_before=datetime(2025, 12, 1))).problems == [
        "entry 6 (position 5) is missing: removed after it was sealed"]
