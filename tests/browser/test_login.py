"""Signing in through the test IdP in a real browser: Playwright for Python driving Debian's Chromium.

The browser is Debian's ``chromium`` package (``/usr/bin/chromium``; ``make test`` installs it
when missing), never one Playwright downloads. The server runs as in ``tests/interop``
(``patientkontrakt serve`` with ``PK_TEST_IDP=true``) on the loaded demo region; a public client
is registered with a loopback redirect URI served by a tiny HTTP server in the test, so the
browser really arrives back "in the app". The test computes PKCE itself, opens the authorize URL,
checks the test IdP page (plainly marked as test, Swedish by default, English after the switch in
the header), clicks a nurse's commission, and exchanges the code it gets back for a token with
httpx, then uses the token against the FHIR API.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.support import chromium
from tests.interop import test_smart_clients as smart
from tests.interop.test_fhirpy import Server
from tests.interop.test_smart_clients import register_client
from tests.processes import HtmlHandler, loopback_site
from tests.security import conftest as security
from tests.security.conftest import World

pytestmark = pytest.mark.slow
world = security.world  # the fixture: the demo region (16 agreements) loaded into the clean database

CLIENT_ID = "browser-app"
CLIENT_NAME = "Webbläsarappen"
SCOPE = "openid fhirUser user/*.rs"
# What the page says in English (the message ids): none of it may show on the Swedish page.
ENGLISH_TEXTS = ("Sign in to", "TEST SIGN-IN", "Staff: choose a commission", "Patients: choose who you are",
                 "Skip to content")


# -- the browser, the server and the app's redirect URI -------------------------------------------


server = smart.server  # the fixture: `patientkontrakt serve` with the test IdP, for this module


@dataclass
class App:
    """The app's side of the redirect: a loopback HTTP server that records where the browser came back."""

    redirect_uri: str
    arrivals: list[str] = field(default_factory=list)


@pytest.fixture
def app() -> Iterator[App]:
    arrivals: list[str] = []

    class Callback(HtmlHandler):
        def do_GET(self) -> None:
            arrivals.append(self.path)
            self.send_html(b"<!doctype html><html lang='sv'><title>Tillbaka i appen</title><p>Inloggad.</p></html>")

    with loopback_site(Callback) as origin:
        yield App(f"{origin}/callback", arrivals)


@dataclass
class Site:
    server: Server
    world: World
    app: App


@pytest.fixture
def site(server: Server, world: World, app: App, signing_key: Path) -> Iterator[Site]:
    register_client(world.settings.database_url, signing_key, CLIENT_ID, "--kind", "public", "--name", CLIENT_NAME,
                    "--redirect-uri", app.redirect_uri, "--scope", SCOPE)
    start = server.log_size()
    yield Site(server, world, app)
    print(f"--- server log ({server.base_url}) ---\n{server.log(start)}")
    assert server.process.poll() is None, "the server died during the test"


@pytest.fixture
def browser(site: Site) -> Iterator[Browser]:
    """Debian's Chromium under Playwright. Missing, it is a failure, not a skip: ``make test``
    installs it (``make chromium``).

    It starts after ``site``: while open, Playwright's sync API keeps an asyncio loop running in
    this thread, and the database fixtures behind ``site`` use ``asyncio.run``."""
    with chromium() as launched:
        yield launched


# -- helpers --------------------------------------------------------------------------------------


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _text(page: Page) -> str:
    return page.locator("body").inner_text()


# -- the test -------------------------------------------------------------------------------------


