"""The Content-Security-Policy in a real browser (Playwright, Debian's Chromium), on a live server.

The policy (``api/headers.py``) allows the service's own scripts and styles only, so what would
break under it breaks here: the API explorer at ``/docs`` (Swagger UI, served by the service
itself) must render the service's operations with no violation reported; and no page of the
service may be shown inside another site's frame (``frame-ancestors 'none'``). The staff pages,
the e-service and the sign-in are exercised under the same policy by ``test_pages.py`` and
``test_login.py``, which fail on any error the browser reports.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.browser.test_login import CHROMIUM, CHROMIUM_ARGS
from tests.interop.test_fhirpy import Server
from tests.interop.test_smart_clients import live_server

pytestmark = pytest.mark.slow

FRAMED = ("/", "/docs", "/personal", "/mitt", "/oauth/authorize")


@pytest.fixture(scope="module")
def server(pg_url: str, signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with live_server(pg_url, signing_key, tmp_path_factory.mktemp("csp-server")) as running:
        yield running


@pytest.fixture
def browser(server: Server) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's Chromium for the browser tests")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


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

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


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
