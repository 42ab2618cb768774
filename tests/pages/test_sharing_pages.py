"""The staff pages' samtycke, spärr and emergency access (api/pages/sharing.py, emergency.py,
sip.py), both ways: each form allowed and refused, against the demo region.

The agreement ``TARGET`` is Vårdcentralen Björkbacken's (Region Exempel); the hospital's
medicine clinic (the same provider) and Hemsjukvården Exempelstad (Exempelstads kommun, another
provider) take part in it, as in tests/security/test_consent_matrix.py. Each test leaves no
Consent in force behind it. Page sessions are sealed around the server's own tokens, as the
sign-in seals them (as in tests/security/test_every_route.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import html
import os
import re
import time
import types
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi.responses import Response
from fastapi.testclient import TestClient

from api.app import create_app
from api.pages import session as sessions
from api.pages.sharing import consent_resource
from patientkontrakt.domain import codes
from patientkontrakt.domain.demo import DemoGenerator
from patientkontrakt.security.clients import Clients
from patientkontrakt.security.demo_clients import STAFF_SCOPES
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import BASE_URL, demo_database, make_settings
from tests.security.conftest import World, _agreements

VC = "demo-org-vc-bjorkbacken"
CLINIC = "demo-org-med-lanssjukhuset"
HOMECARE = "demo-org-hemsjukvard-exempelstad"
HOMESERVICE = "demo-org-hemtjanst-exempelstad"
TARGET = 2
CSRF = "csrf-of-the-tests-session"
REASON = "Medvetslös vid ankomst, anhöriga nås inte"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with demo_database(f"pk_sharing_pages_{os.getpid()}", 4) as url:
        settings = make_settings(url)

        async def register() -> None:  # the staff pages' client: it exchanges tokens for emergency access
            store = Store(create_engine(settings.database_url, pool_size=1))
            try:
                await Clients(store).add("pk-personal", name="Patientkontrakt – personal", kind="public",
                                         redirect_uris=["http://127.0.0.1/personal/callback"], scope=STAFF_SCOPES)
            finally:
                await store.dispose()

        asyncio.run(register())
        yield World(settings, DemoGenerator(seed=1), _agreements(DemoGenerator(seed=1))[:4])


@pytest.fixture(scope="module")
def http(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings), base_url=BASE_URL) as client:
        yield client


class Staff:
    """A nurse of ``org`` on the staff pages: the session cookie follows what the pages set."""

    def __init__(self, world: World, http: TestClient, org: str) -> None:
        self.world, self.http, self.org = world, http, org
        self.token = world.staff(world.role_at(org, "nurse"))["authorization"].removeprefix("Bearer ")
        self.session = self._session()

    def _session(self) -> sessions.Session:
        claims = self.app.state.oauth.tokens.verify(self.token)
        return sessions.Session(access_token=self.token, refresh_token=None, expires_at=float(claims["exp"]),
                                csrf=CSRF, name=str(claims.get("name") or ""), unit=claims.get("care_unit_name"),
                                fhir_user=claims.get("fhirUser"), patient=None, started=time.time())

    @property
    def app(self) -> Any:
        return self.http.app

    def cookie(self) -> str:
        """The cookies of ``session``, sealed as the pages seal them (its emergency token apart)."""
        sealed = Response()
        sessions.save(types.SimpleNamespace(app=self.app), sealed, sessions.STAFF, self.session)  # type: ignore[arg-type]
        return "; ".join(h.split(";")[0] for h in sealed.headers.getlist("set-cookie") if "Max-Age=0" not in h)

    def _keep(self, response: httpx.Response) -> None:
        """A session the page saved (an emergency access started or ended) is this nurse's now."""
        jar = dict(part.split("=", 1) for part in self.cookie().split("; "))
        saved = False
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";")[0]
            if "Max-Age=0" in header or not value:
                jar.pop(name, None)
            else:
                jar[name] = value
                saved = saved or name == sessions.STAFF.cookie
        if saved:
            request: Any = types.SimpleNamespace(app=self.app, cookies=jar)
            self.session = sessions.current(request, sessions.STAFF)

    def get(self, path: str, language: str = "sv") -> httpx.Response:
        self.http.cookies.clear()
        response = self.http.get(path, headers={"cookie": self.cookie(), "accept-language": language},
                                 follow_redirects=False)
        self._keep(response)
        return response

    def post(self, path: str, form: dict[str, str]) -> httpx.Response:
        self.http.cookies.clear()
        response = self.http.post(path, data={"csrf": CSRF, **form}, headers={"cookie": self.cookie()},
                                  follow_redirects=False)
        self._keep(response)
        return response

    @property
    def json_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}", "content-type": "application/fhir+json"}

    def fhir(self, method: str, path: str, content: bytes | None = None, headers: dict[str, str] | None = None
             ) -> httpx.Response:
        response: httpx.Response = self.http.request(
            method, f"/fhir/{path}", content=content, headers=headers or {"authorization": f"Bearer {self.token}"})
        return response


