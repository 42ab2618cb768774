"""The compiled search-expression evaluator agrees with a general FHIRPath engine (fhirpathpy).

Every search parameter of every served type is evaluated on the example resources in
``tests/data`` by both ``patientkontrakt.fhir.paths`` and fhirpathpy, union branch by branch
(values, order and the FHIR type of each value) and as a whole expression.

fhirpathpy needs three translations of the official expressions, none of which changes their
meaning:

- ``resolve()`` is not implemented (it would need a server), so ``X.where(resolve() is T)`` is
  evaluated as ``X`` and filtered by the resource type the literal reference names;
- a root naming a base type (``Resource.id``) matches nothing in fhirpathpy, while FHIRPath
  lets the root name the context's type *or a base type*: we substitute the concrete type;
- ``(Goal.target.due as date)`` raises in fhirpathpy when ``target`` repeats (``as`` wants a
  single item); FHIR R5 rewrote these expressions as ``.ofType(date)``, which is what the
  search parameter means, so we compare with that (and with ``as`` where it has one item).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhirpathpy import evaluate
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.fhir.definitions import load_definitions
from patientkontrakt.fhir.paths import (
    UnsupportedExpression,
    compile_expression,
    reference_type,
    split_union,
)
from patientkontrakt.fhir.service import RESOURCE_TYPES

DATA = Path(__file__).resolve().parents[1] / "data"
DEFS = load_definitions(PROJECT_ROOT / "fhir_profiles")
MODEL = models["r4"]

_WHERE_RESOLVE = re.compile(r"\.where\(\s*resolve\(\)\s+is\s+([A-Za-z]+)\s*\)")
_AS = re.compile(r"^\(?\s*(?P<path>[A-Za-z.]+)\s+as\s+(?P<type>[A-Za-z]+)\s*\)?$")
# FHIR R4 references.html#literal: [base/]Type/id[/_history/version]
_LITERAL = re.compile(
    r"^(?:https?://(?:[A-Za-z0-9\-\\.:%$]*/)+)?(?P<type>[A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


def _load() -> dict[str, dict[str, Any]]:
    return {path.stem: orjson.loads(path.read_bytes()) for path in sorted(DATA.glob("*.json"))}


RESOURCES = _load()
CASES = [
    pytest.param(name, code, id=f"{name}:{code}")
    for name, resource in RESOURCES.items()
    for code in sorted(DEFS.params_for(resource["resourceType"]))
]


def _fhirpathpy(resource: dict[str, Any], expression: str) -> list[Any]:
    result: list[Any] = evaluate(resource, expression, {}, MODEL)
    return result


def _type_name(node: ResourceNode) -> str:
    info = node.get_type_info()
    assert info is not None
    name: str = info.name
    return "string" if name == "String" else name


def _literal_type(reference: Any) -> str | None:
    match = _LITERAL.match(reference) if isinstance(reference, str) else None
    return match.group("type") if match else None


def _reference_branch(resource: dict[str, Any], branch: str) -> list[tuple[Any, str]]:
    """fhirpathpy's (value, FHIR type name) pairs for one union branch, with the translations of
    the module docstring. ``System.String`` (the R4 type of ``Resource.id``) is reported as
    ``string``, as the StructureDefinition's fhir-type extension says."""

    def run(expression: str) -> list[tuple[Any, str]]:
        nodes = evaluate(resource, expression, {}, MODEL, {"returnRawData": True})
        assert all(isinstance(n, ResourceNode) for n in nodes), expression
        return [(n.data, _type_name(n)) for n in nodes]

    branch = branch.strip()
    if branch.startswith("(") and branch.endswith(")"):
        branch = branch[1:-1].strip()
    branch = re.sub(r"^(Resource|DomainResource)\.", resource["resourceType"] + ".", branch)
    where = _WHERE_RESOLVE.search(branch)
    if where is not None:
        assert branch[where.end():] == "", f"resolve() filter must end the branch: {branch}"
        return [
            (v, t) for v, t in run(branch[: where.start()])
            if isinstance(v, dict) and _literal_type(v.get("reference")) == where.group(1)
        ]
    cast = _AS.match(branch)
    if cast is not None:
        of_type = run(f"{cast.group('path')}.ofType({cast.group('type')})")
        try:
            as_result = _fhirpathpy(resource, f"{cast.group('path')} as {cast.group('type')}")
        except ValueError:
            pass  # more than one item on the left of 'as'
        else:
            assert as_result == [v for v, _ in of_type]
        return of_type
    return run(branch)


def _dedup(values: list[Any]) -> list[bytes]:
    return sorted({orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in values})


def _own_branches(type_name: str, expression: str) -> list[str]:
    roots = (type_name, "Resource", "DomainResource")
    return [b for b in split_union(expression) if b.lstrip("(").split(".", 1)[0].strip() in roots]


def test_every_served_type_has_example_resources() -> None:
    types = {r["resourceType"] for r in RESOURCES.values()}
    assert set(RESOURCE_TYPES) <= types


