"""The Patientkontrakt rules (patientkontrakt/domain/rules.py) over HTTP, on PostgreSQL.

Every rule has a test that a violating write is refused with the right OperationOutcome (status,
issue code, expression, Swedish ``details.text``, English ``diagnostics``) and stores nothing
(the server's version count is unchanged and the resource is not there), and a test that a
correct write passes. Agreements come from ``DemoGenerator``; see ``tests/domain/support.py``.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from patientkontrakt.domain import codes
from patientkontrakt.domain.demo import DemoGenerator
from patientkontrakt.domain.identifiers import HSA_ID, PERSONNUMMER, SAMORDNINGSNUMMER
from tests.domain.support import (
    EXAMPLES,
    TODAY,
    assert_issue,
    commit,
    deep,
    example,
    generator,
    issues,
    members,
    participant,
    put,
    read,
    refused,
    region_for,
    role_code,
    search,
    versions_stored,
)

YESTERDAY = (TODAY - datetime.timedelta(days=1)).isoformat()
LAST_MONTH = (TODAY - datetime.timedelta(days=30)).isoformat()
HOSPITAL = "Organization/demo-org-med-lanssjukhuset"


@dataclass
class Agreement:
    """One demo agreement and the staff of its responsible unit (all stored on the server)."""

    gen: DemoGenerator
    patient: dict[str, Any]
    team: dict[str, Any]
    goals: list[dict[str, Any]]
    plan: dict[str, Any]

    @property
    def resources(self) -> list[dict[str, Any]]:
        return [self.patient, self.team, *self.goals, self.plan]

    @property
    def contact(self) -> str:
        """The current fast vårdkontakt's PractitionerRole reference."""
        return str(members(self.team, codes.FAST_VARDKONTAKT)[-1]["member"]["reference"])

    def staff(self, code: str, *, besides: str = "") -> list[str]:
        """References of the PractitionerRoles coded ``code`` at the responsible unit."""
        unit = self.plan["author"]["reference"]
        return [f"PractitionerRole/{r['id']}" for r in self.gen.region.roles
                if r["organization"]["reference"] == unit and role_code(r) == code
                and f"PractitionerRole/{r['id']}" != besides]


def prepare(client: TestClient, number: int = 0, *, store: bool = True) -> Agreement:
    """Load the part of the region agreement ``number`` needs (its units, and all staff of its
    responsible unit and of the hospital clinic); with ``store``, PUT the agreement too."""
    gen = generator()
    resources = gen.agreement(number)
    units = {resources[-1]["author"]["reference"], HOSPITAL}
    staff = [r for r in gen.region.roles if r["organization"]["reference"] in units]
    commit(client, region_for(gen, [*resources, *staff]))
    if store:
        commit(client, resources)
    patient, team, *goals, plan = resources
    return Agreement(gen, patient, team, goals, plan)


def other_patient(client: TestClient, agreement: Agreement) -> str:
    """Store the patient of another agreement; its reference."""
    patient = agreement.gen.agreement(1)[0]
    commit(client, [patient])
    return f"Patient/{patient['id']}"


def absent(client: TestClient, type_: str, id_: str) -> None:
    assert client.get(f"/fhir/{type_}/{id_}").status_code == 404


def version(client: TestClient, resource: dict[str, Any]) -> str:
    return str(read(client, resource["resourceType"], resource["id"])["meta"]["versionId"])


# -- profile validation on every write ----------------------------------------------------------


def test_careplan_without_category_and_author_is_refused_listing_every_issue(pk_client: TestClient) -> None:
    agreement = prepare(pk_client, store=False)
    commit(pk_client, [agreement.patient, agreement.team, *agreement.goals])
    plan = deep(agreement.plan)
    del plan["category"], plan["author"]
    before = versions_stored(pk_client)
    found = refused(pk_client, put(pk_client, plan), before, status=422, code="required",
                    expression="CarePlan.category", swedish="minst 1 krävs", english="at least 1 required")
    assert_issue(found, code="required", expression="CarePlan.author", swedish="Ansvarig vårdenhet: minst 1 krävs",
                 english="CarePlan.author: at least 1 required")
    assert any("patientkontrakt" in i["diagnostics"] for i in found), "the missing slice is named too"
    assert all(i["severity"] == "error" and i["expression"] for i in found)
    absent(pk_client, "CarePlan", plan["id"])


