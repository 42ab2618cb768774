"""Validation of resource bodies on write (never on read).

Two passes, both reported with FHIRPath-style ``expression`` locations:

1. A walk of the JSON along the official StructureDefinitions: the FHIR JSON rules the
   fhir.resources models let through (``"active": "yes"`` is coerced to ``true`` by pydantic's
   lax mode; ``null`` and empty arrays pass), arrays versus single values, and the codes of
   every *required* binding, checked against the official ValueSets (the models accept
   ``CarePlan.status = "bogus"``).
2. The ``fhir.resources.R4B`` model (fhir.resources 8 has no R4 package; R4B is wire-compatible
   with R4 for the types we serve, see docs/architecture.md): unknown elements, mandatory
   elements, primitive formats, choice-type exclusivity. Built only when ``ModelShapes`` cannot
   show from the models' metadata that it would accept the body (model_shapes.py): a body it
   refuses is always built, so what is reported is the model's own answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from patientkontrakt.fhir.definitions import FHIRPATH_STRING, Definitions, ElementDef
from patientkontrakt.fhir.errors import InvalidResource, Issue
from patientkontrakt.fhir.model_shapes import ModelShapes

_BOOLEAN = {"boolean"}
_INTEGER = {"integer", "positiveInt", "unsignedInt"}
_DECIMAL = {"decimal"}
_SKIP_DEEP = {"Extension", "Narrative", "xhtml"}
# R4 datatypes.html#string: no characters below U+0020 but tab, CR and LF (PostgreSQL JSONB refuses U+0000).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# The same characters as orjson writes them (``\u0000``-``\u001f``, ``\b``, ``\f``; tab, CR and
# LF as ``\t``, ``\r``, ``\n``): a body whose JSON has none of these has none of them, and is
# not walked for them. A match (perhaps only an escaped backslash before ``b``) is walked.
_MAYBE_CONTROL = re.compile(rb"\\u00[01]|\\[bf]")


@dataclass(frozen=True)
class _Slot:
    element: ElementDef
    type: str
    scope: tuple[str, str] | None


class Validator:
    """Validates resource JSON of the types the definitions hold."""

    def __init__(self, defs: Definitions) -> None:
        self._defs = defs
        self._shapes = ModelShapes()

    @cache  # noqa: B019 - one validator per process
    def _slots(self, type_name: str, path: str) -> dict[str, _Slot]:
        slots: dict[str, _Slot] = {}
        for element in self._defs.children(type_name, path):
            for json_name, type_ in element.json_names():
                scope = None
                if type_[:1].isupper() and type_ not in _SKIP_DEEP and type_ != "Resource":
                    scope = self._defs.child_scope(type_name, element, type_)
                slots[json_name] = _Slot(element, type_, scope)
        return slots

    def validate(self, resource: dict[str, Any]) -> None:
        """Raise InvalidResource listing every problem found, or return."""
        type_name = resource.get("resourceType")
        if not isinstance(type_name, str) or type_name not in self._defs.structures:
            raise InvalidResource(
                f"resourceType {type_name!r} is not a resource type this server holds",
                expression=("resourceType",),
                details_sv="Resurstypen stöds inte.",
            )
        issues: list[Issue] = []
        self._walk_resource(resource, type_name, type_name, issues)
        if _may_hold_control_characters(resource):
            _control_characters(resource, type_name, issues)
        if issues or not self._shapes.accepts(resource):
            issues.extend(i for i in _model_issues(resource, type_name) if not _covered(i, issues))
        if issues:
            raise InvalidResource(issues[0].diagnostics, issues=issues)

    # -- pass 1 ----------------------------------------------------------------------------

    def _walk_resource(self, node: dict[str, Any], type_name: str, where: str, issues: list[Issue]) -> None:
        self._walk_object(node, (type_name, type_name), where, issues, is_resource=True)

    def _walk_object(
        self,
        node: dict[str, Any],
        scope: tuple[str, str],
        where: str,
        issues: list[Issue],
        is_resource: bool = False,
    ) -> None:
        if not node:
            issues.append(_issue("structure", where, "an empty object is not allowed", "Tomt objekt är inte tillåtet."))
            return
        slots = self._slots(*scope)
        for key, value in node.items():
            if is_resource and key == "resourceType":
                continue
            at = f"{where}.{key}"
            if key.startswith("_"):
                if value is None or value == {} or value == []:
                    issues.append(_issue("structure", at, "null or empty value", "Tomt värde är inte tillåtet."))
                continue
            slot = slots.get(key)
            if slot is None:
                continue  # unknown elements are reported by the model pass
            self._check_value(key, value, slot, node, at, issues)

    def _check_value(
        self, key: str, value: Any, slot: _Slot, parent: dict[str, Any], at: str, issues: list[Issue]
    ) -> None:
        if slot.element.repeats:
            if not isinstance(value, list):
                issues.append(_issue("structure", at, f"{key} repeats and must be a JSON array",
                                      f"{key} ska vara en lista."))
                return
            if not value:
                issues.append(_issue("structure", at, "an empty array is not allowed", "Tom lista är inte tillåten."))
                return
            shadow = parent.get("_" + key)
            for i, item in enumerate(value):
                if item is None and isinstance(shadow, list) and i < len(shadow) and shadow[i] is not None:
                    continue
                self._check_item(item, slot, f"{at}[{i}]", issues)
        else:
            if isinstance(value, list):
                issues.append(_issue("structure", at, f"{key} does not repeat and must not be an array",
                                      f"{key} ska vara ett enskilt värde."))
                return
            self._check_item(value, slot, at, issues)

    def _check_item(self, value: Any, slot: _Slot, at: str, issues: list[Issue]) -> None:
        type_ = slot.type
        if value is None:
            issues.append(_issue("structure", at, "null is not allowed", "Tomt värde är inte tillåtet."))
            return
        if type_ == "Resource":
            if not isinstance(value, dict):
                issues.append(_issue("structure", at, "a resource must be a JSON object", "Ska vara en resurs."))
                return
            inner = value.get("resourceType")
            if slot.element.name == "contained" and "contained" in value:
                issues.append(_issue("invariant", f"{at}.contained", "a contained resource must not contain "
                                      "resources (dom-2)", "En inbäddad resurs får inte själv innehålla resurser."))
            if isinstance(inner, str) and inner in self._defs.structures:
                self._walk_resource(value, inner, at, issues)
            elif not _known_model(inner):
                issues.append(_issue("structure", f"{at}.resourceType",
                                      f"unknown resource type {inner!r}", "Okänd resurstyp."))
            return
        if type_[:1].isupper():
            if not isinstance(value, dict):
                issues.append(_issue("structure", at, f"a {type_} must be a JSON object", "Ska vara ett objekt."))
                return
            if slot.scope is not None:
                self._walk_object(value, slot.scope, at, issues)
            if slot.element.required_value_set:
                self._check_coded(value, slot, at, issues)
            return
        if not _primitive_ok(type_, value):
            issues.append(_issue("value", at, f"{_describe(value)} is not a valid FHIR {type_}",
                                  f"Värdet är inte av typen {type_}."))
            return
        if isinstance(value, str) and not value.strip():
            issues.append(_issue("value", at, "an empty string is not allowed", "Tom text är inte tillåten."))
            return
        if slot.element.required_value_set and type_ == "code":
            codes = self._defs.value_set_codes(slot.element.required_value_set)
            if codes is not None and value not in {c for _, c in codes}:
                issues.append(_code_issue(at, value, slot.element.required_value_set, codes))

    def _check_coded(self, value: dict[str, Any], slot: _Slot, at: str, issues: list[Issue]) -> None:
        url = slot.element.required_value_set
        assert url is not None
        codes = self._defs.value_set_codes(url)
        if codes is None:
            return
        codings = [value] if slot.type == "Coding" else value.get("coding") or []
        if slot.type not in ("Coding", "CodeableConcept"):
            return
        ok = any(
            isinstance(c, dict)
            and (c.get("system"), c.get("code")) in codes
            for c in codings
        )
        if not ok:
            shown = next((c.get("code") for c in codings if isinstance(c, dict)), None)
            issues.append(_code_issue(at, shown, url, codes))


def _may_hold_control_characters(resource: dict[str, Any]) -> bool:
    try:
        return _MAYBE_CONTROL.search(orjson.dumps(resource)) is not None
    except TypeError:  # orjson's JSONEncodeError (e.g. an integer past 64 bits): walk it
        return True


def _control_characters(node: Any, where: str, issues: list[Issue]) -> None:
    """Every string, extensions and unknown elements included, against the FHIR string rule."""
    if isinstance(node, dict):
        for key, value in node.items():
            _control_characters(value, f"{where}.{key}", issues)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _control_characters(item, f"{where}[{i}]", issues)
    elif isinstance(node, str) and _CONTROL.search(node):
        issues.append(_issue("value", where, "control characters other than tab, CR and LF are not allowed",
                             "Texten innehåller otillåtna kontrolltecken."))


def _covered(issue: Issue, found: list[Issue]) -> bool:
    """Whether the first pass already reported this element or one that contains it."""
    at = issue.expression[0] if issue.expression else ""
    if found and issue.code == "structure" and "." not in at:
        return True  # the model could not parse at all what the first pass already rejected
    return any(at == e or at.startswith((e + ".", e + "[")) for i in found for e in i.expression)


def _known_model(type_name: Any) -> bool:
    if not isinstance(type_name, str) or not type_name.isalpha():
        return False
    try:
        get_fhir_model_class(type_name)
    except (KeyError, ValueError, AttributeError, ImportError):
        return False
    return True


def _primitive_ok(type_: str, value: Any) -> bool:
    if type_ in _BOOLEAN:
        return isinstance(value, bool)
    if type_ in _INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ in _DECIMAL:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == FHIRPATH_STRING:
        return isinstance(value, str)
    return isinstance(value, str)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _issue(code: str, at: str, message: str, sv: str) -> Issue:
    return Issue(code=code, diagnostics=f"{at}: {message}", expression=(at,), details_sv=sv)


def _code_issue(at: str, value: Any, url: str, codes: frozenset[tuple[str, str]]) -> Issue:
    allowed = ", ".join(sorted({c for _, c in codes}))
    return Issue(
        code="code-invalid",
        diagnostics=f"{at}: {value!r} is not in the required value set {url} (allowed: {allowed})",
        expression=(at,),
        details_sv=f"Koden {value!r} är inte tillåten här. Tillåtna koder: {allowed}.",
    )


def _model_issues(resource: dict[str, Any], type_name: str) -> list[Issue]:
    try:
        model = get_fhir_model_class(type_name)
        model.model_validate(resource)
    except ValidationError as exc:
        return [_pydantic_issue(type_name, err) for err in exc.errors()]
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        return [Issue(code="structure", diagnostics=f"{type_name}: {exc}", expression=(type_name,),
                      details_sv="Resursen kunde inte tolkas.")]
    return []


def _pydantic_issue(type_name: str, err: Any) -> Issue:
    where = type_name
    for part in err.get("loc", ()):
        if isinstance(part, int):
            where += f"[{part}]"
        elif isinstance(part, str) and not part.startswith("function-") and "[" not in part:
            where += f".{part}"
    kind = err.get("type", "")
    message = str(err.get("msg", "invalid"))
    if kind == "extra_forbidden":
        name = where.rsplit(".", 1)[-1]
        return Issue(code="structure", diagnostics=f"{where}: unknown element {name!r}",
                     expression=(where,), details_sv=f"Okänt element {name!r}.")
    if "missing" in kind:
        return Issue(code="required", diagnostics=f"{where}: {message}", expression=(where,),
                     details_sv="Ett obligatoriskt värde saknas.")
    return Issue(code="value", diagnostics=f"{where}: {message}", expression=(where,),
                 details_sv="Värdet är ogiltigt.")
