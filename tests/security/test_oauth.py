"""The authorization server over HTTP, in-process: discovery and signing keys, sign-in with the
authorization code and PKCE through the test IdP, refresh-token rotation, SMART Backend
Services, introspection and revocation, and what the FHIR API answers a token that is not valid
(SMART App Launch 2.x; RFC 6749, 6750, 7009, 7523, 7636, 7662; OpenID Connect Core 1.0).

Every test loads the demo region (``world``) and runs the service with the test IdP
(``PK_TEST_IDP``) in a ``TestClient`` that keeps cookies as a browser does; clients are
registered with ``Clients.add``, what ``patientkontrakt clients add`` calls. Redirects are never
followed: each ``Location`` is read. Tokens are verified here with the keys the server publishes
at ``/oauth/jwks``, not with the server's own code.

The backend (client credentials) tests use authlib as the client: ``OAuth2Client`` with
``PrivateKeyJWT``, its requests sent into the app in-process (``ThroughTestClient``). Assertions
no well-behaved library makes (another algorithm, unsigned, replayed, a foreign key, …) are
built with joserfc and posted by hand.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from api.app import create_app
from patientkontrakt.config import Settings
from patientkontrakt.domain.identifiers import HSA_ID
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.access import INTERNAL
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.security.clients import ClientError, Clients
from patientkontrakt.security.identity import identifier_value
from patientkontrakt.security.keys import SigningKeys, generate_key
from patientkontrakt.security.tokens import Grant
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import BASE_URL, issue_token, make_settings
from tests.security.conftest import World

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_ENDPOINT = f"{BASE_URL}/oauth/token"
FHIR_BASE = f"{BASE_URL}/fhir"

APP = "test-app"  # a public SMART app (staff and patients)
APP_REDIRECT = "http://127.0.0.1:8765/app/callback"
APP_SCOPE = "openid fhirUser launch/patient offline_access online_access user/*.cruds patient/*.rs"
OTHER_APP = "other-app"  # another public app, its own redirect URI
OTHER_REDIRECT = "https://other.example.org/callback"
NARROW_APP = "narrow-app"  # registered for reading CarePlans only
NARROW_SCOPE = "openid fhirUser user/CarePlan.rs"
EHR_EC = "ehr-es384"  # backend at Björkbacken, EC P-384 key
EHR_RSA = "ehr-rs384"  # backend at Björkbacken, RSA key
PORTAL = "portal"  # a confidential client (private_key_jwt), may not use client credentials
HSA_SYNC = "hsa-sync"  # the region's directory client (EC key)

UNIT = "demo-org-vc-bjorkbacken"
OTHER_UNIT = "demo-org-vc-strandvagen"
STAFF_ASK = "openid fhirUser offline_access user/*.rs"
PATIENT_ASK = "openid fhirUser launch/patient offline_access patient/*.rs user/*.rs"

# the backends' private keys (generated once for the module); the server holds only the public ones
EC_KEY = ECKey.generate_key("P-384", private=True)
RSA_KEY = RSAKey.generate_key(2048, private=True)
PORTAL_KEY = ECKey.generate_key("P-384", private=True)
DIRECTORY_KEY = ECKey.generate_key("P-384", private=True)


def _public_jwks(key: ECKey | RSAKey, alg: str) -> str:
    public = type(key).import_key(key.as_dict(private=False), parameters={"kid": key.thumbprint(), "alg": alg,
                                                                          "use": "sig"})
    return json.dumps(KeySet([public]).as_dict(private=False))


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload = token.split(".")[:2]
    return (orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))),
            orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


# -- the site: the service with the test IdP, and the registered clients ---------------------


class ThroughTestClient(httpx.BaseTransport):
    """An httpx transport that hands each request to the app in-process (through the running
    ``TestClient``), so authlib's httpx client talks to the app as to a server."""

    def __init__(self, http: TestClient) -> None:
        self.http = http

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.http.request(request.method, str(request.url), content=request.read(),
                                     headers=dict(request.headers), follow_redirects=False)
        return httpx.Response(response.status_code, headers=response.headers, content=response.content,
                              request=request)


@dataclass
class Site:
    world: World
    settings: Settings
    http: TestClient

    def register(self, client_id: str, **registration: Any) -> None:
        async def add() -> None:
            store = Store(create_engine(self.settings.database_url, pool_size=2))
            try:
                await Clients(store).add(client_id, **registration)
            finally:
                await store.dispose()
        asyncio.run(add())

    def put(self, resources: list[dict[str, Any]]) -> None:
        """Write resources as the service itself (an administrator's change to the directory)."""
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources]}

        async def write() -> None:
            store = Store(create_engine(self.settings.database_url, pool_size=2))
            try:
                await BundleProcessor(build_service(self.settings, store)).process(
                    INTERNAL, bundle, Preferences(return_="minimal"))
            finally:
                await store.dispose()
        asyncio.run(write())

    def jwks(self) -> KeySet:
        response = self.http.get("/oauth/jwks")
        assert response.status_code == 200
        return KeySet.import_key_set(response.json())

    def claims(self, token: str) -> dict[str, Any]:
        """An access or ID token's claims, verified with the keys the server publishes."""
        return dict(jwt.decode(token, self.jwks(), algorithms=["RS256"]).claims)

    def fhir(self, path: str, token: str | None, **params: str) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        return self.http.get(f"/fhir/{path}", params=params, headers=headers)

    def care_plans(self, token: str) -> set[str]:
        return plan_ids(self.fhir("CarePlan", token, _count="100"))

    def involving(self, org: str) -> set[str]:
        """The agreements a unit takes part in (author or contributor)."""
        return {a.plan for a in self.world.agreements if a.author == org or org in a.contributors}

    def unit_hsa(self, org: str) -> str:
        found = next(o for o in self.world.generator.region.organizations if o["id"] == org)
        hsa = identifier_value(found, HSA_ID)
        assert hsa
        return hsa

    def authlib(self, client_id: str, key: ECKey | RSAKey, auth: PrivateKeyJWT) -> OAuth2Client:
        return OAuth2Client(client_id, key, token_endpoint_auth_method=auth, transport=ThroughTestClient(self.http))


def _register_clients(site: Site) -> None:
    site.register(APP, name="Testappen", kind="public", redirect_uris=[APP_REDIRECT], scope=APP_SCOPE)
    site.register(OTHER_APP, name="Annan app", kind="public", redirect_uris=[OTHER_REDIRECT], scope=APP_SCOPE)
    site.register(NARROW_APP, name="Läsappen", kind="public", redirect_uris=[APP_REDIRECT], scope=NARROW_SCOPE)
    hsa = site.unit_hsa(UNIT)
    site.register(EHR_EC, name="Journal (EC)", kind="backend", redirect_uris=[], scope="system/*.rs",
                  jwks=_public_jwks(EC_KEY, "ES384"), care_unit=hsa)
    site.register(EHR_RSA, name="Journal (RSA)", kind="backend", redirect_uris=[], scope="system/*.cruds",
                  jwks=_public_jwks(RSA_KEY, "RS384"), care_unit=hsa)
    site.register(PORTAL, name="Portalen", kind="confidential", redirect_uris=[APP_REDIRECT], scope=APP_SCOPE,
                  jwks=_public_jwks(PORTAL_KEY, "ES384"))
    site.register(HSA_SYNC, name="HSA-synk", kind="directory", redirect_uris=[], scope="system/*.cruds",
                  jwks=_public_jwks(DIRECTORY_KEY, "ES384"))


@pytest.fixture
def site(world: World, clean_pg: str) -> Iterator[Site]:
    """The service with the test IdP on the demo region, and the clients of these tests."""
    settings = make_settings(clean_pg, test_idp=True)
    with TestClient(create_app(settings), base_url=BASE_URL) as http:
        site = Site(world, settings, http)
        _register_clients(site)
        yield site


