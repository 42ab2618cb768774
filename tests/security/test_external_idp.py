"""Sign-in through an external OpenID Connect provider, end to end, with nothing mocked.

Two real processes on loopback: the test provider ``tests/security/oidc_provider.py``
(authlib's authorization server, its own RSA key) and the service (``patientkontrakt serve``
with ``PK_OIDC_*`` pointing at the provider, no test IdP) on the session's PostgreSQL
database, where each test loads the demo region (``world``). A browser without JavaScript, an
httpx client with a cookie jar that follows every redirect by hand, drives the whole flow the
way an app's user would: our ``/oauth/authorize`` → the provider's login form, submitted as one
of its identities → our ``/oauth/callback`` (→ the commission choice) → the app's redirect URI
with a code → our ``/oauth/token`` with the PKCE verifier → ``/fhir`` with the access token.

The provider can be told to misbehave (its login form's ``misbehave``): the service must refuse
an ID token with the wrong nonce, issuer or audience, an expired one, one signed with a key the
provider does not publish, and an unsigned one.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import KeySet
from stdnum import luhn

from patientkontrakt.config import PROJECT_ROOT, Settings
from patientkontrakt.domain.demo import DemoGenerator
from patientkontrakt.domain.identifiers import HSA_ID, SAMORDNINGSNUMMER
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.access import INTERNAL
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.security.clients import Clients
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import SERVER_LOGS, audit_key_file
from tests.processes import free_port, stop
from tests.security.conftest import World

pytestmark = pytest.mark.slow

STARTUP_SECONDS = 30
OIDC_CLIENT_ID = "patientkontrakt"
APP = "ext-app"
APP_CALLBACK = "http://127.0.0.1/app/callback"
APP_SCOPE = "openid fhirUser launch/patient user/*.cruds patient/*.rs"
ASKED_SCOPE = "openid fhirUser launch/patient user/*.rs patient/*.rs"

# -- who the provider knows: demo staff and patients by HSA-id and personnummer ----------------

_DEMO = DemoGenerator(seed=1)  # the world's region; its first agreement's patient below
_ROLES = {r["id"]: r for r in _DEMO.region.roles}
_ORGS = {o["id"]: o for o in _DEMO.region.organizations}


def _hsa(resource: dict[str, Any]) -> str:
    return str(next(i["value"] for i in resource["identifier"] if i["system"] == HSA_ID))


BJORKBACKEN, STRANDVAGEN, EKDALEN = "demo-org-vc-bjorkbacken", "demo-org-vc-strandvagen", "demo-org-vc-ekdalen"
NURSE = _DEMO.region.practitioners[1]  # demo-prac-0002: one commission, at Björkbacken
MULTI = _DEMO.region.practitioners[0]  # demo-prac-0001: at Björkbacken; the tests add two more
assert _ROLES["demo-role-0002"]["organization"]["reference"] == f"Organization/{BJORKBACKEN}"
assert _ROLES["demo-role-0001"]["organization"]["reference"] == f"Organization/{BJORKBACKEN}"
PATIENT = _DEMO.agreement(0)[0]
PATIENT_NUMBER = PATIENT["identifier"][0]["value"]

# commissions added for MULTI: a current one at Strandvägen and one at Ekdalen that has ended
_REGION_NR = _hsa(MULTI).split("-")[0]
EXTRA_ROLES = [
    {"resourceType": "PractitionerRole", "id": "ext-role-0001-strandvagen", "active": True,
     "identifier": [{"system": HSA_ID, "value": f"{_REGION_NR}-U9001"}],
     "practitioner": {"reference": "Practitioner/demo-prac-0001"},
     "organization": {"reference": f"Organization/{STRANDVAGEN}"},
     "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role", "code": "nurse"}],
               "text": "Distriktssköterska"}]},
    {"resourceType": "PractitionerRole", "id": "ext-role-0001-ekdalen", "active": True,
     "identifier": [{"system": HSA_ID, "value": f"{_REGION_NR}-U9002"}],
     "period": {"start": "2019-01-01", "end": "2020-12-31"},
     "practitioner": {"reference": "Practitioner/demo-prac-0001"},
     "organization": {"reference": f"Organization/{EKDALEN}"},
     "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role", "code": "nurse"}],
               "text": "Sjuksköterska"}]},
]
_COORDINATION = "600572123"  # born 1960-05-12, the day plus 60: a samordningsnummer
COORDINATION_NUMBER = f"19{_COORDINATION}{luhn.calc_check_digit(_COORDINATION)}"
COORDINATED = {**PATIENT, "id": "ext-pat-samordning", "identifier": [{"system": SAMORDNINGSNUMMER,
                                                                      "value": COORDINATION_NUMBER}],
               "name": [{"family": "Samordnad", "given": ["Sam"]}], "birthDate": "1960-05-12"}

PNR = "https://id.oidc.se/claim/personalIdentityNumber"
IDENTITIES = [
    {"id": "nurse", "label": "Sjuksköterska med ett uppdrag", "claims": {
        "sub": "siths-nurse", "employeeHsaId": _hsa(NURSE), "name": "Nurse"}},
    {"id": "multi", "label": "Sjuksköterska med flera uppdrag", "claims": {
        "sub": "siths-multi", "employeeHsaId": _hsa(MULTI)}},
    {"id": "multi-named", "label": "… med uppdraget på Strandvägen valt hos IdP:n", "claims": {
        "sub": "siths-multi", "employeeHsaId": _hsa(MULTI), "commissionHsaId": f"{_REGION_NR}-U9001"}},
    {"id": "multi-not-held", "label": "… med någon annans uppdrag", "claims": {
        "sub": "siths-multi", "employeeHsaId": _hsa(MULTI), "commissionHsaId": _hsa(_ROLES["demo-role-0002"])}},
    {"id": "patient", "label": "Patient (BankID)", "claims": {"sub": "bankid-1", PNR: PATIENT_NUMBER}},
    {"id": "coordinated", "label": "Patient med samordningsnummer", "claims": {
        "sub": "freja-2", "https://id.oidc.se/claim/coordinationNumber": COORDINATION_NUMBER}},
    {"id": "stranger", "label": "Okänd medarbetare", "claims": {
        "sub": "siths-x", "employeeHsaId": f"{_REGION_NR}-P9999"}},
    {"id": "unknown-patient", "label": "Okänd patient", "claims": {"sub": "bankid-x", PNR: "191212121212"}},
    {"id": "bad-number", "label": "Felaktigt personnummer", "claims": {"sub": "bankid-y", PNR: "191212121213"}},
    {"id": "nobody", "label": "Bara ett namn", "claims": {"sub": "anon", "name": "Anonym"}},
]


# -- the two processes ------------------------------------------------------------------------


@dataclass
class Process:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self, since: int = 0) -> str:
        return self.log_path.read_bytes()[since:].decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def stop(self) -> None:
        stop(self.process)


def _start(args: list[str], env: dict[str, str], base_url: str, ready_path: str, log_path: Path) -> Process:
    SERVER_LOGS.append(log_path)  # searched for patient data at the end (tests/test_no_patient_data_in_logs.py)
    with log_path.open("wb") as log:
        popen = subprocess.Popen([sys.executable, *args], cwd=PROJECT_ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
    running = Process(base_url, popen, log_path)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            pytest.fail(f"{args} exited with {popen.returncode}:\n{running.log()}")
        try:
            if httpx.get(f"{base_url}{ready_path}", timeout=2).status_code == 200:
                return running
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    running.stop()
    pytest.fail(f"{args} did not answer {ready_path} within {STARTUP_SECONDS} s:\n{running.log()}")


def _server_env(pg_url: str, signing_key: Path, base_url: str, issuer: str, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PK_OIDC_", "PK_TEST_IDP"))}
    return {**env, "PK_DATABASE_URL": pg_url, "PK_BASE_URL": base_url, "PK_SIGNING_KEY": str(signing_key),
            "PK_AUDIT_KEY": str(audit_key_file()), "PK_LOG_LEVEL": "info", "PK_OIDC_ISSUER": issuer,
            "PK_OIDC_CLIENT_ID": OIDC_CLIENT_ID, "PK_OIDC_CLIENT_SECRET": secret, "PK_OIDC_SCOPE": "openid profile"}


@dataclass
class Servers:
    provider: Process
    service: Process

    @property
    def base(self) -> str:
        return self.service.base_url


@pytest.fixture(scope="module")
def servers(pg_url: str, signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """The provider and the service, each in its own process; always stopped."""
    tmp = tmp_path_factory.mktemp("external-idp")
    provider_url, service_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    secret = secrets.token_urlsafe(24)
    config = tmp / "provider.json"
    config.write_text(json.dumps({
        "clients": [{"client_id": OIDC_CLIENT_ID, "client_secret": secret,
                     "redirect_uris": [f"{service_url}/oauth/callback"]}],
        "identities": IDENTITIES,
    }))
    provider = _start(["-m", "tests.security.oidc_provider", "--port", provider_url.rsplit(":", 1)[1]],
                      {**os.environ, "OIDC_PROVIDER_CONFIG": str(config)}, provider_url,
                      "/.well-known/openid-configuration", tmp / "provider.log")
    try:
        service = _start(["-m", "patientkontrakt.cli", "serve", "--host", "127.0.0.1", "--port",
                          service_url.rsplit(":", 1)[1]],
                         _server_env(pg_url, signing_key, service_url, provider_url, secret), service_url,
                         "/fhir/metadata", tmp / "service.log")
    except BaseException:
        provider.stop()
        raise
    try:
        yield Servers(provider, service)
    finally:
        service.stop()
        provider.stop()


def _run(settings: Settings, work: Any) -> Any:
    async def go() -> Any:
        store = Store(create_engine(settings.database_url, pool_size=2))
        try:
            return await work(store)
        finally:
            await store.dispose()
    return asyncio.run(go())


async def _put(store: Store, settings: Settings, resources: list[dict[str, Any]]) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}
    await BundleProcessor(build_service(settings, store)).process(INTERNAL, bundle, Preferences(return_="minimal"))


async def _prepare(store: Store, settings: Settings) -> None:
    """The app that signs people in, and the people only these tests need."""
    await Clients(store).add(APP, name="Extern app", kind="public", redirect_uris=[APP_CALLBACK], scope=APP_SCOPE)
    await _put(store, settings, [*EXTRA_ROLES, COORDINATED])


@pytest.fixture
def site(servers: Servers, world: World) -> Iterator[Site]:
    """The demo region, the app registered, and the servers' logs of this test printed at the end
    (pytest shows them for a failing test)."""
    _run(world.settings, lambda store: _prepare(store, world.settings))
    start = (servers.provider.log_size(), servers.service.log_size())
    yield Site(servers, world)
    print(f"--- provider log ---\n{servers.provider.log(start[0])}")
    print(f"--- service log ---\n{servers.service.log(start[1])}")
    assert servers.service.process.poll() is None, "the service died during the test"
    assert servers.provider.process.poll() is None, "the provider died during the test"


# -- a browser --------------------------------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    hidden: dict[str, str] = field(default_factory=dict)
    choices: dict[str, list[str]] = field(default_factory=dict)  # radio buttons and selects: their values
    button: str = ""


class _Forms(HTMLParser):
    """The forms of a page, as a browser would submit them."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._select: str | None = None
        self._in_button = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif not self.forms:
            return
        elif tag == "input" and a.get("type") == "hidden":
            self.forms[-1].hidden[a["name"]] = a.get("value", "")
        elif tag == "input" and a.get("type") == "radio":
            self.forms[-1].choices.setdefault(a["name"], []).append(a.get("value", ""))
        elif tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select:
            self.forms[-1].choices.setdefault(self._select, []).append(a.get("value", ""))
        elif tag == "button":
            self._in_button = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "button":
            self._in_button = False

    def handle_data(self, data: str) -> None:
        if self._in_button and self.forms and not self.forms[-1].button:
            self.forms[-1].button = data.strip()