def test_reference_to_the_wrong_resource_type_is_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client, store=False)
    commit(pk_client, [agreement.patient, agreement.team, *agreement.goals])
    plan = deep(agreement.plan)
    plan["author"] = {"reference": f"Patient/{agreement.patient['id']}"}
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, plan), before, status=422, code="invalid", expression="CarePlan.author.reference",
            swedish="Referensen ska peka på Organization", english="must refer to Organization, not 'Patient'")
    absent(pk_client, "CarePlan", plan["id"])


def test_organization_without_kind_is_refused(pk_client: TestClient) -> None:
    organization = {**example("Organization-pk-example-org-vc-norr"), "id": "no-kind"}
    organization.pop("partOf")
    del organization["type"]
    before = versions_stored(pk_client)
    found = refused(pk_client, put(pk_client, organization), before, status=422, code="required",
                    expression="Organization.type", swedish="minst 1 krävs", english="at least 1 required")
    assert any("Organization.type:kind" in i["diagnostics"] for i in found)
    absent(pk_client, "Organization", "no-kind")


def test_patient_without_identifier_is_refused(pk_client: TestClient) -> None:
    patient = example("Patient-pk-example-patient-tolvan")
    del patient["identifier"], patient["generalPractitioner"]
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, patient), before, status=422, code="required", expression="Patient.identifier",
            swedish="minst 1 krävs", english="Patient.identifier: at least 1 required")
    absent(pk_client, "Patient", patient["id"])


def test_conforming_resources_pass_and_are_stamped_with_their_profile(pk_client: TestClient) -> None:
    names = sorted(path.stem for path in EXAMPLES.glob("*-pk-example-*.json"))
    resources = [example(name) for name in names]
    assert {r["resourceType"] for r in resources} >= {
        "Patient", "Practitioner", "PractitionerRole", "Organization", "CarePlan", "CareTeam", "Goal", "Appointment"}
    commit(pk_client, resources)
    profiles = {
        "Patient": "pk-patient", "Practitioner": "pk-practitioner", "PractitionerRole": "pk-practitioner-role",
        "Organization": "pk-organization", "CarePlan": "pk-patientkontrakt", "CareTeam": "pk-vardteam",
        "Goal": "pk-mal", "Appointment": "pk-aktivitet",
    }
    by_category = {"pk-example-sip-tolvan": "pk-sip", "pk-example-samtycke-tolvan": "pk-samtycke",
                   "pk-example-inre-sparr-tolvan": "pk-sparr", "pk-example-yttre-sparr-tolvan": "pk-sparr"}
    for resource in resources:
        stored = read(pk_client, resource["resourceType"], resource["id"])
        profile = by_category.get(resource["id"]) or profiles[resource["resourceType"]]
        assert stored["meta"]["profile"] == [codes.profile_url(profile)]
    stamped = search(pk_client, "Goal", _profile=codes.profile_url("pk-mal"))
    assert len(stamped) == 2


# -- Swedish identifiers ------------------------------------------------------------------------


@pytest.mark.parametrize(("system", "value", "stored_system", "stored_value"), [
    (PERSONNUMMER, "19121212-1212", PERSONNUMMER, "191212121212"),
    (PERSONNUMMER, "121212-1212", PERSONNUMMER, "201212121212"),
    (PERSONNUMMER, "121212+1212", PERSONNUMMER, "191212121212"),
    ("urn:oid:1.2.752.129.2.1.3.1", "191212121212", PERSONNUMMER, "191212121212"),
    (PERSONNUMMER, "19121272-1219", SAMORDNINGSNUMMER, "191212721219"),
    ("urn:oid:1.2.752.129.2.1.3.3", "121272-1219", SAMORDNINGSNUMMER, "201212721219"),
], ids=["YYYYMMDD-NNNN", "YYMMDD-NNNN", "YYMMDD+NNNN", "oid", "samordningsnummer", "samordningsnummer-oid"])
def test_person_numbers_are_stored_normalised(pk_client: TestClient, system: str, value: str, stored_system: str,
                                              stored_value: str) -> None:
    patient = {"resourceType": "Patient", "id": "pat", "identifier": [{"system": system, "value": value}],
               "name": [{"family": "Testsson", "given": ["Tolvan"]}]}
    response = put(pk_client, patient)
    assert response.status_code == 201, response.text
    assert response.json()["identifier"] == [{"system": stored_system, "value": stored_value}]
    assert read(pk_client, "Patient", "pat")["identifier"] == [{"system": stored_system, "value": stored_value}]
    assert [p["id"] for p in search(pk_client, "Patient", identifier=f"{stored_system}|{stored_value}")] == ["pat"]


