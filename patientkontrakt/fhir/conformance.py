"""The conformance resources the server stands on, readable and searchable (R4 http.html#read,
search.html): the StructureDefinitions, SearchParameters, OperationDefinitions, ValueSets and
CodeSystems under ``fhir_profiles/`` (``core/``, ``profiles/``, ``search/``), so that every
canonical URL the CapabilityStatement names resolves on the server itself; and the subscription
topics, each a ``Basic`` (``notify/topics.py``: R4 has no SubscriptionTopic).

They are definitions, not patient data, and the same for every caller: served from memory (no
database, no access log), read-only (a write is 405), and public like the CapabilityStatement
(docs/security.md, "Conformance resources"). This is why they do not pass the interaction
pipeline, which is about who may see which patient data.

Search parameters: ``_id``, ``url`` (a canonical, optionally ``url|version``), ``name`` (string:
starts with, ignoring case and accents; ``:exact``, ``:contains``), ``version``; comma-separated
values are ORed, repeated parameters ANDed; ``_count``, ``_offset``, ``_total``, ``_summary=count``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from patientkontrakt.fhir.dates import format_instant, now_utc
from patientkontrakt.fhir.errors import BadRequest, Issue, MethodNotAllowed, NotFound, operation_outcome
from patientkontrakt.fhir.indexing import normalize_string
from patientkontrakt.fhir.limits import Limits, count_values, exceeded
from patientkontrakt.fhir.paging import page_links, page_number
from patientkontrakt.fhir.rendering import dumps, render_bundle
from patientkontrakt.fhir.results import Result
from patientkontrakt.fhir.search.params import split_values

CONFORMANCE_TYPES = frozenset({"Basic", "CodeSystem", "OperationDefinition", "SearchParameter",
                               "StructureDefinition", "ValueSet"})
FOLDERS = ("core", "profiles", "search")

# name -> (type, canonical URL of its SearchParameter), as the CapabilityStatement lists them.
SEARCH_PARAMETERS = {
    "_id": ("token", "http://hl7.org/fhir/SearchParameter/Resource-id"),
    "url": ("uri", "http://hl7.org/fhir/SearchParameter/conformance-url"),
    "name": ("string", "http://hl7.org/fhir/SearchParameter/conformance-name"),
    "version": ("token", "http://hl7.org/fhir/SearchParameter/conformance-version"),
}
_MODIFIERS = {"_id": ("",), "url": ("",), "name": ("", "exact", "contains"), "version": ("",)}
_RESULT_PARAMETERS = frozenset({"_count", "_offset", "_total", "_summary", "_format", "_pretty"})


# A subscription topic (notify/topics.py) is an R4 Basic whose canonical URL is the R5
# SubscriptionTopic's, in a cross-version extension.
_TOPIC_URL = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.url"


def _canonical(resource: dict[str, Any]) -> str:
    if "url" in resource:
        return str(resource["url"])
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == _TOPIC_URL:
            return str(ext.get("valueUri", ""))
    return ""


def read_only(type_: str) -> MethodNotAllowed:
    """The answer to anything but a read or a search of a conformance resource."""
    return MethodNotAllowed(
        f"{type_} resources are served read-only, and not through Bundles: only read (GET [base]/{type_}/[id]) "
        f"and search (GET [base]/{type_}?url=...)",
        details_sv="Definitionerna kan bara läsas och sökas här.", headers={"Allow": "GET"})


@dataclass(frozen=True)
class Definition:
    type: str
    id: str
    url: str
    name: str
    version: str
    body: bytes  # compact JSON, as served


def _matcher(name: str, modifier: str, value: str) -> Callable[[Definition], bool]:
    if name == "_id":
        return lambda d: d.id == value
    if name == "version":
        return lambda d: d.version == value
    if name == "url":
        url, _, version = value.partition("|")  # R4 search.html#versions: canonical|version
        return lambda d: d.url == url and (not version or d.version == version)
    wanted = normalize_string(value)
    if modifier == "exact":
        return lambda d: d.name == value
    if modifier == "contains":
        return lambda d: wanted in normalize_string(d.name)
    return lambda d: normalize_string(d.name).startswith(wanted)


class ConformanceResources:
    """Every conformance resource under one ``fhir_profiles`` folder, by type and id."""

    def __init__(self, by_type: dict[str, dict[str, Definition]], base: str, limits: Limits,
                 default_count: int, max_count: int) -> None:
        self.base, self.limits = base, limits
        self.default_count, self.max_count = default_count, max_count
        self.by_type = by_type

    @classmethod
    def load(cls, profiles_dir: Path, base: str, limits: Limits, default_count: int,
             max_count: int) -> ConformanceResources:
        return cls(_read(profiles_dir), base, limits, default_count, max_count)

    def urls(self) -> dict[str, tuple[str, str]]:
        """canonical URL -> (type, id) of every resource served."""
        return {d.url: (d.type, d.id) for defs in self.by_type.values() for d in defs.values() if d.url}

    def _of(self, type_: str) -> dict[str, Definition]:
        if type_ not in self.by_type:
            raise NotFound(f"Unknown resource type {type_!r}", details_sv=f"Resurstypen {type_!r} finns inte här.")
        return self.by_type[type_]

    def read(self, type_: str, id_: str) -> Result:
        """R4 http.html#read."""
        found = self._of(type_).get(id_)
        if found is None:
            raise NotFound(f"{type_}/{id_} is not known", details_sv="Resursen finns inte.")
        return Result(200, found.body)

    def search(self, type_: str, pairs: list[tuple[str, str]], *, strict: bool = False) -> Result:
        """R4 search.html on the type: a searchset Bundle with ``total``, sorted by id."""
        candidates = self._of(type_)
        if len(pairs) > self.limits.search_parameters:
            raise exceeded("search_parameters", self.limits.search_parameters,
                           f"The search has {len(pairs)} parameters", "Sökningen har för många parametrar")
        tests: list[list[Callable[[Definition], bool]]] = []
        ignored: list[str] = []
        used: list[tuple[str, str]] = []
        count, offset, summary_count = self.default_count, 0, False
        for key, value in pairs:
            name, _, modifier = key.partition(":")
            if name == "_count":
                count = page_number("_count", value, self.max_count)
            elif name == "_offset":
                offset = page_number("_offset", value)
            elif name == "_summary":
                if value not in ("count", "false"):
                    raise BadRequest("_summary must be count or false on a search of definitions",
                                     expression=("_summary",))
                summary_count = value == "count"
                used.append((key, value))
            elif name == "_total":
                if value not in ("none", "estimate", "accurate"):
                    raise BadRequest("_total must be none, estimate or accurate", expression=("_total",))
                used.append((key, value))
            elif name in _RESULT_PARAMETERS:
                continue
            elif name in _MODIFIERS:
                if modifier not in _MODIFIERS[name]:
                    raise BadRequest(f"The modifier :{modifier} is not supported on {name}", expression=(key,),
                                     details_sv="Sökparametern stöder inte den modifieraren.")
                if count_values(value) > self.limits.search_values:
                    raise exceeded("search_values", self.limits.search_values,
                                   f"{key} has {count_values(value)} values", "Sökparametern har för många värden",
                                   expression=(key,))
                if not value:
                    raise BadRequest(f"{key} has no value", expression=(key,), details_sv="Sökparametern saknar värde.")
                tests.append([_matcher(name, modifier, v) for v in split_values(value)])
                used.append((key, value))
            elif strict:
                raise BadRequest(f"Unknown search parameter {key!r} for {type_}: the definitions are searched by "
                                 f"{', '.join(SEARCH_PARAMETERS)}", expression=(key,),
                                 details_sv="Okänd sökparameter.")
            else:
                ignored.append(key)
        matches = [d for _, d in sorted(candidates.items()) if all(any(t(d) for t in anyof) for anyof in tests)]
        if summary_count:
            count = 0
        page = matches[offset:offset + count]
        head: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                                "meta": {"lastUpdated": format_instant(now_utc())}, "type": "searchset",
                                "total": len(matches),
                                "link": page_links(f"{self.base}/{type_}", used, count, offset,
                                                   has_next=offset + count < len(matches), total=len(matches),
                                                   ends=True)}
        entries: list[tuple[dict[str, Any], str | bytes | None, dict[str, Any]]] = [
            ({"fullUrl": f"{self.base}/{d.type}/{d.id}"}, d.body, {"search": {"mode": "match"}}) for d in page]
        if ignored:
            entries.append(({}, dumps(operation_outcome([Issue(
                code="not-supported", severity="warning", expression=(key,),
                diagnostics=f"Unknown search parameter {key!r} for {type_} was ignored",
                details_sv="Okänd sökparameter ignorerades.") for key in ignored])), {"search": {"mode": "outcome"}}))
        return Result(200, render_bundle(head, entries))


@lru_cache(maxsize=4)
def _read(profiles_dir: Path) -> dict[str, dict[str, Definition]]:
    """The conformance resources of ``profiles_dir`` by type and id, read once per process (like
    ``load_definitions``: they change only with a deployment, and reading some 250 files took
    about 50 ms of every app start). Nothing changes the maps once read."""
    by_type: dict[str, dict[str, Definition]] = {t: {} for t in sorted(CONFORMANCE_TYPES)}
    for folder in FOLDERS:
        for path in sorted((profiles_dir / folder).glob("*.json")):
            resource: dict[str, Any] = orjson.loads(path.read_bytes())
            type_, id_ = resource.get("resourceType"), resource.get("id")
            if type_ not in CONFORMANCE_TYPES or not isinstance(id_, str):
                continue
            if id_ in by_type[type_]:
                raise ValueError(f"two {type_} resources have the id {id_!r}")
            by_type[type_][id_] = Definition(type_, id_, _canonical(resource), str(resource.get("name", "")),
                                             str(resource.get("version", "")), orjson.dumps(resource))
    return by_type
