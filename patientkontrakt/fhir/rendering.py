"""Rendering stored JSON into responses without a model round trip.

Stored bodies are spliced into Bundles as text; only the envelope is serialised. Subsetting
(``_summary``, ``_elements``) is the one case where a body is parsed on the read path, and it
marks the result SUBSETTED as R4 search.html#summary requires.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from patientkontrakt.fhir.definitions import Definitions

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
_ALWAYS = ("resourceType", "id", "meta")
# _summary values that make sense on a single resource (count is for searches).
SUMMARY_PARAMS = frozenset({"true", "false", "text", "data"})


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)


def render_bundle(head: dict[str, Any], entries: Iterable[tuple[dict[str, Any], str | bytes | None, dict[str, Any]]]
                  ) -> bytes:
    """A Bundle from its head fields and (before, raw resource, after) entry parts.

    ``before`` holds the entry fields that precede ``resource`` (fullUrl), ``after`` those that
    follow it (search, request, response); the raw resource JSON is inserted unparsed.
    """
    out = bytearray(orjson.dumps(head))
    out.pop()  # the closing brace
    first = True
    for before, raw, after in entries:
        out += b',"entry":[' if first else b","
        first = False
        out += b"{"
        parts: list[bytes] = []
        if before:
            parts.append(orjson.dumps(before)[1:-1])
        if raw is not None:
            parts.append(b'"resource":' + (raw.encode() if isinstance(raw, str) else raw))
        if after:
            parts.append(orjson.dumps(after)[1:-1])
        out += b",".join(parts)
        out += b"}"
    if not first:
        out += b"]"
    out += b"}"
    return bytes(out)


class Subsetter:
    """``_summary`` and ``_elements`` driven by the StructureDefinitions' summary flags."""

    def __init__(self, defs: Definitions) -> None:
        self._summary: dict[str, frozenset[str]] = {}
        self._mandatory: dict[str, frozenset[str]] = {}
        for name in defs.resource_types():
            summary, mandatory = set(), set()
            for element in defs.children(name, name):
                names = {n for n, _ in element.json_names()}
                if element.is_summary:
                    summary |= names
                if element.min > 0:
                    mandatory |= names
            self._summary[name] = frozenset(summary)
            self._mandatory[name] = frozenset(mandatory)

    def apply(self, raw: str | bytes, summary: str | None, elements: tuple[str, ...]) -> str | bytes:
        if (summary in (None, "false")) and not elements:
            return raw
        resource: dict[str, Any] = orjson.loads(raw)
        type_ = resource.get("resourceType", "")
        mandatory = self._mandatory.get(type_, frozenset())
        if elements:
            keep = set(_ALWAYS) | mandatory | {e.split(".", 1)[0] for e in elements}
        elif summary == "true":
            keep = set(_ALWAYS) | self._summary.get(type_, frozenset()) | mandatory
        elif summary == "text":
            keep = set(_ALWAYS) | {"text"} | mandatory
        elif summary == "data":
            keep = set(resource) - {"text"}
        else:
            return raw
        subset = {k: v for k, v in resource.items() if k in keep or (k.startswith("_") and k[1:] in keep)}
        meta = dict(subset.get("meta") or {})
        meta["tag"] = [*meta.get("tag", []), SUBSETTED]
        subset["meta"] = meta
        return orjson.dumps(subset)