@pytest.mark.parametrize(("value", "swedish", "english"), [
    ("19121212-1213", "Kontrollsiffran i '19121212-1213' stämmer inte", "has a wrong check digit"),
    ("19990229-1237", "innehåller inget giltigt datum", "does not contain a valid date"),
    ("20401212-1234", "Födelsedatumet i '20401212-1234' ligger i framtiden", "has a birth date in the future"),
    ("12345", "är inget personnummer", "is not a personnummer"),
], ids=["check-digit", "no-such-date", "future", "form"])
def test_invalid_person_number_is_refused_naming_the_field(pk_client: TestClient, value: str, swedish: str,
                                                           english: str) -> None:
    patient = {"resourceType": "Patient", "id": "pat", "identifier": [{"system": PERSONNUMMER, "value": value}],
               "name": [{"family": "Testsson"}]}
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, patient), before, status=422, code="value",
            expression="Patient.identifier[0].value", swedish=swedish, english=english)
    absent(pk_client, "Patient", "pat")


@pytest.mark.parametrize(("name", "value", "swedish", "english"), [
    ("Practitioner-pk-example-practitioner-anna", "SE2321000017-2001", "inget giltigt organisationsnummer",
     "is not a valid organisationsnummer"),
    ("Practitioner-pk-example-practitioner-anna", "2321000016-2001", "är inget HSA-id", "is not an HSA-id"),
    ("Organization-pk-example-org-region-exempel", "SE2321000016-Ö001", "inga å/ä/ö", "no å/ä/ö or @"),
], ids=["practitioner-orgnr", "practitioner-form", "organization-letters"])
def test_invalid_hsa_id_is_refused(pk_client: TestClient, name: str, value: str, swedish: str, english: str) -> None:
    resource = example(name)
    resource["identifier"][0] = {"system": HSA_ID, "value": value}
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, resource), before, status=422, code="value",
            expression=f"{resource['resourceType']}.identifier[0].value", swedish=swedish, english=english)
    absent(pk_client, resource["resourceType"], resource["id"])


# -- exactly one current fast vårdkontakt -------------------------------------------------------


@pytest.mark.parametrize("status", ["active", "on-hold"])
def test_open_agreement_without_a_current_fast_vardkontakt_is_refused(pk_client: TestClient, status: str) -> None:
    agreement = prepare(pk_client, store=False)
    team = deep(agreement.team)
    members(team, codes.FAST_VARDKONTAKT)[0]["period"]["end"] = YESTERDAY
    commit(pk_client, [agreement.patient, team, *agreement.goals])
    plan = {**deep(agreement.plan), "status": status}
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, plan), before, status=422, code="business-rule",
            expression="CarePlan.careTeam[0]", swedish="precis en fast vårdkontakt med giltig period",
            english="exactly one current fast vårdkontakt in its CareTeam; found 0")
    absent(pk_client, "CarePlan", plan["id"])


@pytest.mark.parametrize("status", ["draft", "completed", "revoked"])
def test_agreement_that_is_not_open_needs_no_current_fast_vardkontakt(pk_client: TestClient, status: str) -> None:
    agreement = prepare(pk_client, store=False)
    team = deep(agreement.team)
    members(team, codes.FAST_VARDKONTAKT)[0]["period"]["end"] = YESTERDAY
    commit(pk_client, [agreement.patient, team, *agreement.goals])
    response = put(pk_client, {**deep(agreement.plan), "status": status})
    assert response.status_code == 201, response.text


