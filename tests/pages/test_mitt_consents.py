"""The patient's samtycken and spärrar at ``/mitt/sparrar``, and the SIP beside the agreement at
``/mitt`` (api/pages/mitt.py), in the patient's own session through the test IdP.

The Consents and the SIP are recorded through the FHIR API by the care units the patient asked
(as in tests/security/test_consent_matrix.py); the page names the units and providers by reading
their Organizations under the patient's access (a Consent in the patient's compartment names
them), and shows nothing of another patient's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.domain.codes import CANONICAL, CAREPLAN_CATEGORY
from patientkontrakt.domain.demo import DemoGenerator, has_consents
from tests.conftest import BASE_URL, demo_database, make_settings
from tests.security.conftest import World, _agreements
from tests.security.test_consent_matrix import CLINIC, HOMECARE, REGION, TARGET, VC, consent
from tests.security.test_sessions import pages_sign_in, register_pages_clients

AGREEMENTS = 8
HUVUDMAN = f"{CANONICAL}/CodeSystem/pk-huvudman"


@pytest.fixture(scope="module")
def module_db() -> Iterator[str]:
    with demo_database(f"pk_mitt_consents_{os.getpid()}", AGREEMENTS) as url:
        register_pages_clients(url)
        yield url


@pytest.fixture(scope="module")
def world(module_db: str) -> World:
    generator = DemoGenerator(seed=1)
    return World(make_settings(module_db), generator, _agreements(generator)[:AGREEMENTS])


@pytest.fixture(scope="module")
def app(module_db: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(module_db, test_idp=True)), base_url=BASE_URL) as client:
        yield client


def _name(world: World, org: str) -> str:
    return str(next(o["name"] for o in world.generator.region.organizations if o["id"] == org))


def _record(app: TestClient, world: World, unit: str, resource: dict[str, Any]) -> str:
    response = app.post(f"/fhir/{resource['resourceType']}", json=resource,
                        headers={**world.staff(world.role_at(unit, "nurse")), "content-type": "application/fhir+json"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _revoke(app: TestClient, world: World, unit: str, consent_id: str) -> None:
    headers = {**world.staff(world.role_at(unit, "nurse")), "content-type": "application/fhir+json"}
    current = app.get(f"/fhir/Consent/{consent_id}", headers=headers).json()
    assert app.put(f"/fhir/Consent/{consent_id}", json={**current, "status": "inactive"},
                   headers=headers).status_code == 200


def _sip(patient: str, plan: str, samtycke: str) -> dict[str, Any]:
    def huvudman(code: str) -> list[dict[str, Any]]:
        return [{"url": f"{CANONICAL}/StructureDefinition/pk-sip-huvudman",
                 "valueCodeableConcept": {"coding": [{"system": HUVUDMAN, "code": code}]}}]
    return {
        "resourceType": "CarePlan", "meta": {"profile": [f"{CANONICAL}/StructureDefinition/pk-sip"]},
        "extension": [{"url": f"{CANONICAL}/StructureDefinition/pk-sip-overgripande-ansvar",
                       "valueCodeableConcept": {"coding": [{"system": HUVUDMAN, "code": "kommun"}]}}],
        "status": "active", "intent": "plan", "title": "Min SIP",
        "category": [{"coding": [{"system": CAREPLAN_CATEGORY, "code": "sip"}]}],
        "partOf": [{"reference": f"CarePlan/{plan}"}], "subject": {"reference": f"Patient/{patient}"},
        "author": {"reference": f"Organization/{HOMECARE}"}, "contributor": [{"reference": f"Organization/{VC}"}],
        "supportingInfo": [{"reference": f"Consent/{samtycke}"}],
        "activity": [
            {"extension": huvudman("kommun"), "detail": {
                "status": "in-progress", "performer": [{"reference": f"Organization/{HOMECARE}"}],
                "description": "Hemsjukvården lägger om såret två gånger i veckan"}},
            {"extension": huvudman("region"), "detail": {
                "status": "not-started", "performer": [{"reference": f"Organization/{VC}"}],
                "description": "Vårdcentralen följer upp blodsockret"}},
        ],
    }


@pytest.fixture(scope="module")
def recorded(app: TestClient, world: World) -> dict[str, str]:
    """The patient's samtycke (the hemsjukvård may read), the kommun's SIP, an inre spärr (the
    vårdcentral's data), a revoked yttre spärr (the region's data) and an expired samtycke;
    another patient's samtycke."""
    target = world.agreements[TARGET]
    other = next(a for a in world.agreements if a.patient != target.patient and a.author not in (VC, HOMECARE, CLINIC)
                 and not has_consents(a.number))  # none from the demo either
    patient = target.patient
    samtycke = _record(app, world, HOMECARE, consent(patient, "samtycke", "IRCP", HOMECARE))
    # the kommun writes the SIP while its samtycke lets it read the agreement (before the spärr)
    _record(app, world, HOMECARE, _sip(patient, target.plan, samtycke))
    _record(app, world, VC, consent(patient, "inre-sparr", "CST", VC))
    _revoke(app, world, VC, _record(app, world, VC, consent(patient, "yttre-sparr", "CST", REGION)))
    _record(app, world, HOMECARE, consent(patient, "samtycke", "IRCP", HOMECARE, "2023-12-31"))
    _record(app, world, other.author, consent(other.patient, "samtycke", "IRCP", other.author))
    return {"patient": patient, "other": other.patient, "other_unit": other.author}