@pytest.mark.parametrize("type_name", RESOURCE_TYPES)
def test_every_parameter_finds_a_value_in_some_example(type_name: str) -> None:
    """So that the comparisons below are never between two empty lists only."""
    examples = [r for r in RESOURCES.values() if r["resourceType"] == type_name]
    empty = [
        code
        for code, param in DEFS.params_for(type_name).items()
        if not any(compile_expression(DEFS, type_name, param.expression).evaluate(r) for r in examples)
    ]
    assert empty == []


@pytest.mark.parametrize(("name", "code"), CASES)
def test_compiled_expression_agrees_with_fhirpathpy(name: str, code: str) -> None:
    resource = RESOURCES[name]
    type_name = resource["resourceType"]
    expression = DEFS.params_for(type_name)[code].expression

    whole = compile_expression(DEFS, type_name, expression).evaluate(resource)
    expected_whole = [v for b in split_union(expression) for v, _ in _reference_branch(resource, b)]
    # A FHIRPath union removes duplicates; the indexer does the same with the rows it makes.
    assert _dedup([v for v, _ in whole]) == _dedup(expected_whole)

    for branch in _own_branches(type_name, expression):
        got = compile_expression(DEFS, type_name, branch).evaluate(resource)
        assert got == _reference_branch(resource, branch), branch


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/1", "Patient"),
        ("Patient/1/_history/2", "Patient"),
        ("http://testserver/fhir/Patient/1", "Patient"),
        ("https://other.example/r4/PractitionerRole/x-1/_history/9", "PractitionerRole"),
        ("#contained", None),
        ("urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7", None),
        ("Patient?identifier=191212121212", None),
        ("patient/1", None),
        ("1", None),
        (None, None),
        (42, None),
    ],
)
def test_reference_type_reads_the_literal_reference(reference: Any, expected: str | None) -> None:
    assert reference_type(reference) == expected
    if isinstance(reference, str) and expected is not None:
        assert _literal_type(reference) == expected


def test_where_resolve_keeps_only_references_to_that_type() -> None:
    compiled = compile_expression(DEFS, "Appointment", "Appointment.participant.actor.where(resolve() is Patient)")
    resource = RESOURCES["appointment-besok"]
    assert [v["reference"] for v, _ in compiled.evaluate(resource)] == [
        "Patient/tolvan",
        "http://testserver/fhir/Patient/anhorig",
    ]


def test_choice_element_yields_each_json_name_with_its_type() -> None:
    compiled = compile_expression(DEFS, "CarePlan", "CarePlan.activity.detail.scheduled")
    got = compiled.evaluate(RESOURCES["careplan-agreement"])
    assert [t for _, t in got] == ["Timing", "Period", "string"]


@pytest.mark.parametrize(
    "expression",
    [
        "(Goal.target.due as date)",
        "Goal.target.due as date",
        "Goal.target.due.as(date)",
        "Goal.target.due.ofType(date)",
    ],
)
def test_cast_forms_narrow_a_choice_to_one_type(expression: str) -> None:
    got = compile_expression(DEFS, "Goal", expression).evaluate(RESOURCES["goal-walk"])
    assert got == [("2024-09-01", "date"), ("2025-06-01", "date")]


def test_branches_for_other_resource_types_are_skipped() -> None:
    compiled = compile_expression(DEFS, "Practitioner", "Patient.name.family | Practitioner.name.family")
    assert len(compiled.branches) == 1
    assert [v for v, _ in compiled.evaluate(RESOURCES["practitioner-lisa"])] == ["Läkare", "Åström"]


def test_null_items_and_non_objects_are_ignored() -> None:
    compiled = compile_expression(DEFS, "Patient", "Patient.name.given")
    resource = {
        "resourceType": "Patient",
        "name": [{"given": [None, "Tolvan"], "_given": [{"extension": []}, None]}, "not-an-object", {"given": None}],
    }
    assert compiled.evaluate(resource) == [("Tolvan", "string")]


def test_split_union_respects_parentheses() -> None:
    assert split_union("A.b | (C.d as e) | F.g.where(resolve() is H)") == [
        "A.b",
        "(C.d as e)",
        "F.g.where(resolve() is H)",
    ]


@pytest.mark.parametrize(
    "expression",
    [
        "Patient.name.first()",
        "Patient.name.where(use = 'official')",
        "Patient.extension('http://example.org/x')",
        "Patient.nickname",
        "Patient",
        "Patient.deceased.birthDate",
        "Patient.deceased.as(Quantity)",
        "(Patient.deceased as Period)",
        "Patient.link.other.where(resolve() is Patient).ofType(Reference)",
        "Patient.name[0]",
        "Patient.name.given + Patient.name.family",
    ],
)
def test_expressions_outside_the_subset_are_refused(expression: str) -> None:
    with pytest.raises(UnsupportedExpression):
        compile_expression(DEFS, "Patient", expression)


def test_every_registered_parameter_compiles() -> None:
    for type_name in RESOURCE_TYPES:
        for code, param in DEFS.params_for(type_name).items():
            compiled = compile_expression(DEFS, type_name, param.expression)
            assert compiled.branches, f"{type_name}.{code} compiles to nothing"
