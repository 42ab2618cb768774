"""The entries of a batch or transaction Bundle (R4 http.html#transaction): what an entry asks
for (method, URL, conditions, resource), the interaction and permissions it needs, and how its
errors name it (``Bundle.entry[i]``). ``bundles.py`` processes them."""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from patientkontrakt.fhir.conditional import NO_CONDITIONS, ReadConditions
from patientkontrakt.fhir.errors import BadRequest, FhirError, Issue, UnsupportedMediaType
from patientkontrakt.fhir.json_patch import JSON_PATCH, check_patch
from patientkontrakt.fhir.limits import DEFAULT_LIMITS
from patientkontrakt.fhir.requests import parse_json
from patientkontrakt.fhir.writes import ID_PATTERN

# R4 http.html#trules: the order in which a transaction processes its entries.
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class Entry:
    """One entry of a batch or transaction, as parsed from its ``request`` and ``resource``."""

    index: int
    method: str
    type: str
    id: str | None
    query: str | None
    version: str | None
    resource: dict[str, Any] | None
    full_url: str | None
    if_none_exist: str | None
    if_match: str | None
    pairs: list[tuple[str, str]] = field(default_factory=list)
    patch: list[dict[str, Any]] | None = None  # a PATCH entry's JSON Patch operations
    conditions: ReadConditions = NO_CONDITIONS  # a GET's ifNoneMatch and ifModifiedSince


@dataclass
class EntryResponse:
    """What an entry answers: its ``response`` in the result Bundle."""

    status: int
    body: bytes | str | None = None
    location: str | None = None
    version_id: int | None = None
    last_modified: str | None = None
    outcome: dict[str, Any] | None = None
    full_url: str | None = None  # Bundle.entry.fullUrl: the resource's own URL, without its version


def interaction_of(entry: Entry) -> str:
    if entry.method == "DELETE":
        return "delete"
    if entry.method == "POST":
        return "create"
    if entry.method in ("PUT", "PATCH"):
        return "update"
    if entry.id is None:
        return "search-type"
    return "vread" if entry.version is not None else "read"


def needs_of(entry: Entry) -> tuple[tuple[str, str], ...]:
    """What the caller's scopes must grant for the entry: its interaction, and search for what a
    conditional form finds."""
    own = (entry.type, interaction_of(entry))
    if entry.method in ("PUT", "PATCH", "DELETE") and entry.id is None or entry.if_none_exist:
        return own, (entry.type, "search-type")
    return (own,)


def entry_error(index: int, error: FhirError) -> FhirError:
    """Prefix every issue of an entry's error with where the entry is."""
    where = f"Bundle.entry[{index}]"
    error.issues = [
        Issue(
            code=i.code,
            severity=i.severity,
            diagnostics=f"{where}: {i.diagnostics}",
            expression=tuple(_entry_expression(where, e) for e in i.expression) or (where,),
            details_sv=i.details_sv,
        )
        for i in error.issues
    ]
    error.diagnostics = error.issues[0].diagnostics
    return error


def _entry_expression(where: str, expression: str) -> str:
    """``CarePlan.subject`` → ``Bundle.entry[i].resource.subject``; ``request.url`` stays entry-level."""
    if expression[:1].isupper():
        _, _, rest = expression.partition(".")
        return f"{where}.resource.{rest}" if rest else f"{where}.resource"
    return f"{where}.{expression}"


def parse_numbered_entry(index: int, raw: Any, base: str, check_type: Callable[[str], None],
                         json_depth: int = DEFAULT_LIMITS.json_depth) -> Entry:
    """``parse_entry``, its errors naming the entry."""
    try:
        return parse_entry(raw, base, check_type, json_depth)
    except FhirError as error:
        raise entry_error(index, error) from None

