"""The authorization server (RFC 6749, 7636, 7523, 7662, 7009; SMART App Launch 2.x).

Grants:

* **authorization code with PKCE** (S256 only, RFC 7636): public clients (the patient
  e-service, SMART apps) and confidential ones authenticating with ``private_key_jwt``. The user
  signs in at the identity provider (``api/oauth.py``: the test IdP or an external OpenID
  Connect provider) and ``issue_code`` binds the code to the client, redirect URI, PKCE
  challenge, granted scopes and the signed-in person. A code lasts 60 s and works once; a
  second use also revokes the tokens the first use produced (RFC 6749 §4.1.2).
* **client credentials** with a ``private_key_jwt`` client assertion (SMART Backend Services,
  RFC 7523): RS384 or ES384, signed with a key in the client's registered JWKS (or JWKS URL),
  ``iss`` = ``sub`` = the client, ``aud`` = the token endpoint, ``exp`` at most 5 minutes ahead,
  ``jti`` never seen before. The token acts for the care unit the client is registered for.
* **refresh token**: opaque, stored as a hash, rotated on every use; presenting a used one
  revokes its whole family (the legitimate holder and the thief both lose it). It works only
  while the staff member's commission (or the patient's record) still holds.

A sign-in is one family of refresh tokens; its access tokens name it as ``sid``. Whatever revokes
the family (revocation, sign-out, a replayed refresh token or code, an ended commission) ends
its access tokens too, on every process (``revocation.py``).

Why not authlib's ``AuthorizationServer``: it is synchronous and calls its storage hooks
synchronously, while our storage is async; the grant rules above are written here on top of
joserfc (JOSE, by authlib's author, the successor of ``authlib.jose``), and authlib itself is
used where it fits: as the OpenID Connect client of the external IdP and in the tests as a
Backend Services client.

Its length (over 400 lines) is one authorization server: the grants share client
authentication, token families and revocation, and are reviewed together.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import time
import urllib.request
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from patientkontrakt.config import Settings
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.fhir.errors import Unauthorized
from patientkontrakt.security.claims import AUDIENCE, ClaimError, ClaimSet, date, text
from patientkontrakt.security.clients import BACKEND_KINDS
from patientkontrakt.security.identity import Directory
from patientkontrakt.security.keys import SigningKeys
from patientkontrakt.security.revocation import Revocations, covers_until, keys_of
from patientkontrakt.security.scopes import Scopes, narrow
from patientkontrakt.security.tokens import LEEWAY, AccessTokens, Grant
from patientkontrakt.storage.oauth import ClientRow, OAuthStore, Revoked

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["RS384", "ES384"]
CODE_LIFETIME = 60
# RFC 8693 token exchange: a staff member's access token for one marked for emergency access.
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
MIN_REASON, MAX_REASON = 10, 1000
PENDING_LIFETIME = 600
MAX_ASSERTION_LIFETIME = 300
_JWKS_MAX_BYTES = 256 * 1024
_CONTEXT_OF = {"staff": "user", "patient": "patient", "system": "system"}
# RFC 7636 §4.1, §4.2: code-verifier and code-challenge are 43*128 of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"
_PKCE_VALUE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# RFC 7523 §3: iss, sub, aud, exp and (SMART Backend Services) jti required
ASSERTION_CLAIMS = ClaimSet(iss=text(required=True, max_length=128), sub=text(required=True, max_length=128),
                            aud=AUDIENCE, exp=date(required=True), iat=date(), nbf=date(), jti=text(required=True))


class OAuthError(Exception):
    """An OAuth error response (RFC 6749 §4.1.2.1, §5.2). ``redirect``: it may be sent to the
    client's redirect URI (the client and redirect URI themselves were valid)."""

    def __init__(self, error: str, description: str, *, status: int = 400, redirect: bool = False) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.redirect = redirect

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class AuthorizeRequest:
    client_id: str
    client_name: str
    redirect_uri: str
    scope: str  # what the client asked for (narrowed to its registration)
    state: str | None
    code_challenge: str
    nonce: str | None
    binding: str  # the browser this sign-in started in (a cookie's value)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _json_list(text: str | None) -> list[str]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def scopes_for(kind: str, scope: str) -> str:
    """The scopes that make sense for a kind of user: resource scopes of their context only
    (a patient gets ``patient/``, staff ``user/``, a backend ``system/``), and ``launch/patient``
    only for a patient (there is no patient picker for staff)."""
    context = _CONTEXT_OF[kind]
    kept = []
    for part in scope.split():
        parsed = Scopes.parse(part)
        if parsed.resource:
            if parsed.resource[0].context == context:
                kept.append(part)
        elif part in parsed.other and (part != "launch/patient" or kind == "patient"):
            kept.append(part)
    return " ".join(kept)


