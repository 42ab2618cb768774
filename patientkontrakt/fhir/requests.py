"""What a request brings besides its URL: the ``Prefer`` header and the JSON body, checked
before anything else looks at them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from patientkontrakt.fhir.errors import BadRequest, Issue
from patientkontrakt.fhir.limits import DEFAULT_LIMITS, ContentLimitExceeded, exceeded


@dataclass(frozen=True)
class Preferences:
    """The request's ``Prefer`` header (R4 http.html#return, search.html#errors)."""

    return_: str = "representation"
    strict: bool = False

    @classmethod
    def parse(cls, header: str | None) -> Preferences:
        return_, strict = "representation", False
        for part in (header or "").split(","):
            for token in part.split(";"):
                key, _, value = token.strip().partition("=")
                value = value.strip().strip('"')
                if key == "return" and value in ("minimal", "representation", "OperationOutcome"):
                    return_ = value
                elif key == "handling":
                    strict = value == "strict"
        return cls(return_, strict)


def parse_body(raw: bytes, max_depth: int = DEFAULT_LIMITS.json_depth) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 naming what is wrong; objects and arrays nest
    at most ``max_depth`` deep (``PK_MAX_JSON_DEPTH``)."""
    data = parse_json(raw, max_depth)
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object (a FHIR resource)",
                         details_sv="Innehållet ska vara en FHIR-resurs.")
    return data


def parse_json(raw: bytes, max_depth: int = DEFAULT_LIMITS.json_depth) -> Any:
    """The request body as JSON of any kind (a JSON Patch is an array), checked as ``parse_body``
    checks a resource."""
    if not raw.strip():
        raise BadRequest("The request has no body", details_sv="Begäran saknar innehåll.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}", details_sv="Innehållet är inte giltig JSON.") from None
    if isinstance(data, dict | list):
        _check_json(data, max_depth, nul_possible=b"\\u0000" in raw)
    return data


def no_in_parameters(body: dict[str, Any], operation: str) -> None:
    """The body of an operation invoked by POST that takes no in-parameters but its target (R4
    operations.html#request: a ``Parameters`` resource): a ``Parameters`` without any ``parameter``.
    Each parameter sent is named in the 400, so a client learns what the operation does not take."""
    if body.get("resourceType") != "Parameters":
        raise BadRequest(f"{operation} takes a Parameters resource by POST, not a {body.get('resourceType')!r}",
                         expression=("resourceType",), details_sv="Innehållet ska vara en Parameters-resurs.")
    given = body.get("parameter", [])
    if not isinstance(given, list):
        raise BadRequest("Parameters.parameter must be an array", expression=("Parameters.parameter",),
                         details_sv="Parameters.parameter ska vara en lista.")
    if given:
        raise BadRequest(f"{operation} takes no parameters", details_sv="Operationen tar inga parametrar.", issues=[
            Issue(code="not-supported", expression=(f"Parameters.parameter[{i}]",),
                  diagnostics=f"{operation} has no parameter "
                              f"{p.get('name') if isinstance(p, dict) else p!r}: it takes none but its target",
                  details_sv="Operationen tar inga parametrar.")
            for i, p in enumerate(given)])


def _check_json(data: dict[str, Any] | list[Any], max_depth: int, *, nul_possible: bool) -> None:
    """Refuse what no FHIR JSON needs and the server cannot process: nesting deeper than
    ``max_depth`` (FHIR resources stay far below the default; deeper documents would exhaust the
    recursion of the validator and the Bundle processor), and U+0000 in a string or name
    (PostgreSQL cannot store it)."""
    root = data.get("resourceType") if isinstance(data, dict) and isinstance(data.get("resourceType"), str) else "$"
    # A node's location as a chain (parent's location, key), written out only for an error.
    stack: list[tuple[dict[str, Any] | list[Any], _Location, int]] = [(data, None, 1)]
    while stack:
        node, location, depth = stack.pop()
        if depth > max_depth:
            raise exceeded("json_depth", max_depth, f"The body nests objects and arrays at least {depth} levels deep",
                           "Innehållet är för djupt nästlat", expression=(_where(str(root), location),),
                           error=ContentLimitExceeded)
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if nul_possible and (isinstance(key, str) and "\x00" in key
                                 or isinstance(value, str) and "\x00" in value):
                at = _where(str(root), (location, key))
                raise BadRequest(f"{at!r} contains U+0000, which FHIR strings cannot hold",
                                 expression=(at,), details_sv="Innehållet har ett otillåtet tecken (U+0000).")
            if isinstance(value, dict | list):
                stack.append((value, (location, key), depth + 1))


_Location = tuple[Any, str | int] | None  # (the parent's _Location, key)


def _where(root: str, location: _Location) -> str:
    """``root.key[index]...`` of a location chain."""
    keys: list[str | int] = []
    while location is not None:
        location, key = location
        keys.append(key)
    return root + "".join(f".{k}" if isinstance(k, str) else f"[{k}]" for k in reversed(keys))
