"""The registry of OAuth clients (``patientkontrakt clients add|list|remove``).

Kinds: *public* (a browser or phone app: PKCE, no secret), *confidential* (PKCE and a
``private_key_jwt`` assertion), *backend* (client credentials with ``private_key_jwt``, acting
for one care unit). Keys are public JWK Sets, given inline or as a URL; the server never holds
a client's private key or a shared secret.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from patientkontrakt.domain.identifiers import IdentifierError, validate_hsa_id
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.security.revocation import covers_until
from patientkontrakt.security.scopes import is_known
from patientkontrakt.storage.oauth import ClientRow, OAuthStore
from patientkontrakt.storage.repository import Store

KINDS = ("public", "confidential", "backend", "directory")
BACKEND_KINDS = ("backend", "directory")  # client credentials (SMART Backend Services)


class ClientError(ValueError):
    """A registration that cannot be accepted; the message says what to change."""


def _check_redirect(uri: str) -> None:
    parts = urlsplit(uri)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise ClientError(f"redirect URI {uri!r} must be an absolute http(s) URL without a fragment")
    if parts.scheme == "http" and not loopback:
        raise ClientError(f"redirect URI {uri!r} must use https (http only on loopback)")


def _check_jwks(jwks: str) -> None:
    """A client's keys are public RSA or EC keys (RFC 7517 §5, RFC 7523 §3): no private key and no
    shared secret (``oct``), which the server must never hold."""
    try:
        keys = KeySet.import_key_set(json.loads(jwks))
    except (ValueError, JoseError, TypeError, KeyError, AttributeError) as exc:
        raise ClientError(f"the JWKS is not a valid JWK Set: {exc}") from None
    if not keys.keys:
        raise ClientError("the JWKS holds no keys")
    if any(key.key_type not in ("RSA", "EC") for key in keys.keys):
        raise ClientError("the JWKS may hold only RSA and EC public keys (no shared secrets)")
    if any(key.is_private for key in keys.keys):
        raise ClientError("the JWKS holds a private key; register only the public keys")


class Clients:
    def __init__(self, store: Store) -> None:
        self._store = OAuthStore(store)

    async def registered(self) -> list[ClientRow]:
        return await self._store.clients()

    async def remove(self, client_id: str) -> bool:
        """Remove a registration; its refresh and access tokens stop working (on every process
        within ``PK_REVOCATION_REFRESH_SECONDS``)."""
        now = now_utc()
        return await self._store.remove_client(client_id, now, covers_until(now))

    async def add(self, client_id: str, *, name: str, kind: str, redirect_uris: list[str], scope: str,
                  jwks: str | None = None, jwks_uri: str | None = None, care_unit: str | None = None) -> None:
        if not client_id or len(client_id) > 128 or not client_id.isprintable() or " " in client_id:
            raise ClientError("client_id must be 1 to 128 printable characters without spaces")
        if kind not in KINDS:
            raise ClientError(f"kind must be one of {', '.join(KINDS)}")
        unknown = [s for s in scope.split() if not is_known(s)]
        if unknown or not scope.split():
            raise ClientError(f"unknown scopes: {' '.join(unknown) or '(none given)'}")
        for uri in redirect_uris:
            _check_redirect(uri)
        if kind not in BACKEND_KINDS and not redirect_uris:
            raise ClientError(f"a {kind} client needs at least one --redirect-uri")
        if kind != "public" and not (jwks or jwks_uri):
            raise ClientError(f"a {kind} client needs its public keys: --jwks FILE or --jwks-uri URL")
        if jwks is not None:
            _check_jwks(jwks)
        if kind == "directory" and care_unit:
            raise ClientError("a directory client acts for no care unit: leave out --care-unit")
        if kind == "backend":
            if not care_unit:
                raise ClientError("a backend client acts for a care unit: --care-unit HSA-ID")
            try:
                validate_hsa_id(care_unit)
            except IdentifierError as exc:
                raise ClientError(str(exc)) from None
        await self._store.save_client({
            "client_id": client_id, "name": name, "kind": kind, "redirect_uris": json.dumps(redirect_uris),
            "jwks": jwks, "jwks_uri": jwks_uri, "scope": scope, "care_unit": care_unit, "created": now_utc(),
        })
