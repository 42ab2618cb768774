"""Signed checkpoints of the access log: C2SP ``tlog-checkpoint`` bodies in C2SP signed notes.

A checkpoint commits to the log's Merkle tree at a size::

    patientkontrakt.example.se/audit
    1042
    4Vn8jY1mQ2...=

    — patientkontrakt.example.se/audit AbCdEf...

The lines are the origin (which log), the tree size and the base64 root hash (RFC 6962). The
signature is the *timestamped* Ed25519 signature of C2SP ``tlog-cosignature`` (signature type
0x04): it covers ``cosignature/v1``, ``time <POSIX seconds>`` and the body, so the checkpoint's
time is signed without an extension line, and the line carries key ID, timestamp and signature.
A checkpoint is the log's statement "at this time, the tree had this size and this root"; a later
one must extend it, which ``audit verify`` checks by rebuilding the tree.

The key is an Ed25519 PEM file (``PK_AUDIT_KEY``) that the database never sees: whoever can
write to the database cannot sign a checkpoint. ``PK_AUDIT_KEYS_PREVIOUS`` names the keys that
signed older checkpoints (public halves suffice). The key's verifier key (``vkey``,
``<origin>+<key ID>+<base64(0x04 || public key)>``) is what a witness or an auditor holds.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from patientkontrakt.audit.merkle import HASH_SIZE
from patientkontrakt.security.keys import write_private

SIGNATURE_TYPE = 0x04  # Ed25519 timestamped signature (C2SP tlog-cosignature)
_DASH = "\u2014 "


class AuditKeyError(RuntimeError):
    """The checkpoint key is missing or unusable; the message says which and what to do."""


class CheckpointError(ValueError):
    """A checkpoint that does not parse, is of another log, or is not signed by a known key."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Verifier:
    """The public half of a checkpoint key, under the log's name (its origin)."""

    name: str
    public: bytes  # the 32-byte Ed25519 public key

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(self.name.encode() + b"\n" + bytes([SIGNATURE_TYPE]) + self.public).digest()[:4]

    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([SIGNATURE_TYPE]) + self.public)}"

    @cached_property
    def _key(self) -> Any:
        return OKPKey.import_key({"kty": "OKP", "crv": "Ed25519",
                                  "x": base64.urlsafe_b64encode(self.public).decode().rstrip("=")})

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def _message(body: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


class Signer:
    """The private checkpoint key: signs checkpoint bodies under the log's name."""

    def __init__(self, name: str, key: OKPKey) -> None:
        self._key: Any = key
        self.verifier = Verifier(name, _public_bytes(key))

    def signature_line(self, body: str, timestamp: int) -> str:
        signature = self._key.private_key.sign(_message(body, timestamp))
        payload = self.verifier.key_id + struct.pack(">Q", timestamp) + signature
        return f"{_DASH}{self.verifier.name} {_b64(payload)}\n"


def generate_key(path: Path) -> Path:
    """Write a new Ed25519 private key as PEM, readable by the owner only."""
    return write_private(path, OKPKey.generate_key("Ed25519", private=True).as_pem(private=True))


def _public_bytes(key: OKPKey) -> bytes:
    return base64.urlsafe_b64decode(str(key.as_dict(private=False)["x"]) + "==")


def _import(path: Path) -> OKPKey:
    try:
        key = OKPKey.import_key(path.read_bytes())
    except OSError as exc:
        raise AuditKeyError(f"cannot read the access log's checkpoint key {path}: {exc.strerror}. Create one with "
                            "`patientkontrakt audit key --generate` (or `patientkontrakt demo`), or set PK_AUDIT_KEY"
                            ) from None
    except (JoseError, ValueError, TypeError) as exc:
        raise AuditKeyError(f"{path} is not an Ed25519 key in PEM: {exc}") from None
    if key.as_dict(private=False).get("crv") != "Ed25519":
        raise AuditKeyError(f"{path} is not an Ed25519 key (the access log's checkpoints are signed with Ed25519)")
    return key


@dataclass(frozen=True)
class AuditKeys:
    """The key that signs new checkpoints and every key that verifies old ones."""

    signer: Signer
    verifiers: tuple[Verifier, ...]

    @property
    def origin(self) -> str:
        return self.signer.verifier.name

    @classmethod
    def load(cls, origin: str, active: Path, previous: Sequence[Path] = ()) -> AuditKeys:
        key = _import(active)
        if not key.is_private:
            raise AuditKeyError(f"{active} holds a public key; signing checkpoints needs the private key")
        signer = Signer(origin, key)
        return cls(signer, (signer.verifier, *(Verifier(origin, _public_bytes(_import(p))) for p in previous)))


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    timestamp: int  # POSIX seconds, as signed
    note: str  # the signed note, as stored and exported

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)


