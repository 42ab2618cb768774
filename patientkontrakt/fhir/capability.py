"""The CapabilityStatement, generated from what the service really registers (R4 capabilitystatement.html)."""

from __future__ import annotations

from typing import Any

from patientkontrakt import __version__
from patientkontrakt.fhir.conformance import CONFORMANCE_TYPES
from patientkontrakt.fhir.conformance import SEARCH_PARAMETERS as CONFORMANCE_SEARCH
from patientkontrakt.fhir.definitions import Definitions
from patientkontrakt.fhir.indexing import COLUMN_PARAMS

TYPE_INTERACTIONS = (
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")


VALIDATE = ("validate", "http://hl7.org/fhir/OperationDefinition/Resource-validate")
# Per type, the operations of the FHIR engine itself (besides ``$validate`` on every type).
ENGINE_OPERATIONS = {
    "Patient": [("everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything")],
    "Subscription": [("status", "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/"
                                "backport-subscription-status")],
}
# Bulk Data $export (fhir/export.py): ours, based on the Bulk Data Access IG's (their ``base``).
EXPORT = ("export", "https://patientkontrakt.se/fhir/OperationDefinition/export")
PATIENT_EXPORT = ("export", "https://patientkontrakt.se/fhir/OperationDefinition/patient-export")
GROUP_EXPORT = ("export", "https://patientkontrakt.se/fhir/OperationDefinition/group-export")
LEVEL_EXPORTS = {"Patient": [PATIENT_EXPORT], "Group": [GROUP_EXPORT]}


def smart_security(endpoints: dict[str, str]) -> dict[str, Any]:
    """``rest.security`` of a server protected with SMART on FHIR (App Launch 2.x: the
    ``oauth-uris`` extension, besides ``.well-known/smart-configuration``)."""
    names = {"token": "token_endpoint", "authorize": "authorization_endpoint",
             "introspect": "introspection_endpoint", "revoke": "revocation_endpoint"}
    return {
        "cors": False,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}]}],
        "description": "OAuth 2.0 with SMART on FHIR scopes (v2 cruds, v1 read/write): authorization code with "
                       "PKCE S256, client credentials with private_key_jwt (Backend Services). Every request "
                       "but this CapabilityStatement and the discovery document needs a bearer token.",
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": short, "valueUri": endpoints[key]} for short, key in names.items()
                          if key in endpoints],
        }],
    }


AUDIT_EVENT = {
    "type": "AuditEvent",
    "profile": "http://hl7.org/fhir/StructureDefinition/AuditEvent",
    "documentation": "The access log (Patientdatalagen): read-only, written by the server. A patient sees "
                     "entries about themselves, a care unit its own entries.",
    "interaction": [{"code": "read"}, {"code": "search-type"}],
    "searchParam": [
        {"name": name, "definition": f"http://hl7.org/fhir/SearchParameter/AuditEvent-{name}", "type": kind}
        for name, kind in (("patient", "reference"), ("agent", "reference"), ("entity", "reference"),
                           ("date", "date"))
    ],
}


CONFORMANCE_RESOURCES = [
    {
        "type": type_,
        "documentation": "The definitions this server uses (fhir_profiles): read and search only, public like this "
                         "CapabilityStatement; every canonical URL named here can be read from the server.",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [{"name": name, "definition": url, "type": kind}
                        for name, (kind, url) in CONFORMANCE_SEARCH.items()],
    }
    for type_ in sorted(CONFORMANCE_TYPES)
]


def capability_statement(
    defs: Definitions,
    types: frozenset[str],
    base: str,
    published: str,
    operations: dict[str, list[tuple[str, str]]] | None = None,
    security: dict[str, Any] | None = None,
    extra_resources: list[dict[str, Any]] | None = None,
    update_create: frozenset[str] | None = None,
    extensions: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """``operations`` maps a type to extra (name, OperationDefinition URL) it supports;
    ``security`` is ``rest.security``; ``extra_resources`` are served besides ``types``;
    ``update_create`` the types whose new resources may get an id of the client's (None: all);
    ``extensions`` a type's ``rest.resource.extension`` (the subscription topics on Subscription)."""
    resources = []
    profiles: dict[str, list[str]] = {}
    for url, sd in sorted(defs.profiles.items()):
        profiles.setdefault(sd["type"], []).append(url)
    for type_ in sorted(types):
        params = defs.params_for(type_)
        extra = [*ENGINE_OPERATIONS.get(type_, []), *(operations or {}).get(type_, []),
                 *LEVEL_EXPORTS.get(type_, [])]
        resources.append({
            **({"extension": extensions[type_]} if extensions and type_ in extensions else {}),
            "type": type_,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{type_}",
            **({"supportedProfile": profiles[type_]} if type_ in profiles and operations else {}),
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": update_create is None or type_ in update_create,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "local", "enforced"],
            "searchInclude": sorted(
                f"{type_}:{code}" for code, p in params.items() if p.type == "reference"
            ) + ["*"],
            "searchRevInclude": sorted(
                f"{other}:{code}"
                for other in types
                for code, p in defs.params_for(other).items()
                if p.type == "reference" and (not p.targets or type_ in p.targets)
            ),
            "searchParam": [
                {
                    "name": code,
                    "definition": p.url,
                    "type": p.type,
                    **({"documentation": "Answered from the resource table"} if code in COLUMN_PARAMS else {}),
                }
                for code, p in sorted(params.items())
            ],
            "operation": [{"name": name, "definition": url} for name, url in (VALIDATE, *extra)],
        })
    resources.extend(extra_resources or [])
    resources.sort(key=lambda r: str(r["type"]))
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "Patientkontrakt",
        "kind": "instance",
        "software": {"name": "Patientkontrakt", "version": __version__},
        "implementation": {"description": "Patientkontrakt FHIR R4 server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            **({"security": security} if security else {}),
            "documentation": "Search result parameters: _count, _offset, _sort, _include, _revinclude "
                             "(incl. :iterate), _total, _summary, _elements. Prefer: handling=strict|lenient. "
                             "History: _since, _at, _count, _sort=_lastUpdated|-_lastUpdated; paged by key; "
                             "Bundle.meta.lastUpdated is the next sync's _since (no gaps, no repeats).",
            "resource": resources,
            "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
            "operation": [{"name": EXPORT[0], "definition": EXPORT[1],
                           "documentation": "Bulk Data Access IG 2.0 (SMART Backend Services clients): "
                                            "Prefer: respond-async; _outputFormat, _since, _type"}],
        }],
    }