# -- the browser side of a sign-in -------------------------------------------------------------


@dataclass
class Attempt:
    """One authorization request as an app makes it, and the PKCE verifier it keeps."""

    params: dict[str, str]
    verifier: str

    @property
    def state(self) -> str:
        return self.params["state"]


def attempt(client_id: str | None = APP, scope: str = STAFF_ASK, redirect_uri: str | None = APP_REDIRECT,
            **changes: str | None) -> Attempt:
    """An authorization request (``None`` leaves a parameter out)."""
    verifier = secrets.token_urlsafe(48)
    params: dict[str, str | None] = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
        "state": secrets.token_urlsafe(12), "nonce": secrets.token_urlsafe(12), "aud": FHIR_BASE,
        "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256", **changes,
    }
    return Attempt({k: v for k, v in params.items() if v is not None}, verifier)


def authorize(site: Site, request: Attempt) -> httpx.Response:
    return site.http.get("/oauth/authorize", params=request.params, follow_redirects=False)


_SEALED = re.compile(r'name="request" value="([^"]+)"')


def sealed_of(page: httpx.Response) -> str:
    """The sealed authorization request the test IdP's form carries."""
    assert page.status_code == 200, page.text
    match = _SEALED.search(page.text)
    assert match, page.text
    return match.group(1)


def choose(site: Site, sealed: str, who: str, headers: dict[str, str | bytes] | None = None) -> httpx.Response:
    """Submit the test IdP's form: sign in as ``role:<PractitionerRole>`` or ``patient:<Patient>``."""
    return site.http.post("/oauth/test-idp", data={"request": sealed, "as": who}, headers=headers,
                          follow_redirects=False)


def redirected(response: httpx.Response, request: Attempt) -> dict[str, str]:
    """The query the app's redirect URI receives."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(request.params["redirect_uri"] + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def refused_page(response: httpx.Response) -> None:
    """An error shown to the user, never sent to a redirect URI (RFC 6749 §4.1.2.1)."""
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")


def code_for(site: Site, who: str, request: Attempt) -> str:
    back = redirected(choose(site, sealed_of(authorize(site, request)), who), request)
    assert back["state"] == request.state
    return back["code"]


def exchange(site: Site, code: str, verifier: str | None, client_id: str = APP,
             redirect_uri: str = APP_REDIRECT) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "client_id": client_id,
            "redirect_uri": redirect_uri}
    return site.http.post("/oauth/token", data={k: v for k, v in form.items() if v is not None})


def sign_in(site: Site, who: str, **request: Any) -> dict[str, Any]:
    """The token response of a whole sign-in (authorize, test IdP, code with PKCE)."""
    started = attempt(**request)
    response = exchange(site, code_for(site, who, started), started.verifier, started.params["client_id"],
                        started.params["redirect_uri"])
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refresh(site: Site, token: str, client_id: str = APP, **form: str) -> httpx.Response:
    return site.http.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                                "client_id": client_id, **form})


def oauth_error(response: httpx.Response, status: int = 400) -> str:
    """The RFC 6749 §5.2 error of a refused token request."""
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error_description"]
    return str(body["error"])


def nurse(site: Site, org: str = UNIT) -> str:
    return f"role:{site.world.role_at(org, 'nurse')}"


# -- the backend side: client assertions ---------------------------------------------------------


class BackendServicesJWT(PrivateKeyJWT):
    """authlib's ``private_key_jwt`` with an assertion that lives 4 minutes (SMART Backend
    Services: ``exp`` at most 5 minutes ahead; authlib's default is an hour)."""

    lifetime = 240

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return str(private_key_jwt_sign(auth.client_secret, client_id=auth.client_id, token_endpoint=token_endpoint,
                                        alg=self.alg, header=dict(self.headers or {}), expires_in=self.lifetime))


def assertion(client_id: str = EHR_EC, key: ECKey | RSAKey | OctKey = EC_KEY, alg: str = "ES384",
              header: dict[str, Any] | None = None, **claims: Any) -> str:
    """A client assertion (RFC 7523 §3) signed with ``key``; a claim given as ``None`` is left out."""
    now = int(time.time())
    values = {"iss": client_id, "sub": client_id, "aud": TOKEN_ENDPOINT, "iat": now, "exp": now + 240,
              "jti": str(uuid.uuid4()), **claims}
    kid = key.thumbprint() if not isinstance(key, OctKey) else "secret"
    headers = {"alg": alg, "typ": "JWT", "kid": kid, **(header or {})}
    return jwt.encode({k: v for k, v in headers.items() if v is not None},
                      {k: v for k, v in values.items() if v is not None}, key, algorithms=[alg])


def client_credentials(site: Site, signed: str, scope: str = "system/*.rs", **form: str) -> httpx.Response:
    return site.http.post("/oauth/token", data={"grant_type": "client_credentials", "scope": scope,
                                                "client_assertion_type": ASSERTION_TYPE,
                                                "client_assertion": signed, **form})


def plan_ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    entries = response.json().get("entry", [])
    return {e["resource"]["id"] for e in entries if e["resource"]["resourceType"] == "CarePlan"}


# -- discovery and signing keys ----------------------------------------------------------------------


