"""The agreement's whole life in a real browser (Playwright, Debian's Chromium).

A nurse moves one activity and cancels another (never deleted: the cancelled one is shown apart,
with its reason) and marks a care goal achieved; closes an agreement through its own step (no
preselected outcome, a confirmation, the unit's future activities cancelled with the reason,
another unit's kept); finds the closed agreement read-only, its edit refused, also from a form
opened before it was closed; the patient withdraws their own goal and reads the closed agreement
under "Tidigare patientkontrakt". Each journey checks what the pages show and what is stored
(read straight from the database as the service itself). Every new page passes axe-core in
Swedish and English and does not scroll sideways on a 375 px phone.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from playwright.sync_api import Browser, Page, expect

from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.access import INTERNAL
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.browser import test_pages as pages
from tests.browser.test_pages import (
    DESKTOP,
    PHONE,
    Site,
    _context,
    _text,
    check_accessibility,
    new_personnummer,
    no_sideways_scroll,
    photograph,
    sign_in_patient,
    sign_in_staff,
)

pytestmark = pytest.mark.slow
server, site, browser, world = pages.server, pages.site, pages.browser, pages.world

KOMMUN = "demo-org-hemtjanst-exempelstad"
SAVED = re.compile(r"/personal/avtal/[^/?]+\?sparat=1$")
CLOSE_ANY_LANGUAGE = re.compile("Avsluta patientkontraktet|Close the agreement")


# -- helpers -----------------------------------------------------------------------------------------


def _run(go: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``go`` on an event loop of its own thread: Playwright's sync API holds this thread's."""
    out: dict[str, Any] = {}

    def target() -> None:
        async def main() -> Any:
            return await go()
        try:
            out["value"] = asyncio.run(main())
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _stored(site: Site, type_: str, id_: str) -> dict[str, Any]:
    """The current version, read as the service itself (no access rule, not logged)."""
    async def go() -> dict[str, Any]:
        store = Store(create_engine(site.world.settings.database_url, pool_size=1))
        try:
            result = await build_service(site.world.settings, store).read(INTERNAL, type_, id_)
            data: dict[str, Any] = orjson.loads(result.body or b"{}")
            return data
        finally:
            await store.dispose()
    result: Any = _run(go)
    return result


def _provenance(site: Site, target: str) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        store = Store(create_engine(site.world.settings.database_url, pool_size=1))
        try:
            result = await build_service(site.world.settings, store).search(
                INTERNAL, "Provenance", [("target", target), ("_count", "50")], Preferences())
            found: dict[str, Any] = orjson.loads(result.body or b"{}")
            return [e["resource"] for e in found.get("entry", [])]
        finally:
            await store.dispose()
    result: Any = _run(go)
    return result


def _staff(site: Site) -> tuple[str, str, str]:
    unit = site.world.vardcentraler()[0]
    return unit, site.world.role_at(unit, "nurse"), site.world.role_at(unit, "doctor")


def _new_agreement(page: Page, site: Site, number: str | None = None) -> tuple[str, str]:
    """A new agreement through the create form: two future activities of the unit, one of the
    kommun's, a care goal and the patient's own goal. Returns (CarePlan id, personnummer)."""
    unit, nurse, doctor = _staff(site)
    page.goto("/personal/nytt")
    number = number or new_personnummer()
    page.fill("#personnummer", number)
    page.fill("#given", "Berit")
    page.fill("#family", "Livslångsson")
    page.select_option("#vardkontakt", nurse)
    page.select_option("#lakarkontakt", doctor)
    page.fill("#description", "Vi ses varje månad.")
    page.fill("#own_goals", "Gå till affären själv")
    page.fill("#care_goals", "Stabilt blodtryck")
    for i, (kind, what, day, unit_id) in enumerate((
            ("besok", "Läkarbesök", "2031-03-10", unit), ("besok", "Sjuksköterskebesök", "2031-04-10", unit),
            ("hemtjanstinsats", "Hemtjänstbesök", "2031-03-12", KOMMUN))):
        page.select_option(f"#activity-{i}-kind", kind)
        page.fill(f"#activity-{i}-description", what)
        page.fill(f"#activity-{i}-date", day)
        page.fill(f"#activity-{i}-time", "10:00")
        page.select_option(f"#activity-{i}-performer", unit_id)
    page.get_by_role("button", name=re.compile("Skapa patientkontraktet|Create the agreement")).click()
    page.wait_for_url(SAVED)
    plan_id = page.url.split("/personal/avtal/")[1].split("?")[0]
    return plan_id, number


