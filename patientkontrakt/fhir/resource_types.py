"""The FHIR resource types this server serves: one list for the service and for the script that
extracts their core definitions (``extract_core.py``)."""

RESOURCE_TYPES = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "CarePlan",
    "CareTeam",
    "Goal",
    "Appointment",
    "Provenance",
    "Consent",
    "Subscription",
    "Group",
)
