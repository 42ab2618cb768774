"""Which of our profiles a write must conform to: a Consent's category makes it a samtycke
(pk-samtycke) or a spärr (pk-sparr), a CarePlan with category sip is a SIP (pk-sip, not
pk-patientkontrakt); each is validated against its own profile, stamped with it, and refused with
a 422 OperationOutcome that says what is wrong."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.domain import codes
from patientkontrakt.domain.profiles import ProfileValidator
from patientkontrakt.fhir.definitions import load_definitions
from tests.domain.support import EXAMPLES, assert_issue, commit, example, issues, put, read, versions_stored

SAMTYCKE = "Consent-pk-example-samtycke-tolvan"
INRE = "Consent-pk-example-inre-sparr-tolvan"
YTTRE = "Consent-pk-example-yttre-sparr-tolvan"
SIP = "CarePlan-pk-example-sip-tolvan"
CONSENTS_AND_SIP = (SAMTYCKE, INRE, YTTRE, SIP)


def _everything_else() -> list[dict[str, Any]]:
    return [example(path.stem) for path in sorted(EXAMPLES.glob("*-pk-example-*.json"))
            if path.stem not in CONSENTS_AND_SIP]


@pytest.fixture
def tolvan(pk_client: TestClient) -> TestClient:
    """The examples' agreement stored, without the samtycke, the spärrar and the SIP."""
    commit(pk_client, _everything_else())
    return pk_client


def _refused(client: TestClient, resource: dict[str, Any]) -> list[dict[str, Any]]:
    before = versions_stored(client)
    found = issues(put(client, resource), 422)
    assert versions_stored(client) == before
    return found


def _has_issue(found: list[dict[str, Any]], *, code: str, expression: str, swedish: str, english: str) -> None:
    """Some issue (of several at the same place) says this."""
    assert any(i["code"] == code and expression in i.get("expression", []) and swedish in i["details"]["text"]
               and english in i["diagnostics"] for i in found), found