def _close(page: Page, outcome: str, reason: str, *, goals: str,
           button: str | re.Pattern[str] = "Avsluta patientkontraktet") -> None:
    """Fill in the open closing form (how it ends, why, what happens to the goals, confirmed),
    send it, and wait for the agreement's page."""
    page.check(f"#outcome-{outcome}")
    page.fill("#reason", reason)
    page.check(f"#goals-{goals}")
    page.check("#confirm")
    page.get_by_role("button", name=button).click()
    page.wait_for_url(SAVED)


def _activity(plan: dict[str, Any], what: str) -> dict[str, Any]:
    detail: dict[str, Any] = next(a["detail"] for a in plan["activity"] if a["detail"]["description"] == what)
    return detail


def _section(page: Page, heading: str) -> str:
    return page.locator("section", has=page.get_by_role("heading", name=heading, exact=True)).inner_text()


# -- the journeys ------------------------------------------------------------------------------------


def test_a_nurse_moves_and_cancels_activities_and_marks_a_care_goal_achieved(site: Site, browser: Browser) -> None:
    context = _context(browser, site)
    page = context.new_page()
    sign_in_staff(page, _staff(site)[1])
    plan_id, _ = _new_agreement(page, site)
    nurse_name = page.locator("header .who").inner_text().split(",")[0]

    page.get_by_role("link", name="Ändra eller ställ in Läkarbesök").click()
    page.fill("#date", "2031-03-17")
    page.fill("#time", "14:00")
    page.get_by_role("button", name="Spara ändringen").click()
    expect(page.locator("#reason-error")).to_have_text(re.compile("Ange varför aktiviteten ändras"))
    page.fill("#reason", "Läkaren är bortrest")
    page.get_by_role("button", name="Spara ändringen").click()
    page.wait_for_url(SAVED)
    planned = _section(page, "Planerade aktiviteter")
    assert "17 mars 2031 14:00" in planned and "10 mars 2031 10:00" not in planned

    page.get_by_role("link", name="Ändra eller ställ in Sjuksköterskebesök").click()
    page.fill("#reason", "Behövs inte längre")
    page.get_by_role("button", name="Ställ in aktiviteten").click()
    page.wait_for_url(SAVED)
    assert "Sjuksköterskebesök" not in _section(page, "Planerade aktiviteter")
    cancelled = _section(page, "Inställda aktiviteter")
    assert "Sjuksköterskebesök" in cancelled and "Inställd: Behövs inte längre" in cancelled

    page.get_by_role("link", name="Ändra Stabilt blodtryck").click()
    page.check("#outcome-achieved")
    page.fill("#reason", "Blodtrycket har legat bra i ett halvår")
    page.get_by_role("button", name="Spara", exact=True).click()
    page.wait_for_url(SAVED)
    assert "Stabilt blodtryck Uppnått" in _text(page)
    history = _section(page, "Ändringshistorik")
    for expected in (nurse_name, "Läkaren är bortrest", "Behövs inte längre", "Blodtrycket har legat bra"):
        assert expected in history, expected

    plan = _stored(site, "CarePlan", plan_id)
    moved, dropped = _activity(plan, "Läkarbesök"), _activity(plan, "Sjuksköterskebesök")
    assert moved["status"] == "scheduled" and moved["scheduledPeriod"]["start"].startswith("2031-03-17T14:00")
    assert dropped["status"] == "cancelled" and dropped["statusReason"]["text"] == "Behövs inte längre"
    assert len(plan["activity"]) == 3  # nothing deleted
    reasons = {p["reason"][0]["text"] for p in _provenance(site, f"CarePlan/{plan_id}")}
    assert {"Läkaren är bortrest", "Behövs inte längre", "Blodtrycket har legat bra i ett halvår"} <= reasons
    goal_id = next(g["reference"].split("/")[1] for g in plan["goal"]
                   if _stored(site, "Goal", g["reference"].split("/")[1])["description"]["text"] == "Stabilt blodtryck")
    goal = _stored(site, "Goal", goal_id)
    assert goal["lifecycleStatus"] == "completed" and goal["achievementStatus"]["coding"][0]["code"] == "achieved"
    context.close()


