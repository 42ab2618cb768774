"""Canonical URLs and codes of our conformance resources (``fhir_profiles/profiles``)."""

from __future__ import annotations

CANONICAL = "https://patientkontrakt.se/fhir"

CAREPLAN_CATEGORY = f"{CANONICAL}/CodeSystem/pk-careplan-category"
CARETEAM_ROLE = f"{CANONICAL}/CodeSystem/pk-careteam-role"
ORGANIZATION_KIND = f"{CANONICAL}/CodeSystem/pk-organization-kind"
CARE_UNIT_TYPE = f"{CANONICAL}/CodeSystem/pk-care-unit-type"
ACTIVITY_KIND = f"{CANONICAL}/CodeSystem/pk-activity-kind"
CONSENT_CATEGORY = f"{CANONICAL}/CodeSystem/pk-consent-category"
HUVUDMAN = f"{CANONICAL}/CodeSystem/pk-huvudman"
SIP_OVERGRIPANDE_ANSVAR = f"{CANONICAL}/StructureDefinition/pk-sip-overgripande-ansvar"
SIP_HUVUDMAN = f"{CANONICAL}/StructureDefinition/pk-sip-huvudman"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
PATIENT_PRIVACY = "patient-privacy"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
INFORMATION_RECIPIENT = "IRCP"  # samtycke: the unit or provider that may read
CUSTODIAN = "CST"  # the unit or provider whose data a samtycke or spärr is about
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OPT_IN = "OPTIN"  # policyRule of a samtycke (R4 ppc-1: a Consent has policyRule or policy)
OPT_OUT = "OPTOUT"  # policyRule of a spärr
PRACTITIONER_ROLE = "http://terminology.hl7.org/CodeSystem/practitioner-role"
# Tasks a commission (PractitionerRole.code) gives beyond care: ``logggranskare`` reviews the
# access log of the whole care provider (PDL 4 kap. 3 §, HSLF-FS 2016:40 4 kap. 9 §).
STAFF_ROLE = f"{CANONICAL}/CodeSystem/pk-staff-role"
LOG_REVIEWER = "logggranskare"

# HL7 v3 ActReason HTEST: "test health data" — every demo and benchmark resource carries it.
TEST_DATA_TAG = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "code": "HTEST",
    "display": "test health data",
}

FAST_VARDKONTAKT = "fast-vardkontakt"
FAST_LAKARKONTAKT = "fast-lakarkontakt"
PATIENTKONTRAKT = "patientkontrakt"
SIP = "sip"
SAMTYCKE = "samtycke"
INRE_SPARR = "inre-sparr"
YTTRE_SPARR = "yttre-sparr"

SAMTYCKE_PROFILE = f"{CANONICAL}/StructureDefinition/pk-samtycke"
SPARR_PROFILE = f"{CANONICAL}/StructureDefinition/pk-sparr"
SIP_PROFILE = f"{CANONICAL}/StructureDefinition/pk-sip"
# The profile a resource of a type with several profiles of ours must conform to when its
# categories choose none (``ProfileValidator.select``): a CarePlan is a Patientkontrakt unless it is
# a SIP. Consent has no default: a Consent is a samtycke or a spärr by its category.
DEFAULT_PROFILES = {"CarePlan": f"{CANONICAL}/StructureDefinition/pk-patientkontrakt"}


def profile_url(name: str) -> str:
    return f"{CANONICAL}/StructureDefinition/{name}"
