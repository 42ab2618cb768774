"""The Content-Security-Policy in a real browser (Playwright, Debian's Chromium), on a live server.

The policy (``api/headers.py``) allows the service's own scripts and styles only, so what would
break under it breaks here: the API explorer at ``/docs`` (Swagger UI, served by the service
itself) must render the service's operations with no violation reported; and no page of the
service may be shown inside another site's frame (``frame-ancestors 'none'``). The staff pages,
the e-service and the sign-in are exercised under the same policy by ``test_pages.py`` and
``test_login.py``, which fail on any error the browser reports.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.support import chromium, register_page_clients
from tests.interop import test_smart_clients as smart
from tests.interop.test_fhirpy import Server
from tests.processes import HtmlHandler, loopback_site
from tests.security import conftest as security
from tests.security import test_external_idp as external
from tests.security.conftest import World
from tests.security.test_external_idp import Servers

pytestmark = pytest.mark.slow

FRAMED = ("/", "/docs", "/personal", "/mitt", "/oauth/authorize")
world = security.world  # the fixture: the demo region loaded into the clean database
servers = external.servers  # the fixture: the external test provider and the service signing in through it


server = smart.server  # the fixture: `patientkontrakt serve` with the test IdP, for this module


@pytest.fixture
def browser(server: Server) -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def reported(page: Page) -> list[str]:
    """Errors the page reports from now on (CSP violations are console errors in Chromium)."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.text} ({m.location.get('url')})")
            if m.type == "error" and not str(m.location.get("url", "")).endswith("/favicon.ico") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def test_the_api_explorer_renders_under_the_policy(server: Server, browser: Browser, tmp_path: Path) -> None:
    context = browser.new_context()
    page = context.new_page()
    problems = reported(page)
    try:
        response = page.goto(f"{server.base_url}/docs")
        assert response is not None and response.status == 200
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Patientkontrakt", timeout=15_000)
        operations = page.locator(".opblock")
        expect(operations.first).to_be_visible()
        assert operations.count() > 10
        # an operation opens, with its parameters (Swagger UI's own rendering, under the policy)
        page.locator(".opblock-summary", has_text="/fhir/metadata").first.click()
        expect(page.locator(".opblock.is-open")).to_have_count(1)
        page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
        assert not problems, f"the browser reported errors on /docs: {problems}"
    finally:
        context.close()


@contextmanager
def another_site(body: str) -> Iterator[str]:
    """A site of someone else's on loopback (another origin: another port) serving ``body``."""
    page = body.encode()

    class Handler(HtmlHandler):
        def do_GET(self) -> None:
            self.send_html(page)

    with loopback_site(Handler) as origin:
        yield f"{origin}/"


def test_no_page_of_the_service_can_be_framed_by_another_site(server: Server, browser: Browser) -> None:
    # the stylesheet is no document and carries no policy: it shows that a frame could load
    control = "/static/site.css"
    frames = "".join(f'<iframe src="{server.base_url}{path}"></iframe>' for path in (*FRAMED, control))
    context = browser.new_context()
    page = context.new_page()
    try:
        with another_site(f"<!doctype html><title>Någon annans sida</title>{frames}") as url:
            page.goto(url)
            page.wait_for_load_state("load")
            children = [frame for frame in page.frames if frame != page.main_frame]
            assert len(children) == len(FRAMED) + 1
            shown = [frame.url.removeprefix(server.base_url) for frame in children]
            assert control in shown, f"the control frame did not load, so the test shows nothing: {shown}"
            # every page of the service was refused: the browser's error page, never the service's content
            refused = [frame for frame in children if frame.url.startswith("chrome-error://")]
            assert len(refused) == len(FRAMED), shown
            for frame in refused:
                assert "Patientkontrakt" not in frame.content()
    finally:
        context.close()


# -- form-action and the external identity provider ------------------------------------------------


@pytest.fixture
def idp_site(servers: Servers, world: World, signing_key: Path) -> Iterator[Servers]:
    """The service signing in through the external test provider (its own origin), the demo
    region loaded and the pages' clients registered for the service's address."""
    register_page_clients(world.settings.database_url, servers.base, signing_key)
    yield servers
    assert servers.service.process.poll() is None, "the service died during the test"


@pytest.fixture
def idp_browser(idp_site: Servers) -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def test_a_form_posted_after_the_session_ended_goes_on_to_the_identity_provider(
        idp_site: Servers, idp_browser: Browser) -> None:
    """Chrome applies form-action to the redirects that follow a form's submission: the staff
    pages' search form, submitted once the sign-in has ended, is redirected to the sign-in and on
    to the provider's origin, which the pages' policy must name (and does: only that one)."""
    base, provider = idp_site.base, idp_site.provider.base_url
    context = idp_browser.new_context(base_url=base)
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems = reported(page)
    try:
        page.goto("/personal")
        page.get_by_role("link", name=re.compile("Logga in|Sign in")).click()
        page.wait_for_url(f"{provider}/**")
        page.locator('input[name="identity"][value="nurse"]').check()
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/personal")
        response = page.reload()
        assert response is not None
        form_action = next(d for d in response.headers["content-security-policy"].split(";")
                           if d.strip().startswith("form-action"))
        assert form_action.split()[1:] == ["'self'", provider], form_action

        # the sign-in ends elsewhere (another tab signs out); this page still shows its form
        cookie = next(c["value"] for c in context.cookies() if c["name"] == "pk_session_personal")
        with httpx.Client(base_url=base, cookies={"pk_session_personal": cookie}) as other_tab:
            csrf = re.search(r'name="csrf" value="([^"]+)"', other_tab.get("/personal").text)
            assert csrf
            assert other_tab.post("/personal/logga-ut", data={"csrf": csrf.group(1)}).status_code in (200, 303)
        page.locator("form.filters input[name=q]").fill("Andersson")
        page.locator("form.filters").evaluate("form => form.requestSubmit()")
        page.wait_for_url(f"{provider}/**")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Sign in to")
        assert not problems, f"the browser reported errors: {problems}"
    finally:
        context.close()
