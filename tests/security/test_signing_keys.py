"""The signing keys as files (patientkontrakt/security/keys.py): a key is known by its content, so
a file rewritten with a new key (a rotation) is read as the new key, and a file that is no usable
private key is refused with a message that says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from patientkontrakt.security.keys import SigningKeyError, SigningKeys, generate_key


def test_the_same_file_is_the_same_key_and_a_rewritten_file_a_new_one(tmp_path: Path) -> None:
    path = generate_key(tmp_path / "signing.pem")
    first = SigningKeys.load(path)
    assert SigningKeys.load(path).kid == first.kid
    token = first.sign({"sub": "x"})
    (tmp_path / "previous.pem").write_bytes(path.read_bytes())

    generate_key(path)  # the same path, a new key
    rotated = SigningKeys.load(path)
    assert rotated.kid != first.kid
    assert rotated.decode(rotated.sign({"sub": "y"})).claims["sub"] == "y"
    with pytest.raises(JoseError):
        rotated.decode(token)
    rollover = SigningKeys.load(path, [tmp_path / "previous.pem"])
    assert rollover.kid == rotated.kid
    assert rollover.decode(token).claims["sub"] == "x"


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read the signing key"),
    (b"not a key", "is not an RSA private key in PEM"),
    ("public", "holds a public key"),
])
def test_an_unusable_key_file_is_refused_with_the_reason(tmp_path: Path, content: bytes | str | None,
                                                        says: str) -> None:
    path = tmp_path / "signing.pem"
    if content == "public":
        path.write_bytes(RSAKey.generate_key(2048, private=True).as_pem(private=False))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(SigningKeyError, match=says):
        SigningKeys.load(path)
