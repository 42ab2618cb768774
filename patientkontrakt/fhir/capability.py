"""The CapabilityStatement, generated from what the service really registers (R4 capabilitystatement.html)."""

from __future__ import annotations

from typing import Any

from patientkontrakt import __version__
from patientkontrakt.fhir.definitions import Definitions
from patientkontrakt.fhir.indexing import COLUMN_PARAMS

TYPE_INTERACTIONS = (
    "read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")


VALIDATE = ("validate", "http://hl7.org/fhir/OperationDefinition/Resource-validate")


def capability_statement(
    defs: Definitions,
    types: frozenset[str],
    base: str,
    published: str,
    operations: dict[str, list[tuple[str, str]]] | None = None,
) -> dict[str, Any]:
    """``operations`` maps a type to extra (name, OperationDefinition URL) it supports."""
    resources = []
    profiles = {sd["type"]: url for url, sd in defs.profiles.items()}
    for type_ in sorted(types):
        params = defs.params_for(type_)
        extra = (operations or {}).get(type_, [])
        resources.append({
            "type": type_,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{type_}",
            **({"supportedProfile": [profiles[type_]]} if type_ in profiles and operations else {}),
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
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
        "patchFormat": [],
        "rest": [{
            "mode": "server",
            "documentation": "Search result parameters: _count, _offset, _sort, _include, _revinclude "
                             "(incl. :iterate), _total, _summary, _elements. Prefer: handling=strict|lenient.",
            "resource": resources,
            "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
        }],
    }
