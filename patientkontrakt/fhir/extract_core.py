"""Extract the official FHIR R4 definitions we use into ``fhir_profiles/``.

The source is the npm-format FHIR package ``hl7.fhir.r4.examples`` 4.0.1 (CC0), which carries
the full core definitions. Run ``make fhir-core`` (downloads it with ``npm pack``) or::

    python -m patientkontrakt.fhir.extract_core path/to/package

What is written, unchanged from the package:

* ``fhir_profiles/core/StructureDefinition-*.json``: the resource types we serve and every
  complex datatype reachable from them;
* ``fhir_profiles/core/ValueSet-*.json`` and ``CodeSystem-*.json``: the value sets bound with
  strength *required* anywhere in those structures, and the code systems they draw on;
* ``fhir_profiles/search/SearchParameter-*.json``: the core search parameters we register;
* ``fhir_profiles/core/CompartmentDefinition-patient.json``: which parameters put a resource in
  a patient's compartment (access rules and the access log);
* ``fhir_profiles/core/OperationDefinition-*.json`` and ``SearchParameter-*.json``: the other
  definitions the CapabilityStatement names (``$validate``, ``$everything``, the AuditEvent parameters the access
  log answers, and ``url``, ``name``, ``version`` of the conformance resources), so that every
  canonical URL it names can be read from the server (``patientkontrakt/fhir/conformance.py``).
  They are in ``core/``, not ``search/``: nothing is indexed by them.

Our own search parameters (the ones core R4 lacks) live beside them with our canonical URL and
are not touched by this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from patientkontrakt.fhir.resource_types import RESOURCE_TYPES as SERVED_TYPES

# The types we serve, and those the server's other resources and messages are.
RESOURCE_TYPES = (
    *SERVED_TYPES,
    "AuditEvent",
    "Bundle",
    "OperationOutcome",
)

# Search parameters by (base type, code). "Resource" ones apply to every type.
SEARCH_PARAMETERS: dict[str, tuple[str, ...]] = {
    "Resource": ("_id", "_lastUpdated", "_profile", "_tag", "_security"),
    "Patient": ("identifier", "name", "family", "given", "birthdate", "gender", "active", "organization"),
    "Practitioner": ("identifier", "name", "family", "given", "active"),
    "Organization": ("identifier", "name", "type", "partof", "active"),
    "PractitionerRole": ("practitioner", "organization", "identifier", "role", "active"),
    "CarePlan": (
        "patient", "subject", "status", "category", "intent", "date", "care-team", "goal",
        "activity-date", "identifier", "activity-reference", "part-of",
    ),
    "CareTeam": ("patient", "subject", "status", "category", "participant", "identifier"),
    "Goal": ("patient", "subject", "lifecycle-status", "target-date", "identifier"),
    "Appointment": ("patient", "actor", "date", "status", "identifier"),
    "Provenance": ("target", "patient", "agent", "recorded"),
    "Consent": (
        "patient", "status", "category", "scope", "actor", "period", "organization", "date",
        "identifier", "action", "purpose", "security-label", "data", "source-reference", "consentor",
    ),
    "Subscription": ("status", "type", "url", "criteria", "payload"),
    "Group": ("member", "type", "identifier", "actual", "code"),
}

# Definitions the CapabilityStatement names that the engine does not index by (see the docstring).
NAMED_DEFINITIONS = (
    "OperationDefinition-Resource-validate.json",
    "OperationDefinition-Patient-everything.json",
    *(f"SearchParameter-AuditEvent-{code}.json" for code in ("patient", "agent", "entity", "date")),
    *(f"SearchParameter-conformance-{code}.json" for code in ("url", "name", "version")),
)

_NOT_DATATYPES = {"Element", "BackboneElement", "Resource", "Extension", "Narrative", "xhtml"}


def _load(package: Path, name: str) -> dict[str, Any]:
    path = package / name
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _index(package: Path) -> dict[str, dict[str, str]]:
    """Map canonical URL (without version) to file name, per resource type."""
    index: dict[str, dict[str, str]] = {"StructureDefinition": {}, "ValueSet": {}, "CodeSystem": {}}
    for path in package.glob("*.json"):
        prefix = path.name.split("-", 1)[0]
        if prefix not in index:
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("resourceType") == prefix and "url" in data:
            index[prefix][data["url"]] = path.name
    return index


def _collect_structures(package: Path, index: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
    """The resource types plus every complex datatype their snapshots reach."""
    base = "http://hl7.org/fhir/StructureDefinition/"
    todo = list(RESOURCE_TYPES)
    found: dict[str, dict[str, Any]] = {}
    while todo:
        name = todo.pop()
        if name in found:
            continue
        sd = _load(package, index["StructureDefinition"][base + name])
        found[name] = sd
        for element in sd["snapshot"]["element"]:
            for type_ in element.get("type", []):
                code = type_["code"]
                if code[:1].isupper() and code not in _NOT_DATATYPES and code not in found:
                    todo.append(code)
    return found


def _required_value_sets(structures: dict[str, dict[str, Any]]) -> set[str]:
    urls: set[str] = set()
    for sd in structures.values():
        for element in sd["snapshot"]["element"]:
            binding = element.get("binding")
            if binding and binding.get("strength") == "required" and "valueSet" in binding:
                urls.add(binding["valueSet"].split("|", 1)[0])
    return urls


def extract(package: Path, out: Path) -> list[str]:
    index = _index(package)
    core = out / "core"
    search = out / "search"
    core.mkdir(parents=True, exist_ok=True)
    search.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def write(folder: Path, data: dict[str, Any], name: str) -> None:
        (folder / name).write_text(
            json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        written.append(str((folder / name).relative_to(out)))

    structures = _collect_structures(package, index)
    for sd in structures.values():
        write(core, sd, f"StructureDefinition-{sd['id']}.json")

    pending = sorted(_required_value_sets(structures))
    seen_vs: set[str] = set()
    code_systems: set[str] = set()
    while pending:
        url = pending.pop()
        if url in seen_vs or url not in index["ValueSet"]:
            continue
        seen_vs.add(url)
        vs = _load(package, index["ValueSet"][url])
        write(core, vs, f"ValueSet-{vs['id']}.json")
        for part in vs.get("compose", {}).get("include", []) + vs.get("compose", {}).get("exclude", []):
            if "system" in part:
                code_systems.add(part["system"])
            pending.extend(v.split("|", 1)[0] for v in part.get("valueSet", []))
    for url in sorted(code_systems):
        if url in index["CodeSystem"]:
            cs = _load(package, index["CodeSystem"][url])
            write(core, cs, f"CodeSystem-{cs['id']}.json")

    write(core, _load(package, "CompartmentDefinition-patient.json"), "CompartmentDefinition-patient.json")
    for name in NAMED_DEFINITIONS:
        write(core, _load(package, name), name)

    wanted = {(base, code) for base, codes in SEARCH_PARAMETERS.items() for code in codes}
    for path in sorted(package.glob("SearchParameter-*.json")):
        sp = json.loads(path.read_text(encoding="utf-8"))
        bases = sp.get("base", [])
        if sp.get("experimental"):
            continue
        if any((b, sp.get("code")) in wanted for b in bases):
            write(search, sp, path.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path, help="unpacked hl7.fhir.r4.examples-4.0.1 'package' folder")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[2] / "fhir_profiles",
        help="fhir_profiles folder to write into",
    )
    args = parser.parse_args(argv)
    written = extract(args.package, args.out)
    print(f"wrote {len(written)} files under {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
