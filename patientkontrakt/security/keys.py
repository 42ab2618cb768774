"""The server's signing keys: the active one signs, every one is published and accepted.

Keys are RSA (2048 bits or more) PEM files: ``PK_SIGNING_KEY`` is the active key,
``PK_SIGNING_KEYS_PREVIOUS`` (comma-separated paths) the keys of a rollover. A key's ``kid`` is
its RFC 7638 thumbprint. To roll over: generate a new key, start the service with the new key
as ``PK_SIGNING_KEY`` and the old one in ``PK_SIGNING_KEYS_PREVIOUS`` (both are then in the
JWKS, and tokens signed with either are accepted), and drop the old one once the longest
token lifetime has passed (docs/security.md).

Signing uses RS256: the algorithm every SMART client and JOSE library supports, and the
cheapest to verify (about 37 µs per token here against several times that for ECDSA), which
matters because every request verifies one.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

ALGORITHM = "RS256"


class SigningKeyError(RuntimeError):
    """A signing key is missing or unusable; the message says which and what to do."""


def generate_key(path: Path) -> Path:
    """Write a new 2048-bit RSA private key as PEM, readable by the owner only."""
    return write_private(path, RSAKey.generate_key(2048, private=True).as_pem(private=True))


def write_private(path: Path, pem: bytes) -> Path:
    """Write a private key's ``pem`` to ``path`` (its folder created), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


def _load(path: Path) -> RSAKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the signing key {path}: {exc.strerror}. Create one with "
                        "`patientkontrakt keys generate` (or `patientkontrakt demo`), or set PK_SIGNING_KEY") from None
    try:
        return _parse(pem)
    except (JoseError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path} is not an RSA private key in PEM: {exc}") from None
    except _PublicKeyError:
        raise SigningKeyError(f"{path} holds a public key; the server needs the private key to sign") from None


class _PublicKeyError(Exception):
    pass


@lru_cache(maxsize=16)
def _parse(pem: bytes) -> RSAKey:
    """The key a PEM holds, with its thumbprint as ``kid``. Kept by content: parsing checks the
    RSA key, about 0.1 s, and a process that starts several apps (the tests, the CLI) or issues
    tokens from a file would pay it each time; the same bytes are the same key, a new file's
    bytes a new entry."""
    key = RSAKey.import_key(pem)
    if not key.is_private:
        raise _PublicKeyError
    return RSAKey.import_key(key.as_dict(private=True), parameters={"kid": key.thumbprint(), "use": "sig",
                                                                      "alg": ALGORITHM})


class SigningKeys:
    def __init__(self, active: RSAKey, previous: list[RSAKey] | None = None) -> None:
        self.active = active
        self.all = KeySet([active, *(previous or [])])
        self.kid = str(active.kid)

    @classmethod
    def load(cls, active: Path, previous: list[Path] | None = None) -> SigningKeys:
        return cls(_load(active), [_load(p) for p in previous or []])

    def sign(self, claims: dict[str, Any], *, typ: str = "JWT") -> str:
        return jwt.encode({"alg": ALGORITHM, "kid": self.kid, "typ": typ}, claims, self.active)

    def decode(self, token: str) -> jwt.Token:
        """The token's header and claims once its signature verifies with one of our keys
        (raises ``JoseError``; claims are not checked here)."""
        return jwt.decode(token, self.all, algorithms=[ALGORITHM])

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (``/oauth/jwks``)."""
        return dict(self.all.as_dict(private=False))