def forms(page: httpx.Response) -> list[Form]:
    parser = _Forms()
    parser.feed(page.text)
    return parser.forms


def location(response: httpx.Response) -> str:
    assert response.status_code in (302, 303), (response.status_code, response.text[:2000])
    return urljoin(str(response.request.url), response.headers["location"])


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def authorize_url(base: str, verifier: str, state: str) -> str:
    """Where the app sends its user to sign in: our /oauth/authorize, with PKCE."""
    return f"{base}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": APP, "redirect_uri": APP_CALLBACK, "scope": ASKED_SCOPE,
        "state": state, "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256",
        "aud": f"{base}/fhir"})


class Browser:
    """Cookies kept, redirects followed one at a time, English pages."""

    def __init__(self) -> None:
        self.http = httpx.Client(timeout=15, headers={"accept-language": "en"})

    def get(self, url: str) -> httpx.Response:
        return self.http.get(url)

    def submit(self, page: httpx.Response, form: Form, **fields: str) -> httpx.Response:
        url = urljoin(str(page.request.url), form.action)
        assert form.method == "post"
        return self.http.post(url, data={**form.hidden, **fields})


@dataclass
class SignIn:
    """One sign-in of the app's user, step by step."""

    site: Site
    browser: Browser = field(default_factory=Browser)
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    state: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def authorize(self) -> str:
        """The app sends the browser to our /oauth/authorize; we send it on to the provider."""
        return location(self.browser.get(authorize_url(self.site.base, self.verifier, self.state)))

    def at_provider(self, identity: str, misbehave: str = "") -> str:
        """Signed in at the provider's login form; returns where the provider sends the browser."""
        page = self.browser.get(self.authorize())
        assert page.status_code == 200, page.text
        (form,) = forms(page)
        assert identity in form.choices["identity"] and misbehave in form.choices["misbehave"]
        return location(self.browser.submit(page, form, identity=identity, misbehave=misbehave))

    def callback(self, identity: str, misbehave: str = "") -> httpx.Response:
        """Our /oauth/callback's answer after signing in at the provider as ``identity``."""
        return self.browser.get(self.at_provider(identity, misbehave))

    def code(self, response: httpx.Response) -> str:
        """The code in the redirect to the app (with the app's own state)."""
        target = location(response)
        assert target.startswith(f"{APP_CALLBACK}?"), target
        params = query(target)
        assert params["state"] == self.state
        return params["code"]

    def token(self, code: str) -> dict[str, Any]:
        response = httpx.post(f"{self.site.base}/oauth/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": APP_CALLBACK, "client_id": APP,
            "code_verifier": self.verifier})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def sign_in(self, identity: str) -> dict[str, Any]:
        """The whole flow for someone with one way in: the token response."""
        return self.token(self.code(self.callback(identity)))


