"""The staff pages and the patient e-service in a real browser (Playwright, Debian's Chromium).

The journeys of the pages issue, as a nurse and a patient make them: the nurse signs in, creates
a complete agreement for a new patient, changes the fast vårdkontakt and sees the history; the
patient signs in, sees the agreement, adds a goal and sees the nurse's read in "Vem har läst";
a nurse of another unit cannot find the agreement; a stale edit is refused with who changed what;
an invalid personnummer is shown next to its field. Every page is checked with axe-core (no
serious or critical WCAG 2.1 A/AA violation, in Swedish and in English), must not scroll
sideways on a 375 px phone, and is photographed at desktop and phone width into ``docs/screens``
(embedded in ``docs/screens.md``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from stdnum import luhn

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.domain.demo import DemoGenerator
from tests.browser.support import chromium, register_page_clients
from tests.interop import test_smart_clients as smart
from tests.interop.test_fhirpy import Server
from tests.security import conftest as security
from tests.security.conftest import World

pytestmark = pytest.mark.slow
world = security.world

AXE = PROJECT_ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SCREENS = PROJECT_ROOT / "docs" / "screens"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


server = smart.server  # the fixture: `patientkontrakt serve` with the test IdP, for this module


@dataclass
class Site:
    server: Server
    world: World

    @property
    def base(self) -> str:
        return self.server.base_url


@pytest.fixture
def site(server: Server, world: World, signing_key: Path) -> Iterator[Site]:
    """The demo region and the pages' OAuth clients, registered for this server's address."""
    register_page_clients(world.settings.database_url, server.base_url, signing_key)
    start = server.log_size()
    yield Site(server, world)
    print(f"--- server log ({server.base_url}) ---\n{server.log(start)}")
    assert server.process.poll() is None, "the server died during the test"


@pytest.fixture
def browser(site: Site) -> Iterator[Browser]:
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: `make test` installs axe-core (npm ci in tests/browser)")
    with chromium() as launched:
        yield launched


def _context(browser: Browser, site: Site, language: str = "sv", viewport: dict[str, int] = DESKTOP,
             *, inject: bool = False) -> BrowserContext:
    """A browser session. ``inject``: the page's Content-Security-Policy lets the test add axe-core
    (the service's own pages allow no inline script)."""
    context = browser.new_context(base_url=site.base, locale="sv-SE" if language == "sv" else "en-GB",
                                  viewport=viewport, bypass_csp=inject)
    context.set_default_timeout(15_000)
    return context


def sign_in_staff(page: Page, role_id: str) -> None:
    page.goto("/personal")
    page.get_by_role("link", name=re.compile("Logga in|Sign in")).click()
    page.locator(f'button[name="as"][value="role:{role_id}"]').click()
    page.wait_for_url(re.compile(r"/personal$"))


def sign_in_patient(page: Page, personnummer: str) -> None:
    page.goto("/mitt")
    page.get_by_role("link", name=re.compile("Logga in|Sign in")).click()
    page.fill("#personnummer", personnummer)
    page.locator('button[name="as"][value="pnr"]').click()
    page.wait_for_url(re.compile(r"/mitt$"))


def new_personnummer() -> str:
    body = f"1952{uuid.uuid4().int % 12 + 1:02d}{uuid.uuid4().int % 28 + 1:02d}{uuid.uuid4().int % 900 + 100:03d}"
    return f"{body[:8]}-{body[8:]}{luhn.calc_check_digit(body[2:])}"


def check_accessibility(page: Page, name: str) -> None:
    """axe-core: no serious or critical WCAG 2.1 A/AA violation; no sideways scrolling on a phone."""
    page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG)
    serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
               if v["impact"] in ("serious", "critical")]
    assert not serious, f"{name}: {serious}"


def no_sideways_scroll(page: Page, name: str) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name} scrolls sideways by {overflow}px at {page.viewport_size}"


def photograph(page: Page, name: str) -> None:
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)


def _text(page: Page) -> str:
    return page.locator("main").inner_text()


# -- the journeys ----------------------------------------------------------------------------------


