"""Signed checkpoints: C2SP checkpoint bodies signed with the timestamped Ed25519 signature of
C2SP tlog-cosignature, verified with the log's current and previous keys only."""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from patientkontrakt.audit.checkpoint import (
    AuditKeyError,
    AuditKeys,
    CheckpointError,
    export,
    generate_key,
    open_note,
    sign,
    split_notes,
)

ORIGIN = "pk.example.se/audit"
ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture
def keys(tmp_path: Path) -> AuditKeys:
    return AuditKeys.load(ORIGIN, generate_key(tmp_path / "audit.pem"))


def test_a_checkpoint_is_a_c2sp_signed_note_with_a_signed_time(keys: AuditKeys, tmp_path: Path) -> None:
    checkpoint = sign(keys.signer, 1042, ROOT, 1767225600)
    text, signatures = checkpoint.note.split("\n\n")
    assert text == f"{ORIGIN}\n1042\n{base64.b64encode(ROOT).decode()}"
    [line] = signatures.splitlines()
    assert line.startswith(f"\u2014 {ORIGIN} ")
    payload = base64.b64decode(line.rsplit(" ", 1)[1])
    # key ID || u64 timestamp || Ed25519 signature over "cosignature/v1\ntime <t>\n" + body, with
    # key ID = SHA-256(name || "\n" || 0x04 || public key)[:4]: checked here with the library
    # directly, not through our verifier
    private = load_pem_private_key((tmp_path / "audit.pem").read_bytes(), password=None)
    public = private.public_key()
    raw = public.public_bytes_raw()
    assert payload[:4] == hashlib.sha256(ORIGIN.encode() + b"\n\x04" + raw).digest()[:4]
    assert struct.unpack(">Q", payload[4:12]) == (1767225600,)
    public.verify(payload[12:], f"cosignature/v1\ntime 1767225600\n{text}\n".encode())
    typed_key = base64.b64encode(b"\x04" + raw).decode()
    assert keys.signer.verifier.vkey() == f"{ORIGIN}+{payload[:4].hex()}+{typed_key}"

    opened = open_note(checkpoint.note, keys.verifiers, ORIGIN)
    assert (opened.size, opened.root, opened.timestamp) == (1042, ROOT, 1767225600)
    assert opened.time.isoformat() == "2026-01-01T00:00:00+00:00"


def test_a_changed_or_forged_checkpoint_is_refused(keys: AuditKeys, tmp_path: Path) -> None:
    note = sign(keys.signer, 10, ROOT, 1767225600).note
    other = AuditKeys.load(ORIGIN, generate_key(tmp_path / "other.pem"))
    for bad, why in [
        (note.replace("\n10\n", "\n11\n"), "does not verify"),  # another size under our signature
        (note.replace(base64.b64encode(ROOT).decode(), base64.b64encode(bytes(32)).decode()), "does not verify"),
        (sign(other.signer, 10, ROOT, 1767225600).note, "not signed by the access log's key"),  # the wrong key
        (note.split("\n\n")[0] + "\n", "not a signed note"),
        (note.replace(ORIGIN, "elsewhere.example/audit", 1), "not 'pk.example.se/audit'"),
    ]:
        with pytest.raises(CheckpointError, match=why):
            open_note(bad, keys.verifiers, ORIGIN)


def test_older_checkpoints_verify_with_the_previous_key_and_witnesses_are_ignored(tmp_path: Path) -> None:
    old = generate_key(tmp_path / "old.pem")
    before = sign(AuditKeys.load(ORIGIN, old).signer, 5, ROOT, 1767225600)
    rotated = AuditKeys.load(ORIGIN, generate_key(tmp_path / "new.pem"), [old])
    assert open_note(before.note, rotated.verifiers, ORIGIN).size == 5
    with pytest.raises(CheckpointError):
        open_note(before.note, AuditKeys.load(ORIGIN, tmp_path / "new.pem").verifiers, ORIGIN)
    witness = AuditKeys.load("witness.example/w1", generate_key(tmp_path / "witness.pem"))
    cosigned = before.note + witness.signer.signature_line(before.note.split("\n\n")[0] + "\n", 1767225601)
    assert open_note(cosigned, rotated.verifiers, ORIGIN).timestamp == 1767225600


def test_the_export_file_holds_every_checkpoint_in_order(keys: AuditKeys, tmp_path: Path) -> None:
    path = tmp_path / "exported" / "checkpoints"
    written = [sign(keys.signer, size, hashlib.sha256(bytes([size])).digest(), 1767225600 + size)
               for size in (1, 3, 8)]
    for checkpoint in written:
        export(path, checkpoint)
    notes = split_notes(path.read_text())
    assert notes == [c.note for c in written]
    assert [open_note(n, keys.verifiers, ORIGIN).size for n in notes] == [1, 3, 8]
    assert split_notes("\n" + written[0].note + "\n\n" + written[1].note) == [written[0].note, written[1].note]


def test_a_missing_or_unusable_key_is_reported(tmp_path: Path) -> None:
    with pytest.raises(AuditKeyError, match="patientkontrakt audit key --generate"):
        AuditKeys.load(ORIGIN, tmp_path / "nothing.pem")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(AuditKeyError, match="not an Ed25519 key"):
        AuditKeys.load(ORIGIN, tmp_path / "junk.pem")