@dataclass
class Site:
    servers: Servers
    world: World

    @property
    def base(self) -> str:
        return self.servers.base

    def flow(self) -> SignIn:
        return SignIn(self)

    def put(self, *resources: dict[str, Any]) -> None:
        _run(self.world.settings, lambda store: _put(store, self.world.settings, list(resources)))

    def claims(self, access_token: str) -> dict[str, Any]:
        """The access token's claims, verified with the service's published keys."""
        keys = KeySet.import_key_set(httpx.get(f"{self.base}/oauth/jwks").json())
        return dict(jwt.decode(access_token, keys, algorithms=["RS256"]).claims)

    def read(self, token: dict[str, Any], path: str) -> int:
        response = httpx.get(f"{self.base}/fhir/{path}", headers={"authorization": f"Bearer {token['access_token']}"})
        return response.status_code


def unit_hsa(org: str) -> str:
    return _hsa(_ORGS[org])


def refused(response: httpx.Response, status: int, message: str) -> None:
    """An error page, and no redirect anywhere (so no code for the app)."""
    assert response.status_code == status, (response.status_code, response.text[:2000])
    assert "location" not in response.headers
    assert "text/html" in response.headers["content-type"]
    assert message in response.text, response.text


# -- staff ------------------------------------------------------------------------------------