def user_kinds(scope: str) -> tuple[str, ...]:
    """Whom an authorization request's scopes are for, the first the likelier: ``patient`` for
    ``patient/`` scopes or ``launch/patient``, ``staff`` for ``user/`` scopes; both when they name
    neither (``openid`` alone). Anyone else signing in gets none of the resource scopes
    (``scopes_for``). The test IdP lists these people first."""
    parsed = Scopes.parse(scope)
    contexts = {s.context for s in parsed.resource}
    kinds = tuple(kind for kind in ("patient", "staff")
                  if _CONTEXT_OF[kind] in contexts or (kind == "patient" and "launch/patient" in parsed.other))
    return kinds or ("patient", "staff")


class AuthorizationServer:
    def __init__(self, settings: Settings, keys: SigningKeys, tokens: AccessTokens, store: OAuthStore,
                 directory: Directory, revocations: Revocations) -> None:
        self.settings = settings
        self.keys = keys
        self.tokens = tokens
        self.store = store
        self.directory = directory
        self.revocations = revocations
        self.issuer = settings.base_url.rstrip("/")
        self.token_endpoint = f"{self.issuer}/oauth/token"

    # -- discovery -------------------------------------------------------------------------

    def endpoints(self) -> dict[str, str]:
        return {
            "authorization_endpoint": f"{self.issuer}/oauth/authorize",
            "token_endpoint": self.token_endpoint,
            "introspection_endpoint": f"{self.issuer}/oauth/introspect",
            "revocation_endpoint": f"{self.issuer}/oauth/revoke",
            "jwks_uri": f"{self.issuer}/oauth/jwks",
        }

    def smart_configuration(self) -> dict[str, Any]:
        """``/fhir/.well-known/smart-configuration`` (SMART App Launch 2.x §conformance)."""
        return {
            "issuer": self.issuer,
            **self.endpoints(),
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token", TOKEN_EXCHANGE],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
            "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
            "scopes_supported": [
                "openid", "fhirUser", "launch/patient", "offline_access", "online_access",
                "patient/*.rs", "patient/Goal.cu", "user/*.cruds", "system/*.cruds",
                "patient/*.read", "user/*.read", "user/*.write", "system/*.read", "system/*.write",
            ],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": [
                "launch-standalone", "client-public", "client-confidential-asymmetric", "context-standalone-patient",
                "sso-openid-connect", "permission-offline", "permission-online", "permission-patient",
                "permission-user", "permission-v1", "permission-v2",
            ],
        }

    def openid_configuration(self) -> dict[str, Any]:
        """``/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0)."""
        return {
            "issuer": self.issuer,
            **{k: v for k, v in self.endpoints().items() if k != "introspection_endpoint"},
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "fhirUser", "profile", "offline_access"],
            "claims_supported": ["sub", "name", "fhirUser", "iss", "aud", "exp", "iat", "nonce"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        }

    # -- authorize -------------------------------------------------------------------------

    async def authorize_request(self, params: dict[str, str], binding: str) -> AuthorizeRequest:
        """Check an authorization request. Errors about the client or redirect URI are shown to
        the user (never redirected: RFC 6749 §4.1.2.1); the others go back to the client.

        ``aud`` is required and must be this FHIR base (SMART App Launch 2.x, "Obtain
        authorization code"): an app is never given a token meant for another server."""
        client_id = params.get("client_id", "")
        client = await self.store.client(client_id) if client_id else None
        if client is None or client.kind in BACKEND_KINDS:
            raise OAuthError("invalid_client", f"Unknown client {client_id!r}")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in _json_list(client.redirect_uris):
            raise OAuthError("invalid_request", "redirect_uri is not registered for this client")
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "only response_type=code is supported", redirect=True)
        challenge, method = params.get("code_challenge", ""), params.get("code_challenge_method", "")
        if not challenge or method != "S256":
            raise OAuthError("invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256",
                             redirect=True)
        if not _PKCE_VALUE.fullmatch(challenge):
            raise OAuthError("invalid_request", "code_challenge must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ "
                                                "(RFC 7636 §4.2)", redirect=True)
        aud = params.get("aud")
        if aud is None or aud.rstrip("/") != self.settings.fhir_base:
            raise OAuthError("invalid_request", f"aud is required and must be this FHIR server: "
                                                f"{self.settings.fhir_base}", redirect=True)
        scope = narrow(params.get("scope", ""), client.scope)
        if not scope:
            raise OAuthError("invalid_scope", "none of the requested scopes can be granted to this client",
                             redirect=True)
        return AuthorizeRequest(client.client_id, client.name, redirect_uri, scope, params.get("state"),
                                challenge, params.get("nonce"), binding)

    def error_redirect(self, request: AuthorizeRequest | None, params: dict[str, str], error: OAuthError) -> str:
        target = request.redirect_uri if request else params["redirect_uri"]
        query = {"error": error.error, "error_description": error.description}
        state = request.state if request else params.get("state")
        if state is not None:
            query["state"] = state
        return f"{target}{'&' if '?' in target else '?'}{urlencode(query)}"

    def seal(self, request: AuthorizeRequest) -> str:
        """The request, signed, to carry through the sign-in (form field or the IdP's ``state``)."""
        now = int(time.time())
        return self.keys.sign({"iss": self.issuer, "aud": "pk-authorize", "iat": now,
                               "exp": now + PENDING_LIFETIME, "req": request.__dict__}, typ="pk-authorize")

    def unseal(self, sealed: str, binding: str | None) -> AuthorizeRequest:
        """The request again; it must be ours, fresh, and continued in the browser it began in."""
        try:
            token = self.keys.decode(sealed)
        except (JoseError, ValueError, TypeError):
            raise OAuthError("invalid_request", "the sign-in request is not valid; start again") from None
        claims = token.claims
        if token.header.get("typ") != "pk-authorize" or claims.get("aud") != "pk-authorize" \
                or not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            raise OAuthError("invalid_request", "the sign-in took too long or is not valid; start again")
        request = AuthorizeRequest(**claims["req"])
        # bytes: a cookie may hold anything, and compare_digest refuses non-ASCII strings
        if not binding or not secrets.compare_digest(binding.encode(), request.binding.encode()):
            raise OAuthError("invalid_request", "the sign-in was started in another browser; start again")
        return request

    async def issue_code(self, request: AuthorizeRequest, grant: Grant) -> str:
        """After sign-in: a code for the client, and the URL that takes it there."""
        scope = scopes_for(grant.kind, request.scope)
        code = secrets.token_urlsafe(32)
        await self.store.add_code({
            "code_hash": _hash(code), "client_id": request.client_id, "redirect_uri": request.redirect_uri,
            "scope": scope, "grant": orjson.dumps(grant.claims()).decode(),
            "code_challenge": request.code_challenge, "nonce": request.nonce,
            "expires_at": now_utc() + timedelta(seconds=CODE_LIFETIME), "used_at": None, "family_id": None,
        })
        query = {"code": code, **({"state": request.state} if request.state is not None else {})}
        sep = "&" if "?" in request.redirect_uri else "?"
        return f"{request.redirect_uri}{sep}{urlencode(query)}"

    # -- token -----------------------------------------------------------------------------

    async def token(self, form: dict[str, str]) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return await self._authorization_code(form)
        if grant_type == "refresh_token":
            return await self._refresh(form)
        if grant_type == "client_credentials":
            return await self._client_credentials(form)
        if grant_type == TOKEN_EXCHANGE:
            return await self._emergency_access(form)
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")

    async def _client(self, form: dict[str, str], *, backend: bool = False) -> ClientRow:
        """Authenticate the client: ``private_key_jwt`` for confidential and backend clients,
        ``client_id`` alone for public ones."""
        assertion = form.get("client_assertion")
        if assertion is not None or form.get("client_assertion_type") is not None:
            if form.get("client_assertion_type") != ASSERTION_TYPE or not assertion:
                raise OAuthError("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}", status=401)
            return await self._verify_assertion(assertion, form.get("client_id"))
        client_id = form.get("client_id", "")
        client = await self.store.client(client_id) if client_id else None
        if client is None:
            raise OAuthError("invalid_client", "unknown client", status=401)
        if client.kind != "public" or backend:
            raise OAuthError("invalid_client", "this client must authenticate with a private_key_jwt assertion",
                             status=401)
        return client

    async def _verify_assertion(self, assertion: str, claimed_id: str | None) -> ClientRow:
        # The issuer names the client whose keys verify the signature: read it before verifying.
        try:
            header_part, payload_part = assertion.split(".")[:2]
            header = orjson.loads(base64.urlsafe_b64decode(header_part + "=" * (-len(header_part) % 4)))
            claims = orjson.loads(base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            raise OAuthError("invalid_client", "client_assertion is not a JWT", status=401) from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise OAuthError("invalid_client", "client_assertion is not a JWT", status=401)
        client_id = claims.get("iss")
        if not isinstance(client_id, str) or claims.get("sub") != client_id \
                or (claimed_id is not None and claimed_id != client_id):
            raise OAuthError("invalid_client", "client_assertion: iss and sub must both be the client_id", status=401)
        client = await self.store.client(client_id)
        if client is None or client.kind == "public":
            raise OAuthError("invalid_client", f"unknown or public client {client_id!r}", status=401)
        if header.get("alg") not in ASSERTION_ALGORITHMS:
            raise OAuthError("invalid_client",
                             f"client_assertion must be signed with {' or '.join(ASSERTION_ALGORITHMS)}", status=401)
        keys = await self._client_keys(client)
        try:
            verified = jwt.decode(assertion, keys, algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError, TypeError):
            raise OAuthError("invalid_client", "client_assertion signature does not verify with the client's keys",
                             status=401) from None
        claims = verified.claims
        try:
            ASSERTION_CLAIMS.check(claims)
        except ClaimError as error:
            raise OAuthError("invalid_client", f"client_assertion: {error}", status=401) from None
        audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if self.token_endpoint not in audience:
            raise OAuthError("invalid_client", f"client_assertion aud must be {self.token_endpoint}", status=401)
        now = time.time()
        exp, jti = claims["exp"], claims["jti"]
        if exp <= now:
            raise OAuthError("invalid_client", "client_assertion has expired", status=401)
        if exp > now + MAX_ASSERTION_LIFETIME + 5:
            raise OAuthError("invalid_client", "client_assertion exp must be at most 5 minutes ahead", status=401)
        if claims.get("nbf", now) > now + LEEWAY:
            raise OAuthError("invalid_client", "client_assertion is not valid yet (nbf)", status=401)
        expires = datetime.fromtimestamp(exp, UTC).replace(tzinfo=None)
        if not await self.store.remember_jti("assertion", client_id, jti, expires, now_utc()):
            raise OAuthError("invalid_client", "client_assertion jti was used before (replay)", status=401)
        return client

    async def _client_keys(self, client: ClientRow) -> KeySet:
        if client.jwks:
            data = json.loads(client.jwks)
        elif client.jwks_uri:
            data = await asyncio.to_thread(_fetch_json, client.jwks_uri)
        else:
            raise OAuthError("invalid_client", "the client has no registered keys", status=401)
        try:
            return KeySet.import_key_set(data)
        except (JoseError, ValueError, TypeError, KeyError):
            raise OAuthError("invalid_client", "the client's registered JWKS cannot be read", status=401) from None

    async def _authorization_code(self, form: dict[str, str]) -> dict[str, Any]:
        client = await self._client(form)
        code, verifier = form.get("code", ""), form.get("code_verifier", "")
        family = str(uuid.uuid4())
        row = await self.store.use_code(_hash(code), now_utc(), family) if code else None
        if row is None or row.client_id != client.client_id:
            raise OAuthError("invalid_grant", "the code is not valid")
        if row.used_at is not None:
            if row.family_id:
                await self._end_sign_in(row.family_id)
            raise OAuthError("invalid_grant", "the code was used before; tokens issued with it are revoked")
        if row.expires_at < now_utc():
            raise OAuthError("invalid_grant", "the code has expired")
        if form.get("redirect_uri") != row.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        if not _PKCE_VALUE.fullmatch(verifier) or not secrets.compare_digest(_s256(verifier), row.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge (PKCE S256)")
        grant = Grant.from_claims(orjson.loads(row.grant))
        return await self._respond(client, grant, row.scope, family, nonce=row.nonce)

    async def _refresh(self, form: dict[str, str]) -> dict[str, Any]:
        client = await self._client(form)
        presented = form.get("refresh_token", "")
        current = await self.store.refresh(_hash(presented)) if presented else None
        if current is None or current.client_id != client.client_id:
            raise OAuthError("invalid_grant", "the refresh token is not valid")
        scope = current.scope
        if form.get("scope"):
            asked = form["scope"].split()
            if not set(asked) <= set(scope.split()):
                raise OAuthError("invalid_scope", "a refresh cannot add scopes")
            scope = " ".join(asked)
        token, successor = self._new_refresh(current.family_id, client.client_id, current.scope, current.grant,
                                             current.expires_at)
        now = now_utc()
        row = await self.store.rotate_refresh(_hash(presented), now, successor, covers_until(now))
        assert row is not None
        if row.used_at is not None:
            self.revocations.add([("session", row.family_id)])  # rotate_refresh revoked the family
            raise OAuthError("invalid_grant", "the refresh token was used before; all tokens of this sign-in "
                                              "are revoked")
        if row.revoked_at is not None or row.expires_at <= now_utc():
            raise OAuthError("invalid_grant", "the refresh token has expired or was revoked")
        grant = await self._still_held(Grant.from_claims(orjson.loads(current.grant)))
        if grant is None:
            await self._end_sign_in(current.family_id)
            raise OAuthError("invalid_grant", "the commission or patient record this sign-in was for is no longer "
                                              "valid; sign in again")
        return await self._respond(client, grant, scope, current.family_id, refresh=token, openid=False)

    async def _still_held(self, grant: Grant) -> Grant | None:
        """The grant of a refresh as the directory knows it now, for the same person, or None.

        A refresh issues a new access token without a sign-in (RFC 6749 §6), so it must not outlive
        what the sign-in granted: a staff member's commission counts only while it and its
        Practitioner are active and within its validity period (design §5), and a patient only
        while their Patient record exists.
        """
        now: Grant | None = None
        if grant.kind == "staff" and grant.fhir_user and grant.fhir_user.startswith("PractitionerRole/"):
            now = await self.directory.commission(grant.fhir_user.removeprefix("PractitionerRole/"))
        elif grant.kind == "patient" and grant.patient:
            now = await self.directory.patient(grant.patient)
        return now if now is not None and now.sub == grant.sub else None

    async def _client_credentials(self, form: dict[str, str]) -> dict[str, Any]:
        client = await self._client(form, backend=True)
        if client.kind not in BACKEND_KINDS:
            raise OAuthError("unauthorized_client", "client_credentials is for backend clients")
        scope = scopes_for("system", narrow(form.get("scope", ""), client.scope))
        if not scope:
            raise OAuthError("invalid_scope", "none of the requested scopes can be granted to this client")
        if client.kind == "directory":  # keeps the directory; acts for no care unit
            grant = Grant(kind="directory", sub=client.client_id, name=client.name)
        else:
            unit = await self.directory.care_unit(client.care_unit) if client.care_unit else None
            if unit is None:
                raise OAuthError("unauthorized_client", "the client is not registered for a known care unit")
            org_id, name, provider = unit
            grant = Grant(kind="system", sub=client.client_id, name=client.name, care_unit=client.care_unit,
                          care_unit_name=name, care_unit_org=org_id, care_provider=provider)
        access_token, claims = self.tokens.issue(grant, scope, client.client_id)
        return {"access_token": access_token, "token_type": "Bearer", "expires_in": self.tokens.lifetime,
                "scope": scope}

    async def _emergency_access(self, form: dict[str, str]) -> dict[str, Any]:
        """Emergency access (nödåtkomst, Patientdatalagen 6 kap 4 §) as an RFC 8693 token
        exchange: a staff member's access token (``subject_token``), the patient (``patient``,
        a Patient id), ``purpose_of_use=ETREAT`` and the typed ``reason`` give a token marked
        ETREAT for that patient, for ``emergency_access_lifetime`` at most and never renewed:
        under it the unit reads what another provider holds about the patient without the
        patient's samtycke, never what a spärr blocks (``storage/access_sql.py``). Every access
        under it is logged with the reason."""
        client = await self._client(form)
        if form.get("subject_token_type") != ACCESS_TOKEN_TYPE or not form.get("subject_token"):
            raise OAuthError("invalid_request", f"subject_token_type must be {ACCESS_TOKEN_TYPE}")
        if form.get("purpose_of_use") != "ETREAT":
            raise OAuthError("invalid_request", "purpose_of_use must be ETREAT (emergency access)")
        reason = " ".join((form.get("reason") or "").split())
        if not MIN_REASON <= len(reason) <= MAX_REASON:
            raise OAuthError("invalid_request", f"an emergency access needs a reason of {MIN_REASON} to "
                                                f"{MAX_REASON} characters")
        patient = (form.get("patient") or "").strip()
        if not patient or len(patient) > 64 or "/" in patient:
            raise OAuthError("invalid_request", "patient must be the id of the Patient the emergency is about")
        try:
            claims = self.tokens.verify(form["subject_token"])
        except Unauthorized:
            raise OAuthError("invalid_grant", "the subject_token is not a valid access token") from None
        grant = Grant.from_claims(claims)
        if claims.get("client_id") != client.client_id or grant.kind != "staff" or not grant.care_unit_org:
            raise OAuthError("invalid_grant", "only a staff member's own access token, acting for a care unit, "
                                              "can be exchanged for an emergency access")
        if await self.directory.is_social_care(grant.care_unit_org):
            raise OAuthError("invalid_grant", "emergency access is for health care (vårdgivare); a social-care "
                                              "unit reads other providers' data only with the person's samtycke")
        if grant.purpose_of_use is not None:
            raise OAuthError("invalid_grant", "an emergency access is not renewed: give the reason again")
        if self.revocations is not None and self.revocations.revoked(keys_of(claims)):
            raise OAuthError("invalid_grant", "the subject_token was revoked")
        emergency = replace(grant, purpose_of_use="ETREAT", emergency_patient=patient, emergency_reason=reason)
        access_token, issued = self.tokens.issue(emergency, str(claims["scope"]), client.client_id,
                                                 session=claims.get("sid"),
                                                 lifetime=self.settings.emergency_access_lifetime)
        return {"access_token": access_token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
                "expires_in": int(issued["exp"] - issued["iat"]), "scope": issued["scope"]}

    def _new_refresh(self, family: str, client_id: str, scope: str, grant: str,
                     expires_at: datetime | None = None) -> tuple[str, dict[str, Any]]:
        """A refresh token; a rotated one keeps its family's expiry, so a sign-in ends
        ``refresh_token_lifetime`` after it began however often it is refreshed."""
        token = secrets.token_urlsafe(32)
        now = now_utc()
        return token, {
            "token_hash": _hash(token), "family_id": family, "client_id": client_id, "scope": scope,
            "grant": grant, "issued_at": now,
            "expires_at": expires_at or now + timedelta(seconds=self.settings.refresh_token_lifetime),
            "used_at": None, "revoked_at": None,
        }

    async def _respond(self, client: ClientRow, grant: Grant, scope: str, family: str, *, nonce: str | None = None,
                       refresh: str | None = None, openid: bool = True) -> dict[str, Any]:
        access_token, claims = self.tokens.issue(grant, scope, client.client_id, session=family)
        granted = scope.split()
        response: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer",
                                    "expires_in": self.tokens.lifetime, "scope": scope}
        if grant.kind == "patient" and "launch/patient" in granted:
            response["patient"] = grant.patient
        if grant.fhir_user and "fhirUser" in granted:
            response["fhirUser"] = grant.fhir_user
        response["need_patient_banner"] = grant.kind != "patient"
        if refresh is None and ("offline_access" in granted or "online_access" in granted):
            refresh, row = self._new_refresh(family, client.client_id, scope, orjson.dumps(grant.claims()).decode())
            await self.store.add_refresh(row)
        if refresh is not None:
            response["refresh_token"] = refresh
        if openid and "openid" in granted:
            now = int(time.time())
            id_claims = {"iss": self.issuer, "sub": grant.sub, "aud": client.client_id, "iat": now,
                         "exp": now + self.tokens.lifetime, "name": grant.name,
                         **({"fhirUser": grant.fhir_user} if grant.fhir_user and "fhirUser" in granted else {}),
                         **({"nonce": nonce} if nonce else {})}
            response["id_token"] = self.keys.sign({k: v for k, v in id_claims.items() if v is not None})
        return response

    # -- introspection and revocation ------------------------------------------------------

    async def introspect(self, form: dict[str, str]) -> dict[str, Any]:
        """RFC 7662, for confidential and backend clients (``private_key_jwt``)."""
        client = await self._client(form)
        if client.kind == "public":
            raise OAuthError("invalid_client", "introspection needs an authenticated client", status=401)
        token = form.get("token", "")
        if not token:
            return {"active": False}
        if token.count(".") == 2:
            try:
                claims = self.tokens.verify(token)
            except Exception:  # any reason: not an active token (RFC 7662 §2.2)
                return {"active": False}
            if await self.store.is_revoked(keys_of(claims), now_utc()):
                return {"active": False}
            return {"active": True, "token_type": "Bearer", **claims}
        row = await self.store.refresh(_hash(token))
        if row is None or row.used_at is not None or row.revoked_at is not None or row.expires_at <= now_utc():
            return {"active": False}
        grant = orjson.loads(row.grant)
        # stored times are naive UTC: ``exp`` counts seconds from the epoch in UTC (RFC 7662 §2.2),
        # never in the server's local time zone
        return {"active": True, "token_type": "refresh_token", "client_id": row.client_id, "scope": row.scope,
                "sub": grant.get("sub"), "exp": int(row.expires_at.replace(tzinfo=UTC).timestamp())}

    async def revoke(self, form: dict[str, str]) -> None:
        """RFC 7009: a refresh token revokes its sign-in (the family and its access tokens, §2.1);
        an access token revokes itself. Either way, on every process of the service."""
        client = await self._client(form)
        token = form.get("token", "")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        if token.count(".") == 2:
            try:
                claims = self.tokens.verify(token)
            except Exception:  # an invalid token needs no revoking (RFC 7009 §2.2)
                return
            if claims.get("client_id") == client.client_id:
                await self._revoke_access_token(claims)
            return
        row = await self.store.refresh(_hash(token))
        if row is not None and row.client_id == client.client_id:
            await self._end_sign_in(row.family_id)

    async def end_session(self, client_id: str, access_token: str, refresh_token: str | None) -> None:
        """Sign-out of the pages: the sign-in of these tokens ends (its refresh tokens and every
        access token issued in it), and the access token itself, whatever the refresh token says."""
        family: str | None = None
        if refresh_token:
            row = await self.store.refresh(_hash(refresh_token))
            if row is not None and row.client_id == client_id:
                family = row.family_id
        try:
            claims: dict[str, Any] | None = self.tokens.verify(access_token)
        except Exception:  # expired or not ours: nothing left to revoke
            claims = None
        if claims is not None and claims.get("client_id") != client_id:
            claims = None
        if claims is not None:
            await self._revoke_access_token(claims)
            family = family or (str(claims["sid"]) if "sid" in claims else None)
        if family is not None:
            await self._end_sign_in(family)

    async def _revoke_access_token(self, claims: dict[str, Any]) -> None:
        expires = datetime.fromtimestamp(float(claims["exp"]) + LEEWAY, UTC).replace(tzinfo=None)
        await self.store.revoke([Revoked("token", str(claims["jti"]), expires)], now_utc())
        self.revocations.add([("token", str(claims["jti"]))])

    async def _end_sign_in(self, family: str) -> None:
        now = now_utc()
        await self.store.revoke_family(family, now, covers_until(now))
        self.revocations.add([("session", family)])

def _fetch_json(url: str) -> Any:
    """A client's JWKS from its JWKS URL (https, or http on loopback for development)."""
    if not (url.startswith("https://") or url.startswith(("http://127.0.0.1", "http://localhost"))):
        raise OAuthError("invalid_client", "jwks_uri must use https", status=401)
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (scheme checked above)
            data = response.read(_JWKS_MAX_BYTES + 1)
    except OSError as exc:
        raise OAuthError("invalid_client", f"the client's jwks_uri cannot be read: {exc}", status=401) from None
    if len(data) > _JWKS_MAX_BYTES:
        raise OAuthError("invalid_client", "the client's JWKS is too large", status=401)
    try:
        return json.loads(data)
    except ValueError:
        raise OAuthError("invalid_client", "the client's jwks_uri does not return JSON", status=401) from None