def body(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{_b64(root)}\n"


def sign(signer: Signer, size: int, root: bytes, timestamp: int) -> Checkpoint:
    text = body(signer.verifier.name, size, root)
    note = f"{text}\n{signer.signature_line(text, timestamp)}"
    return Checkpoint(signer.verifier.name, size, root, timestamp, note)


def open_note(note: str, verifiers: Sequence[Verifier], origin: str) -> Checkpoint:
    """The checkpoint in ``note`` once a signature of one of ``verifiers`` verifies; raises
    ``CheckpointError`` saying what is wrong. Signatures of other keys (a witness's) are ignored;
    a signature that claims one of our keys and does not verify rejects the note (C2SP)."""
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise CheckpointError("not a signed note (no blank line before the signatures)")
    text, signatures = note[:split + 1], note[split + 2:].splitlines()
    lines = text.splitlines()
    if len(lines) < 3:
        raise CheckpointError("a checkpoint has an origin, a tree size and a root hash")
    if lines[0] != origin:
        raise CheckpointError(f"the checkpoint is of the log {lines[0]!r}, not {origin!r}")
    if not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
        raise CheckpointError(f"the tree size {lines[1]!r} is not a decimal number")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except ValueError:
        root = b""
    if len(root) != HASH_SIZE:
        raise CheckpointError("the root hash is not 32 bytes in base64")
    known = {(v.name, v.key_id): v for v in verifiers}
    for line in signatures:
        name, _, encoded = line.removeprefix(_DASH).rpartition(" ")
        if not line.startswith(_DASH) or not name:
            raise CheckpointError(f"a malformed signature line: {line[:60]!r}")
        try:
            payload = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise CheckpointError("a signature that is not base64") from None
        verifier = known.get((name, payload[:4]))
        if verifier is None:
            continue
        if len(payload) != 4 + 8 + 64:
            raise CheckpointError("a signature of our key that is not a timestamped Ed25519 signature")
        (timestamp,) = struct.unpack(">Q", payload[4:12])
        if not verifier.verify(_message(text, timestamp), payload[12:]):
            raise CheckpointError(f"the signature of {name} does not verify: the checkpoint was changed or forged")
        return Checkpoint(origin, int(lines[1]), root, timestamp, note)
    raise CheckpointError("the checkpoint is not signed by the access log's key (nor by a previous one)")


def split_notes(text: str) -> list[str]:
    """The notes of an export file (checkpoints one after the other), in order."""
    notes: list[str] = []
    current: list[str] = []
    signing = False
    for line in text.splitlines(keepends=True):
        if line.startswith(_DASH):
            current.append(line)
            signing = True
            continue
        if signing:
            notes.append("".join(current))
            current, signing = [], False
        if not current and not line.strip():
            continue
        current.append(line)
    if current:
        notes.append("".join(current))
    return notes


def export(path: Path, checkpoint: Checkpoint) -> None:
    """Append ``checkpoint`` to the export file (one write with O_APPEND, so processes that seal
    in turn on one machine do not interleave)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, checkpoint.note.encode())
    finally:
        os.close(fd)