def test_a_nurse_creates_an_agreement_changes_the_contact_and_sees_the_history(site: Site, browser: Browser) -> None:
    unit = site.world.vardcentraler()[0]
    nurse, other_nurse = [r["id"] for r in site.world.generator.region.roles
                          if r["organization"]["reference"] == f"Organization/{unit}"
                          and r["code"][0]["coding"][0]["code"] == "nurse"][:2]
    doctor = site.world.role_at(unit, "doctor")
    kommun = site.world.role_at("demo-org-hemtjanst-exempelstad")
    context = _context(browser, site)
    page = context.new_page()
    sign_in_staff(page, nurse)
    expect(page.get_by_role("heading", level=1)).to_have_text("Enhetens patientkontrakt")

    page.get_by_role("link", name="Nytt patientkontrakt").click()
    number = new_personnummer()
    page.fill("#personnummer", number)
    page.fill("#given", "Signe")
    page.fill("#family", "Testsdotter")
    page.select_option("#vardkontakt", nurse)
    page.select_option("#lakarkontakt", doctor)
    page.select_option("#participants", [kommun])
    page.fill("#description", "Vi träffas varje månad. Ring Karin vid frågor.")
    page.fill("#own_goals", "Kunna gå till affären själv")
    page.fill("#care_goals", "Stabilt blodtryck")
    page.select_option("#activity-0-kind", "besok")
    page.fill("#activity-0-description", "Besök hos fast läkarkontakt")
    page.fill("#activity-0-date", "2030-01-15")
    page.fill("#activity-0-time", "10:30")
    page.select_option("#activity-0-performer", unit)
    page.get_by_role("button", name="Skapa patientkontraktet").click()

    page.wait_for_url(re.compile(r"/personal/avtal/[^/?]+\?sparat=1$"))
    expect(page.get_by_role("status")).to_have_text("Sparat.")
    main = _text(page)
    assert "Signe Testsdotter" in main and number in main
    assert "Kunna gå till affären själv" in main and "Stabilt blodtryck" in main
    assert "Besök hos fast läkarkontakt" in main and "15 januari 2030 10:30" in main
    first_nurse_name = page.locator(".card").first.locator(".name").inner_text()

    page.get_by_role("link", name="Byt fast vårdkontakt").click()
    page.select_option("#new", other_nurse)
    page.fill("#reason", "Karin går i pension")
    page.get_by_role("button", name="Ändra", exact=True).click()
    page.wait_for_url(re.compile(r"\?sparat=1$"))
    contacts = page.locator("section", has=page.get_by_role("heading", name="Kontakter"))
    assert first_nurse_name not in contacts.locator(".card").first.inner_text()
    page.get_by_text("Tidigare kontakter").click()
    history = contacts.locator("details").inner_text()
    assert first_nurse_name in history and "Fast vårdkontakt" in history
    assert "Karin går i pension" in _text(page)
    context.close()


def test_an_invalid_personnummer_is_shown_next_to_its_field(site: Site, browser: Browser) -> None:
    unit = site.world.vardcentraler()[0]
    context = _context(browser, site)
    page = context.new_page()
    sign_in_staff(page, site.world.role_at(unit, "nurse"))
    page.goto("/personal/nytt")
    page.fill("#personnummer", "19121212-1213")
    page.get_by_role("button", name="Skapa patientkontraktet").click()
    error = page.locator("#personnummer-error")
    expect(error).to_contain_text("Kontrollsiffran")
    expect(page.locator("#personnummer")).to_have_attribute("aria-invalid", "true")
    assert "personnummer-error" in (page.locator("#personnummer").get_attribute("aria-describedby") or "")
    expect(page.get_by_role("alert")).to_contain_text("Rätta följande")
    assert page.input_value("#personnummer") == "19121212-1213"  # what was typed stays
    context.close()


def test_the_patient_sees_the_agreement_adds_a_goal_and_sees_who_has_read_it(site: Site, browser: Browser) -> None:
    agreement = site.world.agreements[2]
    nurse = site.world.role_at(agreement.author, "nurse")
    staff = _context(browser, site)
    staff_page = staff.new_page()
    sign_in_staff(staff_page, nurse)
    staff_page.goto(f"/personal/avtal/{agreement.plan}")
    nurse_name = staff_page.locator("header .who").inner_text().split(",")[0]
    patient_number = staff_page.locator("h1 .id").inner_text()
    staff.close()

    context = _context(browser, site)
    page = context.new_page()
    sign_in_patient(page, patient_number)
    expect(page.get_by_role("heading", level=1)).to_have_text("Mitt patientkontrakt")
    roles = page.locator(".card .role").all_text_contents()
    assert "Fast vårdkontakt" in roles and "Det här är planerat" in _text(page)
    page.fill("#text", "Orka gå till parken")
    page.get_by_role("button", name="Lägg till").click()
    page.wait_for_url(re.compile(r"/mitt\?sparat=1"))
    expect(page.locator("#mina-mal ~ ul.goals")).to_contain_text("Orka gå till parken")
    readers = page.locator("section.readers table")
    expect(readers).to_contain_text(nurse_name)
    unit_name = next(u.organization["name"] for units in site.world.generator.region.units.values()
                     for u in units if u.organization["id"] == agreement.author)
    expect(readers).to_contain_text(unit_name)
    context.close()


def test_a_nurse_of_another_unit_cannot_find_the_agreement(site: Site, browser: Browser) -> None:
    agreement = site.world.agreements[2]
    other = next(u for u in site.world.vardcentraler() if u != agreement.author and u not in agreement.contributors)
    context = _context(browser, site)
    page = context.new_page()
    sign_in_staff(page, site.world.role_at(other, "nurse"))
    patient_name = "unknown"
    for query in (agreement.patient, patient_name):
        page.goto(f"/personal?q={query}")
        assert agreement.plan not in page.content()
    response = page.goto(f"/personal/avtal/{agreement.plan}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Finns inte")
    context.close()