def test_the_service_sends_the_browser_to_the_provider_with_pkce_nonce_and_its_request_as_state(
        site: Site) -> None:
    flow = site.flow()
    target = flow.authorize()
    discovery = httpx.get(f"{site.servers.provider.base_url}/.well-known/openid-configuration").json()
    assert target.split("?")[0] == discovery["authorization_endpoint"]
    params = query(target)
    assert params["client_id"] == OIDC_CLIENT_ID
    assert params["redirect_uri"] == f"{site.base}/oauth/callback"
    assert params["response_type"] == "code" and params["scope"] == "openid profile"
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert len(params["nonce"]) >= 32
    assert params["state"] != flow.state and params["state"].count(".") == 2  # our sealed request
    cookies = {c.name: c for c in flow.browser.http.cookies.jar}
    assert cookies["pk_oidc"].path == "/oauth" and cookies["pk_oidc"].has_nonstandard_attr("HttpOnly")


def test_staff_with_one_commission_gets_a_token_for_that_unit(site: Site) -> None:
    mine = site.world.by_author(BJORKBACKEN)
    others = site.world.not_involving(BJORKBACKEN)
    assert mine and others
    token = site.flow().sign_in("nurse")
    claims = site.claims(token["access_token"])
    assert claims["pk_kind"] == "staff" and claims["sub"] == _hsa(NURSE)
    assert claims["care_unit"] == unit_hsa(BJORKBACKEN) and claims["care_unit_org"] == BJORKBACKEN
    assert claims["commission"] == _hsa(_ROLES["demo-role-0002"])
    assert claims["care_provider"] == unit_hsa("demo-org-region")
    assert claims["fhirUser"] == token["fhirUser"] == "PractitionerRole/demo-role-0002"
    assert claims["client_id"] == APP and set(claims["scope"].split()) == {"openid", "fhirUser", "user/*.rs"}
    assert "patient" not in token
    assert site.read(token, f"CarePlan/{mine[0].plan}") == 200
    assert site.read(token, f"CarePlan/{others[0].plan}") == 404


