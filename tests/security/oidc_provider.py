"""A small but real OpenID Connect provider, for testing sign-in through an external IdP.

It stands in for the region's IdP (SITHS for staff, BankID/Freja for patients) in
``tests/security/test_external_idp.py``, which runs it in its own process on loopback:

    OIDC_PROVIDER_CONFIG=provider.json python -m tests.security.oidc_provider --port 8123

The OAuth and OpenID Connect rules are authlib's ``AuthorizationServer`` with its
authorization code grant, PKCE (``CodeChallenge``, S256 only and required here) and the
OpenID Connect code flow extension (``OpenIDCode``, nonce required); the ID token is signed
RS256 with joserfc and this provider's own RSA key, published at ``/jwks``. Clients
authenticate at ``/token`` with ``client_secret_post``. Endpoints: ``/.well-known/openid-configuration``,
``/jwks``, ``/authorize`` (GET: a login form listing the configured identities; POST: sign in
as one, or cancel) and ``/token``.

``OIDC_PROVIDER_CONFIG`` names a JSON file::

    {"issuer": "http://127.0.0.1:8123",            (optional; default: this address)
     "clients": [{"client_id": "...", "client_secret": "...", "redirect_uris": ["..."]}],
     "identities": [{"id": "nurse", "label": "Anna, sjuksköterska",
                     "claims": {"sub": "...", "employeeHsaId": "SE...", "commissionHsaId": "SE..."}}]}

The login form can also make the provider misbehave, to test that the relying party refuses
what it must (``misbehave``): an ID token with the wrong nonce, issuer or audience, expired,
signed with a key the JWKS does not publish, or unsigned (``alg: none``).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import uvicorn
from authlib.oauth2 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin, OpenIDCode
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

CODE_LIFETIME = 120
ID_TOKEN_LIFETIME = 300

MISBEHAVIOUR = {
    "": "ID token as it should be",
    "wrong-nonce": "ID token with another nonce",
    "wrong-issuer": "ID token from another issuer",
    "wrong-audience": "ID token for another client",
    "expired": "expired ID token",
    "unpublished-key": "ID token signed with a key the JWKS does not publish",
    "unsigned": "unsigned ID token (alg none)",
    "exp-text": "ID token whose exp is a string",
    "iat-text": "ID token whose iat is a string",
    "sub-number": "ID token whose sub is a number",
    "aud-mixed": "ID token whose aud lists a number",
}


# -- the provider's data -----------------------------------------------------------------------


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scope: str = "openid profile"

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        return " ".join(s for s in (scope or "").split() if s in self.scope.split())

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_post"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass(frozen=True)
class Identity:
    id: str
    label: str
    claims: dict[str, Any]

    @property
    def sub(self) -> str:
        return str(self.claims.get("sub") or self.id)


@dataclass(frozen=True)
class SignIn:
    """Who signed in at the login form, and how the ID token should (mis)behave."""

    identity: Identity
    misbehave: str = ""


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    user: SignIn
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def is_expired(self) -> bool:
        return self.auth_time + CODE_LIFETIME < time.time()


# -- authlib: grant, PKCE, OpenID Connect ------------------------------------------------------


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_post"]
    server: Provider

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        self.server.codes[code] = Code(
            code=code, client_id=request.client.client_id, redirect_uri=data.get("redirect_uri", ""),
            scope=request.scope, nonce=data.get("nonce"), code_challenge=data["code_challenge"],
            code_challenge_method=data["code_challenge_method"], user=request.user,
        )

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        found = self.server.codes.get(code)
        if found is None or found.client_id != client.client_id or found.is_expired():
            return None
        return found

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> SignIn:
        return authorization_code.user


class S256Required(CodeChallenge):
    """PKCE for every authorization request, with S256 only (no ``plain``)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: grants.AuthorizationCodeGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE is required: code_challenge with code_challenge_method=S256",
                                      redirect_uri=redirect_uri, state=data.get("state"))
        super().validate_code_challenge(grant, redirect_uri)


class IdToken(OpenIDCode):
    """The ID token: iss, sub, aud, exp, iat, auth_time, nonce, at_hash and the identity's claims."""

    def __init__(self, provider: Provider) -> None:
        super().__init__(require_nonce=True)
        self.provider = provider

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        client_id = request.payload.client_id
        return any(c.nonce == nonce and c.client_id == client_id for c in self.provider.codes.values())

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        return self.provider.key

    def get_client_algorithm(self, client: Client) -> str:
        return "RS256"

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": str(self.provider.key.kid)}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.provider.issuer, "aud": client.client_id, "iat": now, "exp": now + ID_TOKEN_LIFETIME}

    def generate_user_info(self, user: SignIn, scope: str) -> dict[str, Any]:
        # authlib adds these claims last, so a misbehaviour's claims replace the right ones
        now = int(time.time())
        wrong = {
            "wrong-nonce": {"nonce": "not-the-nonce-you-sent"},
            "wrong-issuer": {"iss": "http://127.0.0.1:9/another-provider"},
            "wrong-audience": {"aud": "another-client"},
            "expired": {"iat": now - 7200, "auth_time": now - 7200, "exp": now - 3600},
            "exp-text": {"exp": "nan"},
            "iat-text": {"iat": "nan"},
            "sub-number": {"sub": 4711},
            "aud-mixed": {"aud": [next(iter(self.provider.clients)), 7]},
        }.get(user.misbehave, {})
        return {**user.identity.claims, "sub": user.identity.sub, **wrong}

    def encode_id_token(self, token: dict[str, Any], request: OAuth2Request) -> str:
        id_token: str = super().encode_id_token(token, request)
        how = request.user.misbehave
        if how in ("unpublished-key", "unsigned"):
            signed = jwt.decode(id_token, self.provider.key)
            if how == "unpublished-key":  # same kid, another key
                return jwt.encode(signed.header, signed.claims, self.provider.unpublished_key)
            return f"{_b64json({'alg': 'none', 'typ': 'JWT'})}.{_b64json(signed.claims)}."
        return id_token


