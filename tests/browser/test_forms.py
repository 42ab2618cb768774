"""The pages' forms, messages and tables in a real browser (Playwright, Debian's Chromium).

A nurse sees every error of the create form in one round, next to its field and in a summary
at the top that has the focus, in words she understands; a personnummer written with 10 digits
finds the patient in the unit's list; an activity planned without a time is shown without one,
with its kind; a date that has passed is saved only once confirmed; the staff list and the
patient's "Vem har läst" show every column on a 375 px phone; the print view says when it was
printed, the agreement's status and its period. The changed pages pass axe-core in Swedish and
English.
"""

from __future__ import annotations

import datetime
import re
import uuid

import pytest
from playwright.sync_api import Browser, Page, expect
from stdnum import luhn

from tests.browser import test_pages as pages
from tests.browser.test_pages import (
    PHONE,
    Site,
    _context,
    _personnummer_of,
    _text,
    check_accessibility,
    new_personnummer,
    no_sideways_scroll,
    sign_in_patient,
    sign_in_staff,
)

# the fixtures of test_pages.py: the demo region, a live server, the pages' clients, Chromium
world, server, site, browser = pages.world, pages.server, pages.site, pages.browser

pytestmark = pytest.mark.slow
CREATE = re.compile("Skapa patientkontraktet|Create the agreement")


def _nurse(site: Site, unit: str, index: int = 0) -> str:
    return [r["id"] for r in site.world.generator.region.roles
            if r["organization"]["reference"] == f"Organization/{unit}"
            and r["code"][0]["coding"][0]["code"] == "nurse"][index]


def _summary_messages(page: Page) -> list[str]:
    return [m.strip() for m in page.locator(".error-summary li").all_inner_texts()]


def _focused_is_summary(page: Page) -> bool:
    return bool(page.evaluate("document.activeElement && document.activeElement.classList.contains('error-summary')"))


def _born(year: int, coordination: bool = False) -> str:
    """A valid personnummer (12 digits with a hyphen) of someone born in ``year``; a
    samordningsnummer (day + 60) if ``coordination``."""
    day = uuid.uuid4().int % 28 + 1 + (60 if coordination else 0)
    body = f"{year}{uuid.uuid4().int % 12 + 1:02d}{day:02d}{uuid.uuid4().int % 900 + 100:03d}"
    return f"{body[:8]}-{body[8:]}{luhn.calc_check_digit(body[2:])}"


def _fill_agreement(page: Page, site: Site, unit: str, number: str, *, nurse: str) -> None:
    page.goto("/personal/nytt")
    page.fill("#personnummer", number)
    page.fill("#given", "Tyra")
    page.fill("#family", "Formsdotter")
    page.select_option("#vardkontakt", nurse)
    page.select_option("#lakarkontakt", site.world.role_at(unit, "doctor"))


# -- one round of errors -----------------------------------------------------------------------------


def test_every_error_of_the_create_form_comes_in_one_round_with_focus_on_the_summary(
        site: Site, browser: Browser) -> None:
    unit = site.world.vardcentraler()[0]
    context = _context(browser, site, inject=True)
    page = context.new_page()
    sign_in_staff(page, _nurse(site, unit))
    page.goto("/personal/nytt")
    page.fill("#personnummer", new_personnummer())  # a patient the unit has not met: the names are needed
    page.fill("#activity-0-description", "Hembesök av distriktssköterskan")
    page.fill("#activity-1-date", "2031-05-04")
    page.get_by_role("button", name=CREATE).click()

    summary = page.locator(".error-summary")
    expect(summary).to_be_visible()
    expect(summary).to_contain_text("Rätta följande")
    assert _focused_is_summary(page), "the error summary has the focus after a failed submit"
    messages = _summary_messages(page)
    expected = {
        "given": "Ange förnamn för en ny patient.", "family": "Ange efternamn för en ny patient.",
        "vardkontakt": "Välj en fast vårdkontakt", "lakarkontakt": "Välj en fast läkarkontakt",
        "activity-0-kind": "Välj vilken sorts aktivitet det är.",
        "activity-0-date": "Skriv datumet för aktiviteten.",
        "activity-0-performer": "Välj vilken enhet som ansvarar för aktiviteten.",
        "activity-1-kind": "Välj vilken sorts aktivitet det är.", "activity-1-description": "Beskriv aktiviteten.",
        "activity-1-performer": "Välj vilken enhet som ansvarar för aktiviteten.",
    }
    links = page.locator(".error-summary a")
    assert links.count() == len(messages) == len(expected), messages
    for i, (field, message) in enumerate(expected.items()):  # in the order of the form
        assert links.nth(i).get_attribute("href") == f"#{field}", (i, field, messages)
        assert messages[i] == message, (field, messages)
        expect(page.locator(f"#{field}-error")).to_contain_text(message)
        expect(page.locator(f"#{field}")).to_have_attribute("aria-invalid", "true")
    assert not any("Tom lista" in m for m in messages)
    assert "personnummer" not in " ".join(links.evaluate_all("ls => ls.map(l => l.getAttribute('href'))"))
    check_accessibility(page, "new-agreement-errors")

    # a link in the summary takes the keyboard to its field
    page.locator(".error-summary a[href='#vardkontakt']").click()
    assert page.evaluate("document.activeElement.id") == "vardkontakt"

    # everything put right: it is saved on the next submit, no second round of errors
    page.fill("#given", "Tyra")
    page.fill("#family", "Formsdotter")
    page.select_option("#vardkontakt", _nurse(site, unit))
    page.select_option("#lakarkontakt", site.world.role_at(unit, "doctor"))
    page.select_option("#activity-0-kind", "hembesok")
    page.fill("#activity-0-date", "2031-05-03")
    page.select_option("#activity-0-performer", unit)
    page.select_option("#activity-1-kind", "uppfoljning")
    page.fill("#activity-1-description", "Uppföljning av planen")
    page.select_option("#activity-1-performer", unit)
    page.get_by_role("button", name=CREATE).click()
    page.wait_for_url(re.compile(r"/personal/avtal/[^/?]+\?sparat=1$"))
    context.close()


