"""Signing in to pages that are not for you, in Chromium: a patient at the staff pages finds the
patients folded away on the test sign-in page, signs in anyway, and is shown (in Swedish, with
no OAuth error text) whom the pages are for and the way to Mitt patientkontrakt."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from tests.browser import test_pages as pages
from tests.browser.test_pages import DESKTOP, Site, _context, check_accessibility

pytestmark = pytest.mark.slow
server, site, browser, world = pages.server, pages.site, pages.browser, pages.world  # the pages' fixtures


def test_a_patient_signing_in_to_the_staff_pages_is_shown_the_way_to_mitt(site: Site, browser: Browser) -> None:
    patient = site.world.agreements[0].patient
    context = _context(browser, site, "sv", DESKTOP, inject=True)
    page = context.new_page()
    try:
        page.goto("/personal")
        page.get_by_role("link", name=re.compile("Logga in")).click()
        # the staff first; the patients folded away below them
        expect(page.get_by_role("heading", level=2, name=re.compile("^Personal: välj uppdrag"))).to_be_visible()
        choice = page.locator(f'button[name="as"][value="patient:{patient}"]')
        expect(choice).to_be_hidden()
        page.locator("details.other-users > summary").click()
        expect(page.get_by_role("heading", level=2, name="Patienter: välj vem du är")).to_be_visible()
        check_accessibility(page, "test-idp-personal-patients-open")
        choice.click()

        expect(page.get_by_role("heading", level=1)).to_have_text("De här sidorna är för personal")
        text = page.locator("main").inner_text()
        assert "Du loggade in som patient" in text and "access_denied" not in text, text
        check_accessibility(page, "wrong-user-personal")
        page.get_by_role("link", name="Gå till Mitt patientkontrakt").click()
        page.wait_for_url(re.compile(r"/mitt$"))
        expect(page.get_by_role("link", name="Logga in")).to_be_visible()
    finally:
        context.close()
