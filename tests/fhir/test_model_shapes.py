"""``ModelShapes.accepts`` (patientkontrakt.fhir.model_shapes) answers True only where the R4B model
accepts.

Every resource of the profiles' examples and of the benchmark's synthetic agreements, and
variations of them made to break what the model checks (an element removed or nulled, a primitive
given another format or JSON type, an unknown or doubled element, a second type of a choice
element, a list for a single value and back, a primitive's ``_element``), is asked both ways:
wherever ``accepts`` says True, ``model_validate`` must not raise. It must also say True for every
valid resource we start from (the fast path is the common one), and the variations must reach
both answers of the model.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from bench import synthetic
from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.fhir.definitions import load_definitions
from patientkontrakt.fhir.errors import InvalidResource
from patientkontrakt.fhir.model_shapes import ModelShapes
from patientkontrakt.fhir.validation import Validator

PROFILES = PROJECT_ROOT / "fhir_profiles"
# Strings in the formats a FHIR primitive may or may not take: dates of every precision, wrong
# days and hours, times without zone, codes with spaces, ids too long or with other characters,
# URIs with spaces, numbers in strings, empty and blank text.
STRINGS = ("", " ", "x ", "a  b", "a b", "2024", "2024-02", "2024-02-29", "2023-02-29", "2024-13-01",
           "2024-01-01T10:00:00Z", "2024-01-01T10:00:00", "2024-01-01T25:00:00+01:00", "2024-01-01T10:00Z",
           "10:00:00", "25:00:00", "urn:uuid:0b1d2c3e-0000-4000-8000-000000000000", "not a uri", "http://x/y",
           "-1", "0", "1", "1.5", "true", "ÅÄÖ", "x" * 65, "a_b", "a.b-c", "\tx")
OTHERS: tuple[Any, ...] = (True, False, 0, 1, -1, 1.5, 10**20, {}, {"x": 1}, [], ["x"], None)


def _examples() -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted((PROFILES / "profiles").glob("*-pk-example-*.json"))]
    found.extend(synthetic.agreement(0))
    found.extend(synthetic.appointments(0))
    found.extend((synthetic.samtycke(0), synthetic.sparr(0)))
    found.extend(synthetic.shared())
    return found


def _values(value: Any) -> Iterator[Any]:
    if isinstance(value, str):
        yield from (s for s in STRINGS if s != value)
        yield from (o for o in OTHERS if o is not None)
    elif isinstance(value, bool | int | float):
        yield from ("true", "1", -1, 0, 1.5, not value if isinstance(value, bool) else value + 1)
    elif isinstance(value, dict):
        yield {}
        yield [value]
        yield json.dumps(value)
        yield {**value, "resourceType": "Element"}
        yield {**value, "fhir_comments": "x"}
    elif isinstance(value, list):
        yield []
        yield value[0]
        yield [*value, None]
        yield [*value, copy.deepcopy(value[0])]


def _choice_sibling(name: str) -> str | None:
    for type_ in ("String", "DateTime", "Period", "Quantity", "CodeableConcept", "Reference", "Boolean", "Timing"):
        if name.endswith(type_) and name != type_ and name[: -len(type_)].islower():
            return name[: -len(type_)] + ("Boolean" if type_ != "Boolean" else "String")
    return None


def _variations(node: Any) -> Iterator[Any]:
    """Copies of ``node`` with one change each, at every depth."""
    if isinstance(node, dict):
        yield {**node, "bogus": 1}
        for name, value in node.items():
            if name == "resourceType":
                yield {**node, name: "Basic" if value != "Basic" else "Patient"}
                continue
            yield {k: v for k, v in node.items() if k != name}
            yield {**node, name: None}
            for other in _values(value):
                yield {**node, name: other}
            if isinstance(value, str | bool | int | float):
                yield {**node, "_" + name: {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}}
                yield {**node, name + "__ext": {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}}
            sibling = _choice_sibling(name)
            if sibling is not None and sibling not in node:
                yield {**node, sibling: True if sibling.endswith("Boolean") else "x"}
            for changed in _variations(value):
                yield {**node, name: changed}
    elif isinstance(node, list):
        for i, item in enumerate(node[:2]):
            for changed in _variations(item):
                yield [*node[:i], changed, *node[i + 1:]]


def _model_accepts(resource: dict[str, Any]) -> bool:
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except (ValidationError, ValueError, TypeError, KeyError, AttributeError):
        return False
    return True


def test_every_valid_resource_we_start_from_is_proven_without_the_model() -> None:
    shapes = ModelShapes()
    examples = _examples()
    assert len(examples) >= 40
    for resource in examples:
        assert _model_accepts(resource), resource["resourceType"]
        assert shapes.accepts(resource), f"{resource['resourceType']}/{resource.get('id')} not proven"


def test_where_shapes_accept_the_model_accepts() -> None:
    shapes = ModelShapes()
    proven = refused = model_refused = model_accepted = 0
    for example in _examples():
        for variant in _variations(example):
            if not isinstance(variant, dict) or not isinstance(variant.get("resourceType"), str):
                continue
            if shapes.accepts(variant):
                proven += 1
                assert _model_accepts(variant), json.dumps(variant)[:2000]
                continue
            refused += 1
            if refused % 7 == 0:  # a sample of the rest: the model must refuse some, accept others
                if _model_accepts(variant):
                    model_accepted += 1
                else:
                    model_refused += 1
    assert proven > 15_000
    assert refused > 12_000
    assert model_refused > 1_000 and model_accepted > 200


@pytest.mark.parametrize(("change", "proven"), [
    ({}, True),
    ({"created": "2023-02-29"}, False),
    ({"created": "2024-01-01T10:00:00"}, False),
    ({"status": "a  b"}, False),
    ({"_status": {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}}, False),
    ({"contained": [{"resourceType": "Patient", "id": "p"}]}, False),
    ({"subject": None}, False),
    ({"subject": "Patient/x"}, False),
    ({"period": {"start": "2024-01-01", "fhir_comments": "x"}}, False),
])
def test_what_is_left_to_the_model(change: dict[str, Any], proven: bool) -> None:
    plan = {"resourceType": "CarePlan", "status": "draft", "intent": "plan", "subject": {"reference": "Patient/p"},
            "created": "2024-01-01", **change}
    assert ModelShapes().accepts(plan) is proven


def test_the_validator_reports_what_the_model_finds_when_shapes_are_not_sure() -> None:
    """A body the shapes do not prove goes to the model: an extension in place of a mandatory
    primitive is valid FHIR, a date of no calendar is not, with the model's message."""
    validator = Validator(load_definitions(PROFILES))
    reason = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                             "valueCode": "unknown"}]}
    plan = {"resourceType": "CarePlan", "intent": "plan", "_status": reason, "subject": {"reference": "Patient/p"}}
    validator.validate(plan)
    with pytest.raises(InvalidResource) as caught:
        validator.validate({**plan, "status": "draft", "created": "2023-02-29"})
    assert [i.expression for i in caught.value.issues] == [("CarePlan.created",)]