def _nurse(world: World, http: TestClient, org: str) -> Staff:
    return Staff(world, http, org)


def _consents(nurse: Staff, patient: str) -> list[dict[str, Any]]:
    response = nurse.fhir("GET", f"Consent?patient=Patient/{patient}&status=active")
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _revoke_all(nurse: Staff, patient: str) -> None:
    for consent in _consents(nurse, patient):
        revoked = orjson.dumps({**consent, "status": "inactive"})
        response = nurse.fhir("PUT", f"Consent/{consent['id']}", content=revoked, headers=nurse.json_headers)
        assert response.status_code == 200, response.text


def _text(response: httpx.Response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.text)))


@pytest.fixture
def target(world: World) -> Any:
    return world.agreements[TARGET]


# -- samtycke ------------------------------------------------------------------------------------------


def test_a_samtycke_recorded_at_the_kommun_shows_it_the_regions_agreement(world: World, http: TestClient,
                                                                           target: Any) -> None:
    homecare = _nurse(world, http, HOMECARE)
    assert homecare.get(f"/personal/avtal/{target.plan}").status_code == 404  # another provider's, no samtycke
    page = homecare.get(f"/personal/patient/{target.patient}/samtycke")
    assert page.status_code == 200, page.text
    said = _text(page)
    assert "patientens samtycke" in said and "Registrera samtycke" in said and "Nödåtkomst" in said
    assert target.plan not in page.text  # that the agreement exists, never which
    english = _text(homecare.get(f"/personal/patient/{target.patient}/samtycke", "en"))
    assert "needs the patient's consent (samtycke)" in english and "Record samtycke" in english

    saved = homecare.post(f"/personal/patient/{target.patient}/samtycke",
                          {"kind": "samtycke", "end": "", "tillbaka": f"/personal/avtal/{target.plan}"})
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == f"/personal/avtal/{target.plan}?sparat=1"
    try:
        shown = homecare.get(f"/personal/avtal/{target.plan}")
        assert shown.status_code == 200, shown.text
        assert "Samtycke och spärr" in shown.text and "Återkalla" in shown.text
        recorded = _consents(homecare, target.patient)
        assert len(recorded) == 1 and recorded[0]["organization"][0]["reference"] == f"Organization/{HOMECARE}"
        assert recorded[0]["provision"]["actor"][0]["reference"]["reference"] == f"Organization/{HOMECARE}"
    finally:
        _revoke_all(homecare, target.patient)
    assert homecare.get(f"/personal/avtal/{target.plan}").status_code == 404


def test_revoking_uses_the_version_shown(world: World, http: TestClient, target: Any) -> None:
    homecare = _nurse(world, http, HOMECARE)
    assert homecare.post(f"/personal/patient/{target.patient}/samtycke",
                         {"kind": "samtycke", "end": ""}).status_code == 303
    try:
        consent = _consents(homecare, target.patient)[0]
        path = f"/personal/patient/{target.patient}/samtycke/{consent['id']}/aterkalla"
        stale = homecare.post(path, {"version": "0"})
        assert stale.status_code == 409, stale.text
        assert "Någon annan har ändrat" in stale.text
        assert len(_consents(homecare, target.patient)) == 1  # nothing was overwritten
        revoked = homecare.post(path, {"version": consent["meta"]["versionId"]})
        assert revoked.status_code == 303, revoked.text
        assert _consents(homecare, target.patient) == []
    finally:
        _revoke_all(homecare, target.patient)