@pytest.mark.parametrize("language", ["sv", "en"])
def test_the_personnummer_messages_say_what_to_do(site: Site, browser: Browser, language: str) -> None:
    unit = site.world.vardcentraler()[0]
    context = _context(browser, site, language, inject=True)
    page = context.new_page()
    sign_in_staff(page, _nurse(site, unit))
    cases = {
        "sv": [("", "Skriv patientens personnummer"),
               ("12345", "Personnumret ska ha 10 eller 12 siffror, t.ex. 19121212-1212")],
        "en": [("", "Enter the patient's personnummer"),
               ("12345", "A personnummer has 10 or 12 digits, for example 19121212-1212")],
    }[language]
    for typed, message in cases:
        page.goto("/personal/nytt")
        page.fill("#personnummer", typed)
        page.get_by_role("button", name=CREATE).click()
        expect(page.locator("#personnummer-error")).to_have_text(re.compile(rf"^\s*(Fel:|Error:)\s*{re.escape(message)}$"))
        summary = _summary_messages(page)
        assert summary.count(message) == 1, summary
        assert not any("inget personnummer" in m or "''" in m for m in summary), summary
        assert page.input_value("#personnummer") == typed
        assert _focused_is_summary(page)
        check_accessibility(page, f"personnummer-{typed or 'empty'}-{language}")
    context.close()


def test_the_fast_lakarkontakt_is_asked_for_only_where_it_is_needed(site: Site, browser: Browser) -> None:
    hospital = "demo-org-med-lanssjukhuset"
    context = _context(browser, site)
    page = context.new_page()
    sign_in_staff(page, site.world.role_at(hospital, "nurse"))
    page.goto("/personal/nytt")
    page.get_by_role("button", name=CREATE).click()
    messages = _summary_messages(page)
    assert "Skriv patientens personnummer" in messages and "Välj en fast vårdkontakt" in messages
    assert not any("läkarkontakt" in m for m in messages), messages
    context.close()


def test_a_second_active_agreement_is_refused_at_the_personnummer_before_anything_is_sent(
        site: Site, browser: Browser) -> None:
    agreement = next(a for a in site.world.agreements if a.status == "active")
    number = _personnummer_of(site, agreement.patient)
    nurse = site.world.role_at(agreement.author, "nurse")
    context = _context(browser, site)
    page = context.new_page()
    sign_in_staff(page, nurse)
    _fill_agreement(page, site, agreement.author, number, nurse=nurse)
    page.get_by_role("button", name=CREATE).click()
    message = ("Patienten har redan ett gällande patientkontrakt hos enheten. Öppna det i listan, eller spara "
               "det här som utkast.")
    assert _summary_messages(page) == [message]
    expect(page.locator("#personnummer-error")).to_contain_text(message)
    page.select_option("#status", "draft")  # a draft beside it is allowed
    page.get_by_role("button", name=CREATE).click()
    page.wait_for_url(re.compile(r"/personal/avtal/[^/?]+\?sparat=1$"))
    context.close()


