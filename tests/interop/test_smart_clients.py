"""Interop: third-party SMART on FHIR clients get tokens from the live server and use the API.

The server runs as an operator runs it (``patientkontrakt serve``, uvicorn, on a free port) with
the built-in test IdP (``PK_TEST_IDP=true``) on the session's PostgreSQL database, into which the
``world`` fixture has loaded the demo region. Clients are registered with ``patientkontrakt
clients add``, as an operator registers them. Nothing here signs tokens itself: every token comes
from ``/oauth/token``.

* **fhirclient** (SMART's Python client, 4.x) as a patient app and as a staff app: it finds the
  OAuth endpoints in the CapabilityStatement (the ``oauth-uris`` extension of
  ``rest.security``; fhirclient 4.x does not read ``.well-known/smart-configuration``, so the
  tests check the two agree), builds the authorize URL with PKCE S256, and exchanges the code in
  ``handle_callback``. The test plays the browser with httpx: it opens the authorize URL keeping
  cookies (the ``pk_auth`` cookie binds the sign-in to the browser), reads the test IdP's form and
  posts the chosen person; the 303's ``Location`` is the app's callback URL.
* **authlib** as a SMART Backend Services client: ``OAuth2Client`` with ``PrivateKeyJWT``
  (ES384), client credentials; the same client then sends the bearer token to the FHIR API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from fhirclient.client import FHIRClient
from fhirclient.models.careplan import CarePlan
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException, FHIRPermissionDeniedException
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.domain import codes
from patientkontrakt.domain.identifiers import HSA_ID
from patientkontrakt.security.identity import identifier_value
from tests.conftest import audit_key_file
from tests.interop.test_fhirpy import Server, serving
from tests.security import conftest as security
from tests.security.conftest import World

pytestmark = pytest.mark.slow
world = security.world  # the fixture: the demo region (16 agreements) loaded into the clean database

BACKEND_UNIT = "demo-org-vc-bjorkbacken"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# -- the live server --------------------------------------------------------------------------


def _environment(pg_url: str, signing_key: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any ``PK_*`` setting of the developer's (an external
    IdP, say), and the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    return {**env, "PK_DATABASE_URL": pg_url, "PK_SIGNING_KEY": str(signing_key),
            "PK_AUDIT_KEY": str(audit_key_file()), **settings}


def _command() -> list[str]:
    """``patientkontrakt``, the console script of this environment (or the module behind it)."""
    script = Path(sys.executable).with_name("patientkontrakt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "patientkontrakt.cli"]


@contextmanager
def live_server(pg_url: str, signing_key: Path, folder: Path) -> Iterator[Server]:
    """``patientkontrakt serve`` with the test IdP, in a subprocess; always terminated."""
    env = _environment(pg_url, signing_key, PK_LOG_LEVEL="info", PK_TEST_IDP="true")
    with serving(_command(), env, folder) as running:
        yield running


def register_client(pg_url: str, signing_key: Path, client_id: str, *options: str) -> None:
    """``patientkontrakt clients add CLIENT_ID OPTIONS…`` against the test database."""
    done = subprocess.run([*_command(), "clients", "add", client_id, *options], cwd=PROJECT_ROOT,
                          env=_environment(pg_url, signing_key),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"clients add {client_id} failed:\n{done.stdout}{done.stderr}"
    assert "registered" in done.stdout


@pytest.fixture(scope="module")
def server(pg_url: str, signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with live_server(pg_url, signing_key, tmp_path_factory.mktemp("smart-server")) as running:
        yield running


@dataclass
class Site:
    server: Server
    world: World
    pg_url: str
    signing_key: Path

    def register(self, client_id: str, *options: str) -> None:
        register_client(self.pg_url, self.signing_key, client_id, *options)

    def discovery(self) -> dict[str, Any]:
        response = httpx.get(f"{self.server.fhir_base}/.well-known/smart-configuration", timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture
def site(server: Server, world: World, signing_key: Path) -> Iterator[Site]:
    """The live server over the freshly loaded demo region; its log of the test is printed
    afterwards (pytest shows it for failures)."""
    start = server.log_size()
    yield Site(server, world, world.settings.database_url, signing_key)
    print(f"--- server log ({server.base_url}) ---\n{server.log(start)}")
    assert server.process.poll() is None, "the server died during the test"


# -- playing the browser at the test IdP --------------------------------------------------------


class IdPForm(HTMLParser):
    """The test IdP page's form: its action, hidden fields and the sign-in buttons (``as``)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self.choices: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method", "").lower() == "post":
            self.action = a.get("action")
        elif tag == "input" and a.get("type") == "hidden":
            self.hidden[a.get("name", "")] = a.get("value", "")
        elif tag == "button" and a.get("name") == "as":
            self.choices.append(a.get("value", ""))