def test_a_form_without_the_sessions_csrf_token_saves_nothing(world: World, http: TestClient, target: Any) -> None:
    homecare = _nurse(world, http, HOMECARE)
    http.cookies.clear()
    response = http.post(f"/personal/patient/{target.patient}/samtycke", data={"csrf": "wrong", "kind": "samtycke"},
                         headers={"cookie": homecare.cookie()}, follow_redirects=False)
    assert response.status_code == 403
    assert _consents(homecare, target.patient) == []


def test_a_unit_that_does_not_see_the_patient_finds_no_page(world: World, http: TestClient, target: Any) -> None:
    other = _nurse(world, http, "demo-org-vc-strandvagen")
    assert other.get(f"/personal/patient/{target.patient}/samtycke").status_code == 404
    refused = other.post(f"/personal/patient/{target.patient}/samtycke", {"kind": "samtycke"})
    assert refused.status_code == 404
    assert _consents(_nurse(world, http, VC), target.patient) == []


# -- spärr ----------------------------------------------------------------------------------------------


def test_a_sparr_at_the_vardcentral_hides_its_part_and_the_hospital_is_told(world: World, http: TestClient,
                                                                            target: Any) -> None:
    vc, clinic = _nurse(world, http, VC), _nurse(world, http, CLINIC)
    assert clinic.get(f"/personal/avtal/{target.plan}").status_code == 200
    saved = vc.post(f"/personal/patient/{target.patient}/samtycke",
                    {"kind": "inre-sparr", "custodian": VC, "end": "", "tillbaka": f"/personal/avtal/{target.plan}"})
    assert saved.status_code == 303, saved.text
    try:
        assert vc.get(f"/personal/avtal/{target.plan}").status_code == 200  # the owning unit sees its own
        assert clinic.get(f"/personal/avtal/{target.plan}").status_code == 404
        told = clinic.get(f"/personal/patient/{target.patient}/samtycke")
        assert told.status_code == 200, told.text
        assert "patienten har spärrat" in _text(told)
        assert target.plan not in told.text
        listed = clinic.get("/personal")
        assert target.plan not in listed.text
        patient = vc.fhir("GET", f"Patient/{target.patient}").json()
        number = next(i["value"] for i in patient["identifier"] if i["system"].endswith("personnummer"))
        searched = clinic.get(f"/personal?q={number}")
        assert searched.status_code == 200 and target.plan not in searched.text
        assert "patienten har spärrat" in _text(searched)  # found by personnummer: told, never what or where
        assert f"/personal/patient/{target.patient}/samtycke" in searched.text
    finally:
        _revoke_all(vc, target.patient)
    assert clinic.get(f"/personal/avtal/{target.plan}").status_code == 200


def test_another_providers_unit_cannot_record_a_sparr_on_the_regions_data(world: World, http: TestClient,
                                                                          target: Any) -> None:
    homecare = _nurse(world, http, HOMECARE)
    page = homecare.get(f"/personal/patient/{target.patient}/samtycke")
    assert f'value="{VC}"' not in page.text  # the form offers only the kommun's own units
    refused = homecare.post(f"/personal/patient/{target.patient}/samtycke",
                            {"kind": "yttre-sparr", "custodian": VC, "end": ""})
    assert refused.status_code == 422, refused.text
    assert "din egen vårdgivare" in refused.text
    assert _consents(_nurse(world, http, VC), target.patient) == []
    # past the page's check, the core refuses it too
    body = consent_resource(target.patient, "yttre-sparr", VC, "", datetime.date.today())
    direct = homecare.fhir("POST", "Consent", content=orjson.dumps(body),
                           headers=homecare.json_headers)
    assert direct.status_code == 403, direct.text


# -- nödåtkomst -------------------------------------------------------------------------------------------


