"""JSON Patch (RFC 6902) for ``PATCH`` (R4 http.html#patch), with JSON Pointer (RFC 6901).

Written here rather than taken from a library: the whole of RFC 6902 is six operations on a
pointer, and the errors must be ours (a malformed document is a 400, an operation that cannot be
applied a 422, each naming the operation by its index), which a library's exceptions would only
be translated into. The document is applied to a copy: the stored resource is never touched.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from patientkontrakt.fhir.errors import BadRequest, Unprocessable
from patientkontrakt.fhir.limits import ContentLimitExceeded, exceeded

JSON_PATCH = "application/json-patch+json"
_OPS = ("add", "remove", "replace", "move", "copy", "test")


class PatchFailed(Unprocessable):
    """A well-formed patch that cannot be applied to the resource (a ``test`` that fails, a path
    that names nothing): nothing is stored (RFC 6902 §5: the whole patch fails)."""

    code = "processing"
    default_sv = "Ändringen (patch) kunde inte tillämpas på resursen."


def check_patch(document: Any) -> list[dict[str, Any]]:
    """The patch document as a list of operations, or a 400 naming what is malformed."""
    if not isinstance(document, list):
        raise BadRequest("A JSON Patch document is a JSON array of operations (RFC 6902 §3)",
                         details_sv="En JSON Patch ska vara en lista av operationer.")
    if not document:
        raise BadRequest("The JSON Patch document has no operations", details_sv="Ändringen saknar operationer.")
    for index, op in enumerate(document):
        where = f"operation {index}"
        if not isinstance(op, dict) or op.get("op") not in _OPS:
            raise BadRequest(f"{where}: 'op' must be one of {', '.join(_OPS)}",
                             details_sv="Okänd eller saknad operation i ändringen.")
        if not isinstance(op.get("path"), str):
            raise BadRequest(f"{where} ({op['op']}): 'path' must be a JSON Pointer string",
                             details_sv="Operationen saknar sökväg (path).")
        _pointer(op["path"], where)
        if op["op"] in ("move", "copy"):
            if not isinstance(op.get("from"), str):
                raise BadRequest(f"{where} ({op['op']}): 'from' must be a JSON Pointer string",
                                 details_sv="Operationen saknar from.")
            _pointer(op["from"], where)
        if op["op"] in ("add", "replace", "test") and "value" not in op:
            raise BadRequest(f"{where} ({op['op']} {op['path']}): 'value' is required",
                             details_sv="Operationen saknar värde (value).")
    return document


def apply_patch(resource: dict[str, Any], operations: list[dict[str, Any]], max_bytes: int) -> Any:
    """``resource`` with ``operations`` applied in order (a new document); ``PatchFailed`` if any
    cannot be applied. What ``copy`` duplicates counts against ``max_bytes`` (``PK_MAX_BODY_BYTES``):
    each copy could otherwise double the document, and a few dozen would exhaust the memory."""
    doc: Any = copy.deepcopy(resource)
    copied = 0
    for index, op in enumerate(operations):
        name, path = op["op"], op["path"]
        where = f"operation {index} ({name} {path})"
        if name == "add":
            doc = _add(doc, _pointer(path, where), copy.deepcopy(op["value"]), where)
        elif name == "remove":
            doc = _remove(doc, _pointer(path, where), where)[0]
        elif name == "replace":
            tokens = _pointer(path, where)
            if tokens:
                doc, _ = _remove(doc, tokens, where)
            doc = _add(doc, tokens, copy.deepcopy(op["value"]), where)
        elif name == "move":
            source = _pointer(op["from"], where)
            target = _pointer(path, where)
            if target[:len(source)] == source and len(target) > len(source):
                raise PatchFailed(f"{where}: cannot move {op['from']} into one of its own children")
            doc, value = _remove(doc, source, where)
            doc = _add(doc, target, value, where)
        elif name == "copy":
            value = _get(doc, _pointer(op["from"], where), where)
            copied += len(orjson.dumps(value))
            if copied > max_bytes:
                raise exceeded("body_bytes", max_bytes, f"{where}: the copies make the resource too large",
                               "Ändringen gör resursen för stor", error=ContentLimitExceeded)
            doc = _add(doc, _pointer(path, where), copy.deepcopy(value), where)
        elif not _equal(_get(doc, _pointer(path, where), where), op["value"]):
            raise PatchFailed(f"{where}: the value is not the one the test expects",
                              details_sv="Resursen ser inte ut som ändringen förutsätter; läs in den igen.")
    return doc


def _pointer(text: str, where: str) -> list[str]:
    """RFC 6901: "" is the whole document; otherwise "/"-separated tokens with ~1 and ~0 escapes."""
    if text == "":
        return []
    if not text.startswith("/"):
        raise BadRequest(f"{where}: {text!r} is not a JSON Pointer (it must start with '/')",
                         details_sv="Ogiltig sökväg i ändringen.")
    tokens = text[1:].split("/")
    for token in tokens:
        if "~" in token.replace("~0", "").replace("~1", ""):
            raise BadRequest(f"{where}: {text!r} has a '~' that is not ~0 or ~1",
                             details_sv="Ogiltig sökväg i ändringen.")
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _index(container: list[Any], token: str, where: str, *, end: bool) -> int:
    """An array index token: digits without a leading zero, at most the length (``end``: "-" and
    the length itself name the end, for add)."""
    if end and token == "-":
        return len(container)
    if not token.isascii() or not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchFailed(f"{where}: {token!r} is not an array index")
    index = int(token)
    if index > len(container) or (index == len(container) and not end):
        raise PatchFailed(f"{where}: index {index} is past the end of the array (length {len(container)})")
    return index


def _parent(doc: Any, tokens: list[str], where: str) -> Any:
    return _get(doc, tokens[:-1], where)


def _get(doc: Any, tokens: list[str], where: str) -> Any:
    for token in tokens:
        if isinstance(doc, dict):
            if token not in doc:
                raise PatchFailed(f"{where}: {token!r} does not exist")
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token, where, end=False)]
        else:
            raise PatchFailed(f"{where}: {token!r} is below a value that is neither an object nor an array")
    return doc


def _add(doc: Any, tokens: list[str], value: Any, where: str) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, where), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, where, end=True), value)
    else:
        raise PatchFailed(f"{where}: the parent of {last!r} is neither an object nor an array")
    return doc


def _remove(doc: Any, tokens: list[str], where: str) -> tuple[Any, Any]:
    """The document without the value at ``tokens``, and that value."""
    if not tokens:
        raise PatchFailed(f"{where}: the whole resource cannot be removed")
    parent, last = _parent(doc, tokens, where), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchFailed(f"{where}: {last!r} does not exist")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, where, end=False))
    raise PatchFailed(f"{where}: the parent of {last!r} is neither an object nor an array")


def _equal(a: Any, b: Any) -> bool:
    """RFC 6902 §4.6 equality: same JSON type and value (Python would take True for 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