def _page(app: TestClient, patient: str, path: str) -> str:
    app.cookies.clear()
    pages_sign_in(app, "/mitt", f"patient:{patient}")
    response = app.get(path, headers={"accept-language": "sv"})
    assert response.status_code == 200, response.text[:2000]
    return " ".join(response.text.split())


def test_the_patient_sees_their_samtycke_and_inre_sparr_with_the_units_names(
        app: TestClient, world: World, recorded: dict[str, str]) -> None:
    page = _page(app, recorded["patient"], "/mitt/sparrar")
    homecare, vc = _name(world, HOMECARE), _name(world, VC)
    assert "<h1>Dina spärrar och samtycken</h1>" in page
    current, _, earlier = page.partition('id="tidigare-title"')
    assert (f"Du har gett ditt samtycke till att {homecare} får ta del av uppgifter om dig från andra "
            "vårdgivare.") in current
    assert (f"Uppgifterna hos {vc} är spärrade: de visas inte för andra enheter, inte heller hos andra "
            "vårdgivare.") in current
    assert "Gäller från 1 januari 2023 tills vidare" in current
    assert f"Registrerat av {homecare} den 1 januari 2024" in current
    assert f"Registrerat av {vc} den 1 januari 2024" in current
    assert "En spärr hävs bara om du begär det, av den vårdenhet som har uppgifterna." in current
    assert "de visas inte för andra vårdgivare." not in current  # the yttre spärr was lifted
    # revoked and ended ones, apart
    # the provider is named by reading its Organization, which the spärr in the patient's compartment names
    assert f"Yttre spärr: hävd</p> <p class=\"statement\">Uppgifterna hos {_name(world, REGION)} är spärrade: de " \
           "visas inte för andra vårdgivare." in earlier
    assert app.get(f"/fhir/Organization/{REGION}", headers=world.patient(recorded["patient"])).status_code == 200
    assert "Samtycke: har upphört" in earlier and "Gäller från 1 januari 2023 till och med 31 december 2023" in earlier
    # nothing of another patient's
    assert _name(world, recorded["other_unit"]) not in page


def test_the_page_in_english(app: TestClient, world: World, recorded: dict[str, str]) -> None:
    app.cookies.clear()
    pages_sign_in(app, "/mitt", f"patient:{recorded['patient']}")
    page = " ".join(app.get("/mitt/sparrar", headers={"accept-language": "en"}).text.split())
    assert "<h1>Your blocks and consents</h1>" in page
    assert (f"You have given your consent for {_name(world, HOMECARE)} to see information about you from other "
            "care providers.") in page


def test_another_patient_sees_only_their_own(app: TestClient, world: World, recorded: dict[str, str]) -> None:
    page = _page(app, recorded["other"], "/mitt/sparrar")
    other_unit = _name(world, recorded["other_unit"])
    assert f"Du har gett ditt samtycke till att {other_unit} får ta del av uppgifter" in page
    assert _name(world, HOMECARE) not in page and "Du har inga spärrar." in page
    assert 'id="tidigare-title"' not in page


def test_a_patient_without_any_sees_the_empty_state(app: TestClient, world: World,
                                                    recorded: dict[str, str]) -> None:
    nobody = next(a.patient for a in world.agreements
                  if a.patient not in (recorded["patient"], recorded["other"]) and not has_consents(a.number))
    page = _page(app, nobody, "/mitt/sparrar")
    assert "Du har inga spärrar och inga samtycken" in page


def test_the_agreement_shows_the_sip_interventions_with_who_does_them(
        app: TestClient, world: World, recorded: dict[str, str]) -> None:
    page = _page(app, recorded["patient"], "/mitt")
    assert 'href="/mitt/sparrar"' in page
    assert page.count("Din överenskommelse med") == 1, "the SIP is part of the agreement, not one of its own"
    assert "I din SIP (samordnad individuell plan): Min SIP" in page
    assert "Kommunen har det övergripande ansvaret för din SIP." in page
    assert '<p class="when">Pågår</p> <p class="what">Hemsjukvården lägger om såret' in page  # in-progress
    assert '<p class="when">Planerat</p> <p class="what">Vårdcentralen följer upp blodsockret' in page  # not-started
    assert ("Hemsjukvården lägger om såret två gånger i veckan</p> <p class=\"sip-who\">Vem gör det: "
            f"<span class=\"huvudman\">Kommunen</span>, {_name(world, HOMECARE)}</p>") in page
    assert ("Vårdcentralen följer upp blodsockret</p> <p class=\"sip-who\">Vem gör det: "
            f"<span class=\"huvudman\">Regionen</span>, {_name(world, VC)}</p>") in page
    printed = " ".join(app.get("/mitt?utskrift=1", headers={"accept-language": "sv"}).text.split())
    assert "I din SIP (samordnad individuell plan): Min SIP" in printed and "Vem gör det: " in printed
    other = _page(app, recorded["other"], "/mitt")
    assert "Min SIP" not in other