def test_smart_configuration_names_the_endpoints_and_only_s256(site: Site) -> None:
    response = site.http.get("/fhir/.well-known/smart-configuration")  # no token needed
    assert response.status_code == 200
    smart = response.json()
    for required in ("issuer", "jwks_uri", "authorization_endpoint", "token_endpoint", "grant_types_supported",
                     "capabilities", "code_challenge_methods_supported", "token_endpoint_auth_methods_supported",
                     "scopes_supported", "response_types_supported"):
        assert required in smart, required
    assert smart["code_challenge_methods_supported"] == ["S256"]
    assert smart["issuer"] == BASE_URL
    assert smart["authorization_endpoint"] == f"{BASE_URL}/oauth/authorize"
    assert smart["token_endpoint"] == TOKEN_ENDPOINT
    assert smart["introspection_endpoint"] == f"{BASE_URL}/oauth/introspect"
    assert smart["revocation_endpoint"] == f"{BASE_URL}/oauth/revoke"
    assert smart["jwks_uri"] == f"{BASE_URL}/oauth/jwks"
    assert set(smart["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials",
                                                   "urn:ietf:params:oauth:grant-type:token-exchange"}
    assert set(smart["token_endpoint_auth_methods_supported"]) == {"private_key_jwt", "none"}
    assert sorted(smart["token_endpoint_auth_signing_alg_values_supported"]) == ["ES384", "RS384"]
    assert smart["response_types_supported"] == ["code"]
    assert {"launch-standalone", "client-public", "client-confidential-asymmetric", "context-standalone-patient",
            "sso-openid-connect", "permission-offline", "permission-patient", "permission-user",
            "permission-v2"} <= set(smart["capabilities"])
    assert {"openid", "fhirUser", "launch/patient", "offline_access"} <= set(smart["scopes_supported"])

    # every endpoint it names is this app's (the POST ones refuse an empty request as OAuth does)
    assert site.http.get(urlsplit(smart["jwks_uri"]).path).status_code == 200
    for endpoint in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        answer = site.http.post(urlsplit(smart[endpoint]).path, data={})
        assert answer.status_code in (400, 401) and "error" in answer.json(), endpoint

    # the OpenID Connect discovery document agrees
    openid = site.http.get("/.well-known/openid-configuration").json()
    for same in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
        assert openid[same] == smart[same], same
    assert openid["code_challenge_methods_supported"] == ["S256"]
    assert openid["response_types_supported"] == ["code"]
    assert openid["subject_types_supported"] == ["public"]
    assert "RS256" in openid["id_token_signing_alg_values_supported"]

    # and so does the CapabilityStatement's oauth-uris extension; it too needs no token
    metadata = site.fhir("metadata", None)
    assert metadata.status_code == 200 and metadata.json()["resourceType"] == "CapabilityStatement"
    security = metadata.json()["rest"][0]["security"]
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["authorize"] == smart["authorization_endpoint"] and uris["token"] == smart["token_endpoint"]
    # the rest of /fhir does need one
    assert site.fhir("CarePlan", None).status_code == 401


def test_jwks_publishes_the_active_key_and_only_its_public_part(site: Site, signing_key: Path) -> None:
    keys = site.http.get("/oauth/jwks").json()["keys"]
    assert [k["kid"] for k in keys] == [SigningKeys.load(signing_key).kid]
    (key,) = keys
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
    # the tokens the server issues name it and verify with it
    token = sign_in(site, nurse(site))["access_token"]
    header, _ = _unverified(token)
    assert header["kid"] == key["kid"] and header["alg"] == "RS256" and header["typ"] == "at+jwt"
    assert site.claims(token)["client_id"] == APP


def test_key_rollover_publishes_both_keys_and_accepts_tokens_of_the_previous_one(
        world: World, clean_pg: str, signing_key: Path, tmp_path: Path) -> None:
    old_kid = SigningKeys.load(signing_key).kid
    new = generate_key(tmp_path / "new.pem")
    new_kid = SigningKeys.load(new).kid
    unknown = generate_key(tmp_path / "unknown.pem")
    old_token = world.staff(world.role_at(UNIT, "nurse"))["authorization"].split()[1]  # signed with the old key
    _, claims = _unverified(old_token)
    grant = Grant.from_claims(claims)
    scope = str(claims["scope"])
    unknown_token = issue_token(make_settings(clean_pg, signing_key=unknown), grant, scope, "pk-personal")
    # a forger cannot borrow a published kid: the signature must verify with that very key
    borrowed = SigningKeys.load(unknown)
    borrowed.kid = new_kid
    borrowed_token = borrowed.sign({**claims, "jti": str(uuid.uuid4())}, typ="at+jwt")

    rolled = make_settings(clean_pg, test_idp=True, signing_key=new, signing_keys_previous=str(signing_key))
    with TestClient(create_app(rolled), base_url=BASE_URL) as http:
        site = Site(world, rolled, http)
        assert [k["kid"] for k in http.get("/oauth/jwks").json()["keys"]] == [new_kid, old_kid]
        assert plan_ids(site.fhir("CarePlan", old_token, _count="100")) == site.involving(UNIT)
        # what it issues now is signed with the new key, and accepted too
        _register_clients(site)
        fresh = sign_in(site, nurse(site))["access_token"]
        assert _unverified(fresh)[0]["kid"] == new_kid
        assert site.fhir("CarePlan", fresh).status_code == 200
        for token in (unknown_token, borrowed_token):
            refused = site.fhir("CarePlan", token)
            assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]

    # once the previous key is dropped, its tokens are no longer accepted
    dropped = make_settings(clean_pg, signing_key=new)
    with TestClient(create_app(dropped), base_url=BASE_URL) as http:
        assert [k["kid"] for k in http.get("/oauth/jwks").json()["keys"]] == [new_kid]
        refused = http.get("/fhir/CarePlan", headers={"authorization": f"Bearer {old_token}"})
        assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]


# -- authorization code with PKCE: staff, patient, OpenID Connect ------------------------------------


def test_staff_sign_in_with_pkce_gives_a_token_for_the_care_unit(site: Site) -> None:
    role = site.world.role_at(UNIT, "nurse")
    request = attempt(scope="openid fhirUser offline_access user/*.rs")
    page = authorize(site, request)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    cookie = page.headers["set-cookie"].lower()
    assert cookie.startswith("pk_auth=") and "httponly" in cookie and "path=/oauth" in cookie

    # the test IdP's page: plainly marked as a test, listing the staff's commissions and the patients
    warning = re.search(r'<div class="warning"[^>]*>(.*?)</div>', page.text, re.S)
    assert warning and "TEST" in warning.group(1)
    for listed in (role, site.world.role_at(OTHER_UNIT, "nurse"), site.world.role_at(OTHER_UNIT, "doctor")):
        assert f'value="role:{listed}"' in page.text
    for agreement in site.world.agreements:
        assert f'value="patient:{agreement.patient}"' in page.text

    back = redirected(choose(site, sealed_of(page), f"role:{role}"), request)
    assert set(back) == {"code", "state"} and back["state"] == request.state

    response = exchange(site, back["code"], request.verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "openid fhirUser offline_access user/*.rs"
    assert body["fhirUser"] == f"PractitionerRole/{role}"
    assert "patient" not in body and body["need_patient_banner"] is True
    assert 0 < body["expires_in"] <= 900 and body["refresh_token"] and body["id_token"]

    claims = site.claims(body["access_token"])
    assert claims["iss"] == BASE_URL and claims["aud"] == FHIR_BASE
    assert claims["scope"] == body["scope"] and claims["fhirUser"] == f"PractitionerRole/{role}"
    assert claims["care_unit"] == site.unit_hsa(UNIT) and claims["care_unit_org"] == UNIT
    assert claims["client_id"] == APP and claims["pk_kind"] == "staff"
    commission = next(r for r in site.world.generator.region.roles if r["id"] == role)
    practitioner = next(p for p in site.world.generator.region.practitioners
                        if f"Practitioner/{p['id']}" == commission["practitioner"]["reference"])
    assert claims["sub"] == identifier_value(practitioner, HSA_ID)
    assert claims["commission"] == identifier_value(commission, HSA_ID) and claims["care_provider"]
    assert claims["jti"] and 0 < claims["exp"] - claims["iat"] <= 900 and claims["iat"] <= time.time() + 1

    # the token opens the agreements of the nurse's care unit, and nothing else
    assert site.care_plans(body["access_token"]) == site.involving(UNIT)
    outside = site.world.by_author(OTHER_UNIT)[0].plan
    assert site.fhir(f"CarePlan/{outside}", body["access_token"]).status_code == 404


def test_patient_sign_in_gets_the_patient_context_and_only_patient_scopes(site: Site) -> None:
    agreement = site.world.agreements[2]
    body = sign_in(site, f"patient:{agreement.patient}", scope=PATIENT_ASK)
    assert body["patient"] == agreement.patient
    assert body["scope"] == "openid fhirUser launch/patient offline_access patient/*.rs"  # user/*.rs dropped
    assert body["fhirUser"] == f"Patient/{agreement.patient}" and body["need_patient_banner"] is False
    claims = site.claims(body["access_token"])
    assert claims["pk_kind"] == "patient" and claims["patient"] == agreement.patient
    assert claims["scope"] == body["scope"] and "care_unit" not in claims
    assert not [s for s in claims["scope"].split() if s.startswith(("user/", "system/"))]

    own = {a.plan for a in site.world.agreements if a.patient == agreement.patient}
    assert site.care_plans(body["access_token"]) == own
    other = next(a for a in site.world.agreements if a.patient != agreement.patient)
    assert site.fhir(f"CarePlan/{other.plan}", body["access_token"]).status_code == 404

    # staff signing in through the same request get user/ scopes and no patient context
    staff = sign_in(site, nurse(site), scope=PATIENT_ASK)
    assert staff["scope"] == "openid fhirUser offline_access user/*.rs" and "patient" not in staff


def test_id_token_verifies_with_the_jwks_and_carries_nonce_and_fhir_user(site: Site) -> None:
    role = site.world.role_at(UNIT, "nurse")
    request = attempt(scope="openid fhirUser user/*.rs")
    response = exchange(site, code_for(site, f"role:{role}", request), request.verifier)
    body = response.json()
    discovery = site.http.get("/.well-known/openid-configuration").json()
    keys = KeySet.import_key_set(site.http.get(urlsplit(discovery["jwks_uri"]).path).json())
    token = jwt.decode(body["id_token"], keys, algorithms=discovery["id_token_signing_alg_values_supported"])
    claims = token.claims
    assert claims["iss"] == discovery["issuer"] and claims["aud"] == APP
    assert claims["nonce"] == request.params["nonce"]
    assert claims["fhirUser"] == f"PractitionerRole/{role}"
    assert claims["sub"] == site.claims(body["access_token"])["sub"]  # the HSA-id
    assert claims["iat"] <= time.time() + 1 < claims["exp"]
    # an ID token is not an access token
    refused = site.fhir("CarePlan", body["id_token"])
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]

    # no nonce asked, none given; no openid scope, no ID token
    without_nonce = sign_in(site, f"role:{role}", scope="openid fhirUser user/*.rs", nonce=None)
    assert "nonce" not in site.claims(without_nonce["id_token"])
    assert "id_token" not in sign_in(site, f"role:{role}", scope="fhirUser user/*.rs")