def test_closing_asks_for_an_outcome_and_confirmation_and_cancels_the_units_future_activities(
        site: Site, browser: Browser) -> None:
    context = _context(browser, site)
    page = context.new_page()
    sign_in_staff(page, _staff(site)[1])
    plan_id, number = _new_agreement(page, site)
    stale = context.new_page()  # an edit form opened before the agreement is closed
    stale.goto(f"/personal/avtal/{plan_id}/redigera")
    assert stale.locator("#status option").all_inner_texts() == ["Gällande", "Vilande"]

    page.get_by_role("link", name="Avsluta patientkontraktet").click()
    assert page.locator("input[name=outcome]:checked").count() == 0
    assert page.locator("input[name=goals]:checked").count() == 0
    assert "Läkarbesök" in page.locator("ul.to-cancel").inner_text()
    assert "Hemtjänstbesök" in page.locator("ul.kept").inner_text()
    page.get_by_role("button", name="Avsluta patientkontraktet").click()
    alert = page.get_by_role("alert")
    for message in ("Välj hur patientkontraktet avslutas.", "Ange varför patientkontraktet avslutas.",
                    "Välj vad som händer med målen.", "Bekräfta att patientkontraktet ska avslutas."):
        expect(alert).to_contain_text(message)
    assert _stored(site, "CarePlan", plan_id)["status"] == "active"

    _close(page, "revoked", "Patienten flyttar", goals="close")
    expect(page.locator(".title-row .status")).to_have_text("Avbrutet")
    assert page.get_by_role("link", name="Redigera patientkontraktet").count() == 0
    assert page.get_by_role("link", name=re.compile("Ändra eller ställ in")).count() == 0
    cancelled = _section(page, "Inställda aktiviteter")
    assert "Läkarbesök" in cancelled and "Sjuksköterskebesök" in cancelled
    assert "Patientkontraktet avslutades: Patienten flyttar" in cancelled
    assert "Hemtjänstbesök" in _section(page, "Planerade aktiviteter")

    plan = _stored(site, "CarePlan", plan_id)
    assert plan["status"] == "revoked" and plan["period"]["end"] == datetime.date.today().isoformat()
    assert [_activity(plan, w)["status"] for w in ("Läkarbesök", "Sjuksköterskebesök", "Hemtjänstbesök")] \
        == ["cancelled", "cancelled", "scheduled"]
    goals = [_stored(site, "Goal", g["reference"].split("/")[1]) for g in plan["goal"]]
    assert goals and all(g["lifecycleStatus"] == "completed" for g in goals)
    closing = [p for p in _provenance(site, f"CarePlan/{plan_id}") if p["reason"][0]["text"] == "Patienten flyttar"]
    assert len(closing) == 1 and len(closing[0]["target"]) == 1 + len(goals)

    response = page.goto(f"/personal/avtal/{plan_id}/redigera")
    assert response is not None and response.status == 409
    expect(page.get_by_role("heading", level=1)).to_have_text("Avtalet är avslutat och kan inte ändras")
    page.get_by_role("link", name="Tillbaka till patientkontraktet").click()
    page.wait_for_url(re.compile(rf"/personal/avtal/{plan_id}$"))

    stale.fill("#title", "En ändring efter avslutet")
    stale.get_by_role("button", name="Spara").click()
    expect(stale.get_by_role("heading", level=1)).to_have_text("Avtalet är avslutat och kan inte ändras")
    assert _stored(site, "CarePlan", plan_id)["title"] != "En ändring efter avslutet"

    page.goto(f"/personal?q={number}")
    expect(page.locator("table.list")).to_contain_text("Avbrutet")

    patient = _context(browser, site)
    mine = patient.new_page()
    sign_in_patient(mine, number)
    main = _text(mine)
    assert "Du har inget patientkontrakt" not in main
    expect(mine.get_by_role("heading", name="Tidigare patientkontrakt")).to_be_visible()
    expect(mine.get_by_role("heading", name="Ditt patientkontrakt är avslutat")).to_be_visible()
    patient.close()

    page.goto(f"/personal/avtal/{plan_id}")
    page.get_by_role("link", name="Återöppna patientkontraktet").click()
    page.fill("#reason", "Patienten flyttade inte")
    page.get_by_role("button", name="Återöppna patientkontraktet").click()
    page.wait_for_url(SAVED)
    expect(page.locator(".title-row .status")).to_have_text("Gällande")
    assert "Patienten flyttade inte" in _section(page, "Ändringshistorik")
    assert _stored(site, "CarePlan", plan_id)["status"] == "active"
    context.close()


