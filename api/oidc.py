"""Sign-in through an external OpenID Connect provider (the region's IdP: SITHS for staff,
BankID/Freja for patients), configured with ``PK_OIDC_*``.

The OAuth mechanics of the provider's authorization code flow (authorization URL with PKCE,
code exchange) are authlib's ``AsyncOAuth2Client``; the ID token is verified here against the
provider's published keys (issuer, audience, expiry, nonce). Its claims name the person:
``PK_OIDC_STAFF_CLAIM`` (default ``employeeHsaId``, Inera's IdP) for staff, optionally with
``PK_OIDC_COMMISSION_CLAIM`` choosing the commission; ``PK_OIDC_PATIENT_CLAIMS`` (default OIDC
Sweden's personalIdentityNumber, coordinationNumber) for patients. The directory turns them
into grants; a staff member with several commissions then chooses one.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from patientkontrakt.config import Settings
from patientkontrakt.domain.identifiers import IdentifierError, parse_person_number
from patientkontrakt.logs import describe
from patientkontrakt.security.claims import AUDIENCE, ClaimError, ClaimSet, date, text
from patientkontrakt.security.identity import Directory, StaffChoice
from patientkontrakt.security.keys import SigningKeys
from patientkontrakt.security.tokens import LEEWAY, Grant

FLOW_COOKIE = "pk_oidc"
_FLOW_LIFETIME = 600
# ID tokens must carry an asymmetric signature by the provider's published keys, whatever its
# discovery document offers: never "none" (which OpenID Connect allows in the code flow), no MAC.
_ERROR_CODE = re.compile(r"[\x20\x21\x23-\x5B\x5D-\x7E]{1,64}")
_ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# OpenID Connect Core §2: iss, sub, aud, exp and iat required; the claims that name the person
# (PK_OIDC_*_CLAIM) are checked where they are read
ID_TOKEN_CLAIMS = ClaimSet(iss=text(required=True, max_length=2048), sub=text(required=True), aud=AUDIENCE,
                           exp=date(required=True), iat=date(required=True), nbf=date(), auth_time=date(),
                           nonce=text(max_length=512))


class OidcError(Exception):
    """The external sign-in failed; the message says why (for the log and the error page)."""


class ProviderRefused(OidcError):
    """The provider answered the sign-in this browser started with an error (the person cancelled,
    or the provider refused); ``sealed`` is our authorization request, so the app can be told.
    Only the error code is kept: the provider's ``error_description`` is free text, which may name
    the person, and the message is logged."""

    def __init__(self, sealed: str, error: str) -> None:
        self.error = _code(error)
        super().__init__(f"the provider refused: {self.error}")
        self.sealed = sealed


def _code(error: object, exc: BaseException | None = None) -> str:
    """An OAuth error code (RFC 6749 §5.2: ASCII without quotes or backslashes), or what it is not."""
    if isinstance(error, str) and _ERROR_CODE.fullmatch(error):
        return error
    return describe(exc) if exc is not None else "(not an error code)"


class ExternalIdP:
    def __init__(self, settings: Settings, keys: SigningKeys) -> None:
        assert settings.oidc_issuer and settings.oidc_client_id
        self.settings = settings
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.redirect_uri = f"{settings.base_url.rstrip('/')}/oauth/callback"
        self._keys = keys
        self._metadata: dict[str, Any] | None = None

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.settings.oidc_client_id, client_secret=self.settings.oidc_client_secret,
            scope=self.settings.oidc_scope, redirect_uri=self.redirect_uri, code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_post" if self.settings.oidc_client_secret else "none",
            timeout=10.0,
        )

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            data = await _get_json(f"{self.issuer}/.well-known/openid-configuration", "discovery document")
            if not isinstance(data.get("issuer"), str) or data["issuer"].rstrip("/") != self.issuer:
                raise OidcError("the provider's discovery document names another issuer")
            self._metadata = data
        return self._metadata

    def sign_in_urls(self) -> list[str]:
        """Where a sign-in sends the browser: the provider's authorization endpoint (its issuer
        until the discovery document has been read), for the pages' ``form-action``."""
        known = self._metadata.get("authorization_endpoint") if self._metadata else None
        return [self.issuer, *([known] if isinstance(known, str) else [])]

    async def start(self, request: Request, sealed: str) -> Response:
        """Redirect to the provider; our sealed authorization request travels as ``state``, the
        PKCE verifier and nonce stay in an HttpOnly cookie (signed, so it cannot be swapped)."""
        metadata = await self.metadata()
        verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(24)
        url, _ = self._client().create_authorization_url(metadata["authorization_endpoint"], state=sealed,
                                                         code_verifier=verifier, nonce=nonce)
        response = RedirectResponse(url, status_code=303)
        flow = self._keys.sign({"aud": "pk-oidc", "v": verifier, "n": nonce, "s": sealed,
                                "exp": int(time.time()) + _FLOW_LIFETIME}, typ="pk-oidc")
        response.set_cookie(FLOW_COOKIE, flow, httponly=True, samesite="lax", path="/oauth",
                            secure=self.settings.base_url.startswith("https://"), max_age=_FLOW_LIFETIME)
        return response

    async def finish(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The provider sent the browser back: exchange the code, verify the ID token; returns our
        sealed request and the ID token's claims."""
        params = request.query_params
        try:
            decoded = self._keys.decode(request.cookies.get(FLOW_COOKIE, ""))
            flow = decoded.claims if decoded.header.get("typ") == "pk-oidc" else {}
        except (JoseError, ValueError, TypeError):
            raise OidcError("the sign-in cookie is missing or invalid (cookies blocked, or too slow)") from None
        if flow.get("aud") != "pk-oidc" or not isinstance(flow.get("exp"), int) or flow["exp"] < time.time() \
                or not all(isinstance(flow.get(k), str) for k in ("v", "n", "s")):
            raise OidcError("the sign-in took too long")
        if params.get("state") != flow.get("s"):
            raise OidcError("state does not match the sign-in this browser started")
        if "error" in params:
            raise ProviderRefused(str(flow["s"]), params["error"])
        metadata = await self.metadata()
        try:
            token = await self._client().fetch_token(metadata["token_endpoint"], code=params.get("code", ""),
                                                     code_verifier=flow["v"], grant_type="authorization_code")
        except Exception as exc:  # authlib raises OAuthError or httpx errors; either ends the sign-in
            # the provider's error code, not its description: that is free text (it is logged)
            raise OidcError(f"the code exchange failed: {_code(getattr(exc, 'error', None), exc)}") from None
        id_token = token.get("id_token")
        if not id_token:
            raise OidcError("the provider returned no ID token")
        return str(flow["s"]), await self._verify_id_token(str(id_token), str(flow["n"]))

    async def _verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        metadata = await self.metadata()
        offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in _ID_TOKEN_ALGORITHMS if a in offered] or ["RS256"]
        try:
            keys = KeySet.import_key_set(await _get_json(str(metadata["jwks_uri"]), "keys (JWKS)"))
            claims = jwt.decode(id_token, keys, algorithms=algorithms).claims
        except (JoseError, ValueError, TypeError, KeyError):
            raise OidcError("the ID token's signature does not verify with the provider's keys") from None
        try:
            ID_TOKEN_CLAIMS.check(claims)
        except ClaimError as error:
            raise OidcError(f"the ID token's claims are not valid: {error}") from None
        audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if claims["iss"].rstrip("/") != self.issuer:
            raise OidcError("the ID token is from another issuer")
        if self.settings.oidc_client_id not in audience:
            raise OidcError("the ID token is not for this service")
        now = time.time()
        if claims["exp"] < now - LEEWAY:
            raise OidcError("the ID token has expired")
        if claims.get("nbf", now) > now + LEEWAY:
            raise OidcError("the ID token is not valid yet")
        if claims.get("nonce") != nonce:
            raise OidcError("the ID token's nonce does not match")
        return dict(claims)

    async def grants(self, claims: dict[str, Any], directory: Directory) -> list[StaffChoice | _PatientChoice]:
        """Who the claims name, as the directory knows them: a patient, or a staff member's
        commissions (only the one named, if the provider names one)."""
        staff_id = claims.get(self.settings.oidc_staff_claim)
        if isinstance(staff_id, str) and staff_id:
            choices = await directory.commissions_of(staff_id)
            commission = claims.get(self.settings.oidc_commission_claim)
            if isinstance(commission, str) and commission:
                choices = [c for c in choices if c.grant.commission == commission]
            return list(choices)
        for name in self.settings.oidc_patient_claims.split(","):
            value = claims.get(name.strip())
            if isinstance(value, str) and value:
                try:
                    number = parse_person_number(value).value
                except IdentifierError:
                    raise OidcError(f"claim {name} is not a valid personnummer or samordningsnummer") from None
                grant = await directory.patient_by_number(number)
                return [_PatientChoice(grant)] if grant else []
        raise OidcError("the ID token names neither a staff member nor a patient")


async def _get_json(url: str, what: str) -> dict[str, Any]:
    """A JSON object from the provider; an unreachable provider or a wrong answer is an ``OidcError``."""
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            response = await http.get(url)
        response.raise_for_status()
        data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise OidcError(f"the provider's {what} cannot be read: {describe(exc)}") from None
    if not isinstance(data, dict):
        raise OidcError(f"the provider's {what} is not a JSON object")
    return data


class _PatientChoice:
    def __init__(self, grant: Grant) -> None:
        self.grant = grant