def sign_in_at_test_idp(authorize_url: str, choice: str) -> str:
    """Open ``authorize_url`` as a browser would, choose ``choice`` (``patient:<id>`` or
    ``role:<PractitionerRole id>``) on the test IdP page; the URL the browser is sent back to."""
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        page = browser.get(authorize_url)
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "pk_auth" in browser.cookies, "the sign-in is not bound to the browser"
        form = IdPForm()
        form.feed(page.text)
        assert form.action == "/oauth/test-idp" and "request" in form.hidden, page.text
        assert choice in form.choices, f"{choice} is not offered on the test IdP page"
        back = browser.post(httpx.URL(authorize_url).join(form.action), data={**form.hidden, "as": choice})
        assert back.status_code == 303, back.text
        return str(back.headers["location"])


def _bundle_ids(bundle: dict[str, Any], type_: str) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == type_}


def _claims(site: Site, token: str) -> dict[str, Any]:
    """The access token's claims, verified with the server's published keys."""
    keys = KeySet.import_key_set(httpx.get(f"{site.server.base_url}/oauth/jwks", timeout=10).json())
    return dict(jwt.decode(token, keys).claims)


# -- fhirclient ---------------------------------------------------------------------------------


def _fhirclient(site: Site, app_id: str, redirect_uri: str, scope: str) -> tuple[FHIRClient, dict[str, Any]]:
    saved: dict[str, Any] = {}
    client = FHIRClient(settings={"app_id": app_id, "api_base": site.server.fhir_base,
                                  "redirect_uri": redirect_uri, "scope": scope}, save_func=saved.update)
    return client, saved


