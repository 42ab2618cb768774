"""The sign-in as the pages see it: whom the test IdP lists first, and what someone sees who signs
in where they do not belong (a patient at ``/personal``, staff at ``/mitt``).

The flow is the whole one, over HTTP against the app: the area's ``logga-in`` redirect, the
test IdP page, the choice, and the area's callback with the code.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.security.oauth import user_kinds
from tests.conftest import BASE_URL, make_settings
from tests.security.conftest import PATIENT_SCOPES, STAFF_SCOPES, World
from tests.security.test_oauth import sealed_of
from tests.security.test_sessions import register_pages_clients

STAFF_LEGEND = "Personal: välj uppdrag"
PATIENT_LEGEND = "Patienter: välj vem du är"


@pytest.mark.parametrize(("scope", "kinds"), [
    (PATIENT_SCOPES, ("patient",)),
    (STAFF_SCOPES, ("staff",)),
    ("openid fhirUser launch/patient", ("patient",)),
    ("openid user/Patient.read patient/Goal.rs", ("patient", "staff")),
    ("openid fhirUser", ("patient", "staff")),
    ("", ("patient", "staff")),
])
def test_user_kinds_follow_the_scopes_asked_for(scope: str, kinds: tuple[str, ...]) -> None:
    assert user_kinds(scope) == kinds


@pytest.fixture
def pages(world: World, clean_pg: str) -> Iterator[TestClient]:
    register_pages_clients(clean_pg)
    with TestClient(create_app(make_settings(clean_pg, test_idp=True)), base_url=BASE_URL) as http:
        yield http


@pytest.mark.parametrize(("area", "first", "folded"), [
    ("/mitt", PATIENT_LEGEND, STAFF_LEGEND),
    ("/personal", STAFF_LEGEND, PATIENT_LEGEND),
])
def test_the_test_idp_lists_whom_the_area_is_for_first(pages: TestClient, area: str, first: str,
                                                       folded: str) -> None:
    start = pages.get(f"{area}/logga-in", follow_redirects=False)
    page = pages.get(start.headers["location"])
    assert page.status_code == 200, page.text
    html = page.text
    assert html.index(first) < html.index('<details class="other-users">') < html.index(folded)
    assert html.count('<details class="other-users">') == 1
    assert 'value="pnr"' in html and 'value="patient:' in html and 'value="role:' in html


@pytest.mark.parametrize(("area", "who", "language"), [("/personal", "patient", "sv"), ("/mitt", "staff", "en")])
def test_signing_in_as_someone_the_area_is_not_for_says_so_and_leads_on(
        pages: TestClient, world: World, area: str, who: str, language: str) -> None:
    agreement = world.agreements[0]
    choice = f"patient:{agreement.patient}" if who == "patient" else f"role:{world.role_at(agreement.author, 'nurse')}"
    start = pages.get(f"{area}/logga-in", follow_redirects=False)
    chosen = pages.post("/oauth/test-idp", data={"request": sealed_of(pages.get(start.headers["location"])),
                                                 "as": choice}, follow_redirects=False)
    assert chosen.status_code == 303, chosen.text
    back = pages.get(chosen.headers["location"], headers={"accept-language": language}, follow_redirects=False)

    assert back.status_code == 403, back.text
    assert back.headers["content-type"].startswith("text/html")
    assert f"pk_session_{area.strip('/')}" not in back.headers.get("set-cookie", "")
    assert "access_denied" not in back.text and "these pages are for" not in back.text
    assert f'<html lang="{language}">' in back.text
    elsewhere = "/mitt" if area == "/personal" else "/personal"
    assert f'href="{elsewhere}"' in back.text and f'href="{area}/logga-in"' in back.text
    expected = {
        ("/personal", "sv"): ("De här sidorna är för personal", "Du loggade in som patient",
                              "Gå till Mitt patientkontrakt"),
        ("/mitt", "en"): ("This e-service is for patients", "You signed in as staff", "Go to the staff pages"),
    }[(area, language)]
    for text in expected:
        assert text in back.text, back.text