def test_two_current_fast_vardkontakter_are_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client, store=False)
    team = deep(agreement.team)
    second = agreement.staff("nurse", besides=agreement.contact)[0]
    team["participant"].append(participant(codes.FAST_VARDKONTAKT, second, LAST_MONTH))
    commit(pk_client, [agreement.patient, team, *agreement.goals])
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, agreement.plan), before, status=422, code="business-rule",
            expression="CarePlan.careTeam[0]", swedish="precis en fast vårdkontakt",
            english="exactly one current fast vårdkontakt in its CareTeam; found 2")
    absent(pk_client, "CarePlan", agreement.plan["id"])


def test_adding_a_second_current_contact_to_the_team_of_an_active_agreement_is_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    team = deep(agreement.team)
    second = agreement.staff("nurse", besides=agreement.contact)[0]
    team["participant"].append(participant(codes.FAST_VARDKONTAKT, second, TODAY.isoformat()))
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, team), before, status=422, code="business-rule",
            expression="CareTeam.participant", swedish="precis en fast vårdkontakt",
            english="exactly one current fast vårdkontakt in its CareTeam; found 2")
    stored = read(pk_client, "CareTeam", team["id"])
    assert stored["meta"]["versionId"] == "1"
    assert stored["participant"] == agreement.team["participant"]


def test_closed_contacts_as_history_and_one_current_pass(pk_client: TestClient) -> None:
    agreement = prepare(pk_client, store=False)
    team = deep(agreement.team)
    current = members(team, codes.FAST_VARDKONTAKT)[0]
    earlier = agreement.staff("nurse", besides=agreement.contact)
    team["participant"][:0] = [
        participant(codes.FAST_VARDKONTAKT, earlier[0], "2023-01-01", "2023-12-31"),
        participant(codes.FAST_VARDKONTAKT, earlier[1], "2024-01-01", LAST_MONTH),
    ]
    current["period"]["start"] = YESTERDAY
    commit(pk_client, [agreement.patient, team, *agreement.goals])
    assert put(pk_client, agreement.plan).status_code == 201
    assert len(members(read(pk_client, "CareTeam", team["id"]), codes.FAST_VARDKONTAKT)) == 3


# -- fast läkarkontakt in primary care ----------------------------------------------------------


def test_nurse_as_fast_lakarkontakt_in_primary_care_is_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client, store=False)
    team = deep(agreement.team)
    members(team, codes.FAST_LAKARKONTAKT)[0]["member"] = {"reference": agreement.staff("nurse")[0]}
    commit(pk_client, [agreement.patient, team, *agreement.goals])
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, agreement.plan), before, status=422, code="business-rule",
            expression="CarePlan.careTeam[0]", swedish="fast läkarkontakt som är läkare",
            english="current fast läkarkontakt who is a physician")
    absent(pk_client, "CarePlan", agreement.plan["id"])


def test_replacing_the_physician_by_a_nurse_in_the_team_is_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    team = deep(agreement.team)
    members(team, codes.FAST_LAKARKONTAKT)[0]["member"] = {"reference": agreement.staff("nurse")[0]}
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, team), before, status=422, code="business-rule",
            expression="CareTeam.participant", swedish="fast läkarkontakt som är läkare",
            english="who is a physician")
    assert version(pk_client, team) == "1"


def test_primary_care_agreement_without_fast_lakarkontakt_is_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client, store=False)
    team = deep(agreement.team)
    team["participant"] = [p for p in team["participant"] if p not in members(team, codes.FAST_LAKARKONTAKT)]
    commit(pk_client, [agreement.patient, team, *agreement.goals])
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, agreement.plan), before, status=422, code="business-rule",
            expression="CarePlan.careTeam[0]", swedish="fast läkarkontakt", english="fast läkarkontakt")


def test_hospital_clinic_agreement_needs_no_fast_lakarkontakt(pk_client: TestClient) -> None:
    agreement = prepare(pk_client, store=False)
    hospital_nurse = next(f"PractitionerRole/{r['id']}" for r in agreement.gen.region.roles
                          if r["organization"]["reference"] == HOSPITAL and role_code(r) == "nurse")
    team = deep(agreement.team)
    team["participant"] = [p for p in team["participant"] if p not in members(team, codes.FAST_LAKARKONTAKT)]
    members(team, codes.FAST_VARDKONTAKT)[0]["member"] = {"reference": hospital_nurse}
    team["managingOrganization"] = [{"reference": HOSPITAL}]
    plan = {**deep(agreement.plan), "author": {"reference": HOSPITAL}}
    commit(pk_client, [agreement.patient, team, *agreement.goals])
    response = put(pk_client, plan)
    assert response.status_code == 201, response.text
    assert response.json()["author"] == {"reference": HOSPITAL}


