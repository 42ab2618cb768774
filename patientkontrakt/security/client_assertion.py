"""The client side of SMART Backend Services: a ``private_key_jwt`` assertion and a token request.

Used by ``patientkontrakt token`` (a token for curl, signed with the demo EHR's key) and by the
demo. Real EHR systems use their own OAuth library; the tests use authlib's.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class TokenRequestError(RuntimeError):
    pass


def load_private_key(path: Path) -> ECKey | RSAKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenRequestError(f"cannot read the client key {path}: {exc.strerror}") from None
    for kind in (ECKey, RSAKey):
        try:
            key = kind.import_key(data)
        except (JoseError, ValueError, TypeError):
            continue
        return key
    raise TokenRequestError(f"{path} is not an EC or RSA private key in PEM")


def assertion(client_id: str, token_endpoint: str, key: ECKey | RSAKey, lifetime: int = 240) -> str:
    now = int(time.time())
    alg = "ES384" if isinstance(key, ECKey) else "RS384"
    claims = {"iss": client_id, "sub": client_id, "aud": token_endpoint, "iat": now, "exp": now + lifetime,
              "jti": str(uuid.uuid4())}
    # joserfc refuses algorithms outside its "recommended" list unless they are named.
    return jwt.encode({"alg": alg, "typ": "JWT", "kid": key.thumbprint()}, claims, key, algorithms=[alg])


def request_token(base_url: str, client_id: str, key_path: Path, scope: str) -> str:
    """An access token from ``base_url``'s token endpoint (client credentials)."""
    endpoint = f"{base_url.rstrip('/')}/oauth/token"
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(client_id, endpoint, load_private_key(key_path)),
    }).encode()
    request = urllib.request.Request(endpoint, data=form,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our own server)
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise TokenRequestError(f"the token endpoint refused: {exc.code} {exc.read().decode(errors='replace')}") \
            from None
    except (OSError, ValueError) as exc:
        raise TokenRequestError(f"cannot reach {endpoint} (is the server running?): {exc}") from None
    return str(body["access_token"])
