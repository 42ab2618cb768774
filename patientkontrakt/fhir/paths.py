"""A small evaluator for the FHIRPath subset that R4 SearchParameter expressions use.

The search expressions of the parameters we register are unions of simple paths with three
refinements: ``.where(resolve() is T)`` (references to one type), ``as T`` / ``.as(T)`` /
``.ofType(T)`` (one type of a choice element). We compile each expression once per resource
type against the StructureDefinitions, which tells us the JSON property names of choice
elements (``scheduled`` → ``scheduledTiming`` | ``scheduledPeriod`` | ``scheduledString``) and
the FHIR type of every value produced, so the indexer knows how to read it.

Why not a general FHIRPath engine at write time: fhirpathpy evaluates the same expressions
to the same values (``tests/fhir/test_paths.py`` checks this), but it is about 15 times slower:
1.4 µs against 21 µs per expression, mean over the 59 parameters of five core example resources
(docs/architecture.md has the command), and indexing evaluates every parameter of the type on
every write.
An expression outside the subset is refused when the definitions load, so an unsupported
parameter cannot silently index nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from patientkontrakt.fhir.definitions import Definitions

_WHERE_RESOLVE = re.compile(r"^where\(\s*resolve\(\)\s+is\s+([A-Za-z]+)\s*\)$")
_AS_CALL = re.compile(r"^(?:as|ofType)\(\s*([A-Za-z]+)\s*\)$")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_AS_INFIX = re.compile(r"^(.*\S)\s+as\s+([A-Za-z]+)$")


class UnsupportedExpression(ValueError):
    """The expression uses FHIRPath beyond the compiled subset."""


@dataclass(frozen=True)
class _Child:
    names: tuple[tuple[str, str], ...]  # (JSON property, FHIR type)


@dataclass(frozen=True)
class _ResolveIs:
    type_name: str


Step = _Child | _ResolveIs


@dataclass(frozen=True)
class CompiledPath:
    """One union branch: steps from the resource root to typed values."""

    steps: tuple[Step, ...]

    def evaluate(self, resource: dict[str, Any]) -> Iterator[tuple[Any, str]]:
        items: list[tuple[Any, str]] = [(resource, "")]
        for step in self.steps:
            if isinstance(step, _Child):
                nxt: list[tuple[Any, str]] = []
                for item, _ in items:
                    if not isinstance(item, dict):
                        continue
                    for name, type_ in step.names:
                        value = item.get(name)
                        if value is None:
                            continue
                        if isinstance(value, list):
                            nxt.extend((v, type_) for v in value if v is not None)
                        else:
                            nxt.append((value, type_))
                items = nxt
            else:
                items = [
                    (item, t) for item, t in items
                    if isinstance(item, dict) and reference_type(item.get("reference")) == step.type_name
                ]
            if not items:
                return
        yield from items


@dataclass(frozen=True)
class CompiledExpression:
    branches: tuple[CompiledPath, ...]

    def evaluate(self, resource: dict[str, Any]) -> list[tuple[Any, str]]:
        out: list[tuple[Any, str]] = []
        for branch in self.branches:
            out.extend(branch.evaluate(resource))
        return out


def reference_type(reference: Any) -> str | None:
    """Resource type named by a literal reference (relative, absolute or versioned)."""
    if not isinstance(reference, str) or reference.startswith("#"):
        return None
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2]
    return None


def split_union(expression: str) -> list[str]:
    """Split at top-level ``|`` (not inside parentheses)."""
    return [p for p in (part.strip() for part in _split_top_level(expression, "|")) if p]


def _split_dots(expression: str) -> list[str]:
    return _split_top_level(expression, ".")


def _split_top_level(expression: str, separator: str) -> list[str]:
    """Split at each ``separator`` outside parentheses; the parts as they are."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(expression):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == separator and depth == 0:
            parts.append(expression[start:i])
            start = i + 1
    parts.append(expression[start:])
    return parts


def _strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i != len(text) - 1:
                return text
        text = text[1:-1].strip()
    return text


def compile_expression(defs: Definitions, resource_type: str, expression: str) -> CompiledExpression:
    """Compile the branches of ``expression`` that apply to ``resource_type``."""
    branches = []
    for raw in split_union(expression):
        branch = _compile_branch(defs, resource_type, raw)
        if branch is not None:
            branches.append(branch)
    return CompiledExpression(tuple(branches))


def _compile_branch(defs: Definitions, resource_type: str, raw: str) -> CompiledPath | None:
    text = _strip_parens(raw)
    cast: str | None = None
    infix = _AS_INFIX.match(text)
    if infix:
        text, cast = _strip_parens(infix.group(1)), infix.group(2)
    parts = _split_dots(text)
    root = parts[0]
    if root not in (resource_type, "Resource", "DomainResource"):
        return None
    steps: list[Step] = []
    scope: tuple[str, str] | None = (resource_type, resource_type)
    for part in parts[1:]:
        where = _WHERE_RESOLVE.match(part)
        as_call = _AS_CALL.match(part)
        if where:
            steps.append(_ResolveIs(where.group(1)))
            continue
        if as_call:
            steps[-1] = _narrow(steps[-1], as_call.group(1), raw)
            continue
        if not _IDENT.match(part) or scope is None:
            raise UnsupportedExpression(f"{raw!r}: cannot compile step {part!r}")
        element = next((e for e in defs.children(*scope) if e.name == part), None)
        if element is None:
            raise UnsupportedExpression(f"{raw!r}: {scope[1]}.{part} is not an element")
        names = element.json_names()
        steps.append(_Child(tuple(names)))
        type_names = {t for _, t in names}
        scope = defs.child_scope(scope[0], element, type_names.pop()) if len(type_names) == 1 else None
    if cast is not None:
        if not steps:
            raise UnsupportedExpression(f"{raw!r}: 'as' needs an element")
        steps[-1] = _narrow(steps[-1], cast, raw)
    if not steps:
        raise UnsupportedExpression(f"{raw!r}: the resource itself is not a searchable value")
    return CompiledPath(tuple(steps))


def _narrow(step: Step, type_name: str, raw: str) -> Step:
    if not isinstance(step, _Child):
        raise UnsupportedExpression(f"{raw!r}: cast after a filter")
    names = tuple((n, t) for n, t in step.names if t.lower() == type_name.lower())
    if not names:
        raise UnsupportedExpression(f"{raw!r}: no {type_name} in {step.names}")
    return _Child(names)