# -- at most one active agreement per patient and responsible unit -------------------------------


def test_second_active_agreement_with_the_same_unit_is_a_conflict(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    second = {**deep(agreement.plan), "id": "second-plan"}
    before = versions_stored(pk_client)
    found = refused(pk_client, put(pk_client, second), before, status=409, code="conflict",
                    expression="CarePlan.status", swedish="redan ett gällande patientkontrakt med den här vårdenheten",
                    english="already has an active Patientkontrakt")
    assert f"CarePlan/{agreement.plan['id']}" in found[0]["diagnostics"]
    absent(pk_client, "CarePlan", "second-plan")
    created = pk_client.post("/fhir/CarePlan", json={k: v for k, v in second.items() if k != "id"})
    assert issues(created, 409)[0]["code"] == "conflict"
    assert versions_stored(pk_client) == before


def test_activating_a_draft_beside_an_active_agreement_is_a_conflict(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    draft = {**deep(agreement.plan), "id": "draft-plan", "status": "draft"}
    assert put(pk_client, draft).status_code == 201
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, {**draft, "status": "active"}), before, status=409, code="conflict",
            expression="CarePlan.status", swedish="redan ett gällande patientkontrakt",
            english="already has an active Patientkontrakt")
    assert read(pk_client, "CarePlan", "draft-plan")["status"] == "draft"


def test_a_deleted_agreement_leaves_room_for_a_new_active_one(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    assert pk_client.delete(f"/fhir/CarePlan/{agreement.plan['id']}").status_code in (200, 204)
    created = put(pk_client, {**deep(agreement.plan), "id": "after-the-deleted"})
    assert created.status_code == 201, created.text


def test_other_unit_draft_and_update_of_the_same_agreement_pass(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    other_unit = {**deep(agreement.plan), "id": "hospital-plan", "author": {"reference": HOSPITAL}}
    assert put(pk_client, other_unit).status_code == 201
    draft = {**deep(agreement.plan), "id": "draft-plan", "status": "draft"}
    assert put(pk_client, draft).status_code == 201
    updated = put(pk_client, {**deep(agreement.plan), "title": "Mitt patientkontrakt"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["meta"]["versionId"] == "2"
    active = search(pk_client, "CarePlan", subject=f"Patient/{agreement.patient['id']}", status="active")
    assert sorted(p["id"] for p in active) == sorted([agreement.plan["id"], "hospital-plan"])


# -- the CareTeam belongs to the agreement's patient -------------------------------------------


def test_careteam_of_another_patient_is_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client, store=False)
    commit(pk_client, [agreement.patient, agreement.team, *agreement.goals])
    stranger = other_patient(pk_client, agreement)
    plan = {**deep(agreement.plan), "subject": {"reference": stranger}}
    del plan["goal"]  # the goals are the first patient's
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, plan), before, status=422, code="business-rule",
            expression="CarePlan.careTeam[0]", swedish="Vårdteamet gäller en annan patient än patientkontraktet",
            english="the CareTeam is for another patient than the CarePlan's subject")
    absent(pk_client, "CarePlan", plan["id"])


def test_moving_the_team_to_another_patient_is_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    stranger = other_patient(pk_client, agreement)
    team = {**deep(agreement.team), "subject": {"reference": stranger}}
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, team), before, status=422, code="business-rule",
            expression="CareTeam.subject", swedish="annan patient",
            english=f"another patient than CarePlan/{agreement.plan['id']}'s subject")
    assert read(pk_client, "CareTeam", team["id"])["subject"] == agreement.team["subject"]


# -- activities ---------------------------------------------------------------------------------