# -- authorize: refusals -------------------------------------------------------------------------------


def test_authorize_requires_pkce_with_s256(site: Site) -> None:
    plain_verifier = secrets.token_urlsafe(48)
    for changes in ({"code_challenge": None, "code_challenge_method": None},
                    {"code_challenge_method": None},
                    {"code_challenge_method": "plain", "code_challenge": plain_verifier},
                    {"code_challenge": "too-short"},
                    {"code_challenge": "é" * 43}):
        request = attempt(**changes)
        back = redirected(authorize(site, request), request)
        assert back["error"] == "invalid_request" and back["state"] == request.state and "code" not in back, changes
        assert "S256" in back["error_description"] or "code_challenge" in back["error_description"]
    # with S256 the same request goes on to the sign-in
    assert authorize(site, attempt()).status_code == 200


def test_unknown_client_or_unregistered_redirect_uri_is_an_error_page_never_a_redirect(site: Site) -> None:
    for request in (attempt(redirect_uri="https://evil.example.com/callback"),
                    attempt(redirect_uri=APP_REDIRECT + "/more"),
                    attempt(redirect_uri=OTHER_REDIRECT),  # another client's
                    attempt(redirect_uri=None),
                    attempt(client_id="no-such-app"),
                    attempt(client_id=EHR_EC, redirect_uri=APP_REDIRECT),  # a backend does not sign people in
                    attempt(client_id=None)):
        refused_page(authorize(site, request))
    assert authorize(site, attempt()).status_code == 200


def test_aud_must_be_this_fhir_server(site: Site) -> None:
    for aud in ("https://fhir.other.example.org/fhir", f"{BASE_URL}/other", BASE_URL, None):
        request = attempt(aud=aud)
        back = redirected(authorize(site, request), request)
        assert back["error"] == "invalid_request" and back["state"] == request.state and "code" not in back, aud
        assert FHIR_BASE in back["error_description"]
    for aud in (FHIR_BASE, FHIR_BASE + "/"):
        assert authorize(site, attempt(aud=aud)).status_code == 200


def test_other_response_types_are_refused(site: Site) -> None:
    request = attempt(response_type="token")
    back = redirected(authorize(site, request), request)
    assert back["error"] == "unsupported_response_type" and "access_token" not in back


def test_scopes_the_client_is_not_registered_for_are_not_granted(site: Site) -> None:
    body = sign_in(site, nurse(site), client_id=NARROW_APP,
                   scope="openid fhirUser offline_access user/*.cruds user/CarePlan.rs user/Patient.rs")
    assert body["scope"] == "openid fhirUser user/CarePlan.rs"
    assert "refresh_token" not in body  # offline_access is not registered for it either
    assert site.claims(body["access_token"])["scope"] == body["scope"]
    assert site.care_plans(body["access_token"]) == site.involving(UNIT)
    assert site.fhir("Patient", body["access_token"]).status_code == 403

    # nothing it may have: the app hears invalid_scope
    request = attempt(client_id=NARROW_APP, scope="user/Patient.rs patient/*.rs system/*.rs")
    back = redirected(authorize(site, request), request)
    assert back["error"] == "invalid_scope" and back["state"] == request.state


# -- the sign-in in between: sealed request and browser binding ------------------------------------------


def test_sign_in_continued_with_an_expired_or_forged_request_is_refused(site: Site, tmp_path: Path) -> None:
    request = attempt()
    sealed = sealed_of(authorize(site, request))
    keys = SigningKeys.load(site.settings.signing_key)
    claims = dict(keys.decode(sealed).claims)
    now = int(time.time())
    header, payload, signature = sealed.split(".")
    changed = {**claims, "req": {**claims["req"], "redirect_uri": "https://evil.example.com/callback"}}
    forgers = SigningKeys.load(generate_key(tmp_path / "forger.pem"))
    refused = {
        "expired": keys.sign({**claims, "iat": now - 700, "exp": now - 60}, typ="pk-authorize"),
        "signed by another key": forgers.sign(claims, typ="pk-authorize"),
        "changed after sealing": f"{header}.{_b64(changed)}.{signature}",
        "not a sealed request": keys.sign(claims, typ="JWT"),
        "meant for something else": keys.sign({**claims, "aud": "pk-commission"}, typ="pk-authorize"),
        "not a JWT": "not-a-request",
    }
    for label, bad in refused.items():
        response = choose(site, bad, nurse(site))
        refused_page(response)
        assert "evil.example.com" not in response.text, label
    # the genuine one, in the browser it began in, goes on to the app
    back = redirected(choose(site, sealed, nurse(site)), request)
    assert back["code"] and back["state"] == request.state


def test_sign_in_continued_in_another_browser_is_refused(site: Site) -> None:
    request = attempt()
    sealed = sealed_of(authorize(site, request))
    jar = httpx.Cookies(site.http.cookies)
    assert jar.get("pk_auth")
    site.http.cookies.clear()
    refused_page(choose(site, sealed, nurse(site)))  # no binding cookie
    refused_page(choose(site, sealed, nurse(site), headers={"cookie": f"pk_auth={secrets.token_urlsafe(24)}"}))
    refused_page(choose(site, sealed, nurse(site), headers={"cookie": b"pk_auth=\xc3\xa9"}))  # not even ASCII
    site.http.cookies = jar
    back = redirected(choose(site, sealed, nurse(site)), request)
    assert back["code"]


def test_without_the_test_idp_there_is_no_test_sign_in(world: World, clean_pg: str) -> None:
    settings = make_settings(clean_pg)  # neither the test IdP nor an external one
    with TestClient(create_app(settings), base_url=BASE_URL) as http:
        site = Site(world, settings, http)
        _register_clients(site)
        page = authorize(site, attempt())
        assert page.status_code == 503 and 'name="as"' not in page.text
        closed = http.post("/oauth/test-idp", data={"request": "x", "as": nurse(site)}, follow_redirects=False)
        assert closed.status_code == 404 and "location" not in closed.headers


# -- the token endpoint: codes --------------------------------------------------------------------------------