def test_staff_with_several_commissions_chooses_the_unit_to_act_for(site: Site) -> None:
    flow = site.flow()
    page = flow.callback("multi")
    assert page.status_code == 200, page.text
    assert page.headers["cache-control"] == "no-store"
    choices = {f.button: f for f in forms(page)}
    # the current commissions at Björkbacken and Strandvägen; the one at Ekdalen has ended
    assert sorted(choices) == ["Distriktssköterska – Vårdcentralen Strandvägen",
                               "Sjuksköterska – Vårdcentralen Björkbacken"]
    response = flow.browser.submit(page, choices["Distriktssköterska – Vårdcentralen Strandvägen"])
    token = flow.token(flow.code(response))
    claims = site.claims(token["access_token"])
    assert claims["sub"] == _hsa(MULTI)
    assert claims["care_unit"] == unit_hsa(STRANDVAGEN) and claims["care_unit_org"] == STRANDVAGEN
    assert claims["commission"] == f"{_REGION_NR}-U9001"
    assert token["fhirUser"] == "PractitionerRole/ext-role-0001-strandvagen"
    assert site.read(token, f"CarePlan/{site.world.by_author(STRANDVAGEN)[0].plan}") == 200
    assert site.read(token, f"CarePlan/{site.world.not_involving(STRANDVAGEN)[0].plan}") == 404


def test_the_provider_naming_the_commission_selects_it(site: Site) -> None:
    token = site.flow().sign_in("multi-named")  # no choice page: straight to the app
    claims = site.claims(token["access_token"])
    assert claims["care_unit"] == unit_hsa(STRANDVAGEN) and claims["commission"] == f"{_REGION_NR}-U9001"


def test_a_commission_the_person_does_not_hold_is_refused(site: Site) -> None:
    refused(site.flow().callback("multi-not-held"), 403, "not known to this service")


def test_a_staff_member_whose_record_is_inactive_is_refused(site: Site) -> None:
    site.put({**NURSE, "active": False})
    refused(site.flow().callback("nurse"), 403, "not known to this service")


def test_a_commission_choice_cannot_be_used_for_another_sign_in(site: Site) -> None:
    """The choice page's signed commission belongs to that sign-in: the same browser starting
    another one cannot skip the provider with it."""
    first = site.flow()
    page = first.callback("multi")
    form = next(f for f in forms(page) if "Strandvägen" in f.button)
    second = SignIn(site, browser=first.browser)
    sealed = query(second.authorize())["state"]  # sent to the provider, never signed in there
    response = first.browser.http.post(f"{site.base}/oauth/commission",
                                       data={"request": sealed, "commission": form.hidden["commission"]})
    refused(response, 400, "invalid choice")
    assert first.token(first.code(first.browser.submit(page, form)))["access_token"]  # the real one still works


# -- patients ---------------------------------------------------------------------------------


def test_a_patient_gets_a_token_for_their_own_record(site: Site) -> None:
    own, other = site.world.agreements[0], site.world.agreements[1]
    assert own.patient == PATIENT["id"]
    token = site.flow().sign_in("patient")
    claims = site.claims(token["access_token"])
    assert claims["pk_kind"] == "patient" and claims["sub"] == PATIENT_NUMBER
    assert claims["patient"] == token["patient"] == own.patient
    assert token["fhirUser"] == f"Patient/{own.patient}"
    assert "care_unit" not in claims
    assert set(claims["scope"].split()) == {"openid", "fhirUser", "launch/patient", "patient/*.rs"}
    assert site.read(token, f"CarePlan/{own.plan}") == 200
    assert site.read(token, f"Patient/{own.patient}") == 200
    assert site.read(token, f"CarePlan/{other.plan}") == 404
    assert site.read(token, f"Patient/{other.patient}") == 404