def test_activities_without_performer_organization_or_planned_time_are_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client, store=False)
    commit(pk_client, [agreement.patient, agreement.team, *agreement.goals])
    plan = deep(agreement.plan)
    plan["activity"][0]["detail"]["performer"] = [{"reference": agreement.contact}]
    upcoming = plan["activity"][-1]["detail"]
    assert upcoming["status"] == "scheduled"
    del upcoming["scheduledPeriod"]
    before = versions_stored(pk_client)
    found = refused(pk_client, put(pk_client, plan), before, status=422, code="invariant",
                    expression="CarePlan.activity[0].detail", swedish="minst en organisation som utförare",
                    english="pk-patientkontrakt-1")
    assert_issue(found, code="invariant", expression="CarePlan", swedish="har en tid",
                 english="pk-patientkontrakt-2")
    absent(pk_client, "CarePlan", plan["id"])


def test_activities_with_organization_and_time_or_done_pass(pk_client: TestClient) -> None:
    agreement = prepare(pk_client, store=False)
    commit(pk_client, [agreement.patient, agreement.team, *agreement.goals])
    plan = deep(agreement.plan)
    done = plan["activity"][0]["detail"]
    assert done["status"] == "completed"
    del done["scheduledPeriod"]
    plan["activity"][-1]["detail"]["performer"].append({"reference": agreement.contact})
    plan["activity"].append({"detail": {
        "code": {"coding": [{"system": codes.ACTIVITY_KIND, "code": "egenvard"}]}, "status": "not-started",
        "scheduledString": "Varje morgon", "performer": [plan["author"]], "description": "Väg dig varje morgon.",
    }})
    response = put(pk_client, plan)
    assert response.status_code == 201, response.text
    assert len(response.json()["activity"]) == 5


# -- change of fast vårdkontakt ----------------------------------------------------------------


def _replace_contact(agreement: Agreement) -> tuple[dict[str, Any], str, str]:
    """The team with the current contact removed and another nurse added from today."""
    old = agreement.contact
    new = agreement.staff("nurse", besides=old)[0]
    team = deep(agreement.team)
    team["participant"] = [p for p in team["participant"] if p["member"]["reference"] != old]
    team["participant"].append(participant(codes.FAST_VARDKONTAKT, new, TODAY.isoformat()))
    return team, old, new


def _provenances(client: TestClient, team_id: str) -> list[dict[str, Any]]:
    return search(client, "Provenance", target=f"CareTeam/{team_id}")