def test_a_nurse_signs_in_through_the_test_idp_in_chromium(site: Site, browser: Browser, tmp_path: Path) -> None:
    world, server = site.world, site.server
    unit = world.agreements[0].author
    nurse = world.role_at(unit, "nurse")
    discovery = httpx.get(f"{server.fhir_base}/.well-known/smart-configuration", timeout=10).json()
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(16)
    authorize_url = discovery["authorization_endpoint"] + "?" + urlencode({
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": site.app.redirect_uri, "scope": SCOPE,
        "state": state, "aud": server.fhir_base, "code_challenge": challenge, "code_challenge_method": "S256"})
    # A browser that prefers a language the service does not offer (Finnish): Swedish by default.
    context = browser.new_context(locale="fi-FI")
    page = context.new_page()
    problems: list[str] = []
    # errors the page reports (scripts, CSP violations, failed loads); the browser's own favicon probe aside
    page.on("console", lambda m: problems.append(f"{m.text} ({m.location.get('url')})")
            if m.type == "error" and not str(m.location.get("url", "")).endswith("/favicon.ico") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        response = page.goto(authorize_url)
        assert response is not None and response.status == 200, _text(page)
        page.screenshot(path=str(tmp_path / "test-idp-sv.png"), full_page=True)

        # plainly marked as a test sign-in: a warning note at the top, the page's own class and title
        warning = page.locator(".warning[role=note]")
        expect(warning).to_be_visible()
        assert "TEST" in warning.inner_text().upper()
        assert "TEST" in page.title().upper()
        expect(page.locator("body.test-idp")).to_have_count(1)
        assert page.locator("button[name=as]").count() > 0

        # Swedish by default: the document says so, offers English, and shows no English text
        expect(page.locator("html")).to_have_attribute("lang", "sv")
        expect(page.get_by_role("link", name="English")).to_be_visible()
        english_on_swedish_page = [t for t in ENGLISH_TEXTS if t in _text(page)]
        assert not english_on_swedish_page, f"English on the Swedish page: {english_on_swedish_page}"
        assert CLIENT_NAME in page.get_by_role("heading", level=1).inner_text()

        # the sign-in is bound to this browser by an HttpOnly cookie for /oauth only
        binding = [c for c in context.cookies() if c["name"] == "pk_auth"]
        assert len(binding) == 1 and binding[0]["httpOnly"] and binding[0]["path"] == "/oauth"

        # the language switch in the header: back on the same sign-in, now in English
        page.get_by_role("link", name="English").click()
        page.wait_for_load_state()
        expect(page.locator("html")).to_have_attribute("lang", "en")
        assert urlsplit(page.url).path == "/oauth/authorize"
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Sign in to {CLIENT_NAME}")
        assert "TEST SIGN-IN" in page.locator(".warning[role=note]").inner_text()
        expect(page.get_by_role("link", name="Svenska")).to_be_visible()
        expect(page.get_by_role("link", name="English")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "test-idp-en.png"), full_page=True)

        # sign in as the nurse's commission: the browser goes back to the app with a code
        page.locator(f'button[name="as"][value="role:{nurse}"]').click()
        page.wait_for_url(re.compile("^" + re.escape(site.app.redirect_uri) + r"\?"))
        expect(page).to_have_title("Tillbaka i appen")
        page.screenshot(path=str(tmp_path / "back-in-the-app.png"))
        assert not problems, f"the browser reported errors: {problems}"
    finally:
        context.close()

    callbacks = [path for path in site.app.arrivals if urlsplit(path).path == "/callback"]
    assert len(callbacks) == 1, site.app.arrivals
    back = parse_qs(urlsplit(callbacks[0]).query)
    assert back["state"] == [state] and "error" not in back
    code = back["code"][0]

    # the app exchanges the code (PKCE) for a token and uses it
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": site.app.redirect_uri,
                "client_id": CLIENT_ID, "code_verifier": verifier}
    token_response = httpx.post(discovery["token_endpoint"], data=exchange, timeout=10)
    assert token_response.status_code == 200, token_response.text
    token = token_response.json()
    assert token["token_type"] == "Bearer" and token["fhirUser"] == f"PractitionerRole/{nurse}"
    assert set(token["scope"].split()) == set(SCOPE.split()) and "id_token" in token
    headers = {"authorization": f"Bearer {token['access_token']}", "accept": "application/fhir+json"}
    role = httpx.get(f"{server.fhir_base}/PractitionerRole/{nurse}", headers=headers, timeout=10)
    assert role.status_code == 200 and role.json()["organization"]["reference"] == f"Organization/{unit}"
    plans = httpx.get(f"{server.fhir_base}/CarePlan", params={"_count": "100"}, headers=headers, timeout=10)
    assert plans.status_code == 200, plans.text
    seen = {e["resource"]["id"] for e in plans.json().get("entry", [])}
    assert seen == {a.plan for a in world.agreements if a.author == unit or unit in a.contributors}

    # the code worked once
    again = httpx.post(discovery["token_endpoint"], data=exchange, timeout=10)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