def test_a_stale_edit_is_refused_with_who_changed_what(site: Site, browser: Browser) -> None:
    agreement = site.world.agreements[2]
    first, second = [r["id"] for r in site.world.generator.region.roles
                     if r["organization"]["reference"] == f"Organization/{agreement.author}"][:2]
    a, b = _context(browser, site), _context(browser, site)
    page_a, page_b = a.new_page(), b.new_page()
    sign_in_staff(page_a, first)
    sign_in_staff(page_b, second)
    page_a.goto(f"/personal/avtal/{agreement.plan}/redigera")
    page_b.goto(f"/personal/avtal/{agreement.plan}/redigera")
    page_a.fill("#title", "Patientkontrakt, reviderat i mars")
    page_a.get_by_role("button", name="Spara").click()
    page_a.wait_for_url(re.compile(r"\?sparat=1$"))
    name_a = page_a.locator("header .who").inner_text().split(",")[0]

    page_b.fill("#description", "Min ändring som inte får skriva över den andras")
    page_b.get_by_role("button", name="Spara").click()
    alert = page_b.locator("#conflict")
    expect(alert).to_contain_text("Någon annan ändrade patientkontraktet")
    expect(alert).to_contain_text(name_a)
    expect(alert).to_contain_text("Patientkontrakt, reviderat i mars")
    assert page_b.input_value("#description") == "Min ändring som inte får skriva över den andras"
    page_a.goto(f"/personal/avtal/{agreement.plan}")
    assert "Min ändring" not in _text(page_a) and "reviderat i mars" in _text(page_a)
    a.close()
    b.close()


# -- every page: accessibility, both languages, screenshots ----------------------------------------


def _pages(site: Site) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    agreement = site.world.agreements[2]
    staff = [("personal-list", "/personal"), ("personal-agreement", f"/personal/avtal/{agreement.plan}"),
             ("personal-new", "/personal/nytt"), ("personal-edit", f"/personal/avtal/{agreement.plan}/redigera"),
             ("personal-contact", f"/personal/avtal/{agreement.plan}/vardkontakt"),
             ("personal-not-found", "/personal/avtal/finns-inte")]
    patient = [("mitt-agreement", "/mitt"), ("mitt-goal", f"/mitt/mal/{agreement.patient_goal}"),
               ("mitt-print", "/mitt?utskrift=1")]
    return staff, patient


@pytest.mark.parametrize("language", ["sv", "en"])
def test_every_page_is_accessible_in_both_languages_and_fits_a_phone(site: Site, browser: Browser,
                                                                       language: str) -> None:
    agreement = site.world.agreements[2]
    staff_pages, patient_pages = _pages(site)
    for viewport, suffix in ((DESKTOP, "desktop"), (PHONE, "phone")):
        context = _context(browser, site, language, viewport, inject=True)
        page = context.new_page()
        page.goto("/personal")
        _check(page, f"personal-landing-{language}-{suffix}")
        page.get_by_role("link", name=re.compile("Logga in|Sign in")).click()
        _check(page, f"test-idp-{language}-{suffix}")
        page.locator(f'button[name="as"][value="role:{site.world.role_at(agreement.author, "nurse")}"]').click()
        page.wait_for_url(re.compile(r"/personal$"))
        page.goto("/personal/nytt")
        page.get_by_role("button", name=re.compile("Skapa patientkontraktet|Create the agreement")).click()
        _check(page, f"personal-new-errors-{language}-{suffix}")
        for name, path in staff_pages:
            page.goto(path)
            _check(page, f"{name}-{language}-{suffix}")
        context.close()

        context = _context(browser, site, language, viewport, inject=True)
        page = context.new_page()
        page.goto("/mitt")
        _check(page, f"mitt-landing-{language}-{suffix}")
        number = _personnummer_of(site, agreement.patient)
        page.get_by_role("link", name=re.compile("Logga in|Sign in")).click()
        page.fill("#personnummer", number)
        page.locator('button[name="as"][value="pnr"]').click()
        page.wait_for_url(re.compile(r"/mitt$"))
        for name, path in patient_pages:
            page.goto(path)
            _check(page, f"{name}-{language}-{suffix}")
        context.close()


def _check(page: Page, name: str) -> None:
    language = "en" if "-en-" in name else "sv"
    assert page.locator("html").get_attribute("lang") == language, name
    check_accessibility(page, name)
    if name.endswith("-phone"):
        no_sideways_scroll(page, name)
    if language == "sv":
        photograph(page, name.replace("-sv-", "-"))


def _personnummer_of(site: Site, patient_id: str) -> str:
    patient = next(r for resources in DemoGenerator(seed=1).agreements(len(site.world.agreements))
                   for r in resources if r["id"] == patient_id)
    value = str(patient["identifier"][0]["value"])
    return f"{value[:8]}-{value[8:]}"