def test_a_patient_with_a_samordningsnummer_signs_in(site: Site) -> None:
    token = site.flow().sign_in("coordinated")
    assert token["patient"] == "ext-pat-samordning"
    assert site.claims(token["access_token"])["sub"] == COORDINATION_NUMBER


def test_the_code_needs_the_pkce_verifier(site: Site) -> None:
    flow = site.flow()
    code = flow.code(flow.callback("patient"))
    response = httpx.post(f"{site.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": APP_CALLBACK, "client_id": APP,
        "code_verifier": secrets.token_urlsafe(48)})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


# -- who the service does not know ------------------------------------------------------------


@pytest.mark.parametrize("identity", ["stranger", "unknown-patient"])
def test_someone_unknown_to_the_directory_gets_an_error_page_and_no_code(site: Site, identity: str) -> None:
    refused(site.flow().callback(identity), 403, "not known to this service")


@pytest.mark.parametrize(("identity", "message"), [
    ("bad-number", "not a valid personnummer"),
    ("nobody", "names neither a staff member nor a patient"),
])
def test_claims_that_name_no_one_are_refused(site: Site, identity: str, message: str) -> None:
    refused(site.flow().callback(identity), 400, message)


# -- a provider or a browser that is not to be trusted ----------------------------------------


@pytest.mark.parametrize(("misbehave", "message"), [
    ("wrong-nonce", "nonce does not match"),
    ("wrong-issuer", "from another issuer"),
    ("wrong-audience", "not for this service"),
    ("expired", "has expired"),
    ("unpublished-key", "does not verify"),
    ("unsigned", "does not verify"),
    ("exp-text", "exp must be a number"),
    ("iat-text", "iat must be a number"),
    ("sub-number", "sub must be a string"),
    ("aud-mixed", "aud must be a string"),
])
def test_an_id_token_that_fails_its_checks_is_refused(site: Site, misbehave: str, message: str) -> None:
    flow = site.flow()
    refused(flow.callback("nurse", misbehave), 400, message)


def test_a_tampered_state_is_refused(site: Site) -> None:
    flow = site.flow()
    back = flow.at_provider("nurse")
    params = query(back)
    tampered = {**params, "state": params["state"].swapcase()}
    refused(flow.browser.get(f"{back.split('?')[0]}?{urlencode(tampered)}"), 400, "state does not match")
    # refused before the code was spent: the untouched answer still signs in
    assert flow.token(flow.code(flow.browser.get(back)))["access_token"]


def test_the_providers_answer_in_another_browser_is_refused(site: Site) -> None:
    """Login CSRF: an attacker's own callback URL opened in the victim's browser."""
    attacker = site.flow()
    back = attacker.at_provider("nurse")
    victim = site.flow()
    victim.authorize()  # the victim's browser has a sign-in of its own going
    refused(victim.browser.get(back), 400, "state does not match")
    refused(Browser().get(back), 400, "cookie is missing")


def test_cancelling_at_the_provider_sends_the_user_back_to_the_app(site: Site) -> None:
    flow = site.flow()
    page = flow.browser.get(flow.authorize())
    (form,) = forms(page)
    back = location(flow.browser.submit(page, form, cancel="1"))
    assert query(back)["error"] == "access_denied"
    target = location(flow.browser.get(back))
    assert target.startswith(f"{APP_CALLBACK}?")
    params = query(target)
    assert params["error"] == "access_denied" and params["state"] == flow.state and "code" not in params


def test_an_unreachable_provider_gets_an_error_page(site: Site, pg_url: str, signing_key: Path,
                                                    tmp_path: Path) -> None:
    """A service of its own, whose provider does not answer: an error page, not a 500."""
    base_url, nowhere = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    service = _start(["-m", "patientkontrakt.cli", "serve", "--host", "127.0.0.1", "--port",
                      base_url.rsplit(":", 1)[1]],
                     _server_env(pg_url, signing_key, base_url, nowhere, "secret"), base_url, "/fhir/metadata",
                     tmp_path / "service.log")
    try:
        page = Browser().get(authorize_url(base_url, secrets.token_urlsafe(48), "s"))
        refused(page, 502, "discovery document cannot be read")
    finally:
        service.stop()
