"""Contact paths in a real browser (Playwright, Debian's Chromium): the patient sees how to reach
their fast vårdkontakt and fast läkarkontakt (a direct number with its hours, or the unit's
number), the unit's telephone hours, address and opening hours, and what to do when the unit is
closed (1177, 112); a nurse changes the unit's telephone hours at ``/personal/enhet`` and the
patient sees the change; staff of another unit cannot change it. The new and changed pages pass
axe-core in Swedish and English and do not scroll sideways on a 375 px phone.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from patientkontrakt.domain import codes
from patientkontrakt.domain.contact_paths import role_contact, unit_contact
from patientkontrakt.domain.demo import DemoGenerator
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
    sign_in_staff,
)
from tests.conftest import make_settings

pytestmark = pytest.mark.slow
# the fixtures of the pages' browser tests: a live server, the demo region, Chromium
server, site, browser, world = pages.server, pages.site, pages.browser, pages.world


def _current(team: dict[str, Any], role: str) -> str:
    """The PractitionerRole id of the team's current holder of ``role``."""
    return next(p["member"]["reference"].split("/")[1] for p in team["participant"]
                if p["role"][0]["coding"][0]["code"] == role and "end" not in p["period"])


def _with_direct_line(site: Site) -> tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An active agreement whose fast vårdkontakt has a direct line: (agreement, nurse's role,
    doctor's role, the unit's Organization)."""
    region = site.world.generator.region
    roles = {r["id"]: r for r in region.roles}
    orgs = {o["id"]: o for o in region.organizations}
    resources = list(DemoGenerator(seed=1).agreements(len(site.world.agreements)))
    for agreement, created in zip(site.world.agreements, resources, strict=True):
        team = next(r for r in created if r["resourceType"] == "CareTeam")
        if agreement.status != "active":
            continue
        nurse = roles[_current(team, codes.FAST_VARDKONTAKT)]
        if role_contact(nurse, orgs[agreement.author]).direct is not None:
            return agreement, nurse, roles[_current(team, codes.FAST_LAKARKONTAKT)], orgs[agreement.author]
    raise AssertionError("no active demo agreement has a fast vårdkontakt with a direct line")


def _name(role: dict[str, Any]) -> str:
    return str(role["practitioner"]["display"])


def _reach(page: Page) -> Any:
    return page.locator("section.reach").first


def test_the_patient_sees_how_to_reach_the_contacts_and_the_unit(site: Site, browser: Browser) -> None:
    agreement, nurse, doctor, org = _with_direct_line(site)
    unit = unit_contact(org)
    assert unit.phone is not None
    direct = role_contact(nurse, org).direct
    assert direct is not None and role_contact(doctor, org).direct is None
    context = _context(browser, site)
    page = context.new_page()
    sign_in_patient(page, _personnummer_of(site, agreement.patient))
    reach = _reach(page)
    expect(reach.get_by_role("heading", name="Så når du oss")).to_be_visible()
    text = reach.inner_text()
    # the fast vårdkontakt: a direct number and when it answers, the unit's number at other times
    assert f"Fast vårdkontakt, {_name(nurse)}" in text
    assert f"Direktnummer: {direct.number}, svarar mån–tors 08.00–09.00" in text
    assert f"Andra tider: ring {unit.name}" in text
    # the fast läkarkontakt: through the unit
    assert f"Fast läkarkontakt, {_name(doctor)}" in text
    assert f"Ring {unit.name} och fråga efter {_name(doctor)}: {unit.phone.number}" in text
    # the unit: phone with telephone hours, address, opening hours
    assert f"Telefon: {unit.phone.number}" in text
    assert "Telefontider: mån–fre 08.00–10.00; mån–fre 13.00–14.30" in text
    assert f"Adress: {unit.address.text}" in text
    assert "Öppettider: mån–tors 08.00–17.00; fre 08.00–15.00" in text
    # when it is closed
    assert "När mottagningen är stängd" in text
    assert "Sjukvårdsrådgivning dygnet runt: ring 1177 (1177 Vårdguiden)." in text
    assert "Vid akut eller livshotande tillstånd: ring 112." in text
    expect(reach.locator('a[href="tel:112"]')).to_have_text("112")
    expect(reach.locator(f'a[href="tel:{direct.dial}"]')).to_have_text(direct.number)

    page.goto("/mitt?utskrift=1")
    printed = _reach(page).inner_text()
    assert f"Direktnummer: {direct.number}" in printed and "ring 112" in printed
    context.close()


def test_a_nurse_changes_the_units_telephone_hours_and_the_patient_sees_them(site: Site, browser: Browser) -> None:
    agreement, nurse, _doctor, org = _with_direct_line(site)
    staff = _context(browser, site)
    page = staff.new_page()
    sign_in_staff(page, nurse["id"])
    page.get_by_role("link", name="Enhetens kontaktuppgifter").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Enhetens kontaktuppgifter")
    assert page.input_value("#phone") == unit_contact(org).phone.number  # type: ignore[union-attr]
    assert page.input_value("#phone_hours-0-days") == "mon-fri"
    assert page.input_value("#phone_hours-1-start") == "13:00"

    page.fill("#phone_hours-0-end", "07:00")  # before the start
    page.get_by_role("button", name="Spara").click()
    expect(page.locator("#phone_hours-0-end-error")).to_contain_text("Sluttiden ska vara efter starttiden")
    expect(page.locator("#phone_hours-0-end")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("alert")).to_contain_text("Rätta följande")

    page.select_option("#phone_hours-0-days", "mon-thu")
    page.fill("#phone_hours-0-start", "07:45")
    page.fill("#phone_hours-0-end", "09:30")
    page.select_option("#phone_hours-1-days", "")
    page.fill("#phone_hours-1-start", "")
    page.fill("#phone_hours-1-end", "")
    page.select_option("#phone_hours-2-days", "fri")
    page.fill("#phone_hours-2-start", "08:00")
    page.fill("#phone_hours-2-end", "09:00")
    page.fill("#line", "Björkbacksvägen 6")
    page.get_by_role("button", name="Spara").click()
    page.wait_for_url(re.compile(r"/personal/enhet\?sparat=1$"))
    expect(page.get_by_role("status")).to_have_text("Sparat.")
    assert page.input_value("#phone_hours-0-start") == "07:45"
    staff.close()

    context = _context(browser, site)
    patient = context.new_page()
    sign_in_patient(patient, _personnummer_of(site, agreement.patient))
    text = _reach(patient).inner_text()
    assert "Telefontider: mån–tors 07.45–09.30; fre 08.00–09.00" in text
    assert "Adress: Björkbacksvägen 6" in text
    assert "13.00–14.30" not in text
    context.close()


def test_staff_of_another_unit_cannot_change_the_units_contact_details(site: Site, signing_key: Path) -> None:
    """Over the live server's FHIR API (no page edits another unit's details)."""
    agreement, _nurse, _doctor, _org = _with_direct_line(site)
    other = next(u for u in site.world.vardcentraler() if u != agreement.author)
    # a token as this server issues it to the other unit's nurse
    live = dataclasses.replace(site.world, settings=make_settings(site.world.settings.database_url,
                                                                  base_url=site.base, signing_key=signing_key))
    headers = {**live.staff(live.role_at(other, "nurse")), "content-type": "application/fhir+json"}
    url = f"{site.base}/fhir/Organization/{agreement.author}"
    current = httpx.get(url, headers=headers).json()
    changed = {k: v for k, v in current.items() if k != "meta"}
    changed["telecom"] = [{"system": "phone", "value": "0123-999 99", "use": "work"}]
    response = httpx.put(url, json=changed, headers=headers)
    assert response.status_code == 403, response.text
    assert httpx.get(url, headers=headers).json()["meta"]["versionId"] == current["meta"]["versionId"]


def test_the_page_edits_the_unit_signed_in_for(site: Site, browser: Browser) -> None:
    agreement, _nurse, _doctor, org = _with_direct_line(site)
    other = next(u for u in site.world.vardcentraler() if u != agreement.author)
    context = _context(browser, site)
    page = context.new_page()
    sign_in_staff(page, site.world.role_at(other, "nurse"))
    page.goto("/personal/enhet")
    other_name = next(o["name"] for o in site.world.generator.region.organizations if o["id"] == other)
    assert other_name in page.locator("main").inner_text() and org["name"] not in page.locator("main").inner_text()
    context.close()


@pytest.mark.parametrize("language", ["sv", "en"])
def test_the_contact_pages_are_accessible_and_fit_a_phone(site: Site, browser: Browser, language: str) -> None:
    agreement, nurse, _doctor, _org = _with_direct_line(site)
    for viewport, suffix in ((DESKTOP, "desktop"), (PHONE, "phone")):
        context = _context(browser, site, language, viewport, inject=True)
        page = context.new_page()
        sign_in_staff(page, nurse["id"])
        page.goto("/personal/enhet")
        _check(page, f"personal-unit-{language}-{suffix}", language)
        page.fill("#phone", "nummer")
        page.fill("#opening-2-start", "08:00")  # a time without days
        page.get_by_role("button", name=re.compile("^(Spara|Save)$")).click()
        expect(page.locator("#phone-error")).to_be_visible()
        _check(page, f"personal-unit-errors-{language}-{suffix}", language)
        context.close()

        context = _context(browser, site, language, viewport, inject=True)
        page = context.new_page()
        sign_in_patient(page, _personnummer_of(site, agreement.patient))
        for name, path in (("mitt-agreement", "/mitt"), ("mitt-print", "/mitt?utskrift=1")):
            page.goto(path)
            expect(_reach(page)).to_be_visible()
            _check(page, f"{name}-{language}-{suffix}", language)
        context.close()


def _check(page: Page, name: str, language: str) -> None:
    assert page.locator("html").get_attribute("lang") == language, name
    check_accessibility(page, name)
    if name.endswith("-phone"):
        no_sideways_scroll(page, name)