def test_the_patient_withdraws_their_own_goal(site: Site, browser: Browser) -> None:
    staff = _context(browser, site)
    staff_page = staff.new_page()
    sign_in_staff(staff_page, _staff(site)[1])
    plan_id, number = _new_agreement(staff_page, site)

    context = _context(browser, site)
    page = context.new_page()
    sign_in_patient(page, number)
    page.get_by_role("link", name="Ändra Gå till affären själv").click()
    expect(page.locator("#status-active")).to_be_checked()
    page.check("#status-cancelled")
    page.fill("#reason", "Jag får hjälp med inköpen nu")
    page.get_by_role("button", name="Spara").click()
    page.wait_for_url(re.compile(r"/mitt\?sparat=1"))
    own = page.locator("#mina-mal ~ ul.goals")
    expect(own).to_contain_text("Gå till affären själv")
    expect(own).to_contain_text("Tillbakataget")

    plan = _stored(site, "CarePlan", plan_id)
    goals = [_stored(site, "Goal", g["reference"].split("/")[1]) for g in plan["goal"]]
    withdrawn = next(g for g in goals if g["description"]["text"] == "Gå till affären själv")
    assert withdrawn["lifecycleStatus"] == "cancelled" and withdrawn["statusReason"] == "Jag får hjälp med inköpen nu"
    assert withdrawn["meta"]["versionId"] == "2" and "achievementStatus" not in withdrawn
    staff_page.reload()
    assert "Gå till affären själv Tillbakataget" in _text(staff_page)
    # the patient's change is in the agreement's history of changes, with who and why
    history = staff_page.locator("section[aria-labelledby=changes-title]")
    expect(history).to_contain_text("Eget mål ändrat: Gå till affären själv (tillbakataget)")
    expect(history).to_contain_text("Jag får hjälp med inköpen nu")
    staff.close()
    context.close()


def test_a_refusal_of_the_core_is_shown_next_to_the_form(site: Site, browser: Browser) -> None:
    """Reopening an agreement while the patient has another active one at the unit: the core's
    409 in Swedish on the reopening page, not an error page; nothing changes."""
    context = _context(browser, site)
    page = context.new_page()
    sign_in_staff(page, _staff(site)[1])
    first, number = _new_agreement(page, site)
    page.goto(f"/personal/avtal/{first}/avsluta")
    _close(page, "completed", "Klart", goals="keep")
    _new_agreement(page, site, number)

    page.goto(f"/personal/avtal/{first}/ateroppna")
    page.fill("#reason", "Fel avtal avslutades")
    page.get_by_role("button", name="Återöppna patientkontraktet").click()
    expect(page.get_by_role("alert")).to_contain_text("redan ett gällande patientkontrakt")
    expect(page.get_by_role("heading", level=1)).to_have_text("Återöppna patientkontraktet")
    assert page.input_value("#reason") == "Fel avtal avslutades"
    assert _stored(site, "CarePlan", first)["status"] == "completed"
    context.close()


# -- the new pages: accessibility in both languages --------------------------------------------------


@pytest.mark.parametrize("language", ["sv", "en"])
def test_the_new_pages_are_accessible_in_both_languages(site: Site, browser: Browser, language: str) -> None:
    context = _context(browser, site, language, inject=True)
    page = context.new_page()
    sign_in_staff(page, _staff(site)[1])
    plan_id, number = _new_agreement(page, site)
    plan = _stored(site, "CarePlan", plan_id)
    goals = {g["reference"].split("/")[1]: _stored(site, "Goal", g["reference"].split("/")[1]) for g in plan["goal"]}
    care_goal = next(i for i, g in goals.items() if g["expressedBy"]["reference"].startswith("PractitionerRole/"))
    own_goal = next(i for i, g in goals.items() if g["expressedBy"]["reference"].startswith("Patient/"))
    staff_pages = [("personal-activity-edit", f"/personal/avtal/{plan_id}/aktivitet/0"),
                   ("personal-goal-edit", f"/personal/avtal/{plan_id}/mal/{care_goal}"),
                   ("personal-close", f"/personal/avtal/{plan_id}/avsluta")]
    for name, path in staff_pages:
        page.goto(path)
        _check(page, f"{name}-{language}")
    page.get_by_role("button", name=CLOSE_ANY_LANGUAGE).click()
    _check(page, f"personal-close-errors-{language}")
    _close(page, "completed", "Klart", goals="keep", button=CLOSE_ANY_LANGUAGE)
    _check(page, f"personal-agreement-closed-{language}")
    for name, path in (("personal-closed", f"/personal/avtal/{plan_id}/redigera"),
                       ("personal-reopen", f"/personal/avtal/{plan_id}/ateroppna")):
        page.goto(path)
        _check(page, f"{name}-{language}")
    context.close()

    context = _context(browser, site, language, inject=True)
    page = context.new_page()
    sign_in_patient(page, number)
    _check(page, f"mitt-earlier-{language}")
    page.get_by_text(re.compile("Visa patientkontraktet|Show the agreement")).first.click()
    _check(page, f"mitt-earlier-open-{language}")
    page.goto(f"/mitt/mal/{own_goal}")
    _check(page, f"mitt-goal-withdraw-{language}")
    context.close()


def _check(page: Page, name: str) -> None:
    language = name.rsplit("-", 1)[1]
    assert page.locator("html").get_attribute("lang") == language, name
    check_accessibility(page, name)
    if language == "sv":
        photograph(page, name.removesuffix("-sv") + "-desktop")
    page.set_viewport_size(PHONE)
    no_sideways_scroll(page, name)
    page.set_viewport_size(DESKTOP)