def _b64json(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


class Provider(AuthorizationServer):
    def __init__(self, issuer: str, clients: list[Client], identities: list[Identity]) -> None:
        super().__init__(scopes_supported=["openid", "profile"])
        self.issuer = issuer
        self.clients = {c.client_id: c for c in clients}
        self.identities = {i.id: i for i in identities}
        self.codes: dict[str, Code] = {}
        key = RSAKey.generate_key(2048)
        self.key = RSAKey.import_key(key.as_dict(private=True),
                                     parameters={"kid": key.thumbprint(), "use": "sig", "alg": "RS256"})
        self.unpublished_key = RSAKey.generate_key(2048)
        self.register_token_generator("default", BearerTokenGenerator(lambda **_: secrets.token_urlsafe(32)))
        self.register_grant(AuthorizationCodeGrant, [S256Required(required=True), IdToken(self)])

    def query_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        pass  # no userinfo or resources here: access tokens are not kept

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request  # built by ``_oauth_request`` (Starlette reads the body asynchronously)

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
        if isinstance(body, dict):
            return JSONResponse(body, status_code=status, headers=dict(headers))
        return Response(body or "", status_code=status, headers=dict(headers))

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            # "none" is allowed for ID tokens from the token endpoint (OpenID Connect Core
            # §3.1.3.7); a relying party should still insist on a signature
            "id_token_signing_alg_values_supported": ["RS256", "none"],
            "scopes_supported": ["openid", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": sorted({"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce",
                                        *(c for i in self.identities.values() for c in i.claims)}),
        }


# -- HTTP --------------------------------------------------------------------------------------


class FormRequest(OAuth2Request):
    """An OAuth request whose parameters (query or form) Starlette has already read."""

    def __init__(self, request: Request, params: dict[str, str]) -> None:
        super().__init__(request.method, str(request.url), headers=dict(request.headers))
        self.payload = BasicOAuth2Payload(params)
        self._params = params

    @property
    def args(self) -> dict[str, str]:
        return self._params

    @property
    def form(self) -> dict[str, str]:
        return self._params


async def _params(request: Request) -> dict[str, str]:
    if request.method == "POST":
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    return dict(request.query_params)


def _login_page(provider: Provider, params: dict[str, str]) -> HTMLResponse:
    hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params.items())
    people = "".join(f'<li><label><input type="radio" name="identity" value="{escape(i.id)}" required> '
                     f"{escape(i.label)}</label></li>" for i in provider.identities.values())
    ways = "".join(f'<option value="{escape(k)}">{escape(v)}</option>' for k, v in MISBEHAVIOUR.items())
    client = escape(params.get("client_id", ""))
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Test OpenID provider</title></head>"
        f"<body><h1>Sign in to {client}</h1><p>A test identity provider: every identity is fictional.</p>"
        f'<form method="post" action="/authorize">{hidden}<ul>{people}</ul>'
        f'<p><label>How the provider behaves <select name="misbehave">{ways}</select></label></p>'
        f'<button type="submit">Sign in</button> <button type="submit" name="cancel" value="1">Cancel</button>'
        f"</form></body></html>",
        headers={"Cache-Control": "no-store"},
    )


async def authorize(request: Request) -> Response:
    provider: Provider = request.app.state.provider
    params = await _params(request)
    chosen, misbehave, cancel = params.pop("identity", None), params.pop("misbehave", ""), params.pop("cancel", None)
    oauth_request = FormRequest(request, params)
    try:
        grant = provider.get_consent_grant(oauth_request)
    except OAuth2Error as error:  # unknown client or redirect URI: shown here; the rest go back to the client
        return provider.handle_error_response(oauth_request, error)
    if request.method == "GET":
        return _login_page(provider, params)
    identity = provider.identities.get(chosen or "")
    if not cancel and (identity is None or misbehave not in MISBEHAVIOUR):
        return HTMLResponse("Choose an identity from the list", status_code=400)
    user = SignIn(identity, misbehave) if identity is not None and not cancel else None
    return provider.create_authorization_response(
        oauth_request, grant_user=user, grant=grant)


async def token(request: Request) -> Response:
    provider: Provider = request.app.state.provider
    return provider.create_token_response(FormRequest(request, await _params(request)))


async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(KeySet([request.app.state.provider.key]).as_dict(private=False))


async def discovery(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.provider.discovery())


def create_app(provider: Provider) -> Starlette:
    app = Starlette(routes=[
        Route("/.well-known/openid-configuration", discovery),
        Route("/jwks", jwks),
        Route("/authorize", authorize, methods=["GET", "POST"]),
        Route("/token", token, methods=["POST"]),
    ])
    app.state.provider = provider
    return app


def load(config: dict[str, Any], issuer: str) -> Provider:
    return Provider(
        str(config.get("issuer") or issuer).rstrip("/"),
        [Client(c["client_id"], c["client_secret"], list(c["redirect_uris"])) for c in config["clients"]],
        [Identity(i["id"], i.get("label") or i["id"], dict(i["claims"])) for i in config["identities"]],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = json.loads(Path(os.environ["OIDC_PROVIDER_CONFIG"]).read_text())
    provider = load(config, f"http://{args.host}:{args.port}")
    uvicorn.run(create_app(provider), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