# -- the staff list's search -------------------------------------------------------------------------


def test_a_personnummer_in_any_written_form_finds_the_patient_in_the_list(site: Site, browser: Browser) -> None:
    agreement = site.world.agreements[2]
    number = _personnummer_of(site, agreement.patient)  # YYYYMMDD-NNNN, born 1930-1981
    assert int(number[:4]) > datetime.date.today().year - 100
    short = number[2:]
    context = _context(browser, site)
    page = context.new_page()
    sign_in_staff(page, site.world.role_at(agreement.author, "nurse"))
    for query in (short, short.replace("-", ""), number, number.replace("-", ""), f" {short} "):
        page.goto("/personal")
        page.fill("#q", query)
        page.get_by_role("button", name="Sök").click()
        rows = page.locator("table.list tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(number)
        assert f"/personal/avtal/{agreement.plan}" in (rows.first.locator("a").get_attribute("href") or "")

    # a name still works; a number that is none says how to write one
    family = page.locator("table.list tbody th a").first.inner_text().split()[-1]
    page.goto("/personal")
    page.fill("#q", family)
    page.get_by_role("button", name="Sök").click()
    names = page.locator("table.list tbody th").all_inner_texts()
    assert names and all(family in n for n in names), names
    page.goto("/personal?q=12345")
    expect(page.locator("#q-error")).to_have_text("Personnumret ska ha 10 eller 12 siffror, t.ex. 19121212-1212")
    context.close()


def test_a_ten_digit_personnummer_as_written_on_the_create_form_finds_the_agreement(
        site: Site, browser: Browser) -> None:
    """A patient of 100 or more (``+`` in the 10-digit form), one written ``YYMMDD-NNNN`` and a
    samordningsnummer written ``YYMMDDNNNN``: what the create form accepted, the list finds, in
    each written form."""
    unit = site.world.vardcentraler()[1]
    nurse = _nurse(site, unit)
    context = _context(browser, site)
    page = context.new_page()
    sign_in_staff(page, nurse)
    old, young, coordination = _born(1921), _born(1961), _born(1988, coordination=True)
    for number, typed in ((old, f"{old[2:8]}+{old[9:]}"), (young, young[2:]),
                          (coordination, coordination[2:].replace("-", ""))):
        _fill_agreement(page, site, unit, typed, nurse=nurse)
        page.get_by_role("button", name=CREATE).click()
        page.wait_for_url(re.compile(r"/personal/avtal/[^/?]+\?sparat=1$"))
        plan = page.url.split("/avtal/")[1].split("?")[0]
        assert number in page.locator("h1 .id").inner_text()
        for query in {typed, number, number.replace("-", ""), typed.replace("-", "")}:
            page.goto("/personal")
            page.fill("#q", query)
            page.get_by_role("button", name="Sök").click()
            rows = page.locator("table.list tbody tr")
            expect(rows).to_have_count(1)
            assert plan in (rows.first.locator("a").get_attribute("href") or ""), query
            expect(page.locator("p.notice")).to_have_count(0)

    # "-" where "+" belongs: by the rule that is someone born 2021, and no one is; the list shows
    # the one born 1921 and says how the number is written
    page.goto("/personal")
    page.fill("#q", f"{old[2:8]}-{old[9:]}")
    page.get_by_role("button", name="Sök").click()
    expect(page.locator("table.list tbody tr")).to_have_count(1)
    expect(page.locator("table.list tbody tr")).to_contain_text(old)
    expect(page.get_by_role("status")).to_contain_text(f"Visar {old} i stället")
    expect(page.get_by_role("status")).to_contain_text(f"{old[2:8]}+{old[9:]}")
    context.close()


# -- activities: without a time, their kind, a date that has passed ----------------------------------


def test_an_untimed_activity_is_shown_without_a_time_with_its_kind_and_roles_in_plain_words(
        site: Site, browser: Browser) -> None:
    unit = site.world.vardcentraler()[2]
    nurse = _nurse(site, unit)
    hospital_doctor = site.world.role_at("demo-org-med-lanssjukhuset", "doctor")
    number = new_personnummer()
    context = _context(browser, site, inject=True)
    page = context.new_page()
    sign_in_staff(page, nurse)
    _fill_agreement(page, site, unit, number, nurse=nurse)
    page.select_option("#participants", [hospital_doctor])
    page.select_option("#activity-0-kind", "telefonkontakt")
    page.fill("#activity-0-description", "Sjuksköterskan ringer om provsvaren")
    page.fill("#activity-0-date", "2031-02-01")
    page.select_option("#activity-0-performer", unit)
    page.select_option("#activity-1-kind", "hembesok")
    page.fill("#activity-1-description", "Genomgång av läkemedlen")
    page.fill("#activity-1-date", "2031-02-10")
    page.fill("#activity-1-time", "13:15")
    page.select_option("#activity-1-performer", unit)
    page.get_by_role("button", name=CREATE).click()
    page.wait_for_url(re.compile(r"/personal/avtal/[^/?]+\?sparat=1$"))

    activities = page.locator("section", has=page.get_by_role("heading", name="Planerade aktiviteter"))
    untimed = activities.locator("li", has_text="ringer om provsvaren")
    expect(untimed.locator(".when")).to_have_text("1 februari 2031")
    expect(untimed.locator(".kind")).to_have_text("Telefonkontakt")
    timed = activities.locator("li", has_text="Genomgång av läkemedlen")
    expect(timed.locator(".when")).to_have_text("10 februari 2031 13:15")
    expect(timed.locator(".kind")).to_have_text("Hembesök")
    roles = page.locator(".card .role").all_inner_texts()
    assert "Deltagare" in roles and "Fast vårdkontakt" in roles and "Fast läkarkontakt" in roles, roles
    assert not any(r.upper() == "ÖVRIG" or r == "Övrig" for r in roles), roles
    check_accessibility(page, "agreement-untimed")

    # the edit form plans with the same rows: a missing kind is said at once, a day without a time kept
    page.get_by_role("link", name="Redigera patientkontraktet").click()
    page.fill("#activity-0-description", "Promenad varje dag")
    page.fill("#activity-0-date", "2031-03-01")
    page.select_option("#activity-0-performer", unit)
    page.get_by_role("button", name="Spara").click()
    assert _summary_messages(page) == ["Välj vilken sorts aktivitet det är."]
    assert _focused_is_summary(page)
    page.select_option("#activity-0-kind", "egenvard")
    page.get_by_role("button", name="Spara").click()
    page.wait_for_url(re.compile(r"\?sparat=1$"))
    added = page.locator("ol.activities li", has_text="Promenad varje dag")
    expect(added.locator(".when")).to_have_text("1 mars 2031")
    expect(added.locator(".kind")).to_have_text("Egenvård")
    context.close()

    patient = _context(browser, site, inject=True)
    page = patient.new_page()
    sign_in_patient(page, number)
    untimed = page.locator("ol.activities li", has_text="ringer om provsvaren")
    expect(untimed.locator(".when")).to_have_text("1 februari 2031")
    expect(untimed.locator(".kind")).to_have_text("Telefonkontakt")
    assert "09:00" not in _text(page)
    assert "Deltagare" in page.locator(".card .role").all_inner_texts()
    page.get_by_role("link", name="English").click()
    untimed = page.locator("ol.activities li", has_text="ringer om provsvaren")
    expect(untimed.locator(".when")).to_have_text("1 February 2031")
    expect(untimed.locator(".kind")).to_have_text("Phone contact")
    assert "Participant" in page.locator(".card .role").all_inner_texts()
    patient.close()


def test_a_date_that_has_passed_is_saved_once_confirmed(site: Site, browser: Browser) -> None:
    unit = site.world.vardcentraler()[0]
    nurse = _nurse(site, unit, 1)
    context = _context(browser, site, inject=True)
    page = context.new_page()
    sign_in_staff(page, nurse)
    _fill_agreement(page, site, unit, new_personnummer(), nurse=nurse)
    page.select_option("#activity-0-kind", "besok")
    page.fill("#activity-0-description", "Besöket som redan har varit")
    page.fill("#activity-0-date", "2020-03-03")
    page.select_option("#activity-0-performer", unit)
    page.get_by_role("button", name=CREATE).click()

    warning = "Datumet har redan passerat — spara ändå? Kryssa i så fall i rutan."
    assert _summary_messages(page) == [warning]
    expect(page.locator("#activity-0-past-error")).to_contain_text(warning)
    assert page.input_value("#activity-0-date") == "2020-03-03"
    check_accessibility(page, "past-date-warning")
    page.get_by_label("Spara ändå, fast datumet har passerat").check()
    page.get_by_role("button", name=CREATE).click()
    page.wait_for_url(re.compile(r"/personal/avtal/[^/?]+\?sparat=1$"))
    page.get_by_text("Tidigare aktiviteter").click()
    expect(page.locator("details.history", has_text="Besöket som redan har varit")).to_contain_text("3 mars 2020")
    context.close()


# -- tables on a phone ---------------------------------------------------------------------------------


def _every_cell_in_view(page: Page, table: str, name: str) -> None:
    rows = page.locator(f"{table} tbody tr")
    assert rows.count() > 0, name
    width = page.viewport_size["width"] if page.viewport_size else 375
    headers = page.locator(f"{table} thead th").all_inner_texts()
    for r in range(min(rows.count(), 5)):
        cells = rows.nth(r).locator("th, td")
        assert cells.count() == len(headers), name
        for c in range(cells.count()):
            cell = cells.nth(c)
            assert cell.is_visible(), (name, r, c)
            box = cell.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (name, r, c, box)
            label = cell.evaluate("e => getComputedStyle(e, '::before').content")
            assert label.strip('"') == headers[c], (name, label, headers[c])
            text = cell.inner_text().strip()
            if text:  # the value itself, not only its label, is on the screen
                inner = cell.evaluate("""e => { const r = document.createRange(); r.selectNodeContents(e);
                                                 const b = r.getBoundingClientRect(); return [b.left, b.right]; }""")
                assert inner[0] >= 0 and inner[1] <= width + 0.5, (name, r, c, inner)
    no_sideways_scroll(page, name)


@pytest.mark.parametrize("language", ["sv", "en"])
def test_the_staff_list_and_who_has_read_show_every_column_on_a_phone(site: Site, browser: Browser,
                                                                       language: str) -> None:
    agreement = site.world.agreements[2]
    context = _context(browser, site, language, PHONE, inject=True)
    page = context.new_page()
    sign_in_staff(page, site.world.role_at(agreement.author, "nurse"))
    page.goto(f"/personal/avtal/{agreement.plan}")  # a read the patient will see
    page.goto("/personal")
    _every_cell_in_view(page, "table.list", f"staff-list-{language}")
    check_accessibility(page, f"staff-list-phone-{language}")
    context.close()

    context = _context(browser, site, language, PHONE, inject=True)
    page = context.new_page()
    sign_in_patient(page, _personnummer_of(site, agreement.patient))
    _every_cell_in_view(page, "section.readers table", f"who-has-read-{language}")
    what = page.locator("section.readers tbody td:nth-child(4)").all_inner_texts()
    if language == "sv":
        assert any(w in ("läste ditt patientkontrakt", "öppnade hela ditt patientkontrakt",
                         "sökte fram ditt patientkontrakt i en lista") for w in what), what
        page.get_by_text("Vad betyder orden?").click()
        expect(page.locator("details.explain")).to_contain_text("Det betyder inte att de öppnade det")
        expect(page.locator(".status-explained").first).to_be_visible()
    check_accessibility(page, f"who-has-read-phone-{language}")
    context.close()


# -- the print view --------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["sv", "en"])
def test_the_print_view_shows_the_print_date_status_and_period(site: Site, browser: Browser, language: str) -> None:
    agreement = next(a for a in site.world.agreements if a.status == "active")
    context = _context(browser, site, language, inject=True)
    page = context.new_page()
    sign_in_patient(page, _personnummer_of(site, agreement.patient))
    page.goto("/mitt?utskrift=1")
    facts = page.locator("dl.print-facts")
    today = datetime.date.today()
    months = {"sv": "januari februari mars april maj juni juli augusti september oktober november december",
              "en": "January February March April May June July August September October November December"}
    printed_on = f"{today.day} {months[language].split()[today.month - 1]} {today.year}"
    expect(facts.first).to_contain_text("Utskrivet" if language == "sv" else "Printed")
    expect(facts.first).to_contain_text(printed_on)
    agreement_facts = facts.nth(1).inner_text()
    status = {"sv": "Gällande", "en": "Active"}[language]
    assert status in agreement_facts, agreement_facts
    assert ("Gäller" if language == "sv" else "Period") in agreement_facts
    assert re.search(r"\d{1,2} \w+ \d{4}", agreement_facts), agreement_facts
    assert ("tills vidare" if language == "sv" else "until further notice") in agreement_facts \
        or (" till " if language == "sv" else " to ") in agreement_facts, agreement_facts

    button = page.get_by_role("button", name="Skriv ut" if language == "sv" else "Print")
    expect(button).to_be_visible()
    page.evaluate("window.print = () => { window.__printed = true; }")
    button.click()
    assert page.evaluate("window.__printed === true")
    check_accessibility(page, f"print-{language}")
    page.emulate_media(media="print")
    expect(button).to_be_hidden()
    context.close()