def test_emergency_access_needs_a_reason(world: World, http: TestClient, target: Any) -> None:
    homecare = _nurse(world, http, HOMECARE)
    for reason in ("", "för kort"):
        refused = homecare.post(f"/personal/patient/{target.patient}/nodatkomst", {"reason": reason})
        assert refused.status_code == 422, refused.text
        assert "10 till 1000 tecken" in refused.text
        assert not homecare.session.emergency
    assert homecare.get(f"/personal/avtal/{target.plan}").status_code == 404


def test_emergency_access_opens_the_agreement_until_it_ends(world: World, http: TestClient, target: Any) -> None:
    homecare = _nurse(world, http, HOMECARE)
    form = homecare.get(f"/personal/patient/{target.patient}/nodatkomst?tillbaka=/personal/avtal/{target.plan}")
    assert form.status_code == 200 and "vården inte kan vänta" in form.text
    started = homecare.post(f"/personal/patient/{target.patient}/nodatkomst",
                            {"reason": REASON, "tillbaka": f"/personal/avtal/{target.plan}"})
    assert started.status_code == 303, started.text
    assert started.headers["location"] == f"/personal/avtal/{target.plan}"
    assert homecare.session.emergency and homecare.session.emergency_patient == target.patient
    shown = homecare.get(f"/personal/avtal/{target.plan}")
    assert shown.status_code == 200, shown.text
    assert "Nödåtkomst aktiv för" in _text(shown) and "allt du ser loggas med ditt skäl" in _text(shown)
    assert re.search(r"till \d\d:\d\d", _text(shown))

    ended = homecare.post("/personal/nodatkomst/avsluta", {})
    assert ended.status_code == 303
    assert not homecare.session.emergency and homecare.session.emergency_token is None
    assert homecare.get(f"/personal/avtal/{target.plan}").status_code == 404


def test_an_emergency_session_expires(world: World, http: TestClient, target: Any) -> None:
    homecare = _nurse(world, http, HOMECARE)
    assert homecare.post(f"/personal/patient/{target.patient}/nodatkomst", {"reason": REASON}).status_code == 303
    assert homecare.get(f"/personal/avtal/{target.plan}").status_code == 200
    homecare.session = dataclasses.replace(homecare.session, emergency_expires=time.time() - 1)
    expired = homecare.get(f"/personal/avtal/{target.plan}")
    assert expired.status_code == 404
    assert "Nödåtkomst aktiv" not in _text(expired)
    assert homecare.session.emergency_token is None  # the page forgot the token


def test_hemtjanst_gets_no_emergency_access(world: World, http: TestClient, target: Any) -> None:
    homeservice = _nurse(world, http, HOMESERVICE)
    page = homeservice.get(f"/personal/patient/{target.patient}/samtycke")
    assert page.status_code == 200, page.text
    assert "/nodatkomst" not in page.text  # not offered
    refused = homeservice.post(f"/personal/patient/{target.patient}/nodatkomst", {"reason": REASON})
    assert refused.status_code == 403, refused.text
    assert "Nödåtkomst gäller hälso- och sjukvård" in refused.text
    assert not homeservice.session.emergency


# -- SIP ------------------------------------------------------------------------------------------------------


