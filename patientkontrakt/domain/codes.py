"""Canonical URLs and codes of our conformance resources (``fhir_profiles/profiles``)."""

from __future__ import annotations

CANONICAL = "https://patientkontrakt.se/fhir"

CAREPLAN_CATEGORY = f"{CANONICAL}/CodeSystem/pk-careplan-category"
CARETEAM_ROLE = f"{CANONICAL}/CodeSystem/pk-careteam-role"
ORGANIZATION_KIND = f"{CANONICAL}/CodeSystem/pk-organization-kind"
CARE_UNIT_TYPE = f"{CANONICAL}/CodeSystem/pk-care-unit-type"
ACTIVITY_KIND = f"{CANONICAL}/CodeSystem/pk-activity-kind"
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


def profile_url(name: str) -> str:
    return f"{CANONICAL}/StructureDefinition/{name}"
