"""The care provider's log review, both ways (docs/security.md, *The access log*): a log reviewer
(a commission coded ``pk-staff-role#logggranskare``) reads every entry of their own provider's
units, the emergency accesses with their reasons among them, and nothing of another provider's;
anyone else reads their own unit's entries only and is refused the review pages. Their reading
is itself logged. The AuditEvent search's ``purpose`` filter, the page ``/personal/logg`` and its
CSV export (``api/pages/log_review.py``).

The demo's reviewers: one at the hospital's medicine clinic (Region Exempel), one at
Hemsjukvården Exempelstad (Exempelstads kommun). The entries are made here: nurses of the
vårdcentral and the clinic read the agreement ``TARGET`` (which all three units take
part in; the hemsjukvård, another provider without a samtycke, its Patient), and a nurse of the
clinic and one of the hemsjukvård each read it under emergency access, with reasons of their own.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.responses import Response
from fastapi.testclient import TestClient

from api.app import create_app
from api.pages import session as sessions
from api.pages.log_review import csv_text
from patientkontrakt.domain.demo import DemoGenerator
from patientkontrakt.domain.identifiers import PERSONNUMMER
from patientkontrakt.security.claims import ClaimError
from patientkontrakt.security.clients import Clients
from patientkontrakt.security.demo_clients import STAFF_SCOPES
from patientkontrakt.security.oauth import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE
from patientkontrakt.security.tokens import ACCESS_TOKEN_CLAIMS, LOG_REVIEWER, Grant
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import BASE_URL, demo_database, make_settings
from tests.security.conftest import World, _agreements

VC = "demo-org-vc-bjorkbacken"  # Region Exempel
CLINIC = "demo-org-med-lanssjukhuset"  # Region Exempel: its log reviewer works here
HOMECARE = "demo-org-hemsjukvard-exempelstad"  # Exempelstads kommun: its log reviewer works here
TARGET = 2
REVIEWER = "logggranskare"
CSRF = "csrf-of-the-log-review-tests"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


@dataclass
class Scene:
    world: World
    app: TestClient
    region_reason: str
    kommun_reason: str
    formula_reason: str
    personnummer: str

    @property
    def patient(self) -> str:
        return self.world.agreements[TARGET].patient

    @property
    def plan(self) -> str:
        return self.world.agreements[TARGET].plan

    def nurse(self, org: str) -> dict[str, str]:
        return self.world.staff(self.world.role_at(org, "nurse"))

    def reviewer(self, org: str) -> dict[str, str]:
        return self.world.staff(self.world.role_at(org, REVIEWER))

    def hsa(self, org: str) -> str:
        found = next(o for o in self.world.generator.region.organizations if o["id"] == org)
        return str(found["identifier"][0]["value"])

    def units_of(self, provider_org: str) -> set[str]:
        return {self.hsa(o["id"]) for o in self.world.generator.region.organizations
                if (o.get("partOf") or {}).get("reference") == f"Organization/{provider_org}"}

    def emergency(self, org: str, reason: str) -> dict[str, str]:
        staff = self.nurse(org)
        response = self.app.post("/oauth/token", data={
            "grant_type": TOKEN_EXCHANGE, "client_id": "pk-personal", "subject_token_type": ACCESS_TOKEN_TYPE,
            "subject_token": staff["authorization"].split(" ", 1)[1], "purpose_of_use": "ETREAT",
            "patient": self.patient, "reason": reason}, headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 200, response.text
        return {"authorization": f"Bearer {response.json()['access_token']}"}

    def events(self, headers: dict[str, str], query: str = "") -> list[dict[str, Any]]:
        response = self.app.get(f"/fhir/AuditEvent?_count=200{'&' + query if query else ''}", headers=headers)
        assert response.status_code == 200, response.text
        return [e["resource"] for e in response.json().get("entry", [])]

    def page(self, path: str, headers: dict[str, str], language: str = "sv") -> Any:
        """``path`` of the staff pages, signed in with the token in ``headers``."""
        token = headers["authorization"].removeprefix("Bearer ")
        app: Any = self.app.app
        claims = app.state.oauth.tokens.verify(token)
        session = sessions.Session(access_token=token, refresh_token=None, expires_at=float(claims["exp"]),
                                   csrf=CSRF, name=str(claims.get("name") or ""), unit=claims.get("care_unit_name"),
                                   fhir_user=claims.get("fhirUser"), patient=None, started=time.time())
        sealed = Response()
        sessions.save(types.SimpleNamespace(app=app), sealed, sessions.STAFF, session)  # type: ignore[arg-type]
        self.app.cookies.clear()
        return self.app.get(path, headers={"cookie": sealed.headers["set-cookie"].split(";")[0],
                                           "accept-language": language}, follow_redirects=False)


def unit_of(event: dict[str, Any]) -> str:
    return str(next(a["who"]["identifier"]["value"] for a in event["agent"]
                    if (a.get("type") or {}).get("text") == "vårdenhet"))


def reason_of(event: dict[str, Any]) -> str | None:
    return event["purposeOfEvent"][0].get("text")


def purpose_of(event: dict[str, Any]) -> str:
    return str(event["purposeOfEvent"][0]["coding"][0]["code"])


@pytest.fixture(scope="module")
def module_db() -> Iterator[str]:
    with demo_database(f"pk_logreview_{os.getpid()}", 4) as url:
        yield url


@pytest.fixture(scope="module")
def scene(module_db: str) -> Iterator[Scene]:
    settings = make_settings(module_db)

    async def register() -> None:  # the staff pages' client, which exchanges tokens for emergency access
        store = Store(create_engine(settings.database_url, pool_size=1))
        try:
            await Clients(store).add("pk-personal", name="Patientkontrakt – personal", kind="public",
                                     redirect_uris=["http://127.0.0.1/personal/callback"], scope=STAFF_SCOPES)
        finally:
            await store.dispose()

    asyncio.run(register())
    generator = DemoGenerator(seed=1)
    world = World(settings, generator, _agreements(generator)[:4])
    tag = uuid.uuid4().hex[:6]
    with TestClient(create_app(settings), base_url=BASE_URL) as app:
        app.headers.update({"content-type": "application/fhir+json"})
        scene = Scene(world, app, f"Medvetslös vid ankomst ({tag})", f"Akut försämring i hemmet ({tag})",
                      f"=HYPERLINK(\"http://example.org\") akut ({tag})", "")
        for org in (VC, CLINIC):
            assert app.get(f"/fhir/CarePlan/{scene.plan}", headers=scene.nurse(org)).status_code == 200
        # the kommun sees the region's agreement only with a samtycke; its Patient record it sees
        assert app.get(f"/fhir/Patient/{scene.patient}", headers=scene.nurse(HOMECARE)).status_code == 200
        patient = app.get(f"/fhir/Patient/{scene.patient}", headers=scene.nurse(VC)).json()
        scene.personnummer = next(i["value"] for i in patient["identifier"] if i["system"] == PERSONNUMMER)
        for org, reason in ((CLINIC, scene.region_reason), (CLINIC, scene.formula_reason),
                            (HOMECARE, scene.kommun_reason)):
            response = app.get(f"/fhir/CarePlan/{scene.plan}", headers=scene.emergency(org, reason))
            assert response.status_code == 200, response.text
        yield scene


# -- who reads which entries ---------------------------------------------------------------------


def test_a_reviewer_token_carries_the_role_and_a_nurse_token_does_not(scene: Scene) -> None:
    verify = scene.app.app.state.oauth.tokens.verify  # type: ignore[attr-defined]
    assert verify(scene.reviewer(CLINIC)["authorization"][7:]).get("pk_roles") == "log-reviewer"
    assert "pk_roles" not in verify(scene.nurse(CLINIC)["authorization"][7:])


def test_the_regions_reviewer_reads_every_region_unit_with_the_emergency_reasons(scene: Scene) -> None:
    events = scene.events(scene.reviewer(CLINIC))
    units = {unit_of(e) for e in events}
    assert {scene.hsa(VC), scene.hsa(CLINIC)} <= units
    assert units <= scene.units_of("demo-org-region")
    emergency = [e for e in events if reason_of(e) == scene.region_reason]
    assert emergency and all(purpose_of(e) == "ETREAT" for e in emergency)
    assert any(f"Patient/{scene.patient}" in [x.get("what", {}).get("reference") for x in e["entity"]]
               for e in emergency)
    assert not [e for e in events if reason_of(e) == scene.kommun_reason]


def test_the_kommuns_reviewer_reads_the_kommun_and_not_the_region(scene: Scene) -> None:
    events = scene.events(scene.reviewer(HOMECARE))
    assert {unit_of(e) for e in events} <= scene.units_of("demo-org-kommun-exempelstad")
    assert [e for e in events if reason_of(e) == scene.kommun_reason]
    assert not [e for e in events if reason_of(e) in (scene.region_reason, scene.formula_reason)]
    region_entry = next(e for e in scene.events(scene.reviewer(CLINIC)) if reason_of(e) == scene.region_reason)
    response = scene.app.get(f"/fhir/AuditEvent/{region_entry['id']}", headers=scene.reviewer(HOMECARE))
    assert response.status_code == 404


def test_a_nurse_reads_her_own_units_entries_only(scene: Scene) -> None:
    nurse = scene.nurse(VC)
    events = scene.events(nurse)
    assert events and {unit_of(e) for e in events} == {scene.hsa(VC)}
    region_entry = next(e for e in scene.events(scene.reviewer(CLINIC)) if reason_of(e) == scene.region_reason)
    assert scene.app.get(f"/fhir/AuditEvent/{region_entry['id']}", headers=nurse).status_code == 404
    assert scene.events(nurse, "purpose=ETREAT") == []


def test_purpose_filters_by_the_purpose_of_use(scene: Scene) -> None:
    reviewer = scene.reviewer(CLINIC)
    emergency = scene.events(reviewer, "purpose=ETREAT")
    assert emergency and {purpose_of(e) for e in emergency} == {"ETREAT"}
    assert scene.region_reason in {reason_of(e) for e in emergency}
    assert {e["id"] for e in scene.events(reviewer, f"purpose={ACT_REASON}|ETREAT")} == {e["id"] for e in emergency}
    treatment = scene.events(reviewer, "purpose=TREAT")
    assert treatment and {purpose_of(e) for e in treatment} == {"TREAT"}
    both = {e["id"] for e in scene.events(reviewer, "purpose=TREAT,ETREAT")}
    assert both >= {e["id"] for e in emergency} | {e["id"] for e in treatment}
    assert scene.events(reviewer, "purpose=ETREAT&purpose=TREAT") == []


def test_a_reviewers_reading_is_logged_and_a_nurses_is_not(scene: Scene) -> None:
    reviewer = scene.reviewer(CLINIC)
    scene.events(reviewer, f"patient={scene.patient}")
    reviews = scene.events(reviewer, f"purpose=HCOMPL&patient={scene.patient}")
    reviewer_hsa = scene.app.app.state.oauth.tokens.verify(reviewer["authorization"][7:])["sub"]  # type: ignore
    assert any(e["agent"][0]["who"]["identifier"]["value"] == reviewer_hsa for e in reviews)
    before = len(scene.events(reviewer, "purpose=HCOMPL"))
    scene.events(scene.nurse(VC))
    scene.events(scene.nurse(VC), f"patient={scene.patient}")
    assert len(scene.events(reviewer, "purpose=HCOMPL")) == before + 1  # the reviewer's own count, not the nurse's


# -- the pages ----------------------------------------------------------------------------------


def test_the_review_page_is_for_reviewers_only(scene: Scene) -> None:
    for path in ("/personal/logg", "/personal/logg.csv"):
        refused = scene.page(path, scene.nurse(VC))
        assert refused.status_code == 403, path
        assert scene.region_reason not in refused.text


def test_the_review_page_lists_the_providers_emergency_accesses_first(scene: Scene) -> None:
    response = scene.page("/personal/logg", scene.reviewer(CLINIC))
    assert response.status_code == 200, response.text
    text = response.text
    assert "Nödåtkomster" in text and scene.region_reason in text
    assert 'href="/personal/logg"' in scene.page("/personal", scene.reviewer(CLINIC)).text  # the way in
    assert 'href="/personal/logg"' not in scene.page("/personal", scene.nurse(CLINIC)).text
    assert text.index(scene.region_reason) < text.index('<h2 id="all">')
    assert scene.personnummer[:8] in text  # the patient, by personnummer
    assert "Vård och behandling (TREAT)" in text and "Nödåtkomst (ETREAT)" in text  # the purposes, named
    assert scene.kommun_reason not in text
    english = scene.page("/personal/logg", scene.reviewer(CLINIC), language="en")
    assert "Emergency accesses" in english.text and scene.region_reason in english.text
    kommun = scene.page("/personal/logg", scene.reviewer(HOMECARE))
    assert scene.kommun_reason in kommun.text and scene.region_reason not in kommun.text


def test_the_review_page_filters_by_patient_unit_and_date(scene: Scene) -> None:
    reviewer = scene.reviewer(CLINIC)
    by_number = scene.page(f"/personal/logg?patient={scene.personnummer}", reviewer)
    by_id = scene.page(f"/personal/logg?patient={scene.patient}", reviewer)
    assert by_number.status_code == by_id.status_code == 200
    assert "Ingen åtkomst hittades" not in by_number.text and "Ingen åtkomst hittades" not in by_id.text
    looked_up = len(scene.events(reviewer, "purpose=HCOMPL"))
    unknown = scene.page("/personal/logg?patient=191212121212", reviewer)
    assert unknown.status_code == 200 and "Ingen åtkomst hittades" in unknown.text
    # the look-up of a personnummer no one has is logged too: three more, with the page's search of
    # the emergency accesses and the first count's own
    assert len(scene.events(reviewer, "purpose=HCOMPL")) == looked_up + 3
    by_unit = scene.page(f"/personal/logg?enhet={scene.hsa(HOMECARE)}", reviewer)
    assert "Ingen åtkomst hittades" in by_unit.text  # another provider's unit: none of its entries
    assert scene.page("/personal/logg?fran=2026-13-01", reviewer).status_code == 422
    assert scene.page("/personal/logg?till=1999-01-01", reviewer).text.count("Ingen åtkomst hittades") == 1


def test_the_csv_export_holds_the_same_entries_escaped_for_a_spreadsheet(scene: Scene) -> None:
    response = scene.page(f"/personal/logg.csv?patient={scene.personnummer}", scene.reviewer(CLINIC))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig")), delimiter=";"))
    heading, body = rows[0], rows[1:]
    assert heading[0] == "Tid" and "Skäl" in heading
    reason = heading.index("Skäl")
    assert scene.region_reason in [r[reason] for r in body]
    assert "'" + scene.formula_reason in [r[reason] for r in body]  # not run as a formula
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in body for cell in r)
    assert scene.kommun_reason not in response.content.decode("utf-8-sig")
    assert {r[heading.index("Personnummer")] for r in body if r[heading.index("Patient-id")]} == {
        f"{scene.personnummer[:8]}-{scene.personnummer[8:]}"}


def test_csv_cells_that_a_spreadsheet_would_run_start_with_an_apostrophe() -> None:
    text = csv_text([{"reason": value} for value in ("=1+1", "+46", "-2", "@SUM(A1)", "\tx", "ok; \"quoted\"")],
                    ["h"] * 15)
    cells = [row[10] for row in csv.reader(io.StringIO(text), delimiter=";")][1:]
    assert cells == ["'=1+1", "'+46", "'-2", "'@SUM(A1)", "'\tx", "ok; \"quoted\""]


def test_the_role_claim_keeps_known_roles_only() -> None:
    grant = Grant(kind="staff", sub="SE2321000016-P9001", roles=(LOG_REVIEWER,))
    assert grant.claims()["pk_roles"] == "log-reviewer"
    assert "pk_roles" not in Grant(kind="staff", sub="SE2321000016-P0001").claims()
    claims = {**grant.claims(), "pk_roles": "admin log-reviewer superuser"}
    assert Grant.from_claims(claims).roles == (LOG_REVIEWER,)
    assert Grant.from_claims({**claims, "pk_roles": "admin"}).roles == ()
    with pytest.raises(ClaimError):
        ACCESS_TOKEN_CLAIMS.claims["pk_roles"].check("pk_roles", ["log-reviewer"])  # a string, not a list