def test_the_code_verifier_must_match_the_challenge(site: Site) -> None:
    for verifier in (secrets.token_urlsafe(48), None, "short", "é" * 50, "a b" * 20):
        request = attempt()
        code = code_for(site, nurse(site), request)
        assert oauth_error(exchange(site, code, verifier)) == "invalid_grant"
        # a failed attempt spends the code: the verifier cannot be guessed at
        assert oauth_error(exchange(site, code, request.verifier)) == "invalid_grant"
    request = attempt()
    assert exchange(site, code_for(site, nurse(site), request), request.verifier).status_code == 200


def test_a_code_works_once_and_its_reuse_revokes_the_refresh_token(site: Site) -> None:
    request = attempt(scope=STAFF_ASK)
    code = code_for(site, nurse(site), request)
    first = exchange(site, code, request.verifier)
    assert first.status_code == 200
    refresh_token = first.json()["refresh_token"]
    again = exchange(site, code, request.verifier)
    assert oauth_error(again) == "invalid_grant" and "used before" in again.json()["error_description"]
    # the refresh token of the first use no longer works, and introspection says so
    assert oauth_error(refresh(site, refresh_token)) == "invalid_grant"
    with backend(site) as rs:
        assert introspect(rs, refresh_token) == {"active": False}

    # a code used once, without reuse, leaves its refresh token working
    other = attempt(scope=STAFF_ASK)
    body = exchange(site, code_for(site, nurse(site), other), other.verifier).json()
    assert refresh(site, body["refresh_token"]).status_code == 200


def test_a_code_is_for_its_client_and_redirect_uri_only(site: Site) -> None:
    request = attempt()
    code = code_for(site, nurse(site), request)
    assert oauth_error(exchange(site, code, request.verifier, OTHER_APP, OTHER_REDIRECT)) == "invalid_grant"
    request = attempt()
    code = code_for(site, nurse(site), request)
    assert oauth_error(exchange(site, code, request.verifier, OTHER_APP, APP_REDIRECT)) == "invalid_grant"
    request = attempt()
    code = code_for(site, nurse(site), request)
    assert oauth_error(exchange(site, code, request.verifier, APP, APP_REDIRECT + "?again=1")) == "invalid_grant"
    assert oauth_error(exchange(site, "no-such-code", request.verifier)) == "invalid_grant"


def test_unknown_or_unauthenticated_clients_are_refused_at_the_token_endpoint(site: Site) -> None:
    request = attempt()
    code = code_for(site, nurse(site), request)
    assert oauth_error(exchange(site, code, request.verifier, "no-such-app"), 401) == "invalid_client"
    # a confidential client must authenticate with its assertion, not by client_id alone
    assert oauth_error(exchange(site, code, request.verifier, PORTAL), 401) == "invalid_client"
    # unknown grant types and bodies that are not a form
    assert oauth_error(site.http.post("/oauth/token", data={"grant_type": "password", "client_id": APP})) \
        == "unsupported_grant_type"
    assert oauth_error(site.http.post("/oauth/token", json={"grant_type": "authorization_code"})) == "invalid_request"


def test_a_confidential_client_redeems_its_code_with_a_private_key_jwt(site: Site) -> None:
    request = attempt(client_id=PORTAL)
    code = code_for(site, nurse(site), request)
    response = site.http.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": request.verifier,
        "redirect_uri": APP_REDIRECT, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(PORTAL, PORTAL_KEY)})
    assert response.status_code == 200, response.text
    assert site.claims(response.json()["access_token"])["client_id"] == PORTAL


# -- refresh tokens ------------------------------------------------------------------------------------------------


def test_offline_access_gives_a_refresh_token_and_using_it_rotates_it(site: Site) -> None:
    assert "refresh_token" not in sign_in(site, nurse(site), scope="openid fhirUser user/*.rs")
    body = sign_in(site, nurse(site), scope=STAFF_ASK)
    first = body["refresh_token"]
    rotated = refresh(site, first)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first and second["access_token"] != body["access_token"]
    assert second["scope"] == body["scope"] and "id_token" not in second
    claims = site.claims(second["access_token"])
    assert claims["sub"] == site.claims(body["access_token"])["sub"] and claims["care_unit_org"] == UNIT
    assert site.care_plans(second["access_token"]) == site.involving(UNIT)
    # the new one works in turn
    third = refresh(site, second["refresh_token"])
    assert third.status_code == 200 and third.json()["refresh_token"] not in (first, second["refresh_token"])


def test_reusing_a_rotated_refresh_token_revokes_its_family(site: Site) -> None:
    first = sign_in(site, nurse(site), scope=STAFF_ASK)["refresh_token"]
    second = refresh(site, first).json()["refresh_token"]
    reused = refresh(site, first)
    assert oauth_error(reused) == "invalid_grant" and "used before" in reused.json()["error_description"]
    # the legitimate holder loses it too
    assert oauth_error(refresh(site, second)) == "invalid_grant"
    # another sign-in's family is untouched
    other = sign_in(site, nurse(site), scope=STAFF_ASK)["refresh_token"]
    assert refresh(site, other).status_code == 200


def test_a_refresh_token_is_for_its_client_and_cannot_widen_the_scope(site: Site) -> None:
    token = sign_in(site, nurse(site), scope=STAFF_ASK)["refresh_token"]
    assert oauth_error(refresh(site, token, client_id=OTHER_APP)) == "invalid_grant"
    assert oauth_error(refresh(site, token, scope="openid user/*.cruds")) == "invalid_scope"
    assert oauth_error(refresh(site, "no-such-token")) == "invalid_grant"
    # none of which spent it; a narrower scope is fine
    narrower = refresh(site, token, scope="user/*.rs")
    assert narrower.status_code == 200 and narrower.json()["scope"] == "user/*.rs"
    assert site.claims(narrower.json()["access_token"])["scope"] == "user/*.rs"
    # the rotated token keeps the original grant
    assert refresh(site, narrower.json()["refresh_token"]).json()["scope"] == "openid fhirUser offline_access user/*.rs"


def test_a_refresh_needs_the_commission_to_be_held_still(site: Site) -> None:
    role_id = site.world.role_at(UNIT, "nurse")
    colleague = sign_in(site, f"role:{site.world.role_at(UNIT, 'doctor')}", scope=STAFF_ASK)["refresh_token"]
    token = sign_in(site, f"role:{role_id}", scope=STAFF_ASK)["refresh_token"]
    renewed = refresh(site, token)  # while the commission is current
    assert renewed.status_code == 200
    assert site.claims(renewed.json()["access_token"])["fhirUser"] == f"PractitionerRole/{role_id}"

    role = copy.deepcopy(next(r for r in site.world.generator.region.roles if r["id"] == role_id))
    role["period"] = {"start": "2019-01-01", "end": "2020-12-31"}  # the commission has ended
    site.put([role])
    ended = refresh(site, renewed.json()["refresh_token"])
    assert oauth_error(ended) == "invalid_grant" and "commission" in ended.json()["error_description"]
    with backend(site) as rs:
        assert introspect(rs, renewed.json()["refresh_token"]) == {"active": False}
    # nor can the commission be chosen at the sign-in any more
    response = choose(site, sealed_of(authorize(site, attempt())), f"role:{role_id}")
    assert response.status_code == 400 and "location" not in response.headers
    # a colleague's commission is not touched
    assert refresh(site, colleague).status_code == 200

    # a patient's refresh keeps the patient context
    patient = site.world.agreements[3].patient
    body = sign_in(site, f"patient:{patient}", scope=PATIENT_ASK)
    again = refresh(site, body["refresh_token"])
    assert again.status_code == 200 and again.json()["patient"] == patient
    assert site.claims(again.json()["access_token"])["patient"] == patient


