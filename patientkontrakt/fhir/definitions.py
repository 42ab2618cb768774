"""The official FHIR R4 definitions we stand on, loaded from ``fhir_profiles/``.

StructureDefinitions give element types, cardinality, summary flags and bindings;
ValueSets and CodeSystems give the codes of required bindings; SearchParameters drive
indexing and search. Everything is read once per process and is immutable afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import orjson

# Types whose children live in the same StructureDefinition (no datatype hop).
_INLINE_TYPES = {"BackboneElement", "Element"}
FHIRPATH_STRING = "http://hl7.org/fhirpath/System.String"


@dataclass(frozen=True)
class ElementDef:
    """One element of a StructureDefinition snapshot."""

    path: str
    name: str
    types: tuple[str, ...]
    min: int
    max: str
    is_summary: bool
    is_choice: bool
    required_value_set: str | None
    content_reference: str | None

    @property
    def repeats(self) -> bool:
        return self.max != "1" and self.max != "0"

    def json_names(self) -> list[tuple[str, str]]:
        """(JSON property name, FHIR type) pairs this element can appear as."""
        if self.is_choice:
            return [(self.name + t[0].upper() + t[1:], t) for t in self.types]
        type_ = self.types[0] if self.types else "BackboneElement"
        if type_ == FHIRPATH_STRING:
            type_ = "string"
        return [(self.name, type_)]


@dataclass
class Structure:
    """A StructureDefinition reduced to what the engine navigates."""

    name: str
    kind: str
    elements: dict[str, ElementDef]
    children: dict[str, list[ElementDef]] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchParam:
    code: str
    type: str
    url: str
    expression: str
    base: tuple[str, ...]
    targets: tuple[str, ...]
    modifiers: tuple[str, ...]
    comparators: tuple[str, ...]
    description: str
    resource: dict[str, Any] = field(compare=False, hash=False, repr=False)


def _element(raw: dict[str, Any]) -> ElementDef:
    path: str = raw["path"]
    last = path.rsplit(".", 1)[-1]
    is_choice = last.endswith("[x]")
    binding = raw.get("binding") or {}
    required = None
    if binding.get("strength") == "required" and "valueSet" in binding:
        required = str(binding["valueSet"]).split("|", 1)[0]
    content_ref = raw.get("contentReference")
    return ElementDef(
        path=path,
        name=last[:-3] if is_choice else last,
        types=tuple(t["code"] for t in raw.get("type", [])),
        min=int(raw.get("min", 0)),
        max=str(raw.get("max", "*")),
        is_summary=bool(raw.get("isSummary", False)),
        is_choice=is_choice,
        required_value_set=required,
        content_reference=content_ref[1:] if content_ref else None,
    )


def _structure(sd: dict[str, Any]) -> Structure:
    elements = {e["path"]: _element(e) for e in sd["snapshot"]["element"]}
    children: dict[str, list[ElementDef]] = {}
    for element in elements.values():
        if "." in element.path:
            children.setdefault(element.path.rsplit(".", 1)[0], []).append(element)
    return Structure(name=sd["type"], kind=sd["kind"], elements=elements, children=children)


# Types the R4 patient CompartmentDefinition lists that this server keeps out of every patient's
# compartment: a Group (by ``member``) is a care unit's list of many patients, not data about the
# one it happens to name first, so it gets no ``patient_id`` and is in no ``$everything`` or
# patient-level export (docs/api.md, "Group").
OUTSIDE_COMPARTMENT = frozenset({"Group"})


class Definitions:
    """Structures, value sets and search parameters from one ``fhir_profiles`` folder."""

    def __init__(self, profiles_dir: Path) -> None:
        self.profiles_dir = profiles_dir
        self.structures: dict[str, Structure] = {}
        self._value_sets: dict[str, dict[str, Any]] = {}
        self._code_systems: dict[str, dict[str, Any]] = {}
        self.search_params: dict[str, dict[str, SearchParam]] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self.conformance: list[dict[str, Any]] = []
        # Per resource type, the search parameters that put it in a patient's compartment
        # (R4 CompartmentDefinition-patient).
        self.patient_compartment: dict[str, tuple[str, ...]] = {}
        self._load()

    # -- loading ---------------------------------------------------------------------------

    def _resources(self, folder: Path) -> Iterable[dict[str, Any]]:
        for path in sorted(folder.glob("*.json")):
            data: dict[str, Any] = orjson.loads(path.read_bytes())
            yield data

    def _load(self) -> None:
        for res in self._resources(self.profiles_dir / "core"):
            kind = res.get("resourceType")
            if kind == "StructureDefinition" and res.get("derivation") != "constraint":
                self.structures[res["type"]] = _structure(res)
            elif kind == "ValueSet":
                self._value_sets[res["url"]] = res
            elif kind == "CodeSystem":
                self._code_systems[res["url"]] = res
            elif kind == "CompartmentDefinition" and res.get("code") == "Patient":
                self.patient_compartment = {r["code"]: tuple(r.get("param", [])) for r in res.get("resource", [])
                                            if r["code"] not in OUTSIDE_COMPARTMENT}
        for res in self._resources(self.profiles_dir / "profiles"):
            kind = res.get("resourceType")
            if kind == "StructureDefinition" and res.get("derivation") == "constraint":
                self.profiles[res["url"]] = res
            elif kind == "ValueSet":
                self._value_sets[res["url"]] = res
            elif kind == "CodeSystem":
                self._code_systems[res["url"]] = res
            if "url" in res:
                self.conformance.append(res)
        for res in self._resources(self.profiles_dir / "search"):
            if res.get("resourceType") != "SearchParameter" or res.get("status") == "retired":
                continue
            param = SearchParam(
                code=res["code"],
                type=res["type"],
                url=res["url"],
                expression=res.get("expression", ""),
                base=tuple(res.get("base", [])),
                targets=tuple(res.get("target", [])),
                modifiers=tuple(res.get("modifier", [])),
                comparators=tuple(res.get("comparator", [])),
                description=res.get("description", ""),
                resource=res,
            )
            for base in param.base:
                self.search_params.setdefault(base, {})[param.code] = param

    # -- structures ------------------------------------------------------------------------

    def resource_types(self) -> list[str]:
        return sorted(n for n, s in self.structures.items() if s.kind == "resource")

    def children(self, type_name: str, path: str) -> list[ElementDef]:
        """Child elements of ``path`` inside the structure of ``type_name``."""
        structure = self.structures[type_name]
        return structure.children.get(path, [])

    def child_scope(self, type_name: str, element: ElementDef, type_: str) -> tuple[str, str] | None:
        """Where the children of ``element`` (as ``type_``) are defined: (structure, path)."""
        if element.content_reference:
            return type_name, element.content_reference
        if type_ in _INLINE_TYPES:
            return type_name, element.path
        if type_ in self.structures:
            return type_, type_
        return None

    def params_for(self, resource_type: str) -> dict[str, SearchParam]:
        """Search parameters of a type, including those defined on Resource/DomainResource."""
        params: dict[str, SearchParam] = {}
        for base in ("Resource", "DomainResource", resource_type):
            params.update(self.search_params.get(base, {}))
        return params

    # -- terminology -----------------------------------------------------------------------

    @cache  # noqa: B019 - the instance lives for the whole process
    def value_set_codes(self, url: str) -> frozenset[tuple[str, str]] | None:
        """All (system, code) pairs of a value set, or None when it cannot be enumerated.

        Value sets drawing on external systems (BCP-13 mime types, BCP-47 languages, UCUM)
        or on code systems we do not hold cannot be enumerated and are not enforced.
        """
        vs = self._value_sets.get(url.split("|", 1)[0])
        if vs is None:
            return None
        codes: set[tuple[str, str]] = set()
        compose = vs.get("compose", {})
        for part in compose.get("include", []):
            got = self._include(part)
            if got is None:
                return None
            codes |= got
        for part in compose.get("exclude", []):
            got = self._include(part)
            if got is not None:
                codes -= got
        return frozenset(codes)

    def code_displays(self, system: str, language: str = "sv") -> dict[str, str]:
        """code -> display of a code system we hold: the display (Swedish in ours), or the
        designation in ``language`` when there is one."""
        out: dict[str, str] = {}
        stack = list((self._code_systems.get(system) or {}).get("concept", []))
        while stack:
            concept = stack.pop()
            stack.extend(concept.get("concept", []))
            label = str(concept.get("display") or concept["code"])
            for designation in concept.get("designation", []):
                if designation.get("language") == language and designation.get("value"):
                    label = str(designation["value"])
            out[str(concept["code"])] = label
        return out

    def _include(self, part: dict[str, Any]) -> set[tuple[str, str]] | None:
        system = part.get("system")
        result: set[tuple[str, str]] | None = None
        if system is not None:
            if "filter" in part:
                return None
            if "concept" in part:
                result = {(system, c["code"]) for c in part["concept"]}
            else:
                cs = self._code_systems.get(system)
                if cs is None or cs.get("content") not in ("complete", None):
                    return None
                result = {(system, code) for code in _all_codes(cs.get("concept", []))}
        for vs_url in part.get("valueSet", []):
            nested = self.value_set_codes(vs_url)
            if nested is None:
                return None
            result = set(nested) if result is None else result & nested
        return result


def _all_codes(concepts: list[dict[str, Any]]) -> Iterable[str]:
    for concept in concepts:
        yield concept["code"]
        yield from _all_codes(concept.get("concept", []))


@lru_cache(maxsize=4)
def load_definitions(profiles_dir: Path) -> Definitions:
    return Definitions(profiles_dir)