def _check_authorize_url(site: Site, url: str, app_id: str, redirect_uri: str) -> dict[str, str]:
    """fhirclient found the endpoints the discovery document names, and asks with PKCE S256."""
    discovery = site.discovery()
    assert url.startswith(discovery["authorization_endpoint"] + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["client_id"] == app_id and query["redirect_uri"] == redirect_uri
    assert query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["aud"] == site.server.fhir_base
    assert query["state"]
    return query


def test_fhirclient_patient_app_reads_the_patients_own_agreement(site: Site) -> None:
    world = site.world
    mine = world.agreements[0]
    other = next(a for a in world.agreements if a.patient != mine.patient)
    redirect_uri = "http://127.0.0.1:9/smart-app/callback"  # never connected to: the test plays the browser
    site.register("smart-patient-app", "--kind", "public", "--name", "Interop SMART app (patient)",
                  "--redirect-uri", redirect_uri, "--scope", "launch/patient openid fhirUser patient/*.rs")
    smart, saved = _fhirclient(site, "smart-patient-app", redirect_uri, "launch/patient openid fhirUser patient/*.rs")
    assert not smart.ready

    authorize_url = smart.authorize_url
    query = _check_authorize_url(site, authorize_url, "smart-patient-app", redirect_uri)
    assert set(query["scope"].split()) == {"launch/patient", "openid", "fhirUser", "patient/*.rs"}
    token_uri = saved["server"]["auth"]["token_uri"]
    assert token_uri == site.discovery()["token_endpoint"]

    callback = sign_in_at_test_idp(authorize_url, f"patient:{mine.patient}")
    assert callback.startswith(redirect_uri + "?")
    assert parse_qs(urlsplit(callback).query)["state"] == [query["state"]]
    smart.handle_callback(callback)

    # the launch context: the signed-in patient, in the client and in the state it saved
    assert smart.ready
    assert smart.patient_id == mine.patient
    assert saved["patient_id"] == mine.patient
    context = smart.launch_context
    assert context["patient"] == mine.patient and context["fhirUser"] == f"Patient/{mine.patient}"
    assert context["need_patient_banner"] is False
    assert set(context["scope"].split()) == {"launch/patient", "openid", "fhirUser", "patient/*.rs"}
    claims = _claims(site, saved["server"]["auth"]["access_token"])
    assert claims["patient"] == mine.patient and claims["client_id"] == "smart-patient-app"

    # the patient's own record, through fhirclient's models
    patient = smart.patient
    assert patient is not None and patient.id == mine.patient
    assert any(i.value for i in patient.identifier or [])
    plans = list(CarePlan.where(struct={"patient": mine.patient}).perform_resources_iter(smart.server))
    assert mine.plan in [p.id for p in plans]
    assert all(p.subject.reference == f"Patient/{mine.patient}" for p in plans)
    plan = CarePlan.read(mine.plan, smart.server)
    assert plan.subject.reference == f"Patient/{mine.patient}"
    assert plan.careTeam[0].reference == f"CareTeam/{mine.team}"
    assert plan.author.reference == f"Organization/{mine.author}"
    everything = list(CarePlan.where(struct={"_count": "100"}).perform_resources_iter(smart.server))
    assert {p.subject.reference for p in everything} == {f"Patient/{mine.patient}"}

    # another patient's agreement does not exist for this token (404, not 403: nothing leaks)
    with pytest.raises(FHIRNotFoundException) as hidden:
        CarePlan.read(other.plan, smart.server)
    assert hidden.value.response.status_code == 404
    with pytest.raises(FHIRNotFoundException):
        Patient.read(other.patient, smart.server)
    assert list(CarePlan.where(struct={"patient": other.patient}).perform_resources_iter(smart.server)) == []

    # patient/*.rs reads; it does not write
    plan.description = "Ändrad av appen"
    with pytest.raises(FHIRPermissionDeniedException) as refused:
        plan.update(smart.server)
    assert refused.value.response.status_code == 403


def test_fhirclient_staff_app_sees_the_agreements_of_its_care_unit(site: Site) -> None:
    world = site.world
    unit = world.agreements[0].author
    nurse = world.role_at(unit, "nurse")
    others = world.not_involving(unit)
    assert world.by_author(unit) and others
    redirect_uri = "http://localhost:9/staff-app/callback"
    registered = "launch/patient openid fhirUser offline_access user/*.rs"
    site.register("smart-staff-app", "--kind", "public", "--name", "Interop SMART app (staff)",
                  "--redirect-uri", redirect_uri, "--scope", registered)
    smart, saved = _fhirclient(site, "smart-staff-app", redirect_uri, "openid fhirUser offline_access user/*.rs")

    authorize_url = smart.authorize_url
    _check_authorize_url(site, authorize_url, "smart-staff-app", redirect_uri)
    smart.handle_callback(sign_in_at_test_idp(authorize_url, f"role:{nurse}"))

    # staff have no patient context (fhirclient asked for launch/patient; the server does not
    # grant it to staff) and get the commission as fhirUser
    assert smart.ready and smart.patient_id is None
    context = smart.launch_context
    assert "patient" not in context and context["need_patient_banner"] is True
    assert context["fhirUser"] == f"PractitionerRole/{nurse}"
    assert set(context["scope"].split()) == {"openid", "fhirUser", "offline_access", "user/*.rs"}
    auth = saved["server"]["auth"]
    claims = _claims(site, auth["access_token"])
    assert claims["care_unit"] == identifier_value(_organization(world, unit), HSA_ID)
    assert claims["fhirUser"] == f"PractitionerRole/{nurse}"

    # the unit's agreements, none of those it takes no part in (fhirclient follows the pages)
    seen = {p.id for p in CarePlan.where(struct={"_count": "3"}).perform_resources_iter(smart.server)}
    assert len(world.by_author(unit)) > 3
    assert seen == _involving(world, unit)
    with pytest.raises(FHIRNotFoundException):
        CarePlan.read(others[0].plan, smart.server)
    with pytest.raises(FHIRNotFoundException):
        Patient.read(others[0].patient, smart.server)

    # user/*.rs does not write
    plan = CarePlan.read(world.by_author(unit)[0].plan, smart.server)
    plan.description = "Ändrad av appen"
    with pytest.raises(FHIRPermissionDeniedException):
        plan.update(smart.server)

    # offline_access: fhirclient refreshes; the refresh token rotates, and the old one is dead
    first_refresh = auth["refresh_token"]
    assert smart.reauthorize()
    assert saved["server"]["auth"]["refresh_token"] != first_refresh
    assert saved["server"]["auth"]["access_token"] != auth["access_token"]
    assert CarePlan.read(plan.id, smart.server).id == plan.id
    replayed = httpx.post(site.discovery()["token_endpoint"], timeout=10, data={
        "grant_type": "refresh_token", "client_id": "smart-staff-app", "refresh_token": first_refresh})
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant"


def _involving(world: World, org_id: str) -> set[str]:
    """The agreements (CarePlan ids) the unit takes part in: as author or contributor (a
    vårdcentral's staff are only ever in the teams of its own agreements)."""
    return {a.plan for a in world.agreements if a.author == org_id or org_id in a.contributors}


def _organization(world: World, org_id: str) -> dict[str, Any]:
    return next(o for o in world.generator.region.organizations if o["id"] == org_id)


# -- authlib: SMART Backend Services --------------------------------------------------------------


class BackendServicesJWT(PrivateKeyJWT):
    """authlib's ``private_key_jwt`` with an assertion that lives 4 minutes.

    SMART Backend Services wants ``exp`` at most five minutes ahead and the server enforces it;
    authlib signs an assertion for an hour unless told otherwise (shown refused below)."""

    lifetime = 240

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return str(private_key_jwt_sign(auth.client_secret, client_id=auth.client_id, token_endpoint=token_endpoint,
                                        alg=self.alg, header=dict(self.headers or {}), expires_in=self.lifetime))


def _goal(patient: str, expressed_by: str) -> dict[str, Any]:
    return {"resourceType": "Goal", "lifecycleStatus": "active",
            "description": {"text": "Kunna handla själv i affären"},
            "subject": {"reference": f"Patient/{patient}"}, "expressedBy": {"reference": expressed_by},
            "meta": {"tag": [dict(codes.TEST_DATA_TAG)]}}


def test_authlib_backend_service_acts_for_its_care_unit(site: Site, tmp_path: Path) -> None:
    world = site.world
    hsa = identifier_value(_organization(world, BACKEND_UNIT), HSA_ID)
    assert hsa
    key = ECKey.generate_key("P-384", private=True)
    kid = key.thumbprint()
    jwks = tmp_path / "interop-ehr.jwks.json"
    public = ECKey.import_key(key.as_dict(private=False), parameters={"kid": kid, "alg": "ES384", "use": "sig"})
    jwks.write_text(json.dumps(KeySet([public]).as_dict(private=False)))
    site.register("interop-ehr", "--kind", "backend", "--name", "Interop EHR (authlib)", "--jwks", str(jwks),
                  "--scope", "system/*.cruds", "--care-unit", hsa)

    discovery = site.discovery()
    token_endpoint = discovery["token_endpoint"]
    assert "client_credentials" in discovery["grant_types_supported"]
    assert "private_key_jwt" in discovery["token_endpoint_auth_methods_supported"]
    assert "ES384" in discovery["token_endpoint_auth_signing_alg_values_supported"]

    # authlib's defaults sign a one-hour assertion: refused, with a reason a developer can act on
    with OAuth2Client("interop-ehr", key, token_endpoint_auth_method=PrivateKeyJWT(
            token_endpoint, alg="ES384", headers={"kid": kid}), timeout=30) as naive:
        with pytest.raises(OAuthError) as too_long:
            naive.fetch_token(token_endpoint, grant_type="client_credentials", scope="system/*.rs")
    assert too_long.value.error == "invalid_client" and "5 minutes" in str(too_long.value.description)

    token_requests: list[httpx.Request] = []

    def remember(request: httpx.Request) -> None:
        if str(request.url) == token_endpoint:
            token_requests.append(request)

    fhir = site.server.fhir_base
    with OAuth2Client("interop-ehr", key, token_endpoint_auth_method=BackendServicesJWT(
            token_endpoint, alg="ES384", headers={"kid": kid}), timeout=30,
            event_hooks={"request": [remember]}) as ehr:
        token = ehr.fetch_token(token_endpoint, grant_type="client_credentials", scope="system/*.rs")
        assert token["token_type"].lower() == "bearer" and token["scope"] == "system/*.rs"
        assert 0 < token["expires_in"] <= 900
        claims = _claims(site, token["access_token"])
        assert claims["care_unit"] == hsa and claims["client_id"] == "interop-ehr"

        # the request authlib sent: a private_key_jwt assertion, signed ES384 with the registered key
        sent = parse_qs(token_requests[-1].content.decode())
        assert sent["client_assertion_type"] == [ASSERTION_TYPE]
        assertion = jwt.decode(sent["client_assertion"][0], KeySet([public]), algorithms=["ES384"])
        assert assertion.header["alg"] == "ES384" and assertion.header["kid"] == kid
        assert assertion.claims["iss"] == assertion.claims["sub"] == "interop-ehr"
        assert assertion.claims["aud"] == token_endpoint and assertion.claims["jti"]

        # the same client sends the bearer token: only agreements the unit takes part in
        response = ehr.get(f"{fhir}/CarePlan", params={"_count": "100"})
        assert response.status_code == 200, response.text
        assert _bundle_ids(response.json(), "CarePlan") == _involving(world, BACKEND_UNIT)
        outside = world.not_involving(BACKEND_UNIT)[0]
        assert ehr.get(f"{fhir}/CarePlan/{outside.plan}").status_code == 404
        assert ehr.get(f"{fhir}/CarePlan", params={"_id": outside.plan}).json().get("entry", []) == []

        # system/*.rs reads only
        ours = world.by_author(BACKEND_UNIT)[0]
        goal = _goal(ours.patient, f"PractitionerRole/{ours.staff_roles[0]}")
        headers = {"content-type": "application/fhir+json"}
        refused = ehr.post(f"{fhir}/Goal", json=goal, headers=headers)
        assert refused.status_code == 403, refused.text

        # a new token that may write (authlib signs a new assertion), then create in the unit's agreement
        token = ehr.fetch_token(token_endpoint, grant_type="client_credentials", scope="system/*.cruds")
        assert token["scope"] == "system/*.cruds"
        created = ehr.post(f"{fhir}/Goal", json=goal, headers=headers)
        assert created.status_code == 201, created.text
        goal_id = created.json()["id"]
        assert created.headers["location"].startswith(f"{fhir}/Goal/{goal_id}/_history/")
        read = ehr.get(f"{fhir}/Goal/{goal_id}")
        assert read.status_code == 200 and read.json()["subject"]["reference"] == f"Patient/{ours.patient}"
        found = ehr.get(f"{fhir}/Goal", params={"patient": ours.patient, "_count": "100"})
        assert goal_id in _bundle_ids(found.json(), "Goal")

        # ... but not for a patient whose agreements the unit takes no part in: to this client
        # that patient does not exist (422, as for a reference to nothing)
        elsewhere = ehr.post(f"{fhir}/Goal", headers=headers,
                             json=_goal(outside.patient, f"PractitionerRole/{outside.staff_roles[0]}"))
        assert elsewhere.status_code == 422, elsewhere.text
        assert elsewhere.json()["issue"][0]["code"] == "not-found"

    # the assertion authlib sent is good once: sent again, it is refused as a replay
    assert len(token_requests) == 2  # the two grants above (the refused naive client is another session)
    first = token_requests[0]
    replay = httpx.post(token_endpoint, content=first.content, timeout=10,
                        headers={"content-type": first.headers["content-type"]})
    assert replay.status_code == 401, replay.text
    assert replay.json()["error"] == "invalid_client" and "replay" in replay.json()["error_description"]


def test_the_token_command_gets_a_token_for_the_demo_ehr(site: Site, tmp_path: Path) -> None:
    """``patientkontrakt token demo-ehr`` (the README's curl walk-through): a private_key_jwt token
    request to the running server, with the key the demo wrote; the token acts for Björkbacken."""
    key_folder = tmp_path / "keys"
    key_folder.mkdir()
    signing = key_folder / "signing.pem"
    signing.write_bytes(site.signing_key.read_bytes())
    demo = subprocess.run([*_command(), "demo", "--agreements", "0"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=180, env=_environment(site.pg_url, signing, PK_BASE_URL=site.server.base_url))
    assert demo.returncode == 0, demo.stderr
    assert (key_folder / "demo-ehr-key.pem").exists()
    done = subprocess.run([*_command(), "token", "demo-ehr"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=_environment(site.pg_url, signing, PK_BASE_URL=site.server.base_url))
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    plans = httpx.get(f"{site.server.fhir_base}/CarePlan", params={"_count": "100"}, timeout=10,
                      headers={"authorization": f"Bearer {token}"})
    assert plans.status_code == 200, plans.text
    seen = {e["resource"]["id"] for e in plans.json().get("entry", [])}
    assert seen == _involving(site.world, "demo-org-vc-bjorkbacken")
    # without the server's own key the command explains itself instead of a traceback
    wrong = subprocess.run([*_command(), "token", "demo-ehr", "--key", str(tmp_path / "missing.pem")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60,
                           env=_environment(site.pg_url, signing, PK_BASE_URL=site.server.base_url))
    assert wrong.returncode == 1 and "missing.pem" in wrong.stderr and "Traceback" not in wrong.stderr