def test_introspection_reports_the_states_of_refresh_tokens(site: Site) -> None:
    first = sign_in(site, nurse(site), scope=STAFF_ASK)["refresh_token"]
    with backend(site) as rs:
        live = introspect(rs, first)
        assert live["active"] is True and live["client_id"] == APP and live["scope"] == STAFF_ASK
        assert abs(live["exp"] - (time.time() + site.settings.refresh_token_lifetime)) < 120
        time.sleep(1.1)  # so a fresh lifetime would end later than the sign-in's
        second = refresh(site, first).json()["refresh_token"]
        assert introspect(rs, first) == {"active": False}  # used
        rotated = introspect(rs, second)
        assert rotated["active"] is True
        assert rotated["exp"] == live["exp"], "a rotated refresh token keeps the sign-in's expiry"
        refresh(site, first)  # reuse
        assert introspect(rs, second) == {"active": False}  # revoked with its family


def test_refresh_token_expiry_is_reported_in_utc_whatever_the_local_time_zone(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    token = sign_in(site, nurse(site), scope=STAFF_ASK)["refresh_token"]
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")  # Stockholm's rules, without a tz database
    time.tzset()
    try:
        with backend(site) as rs:
            exp = introspect(rs, token)["exp"]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert abs(exp - (time.time() + site.settings.refresh_token_lifetime)) < 120


# -- client credentials: SMART Backend Services ------------------------------------------------------------------


def backend(site: Site, client_id: str = EHR_EC, key: ECKey | RSAKey = EC_KEY, alg: str = "ES384") -> OAuth2Client:
    """authlib's OAuth2Client for a backend client, authenticating with ``private_key_jwt``."""
    return site.authlib(client_id, key, BackendServicesJWT(TOKEN_ENDPOINT, alg=alg, headers={"kid": key.thumbprint()}))


def introspect(client: OAuth2Client, token: str) -> dict[str, Any]:
    response = client.introspect_token(f"{BASE_URL}/oauth/introspect", token=token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(("client_id", "key", "alg"), [(EHR_EC, EC_KEY, "ES384"), (EHR_RSA, RSA_KEY, "RS384")])
def test_authlib_backend_client_acts_for_its_care_unit(site: Site, client_id: str, key: ECKey | RSAKey,
                                                       alg: str) -> None:
    sent: list[httpx.Request] = []
    with backend(site, client_id, key, alg) as ehr:
        ehr.event_hooks["request"].append(sent.append)
        token = ehr.fetch_token(TOKEN_ENDPOINT, grant_type="client_credentials", scope="system/*.rs")
        assert token["token_type"] == "Bearer" and token["scope"] == "system/*.rs"
        assert 0 < token["expires_in"] <= 900 and "refresh_token" not in token
        claims = site.claims(token["access_token"])
        assert claims["care_unit"] == site.unit_hsa(UNIT) and claims["care_unit_org"] == UNIT
        assert claims["client_id"] == claims["sub"] == client_id and claims["pk_kind"] == "system"
        assert claims["jti"] and 0 < claims["exp"] - claims["iat"] <= 900

        # what authlib sent: a private_key_jwt assertion signed with the registered key
        form = parse_qs(sent[0].content.decode())
        assert form["client_assertion_type"] == [ASSERTION_TYPE]
        header, _ = _unverified(form["client_assertion"][0])
        assert header["alg"] == alg and header["kid"] == key.thumbprint()

        # the same client uses the token: only the agreements its unit takes part in
        assert plan_ids(ehr.get(f"{FHIR_BASE}/CarePlan", params={"_count": "100"})) == site.involving(UNIT)
        outside = site.world.by_author(OTHER_UNIT)[0].plan
        assert ehr.get(f"{FHIR_BASE}/CarePlan/{outside}").status_code == 404
        assert ehr.get(f"{FHIR_BASE}/CarePlan", params={"_id": outside}).json().get("entry", []) == []


def test_authlib_default_hour_long_assertion_is_refused(site: Site) -> None:
    with site.authlib(EHR_EC, EC_KEY, PrivateKeyJWT(TOKEN_ENDPOINT, alg="ES384",
                                                    headers={"kid": EC_KEY.thumbprint()})) as naive:
        with pytest.raises(OAuthError) as refused:
            naive.fetch_token(TOKEN_ENDPOINT, grant_type="client_credentials", scope="system/*.rs")
    assert refused.value.error == "invalid_client" and "5 minutes" in str(refused.value.description)


def test_client_assertions_that_are_refused(site: Site) -> None:
    now = int(time.time())
    valid = assertion()
    _, claims = _unverified(valid)
    foreign = ECKey.generate_key("P-384", private=True)
    refused = {
        "HS256 with a shared secret": assertion(key=OctKey.generate_key(256), alg="HS256",
                                                header={"kid": EC_KEY.thumbprint()}),
        "RS256 with the registered RSA key": assertion(EHR_RSA, RSA_KEY, "RS256"),
        "unsigned (alg none)": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "signature cut off": valid[:valid.rindex(".") + 1],
        "signed by a key not in the client's JWKS": assertion(key=foreign),
        "another key under the registered kid": assertion(key=foreign, header={"kid": EC_KEY.thumbprint()}),
        "ES384 for the client whose key is RSA": assertion(EHR_RSA, EC_KEY),
        "exp 10 minutes ahead": assertion(exp=now + 600),
        "expired": assertion(exp=now - 30),
        "no exp": assertion(exp=None),
        "no jti": assertion(jti=None),
        "aud the FHIR server": assertion(aud=FHIR_BASE),
        "aud another server's token endpoint": assertion(aud="https://as.other.example.org/oauth/token"),
        "sub another than iss": assertion(sub=EHR_RSA),
        "an unknown client": assertion("no-such-ehr"),
        "a public client": assertion(APP),
        "not a JWT": "not-a-jwt",
    }
    for label, signed in refused.items():
        assert oauth_error(client_credentials(site, signed), 401) == "invalid_client", label
    # a client_id in the form must name the assertion's client
    assert oauth_error(client_credentials(site, assertion(), client_id=EHR_RSA), 401) == "invalid_client"
    # the assertion type is checked
    assert oauth_error(client_credentials(site, assertion(), client_assertion_type="jwt"), 401) == "invalid_client"

    # at the edge: exp 5 minutes ahead, aud in a list, no kid with a one-key JWKS
    for accepted in (assertion(exp=now + 300), assertion(aud=[TOKEN_ENDPOINT, FHIR_BASE]), valid,
                     assertion(header={"kid": None})):
        response = client_credentials(site, accepted)
        assert response.status_code == 200, response.text


def test_a_client_assertion_works_once(site: Site) -> None:
    signed = assertion()
    assert client_credentials(site, signed).status_code == 200
    replayed = client_credentials(site, signed)
    assert oauth_error(replayed, 401) == "invalid_client" and "replay" in replayed.json()["error_description"]
    # the same jti from another client is that client's own
    jti = _unverified(signed)[1]["jti"]
    assert client_credentials(site, assertion(EHR_RSA, RSA_KEY, "RS384", jti=jti)).status_code == 200


def test_only_backend_clients_get_client_credentials(site: Site) -> None:
    # a public client has nothing to authenticate with
    public = site.http.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": APP,
                                                  "scope": "system/*.rs"})
    assert oauth_error(public, 401) == "invalid_client"
    # a confidential client authenticates, but is not a backend service
    assert oauth_error(client_credentials(site, assertion(PORTAL, PORTAL_KEY))) == "unauthorized_client"
    # and the backend is
    assert client_credentials(site, assertion()).status_code == 200


