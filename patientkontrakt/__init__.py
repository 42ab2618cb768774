"""Patientkontrakt: a FHIR R4 service for the Swedish Patientkontrakt.

This package is the framework-free core (design §2): FHIR engine, domain rules, security
decisions, audit, notifications, storage, configuration and the command line. Nothing in
here imports FastAPI or Starlette; ``api/`` translates HTTP to these calls.
"""

__version__ = "0.1.0"