def sip(target: Any, author: str, performer_region: str, consent_id: str) -> dict[str, Any]:
    """A SIP of ``target``'s agreement written by ``author`` (a kommun unit)."""
    def activity(huvudman: str, org: str, text: str) -> dict[str, Any]:
        return {"extension": [{"url": "https://patientkontrakt.se/fhir/StructureDefinition/pk-sip-huvudman",
                               "valueCodeableConcept": {"coding": [{"system": "https://patientkontrakt.se/fhir/"
                                                                    "CodeSystem/pk-huvudman", "code": huvudman}]}}],
                "detail": {"status": "in-progress", "description": text,
                           "performer": [{"reference": f"Organization/{org}"}]}}
    return {
        "resourceType": "CarePlan",
        "meta": {"profile": ["https://patientkontrakt.se/fhir/StructureDefinition/pk-sip"]},
        "extension": [{"url": "https://patientkontrakt.se/fhir/StructureDefinition/pk-sip-overgripande-ansvar",
                       "valueCodeableConcept": {"coding": [{"system": "https://patientkontrakt.se/fhir/CodeSystem/"
                                                            "pk-huvudman", "code": "kommun"}]}}],
        "status": "active", "intent": "plan", "title": "Min SIP",
        "category": [{"coding": [{"system": codes.CAREPLAN_CATEGORY, "code": "sip"}]}],
        "partOf": [{"reference": f"CarePlan/{target.plan}"}],
        "subject": {"reference": f"Patient/{target.patient}"},
        "author": {"reference": f"Organization/{author}"},
        "supportingInfo": [{"reference": f"Consent/{consent_id}"}],
        "activity": [activity("kommun", author, "Hemsjukvården ger insulin morgon och kväll."),
                     activity("region", performer_region, "Vårdcentralen följer upp blodsockret varje månad.")],
    }


def create_sip(kommun: Staff, target: Any) -> str:
    """A SIP written by the kommun unit through the API, as its staff would: while the patient's
    samtycke (the SIP's own, ``supportingInfo``) lets the unit see the agreement it belongs to;
    the samtycke is revoked after, so the test starts without one."""
    consent = consent_resource(target.patient, "samtycke", kommun.org, "", datetime.date.today())
    made = kommun.fhir("POST", "Consent", content=orjson.dumps(consent), headers=kommun.json_headers)
    assert made.status_code == 201, made.text
    try:
        created = kommun.fhir("POST", "CarePlan", headers=kommun.json_headers,
                              content=orjson.dumps(sip(target, kommun.org, VC, made.json()["id"])))
        assert created.status_code == 201, created.text
    finally:
        _revoke_all(kommun, target.patient)
    return str(created.json()["id"])


def test_the_kommun_sees_its_sip_and_is_told_the_agreement_needs_samtycke(world: World, http: TestClient,
                                                                          target: Any) -> None:
    homecare = _nurse(world, http, HOMECARE)
    sip_id = create_sip(homecare, target)

    listed = homecare.get("/personal")
    assert f"/personal/sip/{sip_id}" in listed.text
    page = homecare.get(f"/personal/sip/{sip_id}")
    assert page.status_code == 200, page.text
    said = _text(page)
    assert "Hemsjukvården ger insulin" in said and "Övergripande ansvar: Kommun" in said
    assert "Hemsjukvården Exempelstad" in said and "Vårdcentralen Björkbacken" in said
    assert "patientens samtycke" in said and f"/personal/avtal/{target.plan}" not in page.text
    assert homecare.post(f"/personal/patient/{target.patient}/samtycke",
                         {"kind": "samtycke", "tillbaka": f"/personal/sip/{sip_id}"}).status_code == 303
    try:
        page = homecare.get(f"/personal/sip/{sip_id}")
        assert f'href="/personal/avtal/{target.plan}"' in page.text
        assert homecare.get(f"/personal/avtal/{target.plan}").status_code == 200
    finally:
        _revoke_all(homecare, target.patient)
    other = _nurse(world, http, "demo-org-vc-strandvagen")
    assert other.get(f"/personal/sip/{sip_id}").status_code == 404


def test_an_emergency_access_with_the_longest_reason_fits_the_browsers_cookies(world: World, http: TestClient,
                                                                               target: Any) -> None:
    """A browser keeps no cookie over 4096 bytes; the emergency token carries the reason."""
    homecare = _nurse(world, http, HOMECARE)
    started = homecare.post(f"/personal/patient/{target.patient}/nodatkomst", {"reason": "å" * 1000})
    assert started.status_code == 303, started.text
    sizes = [len(header.split(";")[0]) for header in started.headers.get_list("set-cookie")]
    assert len(sizes) > 1 and max(sizes) < 4000, sizes
    assert homecare.get(f"/personal/avtal/{target.plan}").status_code == 200
    assert homecare.post("/personal/nodatkomst/avsluta", {}).status_code == 303
    assert not homecare.session.emergency