def test_a_backend_gets_only_the_system_scopes_it_is_registered_for(site: Site) -> None:
    response = client_credentials(site, assertion(), scope="system/*.cruds system/CarePlan.rs user/*.rs patient/*.rs")
    assert response.status_code == 200 and response.json()["scope"] == "system/CarePlan.rs"
    token = response.json()["access_token"]
    assert site.claims(token)["scope"] == "system/CarePlan.rs"
    assert site.fhir("Patient", token).status_code == 403
    assert oauth_error(client_credentials(site, assertion(), scope="user/*.rs openid")) == "invalid_scope"


def test_only_the_directory_client_writes_the_directory(site: Site) -> None:
    """A PractitionerRole's organization decides which unit its holder acts for, so a unit's own
    EHR could otherwise make anyone staff of any unit; only the directory client may change it,
    and it sees no patient data."""
    role_id = site.world.role_at(UNIT, "nurse")
    ehr = client_credentials(site, assertion(EHR_RSA, RSA_KEY, "RS384"), scope="system/*.cruds").json()["access_token"]
    response = client_credentials(site, assertion(HSA_SYNC, DIRECTORY_KEY), scope="system/*.cruds")
    assert response.status_code == 200, response.text
    hsa_sync = response.json()["access_token"]
    claims = site.claims(hsa_sync)
    assert claims["pk_kind"] == "directory" and "care_unit_org" not in claims
    role = site.fhir(f"PractitionerRole/{role_id}", ehr).json()
    elsewhere = {"reference": f"Organization/{OTHER_UNIT}"}
    moved = {**{k: v for k, v in role.items() if k != "meta"}, "organization": elsewhere}
    for token, status in ((ehr, 403), (hsa_sync, 200)):
        put = site.http.put(f"/fhir/PractitionerRole/{role_id}", json=moved,
                            headers={"authorization": f"Bearer {token}", "content-type": "application/fhir+json"})
        assert put.status_code == status, put.text
    assert site.fhir(f"PractitionerRole/{role_id}", ehr).json()["organization"] == elsewhere
    # the directory client sees no patient data
    for path in ("CarePlan", "Patient", f"CarePlan/{site.world.by_author(UNIT)[0].plan}"):
        assert site.fhir(path, hsa_sync).status_code == 403, path
    assert site.fhir("Organization", hsa_sync).status_code == 200