def test_change_of_fast_vardkontakt_keeps_the_old_one_closed_and_records_provenance(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    team, old, new = _replace_contact(agreement)
    response = put(pk_client, team)
    assert response.status_code == 200, response.text
    stored = read(pk_client, "CareTeam", team["id"])
    assert stored == response.json()
    contacts = {p["member"]["reference"]: p for p in members(stored, codes.FAST_VARDKONTAKT)}
    assert set(contacts) == {old, new}
    assert contacts[old]["period"]["start"] == members(agreement.team, codes.FAST_VARDKONTAKT)[-1]["period"]["start"]
    assert contacts[old]["period"]["end"].startswith(f"{TODAY.isoformat()}T"), "closed at the instant of the change"
    assert "end" not in contacts[new]["period"]
    [provenance] = _provenances(pk_client, team["id"])
    assert provenance["target"] == [{"reference": f"CareTeam/{team['id']}/_history/2"}]
    assert provenance["reason"] == [{"text": "Byte av fast vårdkontakt"}]
    assert provenance["agent"][0]["who"]["reference"] == agreement.plan["author"]["reference"]
    # The agreement stays valid: its one current contact is the new nurse.
    assert put(pk_client, {**deep(agreement.plan), "title": "Efter bytet"}).status_code == 200


def test_x_provenance_is_stored_for_the_change_instead(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    team, _, new = _replace_contact(agreement)
    doctor = members(agreement.team, codes.FAST_LAKARKONTAKT)[0]["member"]
    given = {"resourceType": "Provenance", "recorded": "2026-01-02T10:00:00Z", "agent": [{"who": doctor}],
             "reason": [{"text": "Patienten bad om en ny fast vårdkontakt"}]}
    response = put(pk_client, team, headers={"X-Provenance": json.dumps(given)})
    assert response.status_code == 200, response.text
    [provenance] = _provenances(pk_client, team["id"])
    assert provenance["target"] == [{"reference": f"CareTeam/{team['id']}/_history/2"}]
    assert provenance["reason"] == given["reason"]
    assert provenance["agent"] == [{"who": doctor}]
    assert provenance["recorded"] == given["recorded"]
    assert new in {p["member"]["reference"] for p in members(response.json(), codes.FAST_VARDKONTAKT)}


def test_updates_that_keep_the_contact_make_no_provenance(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    team = {**deep(agreement.team), "name": "Vårdteamet kring mig"}
    kommun = members(team, "kontaktperson-kommun")[0]
    kommun["period"]["end"] = TODAY.isoformat()
    response = put(pk_client, team)
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["versionId"] == "2"
    assert _provenances(pk_client, team["id"]) == []
    assert search(pk_client, "Provenance") == []


def test_removing_the_only_contact_of_an_active_agreement_is_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    team = deep(agreement.team)
    team["participant"] = [p for p in team["participant"] if p["member"]["reference"] != agreement.contact]
    team["participant"].append(participant(codes.FAST_VARDKONTAKT, agreement.contact, "2020-01-01", "2020-12-31"))
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, team), before, status=422, code="business-rule",
            expression="CareTeam.participant", swedish="precis en fast vårdkontakt", english="found 0")
    assert _provenances(pk_client, team["id"]) == []


# -- goals ---------------------------------------------------------------------------------------


def test_patient_stated_goal_passes(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    own = next(g for g in agreement.goals if g["expressedBy"]["reference"].startswith("Patient/"))
    goal = {**deep(own), "id": "my-goal", "description": {"text": "Kunna cykla till sjön"}}
    response = put(pk_client, goal)
    assert response.status_code == 201, response.text
    assert response.json()["expressedBy"] == {"reference": f"Patient/{agreement.patient['id']}"}


def test_goal_stated_by_another_patient_is_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    goal = {**deep(agreement.goals[0]), "id": "their-goal", "expressedBy": {"reference": other_patient(pk_client,
                                                                                                       agreement)}}
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, goal), before, status=422, code="business-rule", expression="Goal.expressedBy",
            swedish="Ett eget mål kan bara sättas av patienten själv",
            english="a patient-stated goal must be stated by the goal's own patient")
    absent(pk_client, "Goal", "their-goal")


@pytest.mark.parametrize("kind", ["patient-to-professional", "professional-to-patient"])
def test_goal_cannot_change_between_patient_stated_and_professional(pk_client: TestClient, kind: str) -> None:
    agreement = prepare(pk_client)
    own, professional = agreement.goals[0], agreement.goals[1]
    assert own["expressedBy"]["reference"].startswith("Patient/")
    assert professional["expressedBy"]["reference"].startswith("PractitionerRole/")
    goal, other = (own, professional) if kind == "patient-to-professional" else (professional, own)
    changed = {**deep(goal), "expressedBy": other["expressedBy"]}
    before = versions_stored(pk_client)
    refused(pk_client, put(pk_client, changed), before, status=422, code="business-rule",
            expression="Goal.expressedBy", swedish="kan inte bli vårdens mål, eller tvärtom",
            english="cannot become a professional goal or the other way round")
    assert read(pk_client, "Goal", goal["id"])["expressedBy"] == goal["expressedBy"]
    assert put(pk_client, {**deep(goal), "description": {"text": "Nytt mål"}}).status_code == 200


# -- the same rules inside a transaction Bundle ---------------------------------------------------


