"""The compiled FHIRPath invariants (patientkontrakt.domain.invariants) answer as fhirpathpy does.

Every invariant of our profiles is evaluated both ways on every value it constrains in the
profiles' examples and the benchmark's synthetic agreements, and in variations of them made to
reach both sides of each rule (elements removed, codes and references changed, lists doubled); a
compiled closure may leave a value to fhirpathpy (``Undecided``), never answer it otherwise.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.models import models

from bench import synthetic
from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.domain.invariants import Undecided, compile_invariant
from patientkontrakt.domain.profiles import ElementRule, ProfileValidator
from patientkontrakt.fhir.definitions import load_definitions

R4 = models["r4"]
PROFILES = PROJECT_ROOT / "fhir_profiles"
# Values that flip the rules' conditions: codes the invariants name, reference forms, dates.
SWAPS = ("Organization", "Organization/x", "Practitioner/y", "home", "work", "cancelled", "no-show", "booked",
         "scheduled", "not-started", "completed", "IRCP", "CST", "urn:oid:1.2.752.29.4.19",
         "SE2321000016-abc", "SE123-x", "191212121212", "19121212-1212",
         "http://electronichealth.se/identifier/personnummer", "patientkontrakt", "fast-vardkontakt", "annan",
         "2026-01-01T10:00:00Z", "2025-12-31T10:00:00+01:00", "2026-01-01", "something", "adr", "treatment", "research",
         "patient-privacy")
READ = frozenset({"system", "code", "use", "type", "reference", "status", "value", "start", "end"})
# What the examples lack: both sides of an activity, a target without its measure, a Goal target
# with a detail, a Consent about no patient, a cancellation reason, an Organization without name.
EXTRA: tuple[dict[str, Any], ...] = (
    {"resourceType": "CarePlan", "status": "draft", "intent": "plan", "subject": {"reference": "Patient/p"},
     "activity": [{"reference": {"reference": "Appointment/a"}, "detail": {"status": "scheduled"}}]},
    {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "x"},
     "subject": {"reference": "Patient/p"},
     "target": [{"measure": {"text": "m"}, "detailString": "d"}, {"detailString": "d"}]},
    {"resourceType": "Consent", "status": "active", "scope": {"coding": [{"system": "something", "code": "adr"}]},
     "category": [{"text": "c"}], "policyRule": {"text": "p"}},
    {"resourceType": "Appointment", "status": "booked", "cancelationReason": {"text": "sjuk"},
     "participant": [{"actor": {"reference": "Patient/p"}, "status": "accepted"}]},
    {"resourceType": "Organization", "active": True, "telecom": [{"system": "phone", "value": "1", "use": "home"}]},
)


@pytest.fixture(scope="module")
def validator() -> ProfileValidator:
    return ProfileValidator(load_definitions(PROFILES))


def _constraints(rule: ElementRule) -> Iterator[tuple[str, str]]:
    for constraint in rule.constraints:
        yield constraint.key, constraint.expression
    for child in (*rule.children, *rule.slices):
        yield from _constraints(child)


def _examples() -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted((PROFILES / "profiles").glob("*-pk-example-*.json"))]
    found.extend(copy.deepcopy(EXTRA))
    for i in (0,):
        found.extend(synthetic.agreement(i))
        found.extend(synthetic.appointments(i))
        found.extend((synthetic.samtycke(i), synthetic.sparr(i)))
    found.extend(synthetic.shared())
    return found


def _variations(node: Any, key: str = "") -> Iterator[Any]:
    """Copies of ``node`` with one change each: an element removed, a string of an element the
    invariants read swapped, a list doubled or cut to its first item."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name != "resourceType":
                yield {k: v for k, v in node.items() if k != name}
            for changed in _variations(value, name):
                yield {**node, name: changed}
    elif isinstance(node, list):
        if len(node) > 1:
            yield node[:1]
        yield node + [copy.deepcopy(node[-1])]
        for i, item in enumerate(node):
            for changed in _variations(item, key):
                yield [*node[:i], changed, *node[i + 1:]]
    elif isinstance(node, str) and key in READ:
        yield from (s for s in SWAPS if s != node)