def test_an_hsa_id_two_organizations_claim_names_no_unit(site: Site) -> None:
    hsa_sync = client_credentials(site, assertion(HSA_SYNC, DIRECTORY_KEY), scope="system/*.cruds").json()
    unit = site.fhir(f"Organization/{UNIT}", hsa_sync["access_token"]).json()
    copy = {k: v for k, v in unit.items() if k not in ("meta", "id", "partOf")}
    created = site.http.post("/fhir/Organization", json={**copy, "name": "Dubblett"},
                             headers={"authorization": f"Bearer {hsa_sync['access_token']}",
                                      "content-type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    refused = client_credentials(site, assertion())
    assert oauth_error(refused) == "unauthorized_client", refused.text


async def test_a_directory_client_acts_for_no_care_unit(clean_pg: str) -> None:
    store = Store(create_engine(clean_pg, pool_size=2))
    try:
        with pytest.raises(ClientError, match="no care unit"):
            await Clients(store).add(HSA_SYNC, name="HSA-synk", kind="directory", redirect_uris=[],
                                     scope="system/*.cruds", jwks=_public_jwks(DIRECTORY_KEY, "ES384"),
                                     care_unit="SE2321000016-E001")
    finally:
        await store.dispose()


async def test_clients_register_public_rsa_or_ec_keys_only(clean_pg: str) -> None:
    ec = ECKey.generate_key("P-384", private=True)
    public = ECKey.import_key(ec.as_dict(private=False), parameters={"kid": "d"})  # a kid that reads like "d"
    refused = {
        "a private key": json.dumps({"keys": [ec.as_dict(private=True)]}),
        "a shared secret": json.dumps({"keys": [OctKey.generate_key(256).as_dict()]}),
        "no keys": '{"keys": []}',
        "not JSON": "keys",
    }
    store = Store(create_engine(clean_pg, pool_size=2))
    try:
        clients = Clients(store)
        for label, jwks in refused.items():
            with pytest.raises(ClientError):
                await clients.add(f"portal-{len(label)}", name=label, kind="confidential", redirect_uris=[APP_REDIRECT],
                                  scope=APP_SCOPE, jwks=jwks)
        await clients.add(PORTAL, name="Portalen", kind="confidential", redirect_uris=[APP_REDIRECT], scope=APP_SCOPE,
                          jwks=json.dumps(KeySet([public]).as_dict(private=False)))
        assert [c.client_id for c in await clients.registered()] == [PORTAL]
    finally:
        await store.dispose()


# -- introspection and revocation --------------------------------------------------------------------------------


def test_introspection_of_live_revoked_and_garbage_tokens(site: Site, tmp_path: Path) -> None:
    role = site.world.role_at(UNIT, "nurse")
    body = sign_in(site, f"role:{role}", scope=STAFF_ASK)
    access, refresh_token = body["access_token"], body["refresh_token"]
    foreign = SigningKeys.load(generate_key(tmp_path / "foreign.pem")).sign(site.claims(access), typ="at+jwt")
    with backend(site) as rs:
        live = introspect(rs, access)
        assert live["active"] is True and live["token_type"] == "Bearer"
        assert live["client_id"] == APP and live["scope"] == STAFF_ASK
        assert live["fhirUser"] == f"PractitionerRole/{role}" and live["care_unit_org"] == UNIT
        assert live["exp"] > time.time() and live["iss"] == BASE_URL
        assert introspect(rs, refresh_token)["active"] is True
        for garbage in ("garbage", "a.b.c", foreign, ""):
            assert introspect(rs, garbage) == {"active": False}

        # another client cannot revoke them
        for token in (access, refresh_token):
            assert site.http.post("/oauth/revoke", data={"token": token, "client_id": OTHER_APP}).status_code == 200
            assert introspect(rs, token)["active"] is True
        # the client they were issued to can (RFC 7009)
        for token in (access, refresh_token):
            revoked = site.http.post("/oauth/revoke", data={"token": token, "client_id": APP})
            assert revoked.status_code == 200 and revoked.headers["cache-control"] == "no-store"
            assert introspect(rs, token) == {"active": False}
        assert oauth_error(refresh(site, refresh_token)) == "invalid_grant"
        # revoking something unknown is no error (RFC 7009 §2.2)
        assert site.http.post("/oauth/revoke", data={"token": "garbage", "client_id": APP}).status_code == 200


def test_introspection_needs_an_authenticated_client(site: Site) -> None:
    token = sign_in(site, nurse(site))["access_token"]
    # a public client, or nobody at all
    for form in ({"token": token, "client_id": APP}, {"token": token}):
        assert oauth_error(site.http.post("/oauth/introspect", data=form), 401) == "invalid_client"
    # an assertion that does not verify
    forged = assertion(key=ECKey.generate_key("P-384", private=True))
    refused = site.http.post("/oauth/introspect", data={"token": token, "client_assertion_type": ASSERTION_TYPE,
                                                        "client_assertion": forged})
    assert oauth_error(refused, 401) == "invalid_client"
    # a confidential client (not only a backend) may introspect
    allowed = site.http.post("/oauth/introspect", data={"token": token, "client_assertion_type": ASSERTION_TYPE,
                                                        "client_assertion": assertion(PORTAL, PORTAL_KEY)})
    assert allowed.status_code == 200 and allowed.json()["active"] is True


# -- the resource server: tokens that are not valid ------------------------------------------------------------------


def test_invalid_access_tokens_are_refused_with_invalid_token(site: Site, tmp_path: Path) -> None:
    valid = site.world.staff(site.world.role_at(UNIT, "nurse"))["authorization"].split()[1]
    keys = SigningKeys.load(site.settings.signing_key)
    claims = site.claims(valid)
    now = int(time.time())

    def signed(**changes: Any) -> str:
        values = {**claims, "jti": str(uuid.uuid4()), **changes}
        return keys.sign({k: v for k, v in values.items() if v is not None}, typ="at+jwt")

    header, payload, signature = valid.split(".")
    cases = {
        "malformed": "not-a-jwt",
        "three parts of nothing": "a.b.c",
        "expired": signed(iat=now - 1200, nbf=now - 1200, exp=now - 300),
        "another audience": signed(aud="https://fhir.other.example.org/fhir"),
        "another issuer": signed(iss="https://as.other.example.org"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{payload}.",
        "alg none, signature kept": f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{payload}.{signature}",
        "payload tampered": f"{header}.{_b64({**claims, 'care_unit_org': OTHER_UNIT})}.{signature}",
        "signed by another key": SigningKeys.load(generate_key(tmp_path / "other.pem")).sign(claims, typ="at+jwt"),
        "HS256": jwt.encode({"alg": "HS256", "typ": "at+jwt", "kid": keys.kid}, claims, OctKey.generate_key(256)),
        "not an access token (typ)": keys.sign(claims, typ="JWT"),
        "lives longer than 15 minutes": signed(iat=now, nbf=now, exp=now + 3600),
        "not valid yet": signed(iat=now + 600, nbf=now + 600, exp=now + 900),
        "missing claims": signed(scope=None, client_id=None),
    }
    for label, token in cases.items():
        response = site.fhir("CarePlan", token)
        assert response.status_code == 401, label
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "login", label
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge, label
    # another scheme than Bearer
    basic = site.http.get("/fhir/CarePlan", headers={"authorization": f"Basic {valid}"})
    assert basic.status_code == 401 and 'error="invalid_token"' in basic.headers["www-authenticate"]
    # no token at all: a Bearer challenge without an error code (RFC 6750 §3.1)
    none = site.fhir("CarePlan", None)
    assert none.status_code == 401 and none.json()["resourceType"] == "OperationOutcome"
    assert none.headers["www-authenticate"].startswith("Bearer ") and "error=" not in none.headers["www-authenticate"]

    # the valid token works, and the public documents need none
    assert plan_ids(site.fhir("CarePlan", valid, _count="100")) == site.involving(UNIT)
    assert site.fhir("metadata", None).status_code == 200
    assert site.http.get("/fhir/.well-known/smart-configuration").status_code == 200
    assert site.http.get("/.well-known/openid-configuration").status_code == 200
    assert site.http.get("/oauth/jwks").status_code == 200


# Claims of the wrong type, each in a token signed with the server's own key (what a bug in the
# issuer, or a leaked key, could produce): every one is 401 invalid_token, never a 500, never
# accepted. ``exp: "nan"`` was accepted: the string was converted to a float that compares false
# with every time, so the token never expired.
WRONG_CLAIMS: list[tuple[str, Any]] = [
    ("exp", "nan"), ("exp", "9999999999"), ("exp", True), ("exp", float("nan")), ("exp", float("inf")),
    ("exp", None), ("exp", [4102444800]), ("exp", 10**14),
    ("iat", "0"), ("iat", False), ("iat", float("nan")), ("iat", float("-inf")), ("iat", -5),
    ("nbf", "0"), ("nbf", float("nan")), ("nbf", {"at": 0}),
    ("iss", 1), ("iss", [BASE_URL]), ("iss", None),
    ("aud", 1), ("aud", [FHIR_BASE, 1]), ("aud", []), ("aud", {"aud": FHIR_BASE}), ("aud", [FHIR_BASE] * 17),
    ("sub", 1), ("sub", ""), ("sub", "x" * 5000), ("sub", ["x"]),
    ("jti", 1), ("jti", ["x"]), ("jti", "x" * 1000),
    ("client_id", 1), ("client_id", "x" * 1000),
    ("scope", ["user/*.rs"]), ("scope", 1),
    ("pk_kind", "admin"), ("pk_kind", 1), ("pk_kind", ["staff"]),
    ("care_unit_org", [UNIT]), ("care_unit_org", {"id": UNIT}), ("care_unit_org", 7),
    ("care_unit", 1), ("commission", ["x"]), ("care_provider", True), ("fhirUser", ["PractitionerRole/x"]),
    ("name", 1), ("title", ["Sjuksköterska"]), ("care_unit_name", 2), ("sid", 1), ("sid", "x" * 100),
]


def test_access_tokens_with_claims_of_the_wrong_type_are_refused(site: Site) -> None:
    nurse_token = site.world.staff(site.world.role_at(UNIT, "nurse"))["authorization"].split()[1]
    patient = site.world.agreements[0].patient
    patient_token = site.world.patient(patient)["authorization"].split()[1]
    keys = SigningKeys.load(site.settings.signing_key)

    def signed(valid: str, **changes: Any) -> str:
        return keys.sign({**site.claims(valid), "jti": str(uuid.uuid4()), **changes}, typ="at+jwt")

    cases = [(f"{name}={value!r:.40}", signed(nurse_token, **{name: value})) for name, value in WRONG_CLAIMS]
    cases += [(f"patient={value!r}", signed(patient_token, patient=value)) for value in ([patient], 1, "")]
    accepted = []
    for label, token in cases:
        response = site.fhir("CarePlan", token)
        if response.status_code != 401 or 'error="invalid_token"' not in response.headers.get("www-authenticate", ""):
            accepted.append(f"{label}: {response.status_code}")
        else:
            assert response.json()["issue"][0]["code"] == "login", label
    assert not accepted, f"tokens with claims of the wrong type were not refused: {accepted}"
    # nor are they active to introspection
    with backend(site) as rs:
        assert introspect(rs, signed(nurse_token, exp="nan")) == {"active": False}

    # what must still work: a NumericDate with a fraction (RFC 7519 §2), aud as a list, display
    # texts that are empty, and the tokens as issued
    now = time.time()
    for label, token in [("exp with a fraction", signed(nurse_token, exp=now + 60.5, iat=now - 0.25)),
                         ("aud a list", signed(nurse_token, aud=["https://other.example.org", FHIR_BASE])),
                         ("empty title", signed(nurse_token, title="")), ("as issued", nurse_token)]:
        assert plan_ids(site.fhir("CarePlan", token, _count="100")) == site.involving(UNIT), label
    assert site.fhir(f"Patient/{patient}", patient_token).status_code == 200


def test_client_assertions_with_claims_of_the_wrong_type_are_refused(site: Site) -> None:
    now = int(time.time())
    cases = {
        "iat a string": assertion(iat="nan"), "iat a boolean": assertion(iat=True),
        "nbf a string": assertion(nbf="0"), "nbf in the future": assertion(nbf=now + 120),
        "exp a string": assertion(exp=str(now + 60)), "exp a boolean": assertion(exp=True),
        "exp NaN": assertion(exp=float("nan")), "jti a number": assertion(jti=12345),
        "jti too long": assertion(jti="x" * 300), "aud with a number": assertion(aud=[TOKEN_ENDPOINT, 7]),
        "aud an object": assertion(aud={"aud": TOKEN_ENDPOINT}),
    }
    accepted = []
    for label, signed in cases.items():
        response = client_credentials(site, signed)
        if response.status_code != 401 or response.json().get("error") != "invalid_client":
            accepted.append(f"{label}: {response.status_code}")
    assert not accepted, f"assertions with claims of the wrong type were not refused: {accepted}"
    # iat and nbf of the right type still work
    for fine in (assertion(iat=now - 10, nbf=now - 10), assertion(iat=now + 0.5)):
        response = client_credentials(site, fine)
        assert response.status_code == 200, response.text
