"""The patient's spärrar and samtycken in a real browser (Playwright, Debian's Chromium): the units
the patient asked record a samtycke and an inre spärr through the live server's FHIR API, the
kommun writes a SIP; the patient signs in, sees the SIP's interventions beside the agreement's
activities labelled by who does them, follows the link to "Dina spärrar och samtycken" and reads
both in plain Swedish with the units' names. The pages pass axe-core in Swedish and English and
do not scroll sideways on a 375 px phone.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import test_pages as pages
from tests.browser.test_pages import (
    DESKTOP,
    PHONE,
    Site,
    _context,
    _personnummer_of,
    check_accessibility,
    no_sideways_scroll,
    sign_in_patient,
)
from tests.conftest import make_settings
from tests.pages.test_mitt_consents import _sip
from tests.security.test_consent_matrix import HOMECARE, TARGET, VC, consent

pytestmark = pytest.mark.slow
# the fixtures of the pages' browser tests: a live server, the demo region, Chromium
server, site, browser, world = pages.server, pages.site, pages.browser, pages.world


def _name(site: Site, org: str) -> str:
    return str(next(o["name"] for o in site.world.generator.region.organizations if o["id"] == org))


def _record(site: Site, signing_key: Path, unit: str, resource: dict[str, Any]) -> str:
    """Create ``resource`` as a nurse of ``unit``, with a token as this server issues it."""
    live = dataclasses.replace(site.world, settings=make_settings(site.world.settings.database_url,
                                                                  base_url=site.base, signing_key=signing_key))
    headers = {**live.staff(live.role_at(unit, "nurse")), "content-type": "application/fhir+json"}
    response = httpx.post(f"{site.base}/fhir/{resource['resourceType']}", json=resource, headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
def number(site: Site, signing_key: Path) -> str:
    """The patient's samtycke at the hemsjukvård, the kommun's SIP and an inre spärr at the
    vårdcentral, recorded before the browser starts (Playwright's loop would refuse the token's
    look-up); the patient's personnummer."""
    agreement = site.world.agreements[TARGET]
    samtycke = _record(site, signing_key, HOMECARE, consent(agreement.patient, "samtycke", "IRCP", HOMECARE))
    _record(site, signing_key, HOMECARE, _sip(agreement.patient, agreement.plan, samtycke))
    _record(site, signing_key, VC, consent(agreement.patient, "inre-sparr", "CST", VC))
    return _personnummer_of(site, agreement.patient)


def test_the_patient_sees_their_sparrar_and_samtycken(site: Site, number: str, browser: Browser) -> None:
    homecare, vc = _name(site, HOMECARE), _name(site, VC)
    context = _context(browser, site)
    page = context.new_page()
    sign_in_patient(page, number)

    sip = page.locator("section.sip")
    expect(sip).to_contain_text("I din SIP (samordnad individuell plan): Min SIP")
    expect(sip).to_contain_text("Kommunen har det övergripande ansvaret för din SIP.")
    wound = sip.locator("li", has_text="Hemsjukvården lägger om såret")
    expect(wound.locator(".sip-who")).to_have_text(f"Vem gör det: Kommunen, {homecare}")
    expect(sip.locator("li", has_text="blodsockret").locator(".sip-who")).to_have_text(f"Vem gör det: Regionen, {vc}")

    page.get_by_role("link", name="Se dina spärrar och samtycken").click()
    page.wait_for_url(re.compile(r"/mitt/sparrar$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Dina spärrar och samtycken")
    samtycken = page.locator("section", has=page.get_by_role("heading", name="Dina samtycken"))
    expect(samtycken).to_contain_text(f"Du har gett ditt samtycke till att {homecare} får ta del av uppgifter om "
                                      "dig från andra vårdgivare.")
    expect(samtycken).to_contain_text(f"Registrerat av {homecare} den 1 januari 2024")
    sparrar = page.locator("section", has=page.get_by_role("heading", name="Dina spärrar"))
    expect(sparrar).to_contain_text(f"Uppgifterna hos {vc} är spärrade: de visas inte för andra enheter, inte "
                                    "heller hos andra vårdgivare.")
    expect(sparrar).to_contain_text("En spärr hävs bara om du begär det, av den vårdenhet som har uppgifterna.")
    expect(page.get_by_role("heading", name="Tidigare")).to_have_count(0)
    page.get_by_text("Vad betyder samtycke och spärr?").click()
    expect(page.locator("details.explain")).to_contain_text("Inte ens i en nödsituation får vården gå förbi en spärr.")
    page.locator("nav.crumbs").get_by_role("link", name="Mitt patientkontrakt").click()
    page.wait_for_url(re.compile(r"/mitt$"))
    context.close()


@pytest.mark.parametrize("language", ["sv", "en"])
def test_the_consent_page_and_the_sip_are_accessible_and_fit_a_phone(site: Site, number: str, browser: Browser,
                                                                      language: str) -> None:
    for viewport, suffix in ((DESKTOP, "desktop"), (PHONE, "phone")):
        context = _context(browser, site, language, viewport, inject=True)
        page = context.new_page()
        sign_in_patient(page, number)
        for name, path in (("mitt-agreement", "/mitt"), ("mitt-consents", "/mitt/sparrar")):
            page.goto(path)
            _check(page, f"{name}-{language}-{suffix}", language)
        context.close()


def _check(page: Page, name: str, language: str) -> None:
    assert page.locator("html").get_attribute("lang") == language, name
    check_accessibility(page, name)
    if name.endswith("-phone"):
        no_sideways_scroll(page, name)