def parse_entry(raw: Any, base: str, check_type: Callable[[str], None],
                json_depth: int = DEFAULT_LIMITS.json_depth) -> Entry:
    """An entry's ``request`` (method, URL relative to ``base`` or absolute, conditions) and
    ``resource`` (a copy: the processor rewrites its references)."""
    if not isinstance(raw, dict):
        raise BadRequest("an entry must be an object", details_sv="Posten ska vara ett objekt.")
    request = raw.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("method"), str) \
            or not isinstance(request.get("url"), str):
        raise BadRequest("entry.request with method and url is required", expression=("request",),
                         details_sv="Posten saknar request.method eller request.url.")
    method = request["method"].upper()
    if method not in ORDER:
        raise BadRequest(f"Unsupported method {method!r} in a Bundle", expression=("request.method",),
                         details_sv="Metoden stöds inte.")
    url = request["url"]
    if url.startswith(base + "/"):
        url = url[len(base) + 1:]
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise BadRequest(f"request.url {request['url']!r} names no resource type", expression=("request.url",),
                         details_sv="Adressen saknar resurstyp.")
    type_ = segments[0]
    check_type(type_)
    id_ = segments[1] if len(segments) > 1 else None
    version = segments[3] if len(segments) == 4 and segments[2] == "_history" else None
    if len(segments) > 2 and version is None or len(segments) > 4:
        raise BadRequest(f"request.url {request['url']!r} is not supported", expression=("request.url",),
                         details_sv="Adressen stöds inte.")
    if method in ("PUT", "PATCH") and id_ is not None and not ID_PATTERN.match(id_):
        raise BadRequest(f"request.url {request['url']!r}: {id_!r} is not a valid FHIR id",
                         expression=("request.url",), details_sv="Ogiltigt id.")
    resource = raw.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise BadRequest(f"{method} needs entry.resource", expression=("resource",),
                             details_sv="Posten saknar resurs.")
        resource = copy.deepcopy(resource)
    operations = _patch_of(resource, json_depth) if method == "PATCH" else None
    if method == "PATCH" and (version is not None or id_ is None and not parts.query):
        raise BadRequest(f"request.url {request['url']!r}: PATCH names a resource (Type/id) or a search (Type?…)",
                         expression=("request.url",), details_sv="Adressen stöds inte.")
    full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
    return Entry(
        index=0, method=method, type=type_, id=id_, query=parts.query or None, version=version,
        resource=resource if method in ("POST", "PUT") else None, full_url=full_url,
        if_none_exist=request.get("ifNoneExist") if isinstance(request.get("ifNoneExist"), str) else None,
        if_match=request.get("ifMatch") if isinstance(request.get("ifMatch"), str) else None,
        pairs=parse_qsl(parts.query, keep_blank_values=True), patch=operations,
        conditions=ReadConditions(_text(request, "ifNoneMatch"), _text(request, "ifModifiedSince")),
    )


def _text(request: dict[str, Any], name: str) -> str | None:
    value = request.get(name)
    return value if isinstance(value, str) else None


def _patch_of(resource: Any, json_depth: int) -> list[dict[str, Any]]:
    """A PATCH entry's JSON Patch: R4 http.html#patch, "a Binary resource whose content is the
    patch document" (contentType ``application/json-patch+json``, the document base64 in
    ``data``). FHIRPath Patch (a Parameters resource) is not supported."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
        raise UnsupportedMediaType("FHIRPath Patch (a Parameters resource) is not supported; send a JSON Patch as "
                                   f"a Binary of contentType {JSON_PATCH}", expression=("resource",),
                                   details_sv="FHIRPath Patch stöds inte; skicka en JSON Patch.")
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        raise BadRequest(f"A PATCH entry needs a Binary resource holding a JSON Patch ({JSON_PATCH}) in data",
                         expression=("resource",), details_sv="Posten saknar ändringen (en Binary med JSON Patch).")
    if resource.get("contentType") != JSON_PATCH:
        raise UnsupportedMediaType(f"The Binary's contentType is {resource.get('contentType')!r}; a PATCH entry "
                                   f"takes {JSON_PATCH}", expression=("resource.contentType",),
                                   details_sv="Ändringen ska vara en JSON Patch.")
    data = resource.get("data")
    try:
        raw = base64.b64decode(data, validate=True) if isinstance(data, str) else None
    except binascii.Error:
        raw = None
    if raw is None:
        raise BadRequest("The Binary's data must hold the JSON Patch document, base64-encoded",
                         expression=("resource.data",), details_sv="Ändringen saknas eller är felkodad.")
    return check_patch(parse_json(raw, json_depth))