def _corpus() -> Iterator[dict[str, Any]]:
    for resource in _examples():
        yield resource
        yield from (v for v in _variations(resource) if isinstance(v, dict))


def test_every_invariant_of_our_profiles_compiles(validator: ProfileValidator) -> None:
    expressions = {key: expression for profile in validator.profiles.values()
                   for key, expression in _constraints(profile.root)}
    assert len(expressions) >= 25
    assert [key for key, expression in expressions.items() if compile_invariant(expression, R4) is None] == []


def test_outside_the_subset_is_left_to_fhirpathpy() -> None:
    for expression in ("period.end > now()", "name.given.first() = 'A'", "%resource.id.exists()",
                       "identifier.select(value)", "status ~ 'draft'", "a.`b`", "name.where($this.use = 'x')"):
        assert compile_invariant(expression, R4) is None, expression


def test_compiled_invariants_answer_as_fhirpathpy(validator: ProfileValidator,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, Any, dict[str, Any]]] = []
    keys: set[tuple[str, str]] = set()
    def record(self: ProfileValidator, expression: str, value: Any, resource: dict[str, Any]) -> list[Any]:
        key = (expression, json.dumps(value, sort_keys=True))
        if key not in keys:  # the same value met again in another variation
            keys.add(key)
            seen.append((expression, value, resource))
        return []

    monkeypatch.setattr(ProfileValidator, "_evaluate", record)
    for resource in _corpus():
        for profile in validator.profiles.values():
            if profile.type == resource.get("resourceType"):
                validator.validate(resource, profile)
    assert len(seen) > 2_000, len(seen)

    native = {e: compile_invariant(e, R4) for e in {e for e, _, _ in seen}}
    interpreted = {e: fhirpathpy.compile(e, R4) for e in native}
    decided: dict[str, set[bool]] = {e: set() for e in native}
    for expression, value, resource in seen:
        try:
            expected = interpreted[expression](value, {"resource": resource, "rootResource": resource})
        except Exception as exc:  # noqa: BLE001 - fhirpathpy's failure is an answer too
            expected = [f"error: {exc}"]
        compiled = native[expression]
        assert compiled is not None
        try:
            got = compiled(value)
        except Undecided:
            continue
        assert got == expected, (expression, value)
        decided[expression].add(got in ([True], []))
    # Most values are decided by the compiled form, and the corpus reaches both sides of most rules.
    assert sum(len(sides) > 0 for sides in decided.values()) == len(decided)
    # Left on one side: pk-aktivitet-1 compares dates, which the compiled form leaves to fhirpathpy
    # (decided only where it holds trivially); gol-1's detail[x] is a choice below a backbone
    # element, which fhirpathpy, given the element alone, does not resolve, and neither do we.
    one_sided = {e for e, sides in decided.items() if sides != {True, False}}
    assert one_sided <= {"(start.exists() and end.exists()) implies end >= start",
                         "(detail.exists() and measure.exists()) or detail.exists().not()"}, one_sided


def test_a_compiled_form_that_fails_leaves_the_answer_to_fhirpathpy(validator: ProfileValidator) -> None:
    plan = next(r for r in _examples() if r.get("resourceType") == "CarePlan")
    broken = {**plan, "activity": [{"detail": {"status": "scheduled", "kind": "Appointment"},
                                    "reference": {"reference": "Appointment/a"}}]}
    profile = next(p for p in validator.profiles.values() if p.type == "CarePlan")
    expected = [i.diagnostics for i in validator.validate(broken, profile)]
    assert any("cpl-3" in d for d in expected)

    def fails(value: Any) -> list[Any]:
        raise ZeroDivisionError

    saved = dict(validator._native)
    try:
        for expression in list(validator._native):
            validator._native[expression] = fails
        assert [i.diagnostics for i in validator.validate(broken, profile)] == expected
    finally:
        validator._native.clear()
        validator._native.update(saved)