def _as_new(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction that POSTs ``resources`` with urn:uuid full URLs and references between them."""
    urns = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:00000000-0000-4000-8000-{i:012d}"
            for i, r in enumerate(resources)}
    text = json.dumps(resources)
    for reference, urn in urns.items():
        text = text.replace(f'"reference": "{reference}"', f'"reference": "{urn}"')
    entries = []
    for resource in json.loads(text):
        urn = urns[f"{resource['resourceType']}/{resource.pop('id')}"]
        entries.append({"fullUrl": urn, "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_whole_agreement_in_a_transaction_with_urn_uuid_references_passes(pk_client: TestClient) -> None:
    agreement = prepare(pk_client, store=False)
    bundle = _as_new(agreement.resources)
    bundle["entry"][0]["resource"]["identifier"][0]["value"] = (
        f"{agreement.patient['identifier'][0]['value'][:8]}-{agreement.patient['identifier'][0]['value'][8:]}")
    response = pk_client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    locations = [e["response"]["location"] for e in response.json()["entry"]]
    assert all(e["response"]["status"] == "201 Created" for e in response.json()["entry"])
    patient_id = locations[0].split("/")[-3]
    [patient] = search(pk_client, "Patient", identifier=f"{PERSONNUMMER}|{agreement.patient['identifier'][0]['value']}")
    assert patient["id"] == patient_id
    [plan] = search(pk_client, "CarePlan", subject=f"Patient/{patient_id}")
    assert plan["status"] == "active"
    assert plan["meta"]["profile"] == [codes.profile_url("pk-patientkontrakt")]
    team_id = plan["careTeam"][0]["reference"].split("/")[1]
    assert read(pk_client, "CareTeam", team_id)["subject"] == {"reference": f"Patient/{patient_id}"}


def _break_category(resources: list[dict[str, Any]]) -> tuple[int, str]:
    del resources[-1]["category"]
    return 422, "Bundle.entry[5].resource.category"


def _break_person_number(resources: list[dict[str, Any]]) -> tuple[int, str]:
    resources[0]["identifier"][0]["value"] = "19121212-1213"
    return 422, "Bundle.entry[0].resource.identifier[0].value"


def _break_physician(resources: list[dict[str, Any]]) -> tuple[int, str]:
    nurse = resources[1]["participant"][0]["member"]
    members(resources[1], codes.FAST_LAKARKONTAKT)[0]["member"] = dict(nurse)
    return 422, "Bundle.entry[1].resource.participant"


def _break_uniqueness(resources: list[dict[str, Any]]) -> tuple[int, str]:
    resources.append({**deep(resources[-1]), "id": "twin"})
    return 409, "resource.status"


@pytest.mark.parametrize("breaker", [_break_category, _break_person_number, _break_physician, _break_uniqueness],
                         ids=["profile", "identifier", "physician", "one-active"])
def test_violating_transaction_leaves_nothing_stored(pk_client: TestClient, breaker: Any) -> None:
    agreement = prepare(pk_client, store=False)
    resources = deep({"r": agreement.resources})["r"]
    status, expression = breaker(resources)
    before = versions_stored(pk_client)
    response = pk_client.post("/fhir", json=_as_new(resources))
    found = issues(response, status)
    assert any(any(e.endswith(expression) for e in i["expression"]) for i in found), found
    assert all(i["details"]["text"] and i["diagnostics"].startswith("Bundle.entry[") for i in found)
    assert versions_stored(pk_client) == before
    assert search(pk_client, "Patient", name=agreement.patient["name"][0]["family"]) == []
    assert search(pk_client, "CarePlan") == [] and search(pk_client, "CareTeam") == []
    assert search(pk_client, "Goal") == []


# -- PATCH takes the path of an update: the same profiles and rules -----------------------------


def _patch(client: TestClient, type_: str, id_: str, operations: list[dict[str, Any]]) -> Any:
    return client.patch(f"/fhir/{type_}/{id_}", content=json.dumps(operations),
                        headers={"content-type": "application/json-patch+json"})


def test_a_patch_that_breaks_the_profile_is_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    before = versions_stored(pk_client)
    refused(pk_client, _patch(pk_client, "CarePlan", agreement.plan["id"], [{"op": "remove", "path": "/author"}]),
            before, status=422, code="required", expression="CarePlan.author",
            swedish="Ansvarig vårdenhet: minst 1 krävs", english="CarePlan.author: at least 1 required")


def test_a_patch_that_breaks_a_rule_is_refused(pk_client: TestClient) -> None:
    agreement = prepare(pk_client)
    draft = {**deep(agreement.plan), "id": "draft-plan", "status": "draft"}
    assert put(pk_client, draft).status_code == 201
    before = versions_stored(pk_client)
    refused(pk_client, _patch(pk_client, "CarePlan", "draft-plan", [{"op": "replace", "path": "/status",
                                                                   "value": "active"}]),
            before, status=409, code="conflict", expression="CarePlan.status",
            swedish="redan ett gällande patientkontrakt", english="already has an active Patientkontrakt")
    assert read(pk_client, "CarePlan", "draft-plan")["status"] == "draft"
