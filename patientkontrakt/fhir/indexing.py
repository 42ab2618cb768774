"""Search index extraction, driven by the SearchParameter definitions (design §4).

For every registered parameter of a resource type we evaluate its compiled expression and
turn each typed value into rows for one of the index tables: token, string, date,
reference, uri. The storage layer writes these rows in the same transaction as the resource.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from patientkontrakt.fhir.dates import MAX, MIN, DateFormatError, parse_range
from patientkontrakt.fhir.definitions import Definitions, SearchParam
from patientkontrakt.fhir.paths import CompiledExpression, compile_expression

# Index values longer than this are cut; search values are cut the same way.
MAX_INDEX_LENGTH = 500
# ... and to this many UTF-8 bytes, so that a token's code and system fit one PostgreSQL btree
# index row (at most 2704 bytes) whatever characters they hold.
MAX_INDEX_BYTES = 1000

# Parameters answered from columns of the resource table, not from index rows.
COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})


def normalize_string(value: str) -> str:
    """Case- and accent-insensitive form for string search (R4 search.html#string)."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())[:MAX_INDEX_LENGTH]


def cut(value: str) -> str:
    value = value[:MAX_INDEX_LENGTH]
    if len(value) * 4 <= MAX_INDEX_BYTES:
        return value
    return value.encode("utf-8", "surrogatepass")[:MAX_INDEX_BYTES].decode("utf-8", "ignore")


# The shapes of a resource type name and an id (R4 datatypes.html#id); they fit the index columns.
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{0,63}")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True)
class ParsedReference:
    """A literal reference split into type and id when it points into this server."""

    type: str | None
    id: str | None
    url: str | None


def parse_reference(reference: str, local_base: str) -> ParsedReference:
    """Split ``Type/id``, ``Type/id/_history/n`` or ``{local_base}/Type/id``.

    An absolute URL outside ``local_base`` keeps its URL (and the type it names, if any).
    """
    text = reference
    local = True
    if "://" in reference or reference.startswith("urn:"):
        base = local_base.rstrip("/") + "/"
        if reference.startswith(base):
            text = reference[len(base):]
        else:
            local = False
    parts = text.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if local and len(parts) == 2 and _TYPE_NAME.fullmatch(parts[0]) and _ID.fullmatch(parts[1]):
        return ParsedReference(parts[0], parts[1], None)
    type_ = parts[-2] if len(parts) >= 2 and _TYPE_NAME.fullmatch(parts[-2]) else None
    return ParsedReference(type_, None, cut(reference))


@dataclass
class IndexRows:
    token: list[dict[str, Any]] = field(default_factory=list)
    string: list[dict[str, Any]] = field(default_factory=list)
    date: list[dict[str, Any]] = field(default_factory=list)
    reference: list[dict[str, Any]] = field(default_factory=list)
    uri: list[dict[str, Any]] = field(default_factory=list)

    def tables(self) -> Iterable[tuple[str, list[dict[str, Any]]]]:
        yield "token", self.token
        yield "string", self.string
        yield "date", self.date
        yield "reference", self.reference
        yield "uri", self.uri


class Indexer:
    """Compiled search expressions per resource type, and the row extraction."""

    def __init__(self, defs: Definitions, resource_types: Iterable[str]) -> None:
        self._compiled: dict[str, list[tuple[SearchParam, CompiledExpression]]] = {}
        for type_name in resource_types:
            entries = []
            for code, param in sorted(defs.params_for(type_name).items()):
                if code in COLUMN_PARAMS or param.type not in _EXTRACTORS:
                    continue
                entries.append((param, compile_expression(defs, type_name, param.expression)))
            self._compiled[type_name] = entries

    def extract(self, resource: dict[str, Any], local_base: str) -> IndexRows:
        rows = IndexRows()
        for param, compiled in self._compiled.get(resource["resourceType"], []):
            extractor = _EXTRACTORS[param.type]
            seen: set[tuple[Any, ...]] = set()
            target = getattr(rows, param.type)
            for value, type_ in compiled.evaluate(resource):
                for row in extractor(value, type_, local_base):
                    key = tuple(row.values())
                    if key not in seen:
                        seen.add(key)
                        row["param"] = param.code
                        target.append(row)
        return rows


def reference_elements(resource: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(FHIRPath-like location, Reference object) for every literal reference in a resource.

    References inside ``contained`` resources are included: they point into this server too.
    """
    found: list[tuple[str, dict[str, Any]]] = []
    _walk_references(resource, [str(resource.get("resourceType", ""))], found)
    return found


def _walk_references(node: Any, path: list[str], out: list[tuple[str, dict[str, Any]]]) -> None:
    # ``path``: the location's parts, joined only where a reference is found
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            out.append(("".join(path), node))
        for key, value in node.items():
            if isinstance(value, dict | list):
                path.append(f".{key}")
                _walk_references(value, path, out)
                path.pop()
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, dict | list):
                path.append(f"[{i}]")
                _walk_references(item, path, out)
                path.pop()


def _system(value: dict[str, Any]) -> str | None:
    system = value.get("system")
    return cut(system) if isinstance(system, str) else None


def _token(value: Any, type_: str, _base: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if type_ == "CodeableConcept" and isinstance(value, dict):
        for coding in value.get("coding", []) or []:
            rows.extend(_token(coding, "Coding", _base))
    elif type_ == "Coding" and isinstance(value, dict):
        if isinstance(value.get("code"), str):
            rows.append({"system": _system(value), "code": cut(value["code"])})
    elif type_ == "Identifier" and isinstance(value, dict):
        if isinstance(value.get("value"), str):
            rows.append({"system": _system(value), "code": cut(value["value"])})
    elif type_ == "ContactPoint" and isinstance(value, dict):
        if isinstance(value.get("value"), str):
            rows.append({"system": _system(value), "code": cut(value["value"])})
    elif type_ == "boolean" and isinstance(value, bool):
        rows.append({"system": None, "code": "true" if value else "false"})
    elif isinstance(value, str):
        rows.append({"system": None, "code": cut(value)})
    return rows


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _string(value: Any, type_: str, _base: str) -> list[dict[str, Any]]:
    texts: list[str] = []
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, dict):
        parts = _NAME_PARTS if type_ == "HumanName" else _ADDRESS_PARTS if type_ == "Address" else ()
        for part in parts:
            item = value.get(part)
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, list):
                texts.extend(i for i in item if isinstance(i, str))
    return [{"value": normalize_string(t), "exact": cut(t)} for t in texts]


def _range_of(text: Any, upper: bool) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        low, high = parse_range(text)
    except DateFormatError:
        return None
    return high if upper else low


def _date(value: Any, type_: str, _base: str) -> list[dict[str, Any]]:
    if type_ in ("date", "dateTime", "instant") and isinstance(value, str):
        try:
            low, high = parse_range(value)
        except DateFormatError:
            return []
        return [{"low": low, "high": high}]
    if type_ == "Period" and isinstance(value, dict):
        low = _range_of(value.get("start"), upper=False) or MIN
        high = _range_of(value.get("end"), upper=True) or MAX
        return [{"low": low, "high": high}] if ("start" in value or "end" in value) else []
    if type_ == "Timing" and isinstance(value, dict):
        rows: list[dict[str, Any]] = []
        for event in value.get("event", []) or []:
            rows.extend(_date(event, "dateTime", _base))
        bounds = (value.get("repeat") or {}).get("boundsPeriod")
        if isinstance(bounds, dict):
            rows.extend(_date(bounds, "Period", _base))
        return rows
    return []


def _reference(value: Any, type_: str, base: str) -> list[dict[str, Any]]:
    if type_ == "Reference" and isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and not ref.startswith("#"):
            parsed = parse_reference(ref, base)
            return [{"target_type": parsed.type, "target_id": parsed.id, "url": parsed.url}]
        return []
    if type_ in ("canonical", "uri", "url") and isinstance(value, str):
        return [{"target_type": None, "target_id": None, "url": cut(value.split("|", 1)[0])}]
    return []


def _uri(value: Any, type_: str, _base: str) -> list[dict[str, Any]]:
    if not isinstance(value, str):
        return []
    if type_ == "canonical":
        value = value.split("|", 1)[0]  # canonical|version: search by the canonical URL
    return [{"uri": cut(value)}]


_EXTRACTORS = {
    "token": _token,
    "string": _string,
    "date": _date,
    "reference": _reference,
    "uri": _uri,
}