def test_the_examples_are_stored_with_the_profile_their_category_chooses(tolvan: TestClient) -> None:
    expected = {SAMTYCKE: codes.SAMTYCKE_PROFILE, INRE: codes.SPARR_PROFILE, YTTRE: codes.SPARR_PROFILE,
                SIP: codes.SIP_PROFILE}
    for name in CONSENTS_AND_SIP:  # the SIP refers to the samtycke: stored after it
        resource = example(name)
        response = put(tolvan, resource)
        assert response.status_code == 201, response.text
        stored = read(tolvan, resource["resourceType"], resource["id"])
        assert stored["meta"]["profile"] == [expected[name]], name
    agreement = read(tolvan, "CarePlan", "pk-example-patientkontrakt-tolvan")
    assert agreement["meta"]["profile"] == [codes.profile_url("pk-patientkontrakt")]
    found = tolvan.get("/fhir/CarePlan", params={"part-of": "CarePlan/pk-example-patientkontrakt-tolvan"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == ["pk-example-sip-tolvan"]
    sparrar = tolvan.get("/fhir/Consent", params={"_profile": codes.SPARR_PROFILE, "status": "active"})
    assert [e["resource"]["id"] for e in sparrar.json()["entry"]] == ["pk-example-yttre-sparr-tolvan"]


def test_a_sparr_that_permits_is_refused(tolvan: TestClient) -> None:
    sparr = example(YTTRE)
    sparr["provision"]["type"] = "permit"
    found = _refused(tolvan, sparr)
    assert_issue(found, code="value", expression="Consent.provision.type", swedish="Värdet ska vara 'deny'",
                 english="Consent.provision.type: must be 'deny'")


def test_a_samtycke_that_denies_is_refused(tolvan: TestClient) -> None:
    samtycke = example(SAMTYCKE)
    samtycke["provision"]["type"] = "deny"
    assert_issue(_refused(tolvan, samtycke), code="value", expression="Consent.provision.type",
                 swedish="Värdet ska vara 'permit'", english="must be 'permit'")


def test_a_samtycke_without_a_recipient_is_refused(tolvan: TestClient) -> None:
    samtycke = example(SAMTYCKE)
    samtycke["provision"]["actor"] = [a for a in samtycke["provision"]["actor"]
                                      if a["role"]["coding"][0]["code"] != codes.INFORMATION_RECIPIENT]
    found = _refused(tolvan, samtycke)
    assert_issue(found, code="invariant", expression="Consent", swedish="precis en mottagare",
                 english="pk-samtycke-1")


def test_a_sparr_with_a_recipient_is_refused(tolvan: TestClient) -> None:
    sparr = example(INRE)
    sparr["provision"]["actor"].append({
        "role": {"coding": [{"system": codes.PARTICIPATION_TYPE, "code": codes.INFORMATION_RECIPIENT}]},
        "reference": {"reference": "Organization/pk-example-org-vc-norr"}})
    assert_issue(_refused(tolvan, sparr), code="invariant", expression="Consent", swedish="rollen CST",
                 english="pk-sparr-1")


def test_an_actor_role_outside_ircp_and_cst_is_refused(tolvan: TestClient) -> None:
    sparr = example(YTTRE)
    sparr["provision"]["actor"][0]["role"]["coding"][0]["code"] = "AUT"
    assert_issue(_refused(tolvan, sparr), code="code-invalid", expression="Consent.provision.actor[0].role",
                 swedish="Koden är inte tillåten", english="pk-consent-actor-role")


def test_a_consent_with_another_scope_is_refused(tolvan: TestClient) -> None:
    samtycke = example(SAMTYCKE)
    samtycke["scope"] = {"coding": [{"system": codes.CONSENT_SCOPE, "code": "research"}]}
    assert_issue(_refused(tolvan, samtycke), code="value", expression="Consent.scope",
                 swedish="föreskrivna innehållet", english="patient-privacy")


def test_a_consent_without_our_category_names_the_categories_that_would_do(tolvan: TestClient) -> None:
    consent = example(SAMTYCKE)
    consent["category"] = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
    found = _refused(tolvan, consent)
    assert len(found) == 1
    assert_issue(found, code="required", expression="Consent.category", swedish="Kategorin saknas",
                 english=f"{codes.CONSENT_CATEGORY}#samtycke")
    assert f"{codes.CONSENT_CATEGORY}#inre-sparr or {codes.CONSENT_CATEGORY}#yttre-sparr" in found[0]["diagnostics"]


def test_a_consent_without_patient_performer_or_period_is_refused_listing_each(tolvan: TestClient) -> None:
    samtycke = example(SAMTYCKE)
    del samtycke["patient"], samtycke["performer"], samtycke["provision"]["period"]
    found = _refused(tolvan, samtycke)
    for where in ("Consent.patient", "Consent.performer", "Consent.provision.period"):
        assert_issue(found, code="required", expression=where, swedish="minst 1 krävs", english="at least 1 required")


def test_a_sip_is_validated_against_pk_sip_not_the_agreement_profile(tolvan: TestClient) -> None:
    put(tolvan, example(SAMTYCKE))
    sip = example(SIP)
    del sip["partOf"]
    found = _refused(tolvan, sip)
    assert_issue(found, code="required", expression="CarePlan.partOf", swedish="minst 1 krävs",
                 english="at least 1 required")
    assert not any("careTeam" in e for i in found for e in i.get("expression", [])), found  # pk-patientkontrakt's


def test_a_sip_with_overall_responsibility_annan_is_refused(tolvan: TestClient) -> None:
    put(tolvan, example(SAMTYCKE))
    sip = example(SIP)
    sip["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = "annan"
    found = _refused(tolvan, sip)
    assert_issue(found, code="code-invalid", expression="CarePlan.extension[0].valueCodeableConcept",
                 swedish="Koden är inte tillåten", english="pk-overgripande-ansvar")
    sip["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = "kommun"
    sip["activity"][1]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = "annan"
    assert put(tolvan, sip).status_code == 201  # another huvudman may do a part


def test_a_sip_without_responsibility_or_huvudman_is_refused(tolvan: TestClient) -> None:
    put(tolvan, example(SAMTYCKE))
    sip = example(SIP)
    del sip["extension"], sip["activity"][0]["extension"]
    found = _refused(tolvan, sip)
    _has_issue(found, code="required", expression="CarePlan.extension", swedish="minst 1 krävs",
               english="CarePlan.extension:overgripandeAnsvar: at least 1 required")
    _has_issue(found, code="required", expression="CarePlan.activity[0].extension", swedish="minst 1 krävs",
               english="CarePlan.activity[0].extension:huvudman: at least 1 required")


def test_a_sip_that_also_claims_to_be_an_agreement_is_refused(tolvan: TestClient) -> None:
    put(tolvan, example(SAMTYCKE))
    sip = example(SIP)
    sip["category"].append({"coding": [{"system": codes.CAREPLAN_CATEGORY, "code": codes.PATIENTKONTRAKT}]})
    found = _refused(tolvan, sip)
    _has_issue(found, code="invariant", expression="CarePlan", swedish="inte själv ett Patientkontrakt",
               english="pk-sip-1")


def test_claimed_profiles_of_ours_are_checked_too(tolvan: TestClient) -> None:
    """A stale meta.profile is not stamped over: a SIP claiming pk-patientkontrakt is checked against both."""
    put(tolvan, example(SAMTYCKE))
    sip = example(SIP)
    sip["meta"] = {"profile": [codes.profile_url("pk-patientkontrakt")]}
    found = _refused(tolvan, sip)
    assert_issue(found, code="required", expression="CarePlan.careTeam", swedish="minst 1 krävs",
                 english="at least 1 required")


# -- the choice itself, without a server -----------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> ProfileValidator:
    return ProfileValidator(load_definitions(PROJECT_ROOT / "fhir_profiles"))


def _chosen(validator: ProfileValidator, resource: dict[str, Any]) -> list[str]:
    profiles, problems = validator.select(resource)
    assert not problems
    return [p.url for p in profiles]


def test_select_by_category_with_the_agreement_as_careplan_default(validator: ProfileValidator) -> None:
    assert _chosen(validator, example(SAMTYCKE)) == [codes.SAMTYCKE_PROFILE]
    assert _chosen(validator, example(INRE)) == [codes.SPARR_PROFILE]
    assert _chosen(validator, example(YTTRE)) == [codes.SPARR_PROFILE]
    assert _chosen(validator, example(SIP)) == [codes.SIP_PROFILE]
    agreement = example("CarePlan-pk-example-patientkontrakt-tolvan")
    assert _chosen(validator, agreement) == [codes.profile_url("pk-patientkontrakt")]
    uncategorised = copy.deepcopy(agreement)
    del uncategorised["category"]
    assert _chosen(validator, uncategorised) == [codes.profile_url("pk-patientkontrakt")]
    assert _chosen(validator, example("Patient-pk-example-patient-tolvan")) == [codes.profile_url("pk-patient")]
    assert _chosen(validator, {"resourceType": "Provenance"}) == []


@pytest.mark.parametrize("name", CONSENTS_AND_SIP)
def test_the_examples_conform_to_the_profile_chosen(validator: ProfileValidator, name: str) -> None:
    resource = example(name)
    profiles, _ = validator.select(resource)
    assert [i for p in profiles for i in validator.validate(resource, p)] == []
