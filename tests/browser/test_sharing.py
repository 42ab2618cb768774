"""Samtycke, spärr and the kommun's SIP in a real browser (Playwright, Debian's Chromium).

The agreement of the demo region's ``TARGET`` is Vårdcentralen Björkbacken's (Region Exempel);
the medicine clinic of the hospital (the same provider) and Hemsjukvården Exempelstad
(Exempelstads kommun, another provider) take part in it. A nurse at the hemsjukvård opens the
kommun's SIP, sees the kommun's part and that the agreement needs the patient's samtycke,
records it, and then sees the region's agreement; a spärr recorded at the vårdcentral hides the
agreement from the hospital, whose nurse is told that blocked information exists. The new pages
pass axe-core and do not scroll sideways on a phone.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, expect

from api.pages.sharing import consent_resource
from tests.browser import test_pages as pages
from tests.browser.test_pages import (
    PHONE,
    Site,
    _context,
    _personnummer_of,
    check_accessibility,
    no_sideways_scroll,
    photograph,
    sign_in_staff,
)
from tests.conftest import make_settings
from tests.pages.test_sharing_pages import sip

pytestmark = pytest.mark.slow
server, site, browser, world = pages.server, pages.site, pages.browser, pages.world

VC = "demo-org-vc-bjorkbacken"
CLINIC = "demo-org-med-lanssjukhuset"
HOMECARE = "demo-org-hemsjukvard-exempelstad"
TARGET = 2


def _fhir(site: Site, org: str, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {**site.world.staff(site.world.role_at(org, "nurse")), "content-type": "application/fhir+json"}
    return httpx.request(method, f"{site.base}/fhir/{path}", headers=headers, timeout=30,
                         content=orjson.dumps(body) if body is not None else None)


@pytest.fixture
def kommun_sip(site: Site, signing_key: Path) -> str:
    """The kommun's SIP of the agreement (before the browser: the tokens are made with
    ``asyncio.run``, and Playwright's sync API holds this thread's event loop), written with
    tokens the live server issues."""
    live = make_settings(site.world.settings.database_url, base_url=site.base, signing_key=signing_key)
    return _kommun_sip(dataclasses.replace(site, world=dataclasses.replace(site.world, settings=live)),
                       site.world.agreements[TARGET])


def _kommun_sip(site: Site, target: Any) -> str:
    """The kommun's SIP of the agreement, written through the API by the hemsjukvård: with the
    patient's samtycke to the SIP (which lets the unit see the agreement it belongs to), revoked
    after, so the nurse starts without one (until the demo region has SIPs of its own)."""
    consent = consent_resource(target.patient, "samtycke", HOMECARE, "", datetime.date.today())
    made = _fhir(site, HOMECARE, "POST", "Consent", consent)
    assert made.status_code == 201, made.text
    created = _fhir(site, HOMECARE, "POST", "CarePlan", sip(target, HOMECARE, VC, made.json()["id"]))
    assert created.status_code == 201, created.text
    revoked = _fhir(site, HOMECARE, "PUT", f"Consent/{made.json()['id']}", {**made.json(), "status": "inactive"})
    assert revoked.status_code == 200, revoked.text
    return str(created.json()["id"])


def test_a_kommun_nurse_sees_the_sip_and_after_the_samtycke_the_regions_agreement(site: Site, kommun_sip: str,
                                                                                   browser: Browser) -> None:
    target, sip_id = site.world.agreements[TARGET], kommun_sip
    context = _context(browser, site, inject=True)
    page = context.new_page()
    sign_in_staff(page, site.world.role_at(HOMECARE, "nurse"))
    sips = page.locator("section", has=page.get_by_role("heading", name="SIP, samordnade individuella planer"))
    sips.locator(f'a[href="/personal/sip/{sip_id}"]').click()
    page.wait_for_url(re.compile(f"/personal/sip/{sip_id}$"))

    interventions = page.locator("section", has=page.get_by_role("heading", name="Vem gör vad"))
    expect(interventions).to_contain_text("Hemsjukvården ger insulin morgon och kväll.")
    expect(interventions).to_contain_text("Hemsjukvården Exempelstad")
    expect(page.locator("main")).to_contain_text("Övergripande ansvar: Kommun")
    notice = page.locator(".blocked-notice")
    expect(notice).to_contain_text("patientens samtycke")
    expect(notice.get_by_role("link", name="Registrera samtycke")).to_be_visible()
    assert page.locator(f'a[href="/personal/avtal/{target.plan}"]').count() == 0
    check_accessibility(page, "the SIP, before the samtycke")
    photograph(page, "personal-sip-desktop")

    page.get_by_role("radio", name=re.compile("^Samtycke")).check()
    page.get_by_role("button", name="Registrera", exact=True).click()
    page.wait_for_url(re.compile(r"\?sparat=1$"))
    expect(page.locator(".blocked-notice")).to_have_count(0)
    consents = page.locator("section.consents")
    expect(consents).to_contain_text("Samtycke")
    expect(consents).to_contain_text("Registrerat av Hemsjukvården Exempelstad")
    page.locator(f'a[href="/personal/avtal/{target.plan}"]').click()
    page.wait_for_url(re.compile(f"/personal/avtal/{target.plan}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(_personnummer_of(site, target.patient))
    expect(page.locator("main")).to_contain_text("Vårdcentralen Björkbacken")
    check_accessibility(page, "the region's agreement, seen by the kommun")
    context.close()


def test_a_sparr_at_the_vardcentral_hides_its_part_and_the_hospital_is_told(site: Site, browser: Browser) -> None:
    target = site.world.agreements[TARGET]
    number = _personnummer_of(site, target.patient)
    hospital = _context(browser, site)
    nurse = hospital.new_page()
    sign_in_staff(nurse, site.world.role_at(CLINIC, "nurse"))
    nurse.goto(f"/personal/avtal/{target.plan}")
    expect(nurse.get_by_role("heading", level=1)).to_contain_text(number)  # before the spärr

    vardcentral = _context(browser, site, inject=True)
    page = vardcentral.new_page()
    sign_in_staff(page, site.world.role_at(VC, "nurse"))
    page.goto(f"/personal/avtal/{target.plan}")
    check_accessibility(page, "the agreement with its section on samtycke and spärr")
    page.get_by_role("radio", name=re.compile("^Inre spärr")).check()
    page.select_option("#custodian", VC)
    page.get_by_role("button", name="Registrera", exact=True).click()
    page.wait_for_url(re.compile(r"\?sparat=1$"))
    expect(page.locator("section.consents")).to_contain_text("Inre spärr")
    expect(page.locator("section.consents")).to_contain_text("Uppgifter hos: Vårdcentralen Björkbacken")
    photograph(page, "personal-sparr-recorded-desktop")

    nurse.goto(f"/personal/avtal/{target.plan}")
    expect(nurse.get_by_role("heading", level=1)).to_have_text("Finns inte")
    nurse.goto("/personal")
    nurse.fill("#q", number)
    nurse.get_by_role("button", name="Sök").click()
    notice = nurse.locator(".blocked-notice")
    expect(notice).to_contain_text("patienten har spärrat")
    assert "Björkbacken" not in notice.inner_text()  # that it exists, never where
    notice.get_by_role("link", name="Samtycke och spärr för patienten").click()
    expect(nurse.locator(".blocked-notice")).to_contain_text("Inte heller nödåtkomst går förbi en spärr")
    photograph(nurse, "personal-consents-blocked-desktop")
    nurse.set_viewport_size(PHONE)
    no_sideways_scroll(nurse, "the patient's samtycke and spärr, on a phone")
    photograph(nurse, "personal-consents-blocked-phone")
    hospital.close()
    vardcentral.close()


def test_emergency_access_shows_a_banner_and_ends(site: Site, kommun_sip: str, browser: Browser) -> None:
    """The kommun's nurse, whose patient cannot consent, uses emergency access from the SIP: for a
    limited time the agreement is shown, under a banner saying so, until the nurse ends it."""
    target, sip_id = site.world.agreements[TARGET], kommun_sip
    context = _context(browser, site, inject=True)
    page = context.new_page()
    sign_in_staff(page, site.world.role_at(HOMECARE, "nurse"))
    page.goto(f"/personal/sip/{sip_id}")
    page.locator(".blocked-notice").get_by_role("link", name="Nödåtkomst").click()
    expect(page.locator("main")).to_contain_text("Allt du ser loggas med ditt skäl")
    check_accessibility(page, "the emergency access form")
    photograph(page, "personal-emergency-desktop")
    page.get_by_role("button", name="Starta nödåtkomst").click()
    expect(page.locator("#reason-error")).to_contain_text("10 till 1000 tecken")  # a reason is required
    page.fill("#reason", "Medvetslös vid ankomst, anhöriga nås inte. " + "å" * 900)
    page.get_by_role("button", name="Starta nödåtkomst").click()
    page.wait_for_url(re.compile(f"/personal/sip/{sip_id}$"))
    banner = page.locator(".emergency-banner")
    expect(banner).to_contain_text(re.compile(r"Nödåtkomst aktiv för Eva Fiktivsson till \d\d:\d\d"))
    expect(banner).to_contain_text("allt du ser loggas med ditt skäl")
    check_accessibility(page, "the SIP under emergency access")
    photograph(page, "personal-emergency-banner-desktop")
    page.locator(f'a[href="/personal/avtal/{target.plan}"]').click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(_personnummer_of(site, target.patient))
    expect(page.locator(".emergency-banner")).to_be_visible()
    page.get_by_role("button", name="Avsluta nödåtkomst").click()
    page.wait_for_url(re.compile(r"/personal$"))
    expect(page.locator(".emergency-banner")).to_have_count(0)
    page.goto(f"/personal/avtal/{target.plan}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Finns inte")
    context.close()
