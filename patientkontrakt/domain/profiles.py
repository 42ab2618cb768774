"""Profile validation driven by StructureDefinition snapshots (our profiles in ``fhir_profiles/``).

Nothing here knows a resource type: each profile's snapshot is compiled into a tree of element
rules, and a resource is walked along it, checking

* cardinality of elements and of slices (slicing by ``value``/``pattern``/``exists``/``type``
  discriminators, open or closed),
* ``fixed[x]`` and ``pattern[x]`` values,
* required bindings (our ValueSets and the core ones),
* reference target types (``targetProfile`` → the profiled resource type),
* FHIRPath invariants (fhirpathpy with the R4 model, so choice types resolve). The universal
  core invariants (``ele-*``, ``ext-*``, ``dom-*``) are left out: the structural validator in
  ``patientkontrakt.fhir.validation`` already enforces what they say, and evaluating them on
  every element with fhirpathpy costs milliseconds per resource. Invariants that call
  ``resolve()`` are left out too: fhirpathpy cannot follow references (R4's ctm-1 is one).

Extension slices (discriminated by ``url``) are matched by the extension's canonical URL, and a
value in such a slice is validated against that extension's own profile when we hold it.

Which profile a resource must conform to (``select``): the one profile of ours for its type; where
a type has several (CarePlan: pk-patientkontrakt and pk-sip; Consent: pk-samtycke and pk-sparr), the
one whose mandatory ``category`` slices the resource's categories fill, else the type's default
(``codes.DEFAULT_PROFILES``), else none, which is an issue naming the categories that would do.
Our other profiles of the type that ``meta.profile`` claims are checked too.

Every problem becomes an ``Issue`` with a FHIRPath-style ``expression``; all are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from patientkontrakt.domain import codes
from patientkontrakt.domain.invariants import Undecided, compile_invariant
from patientkontrakt.fhir.definitions import Definitions
from patientkontrakt.fhir.errors import Issue

log = logging.getLogger(__name__)

_SKIPPED_INVARIANT_PREFIXES = ("ele-", "ext-", "dom-")
_R4 = models["r4"]


@dataclass(frozen=True)
class Constraint:
    key: str
    severity: str
    human: str
    expression: str


@dataclass(frozen=True)
class Discriminator:
    type: str
    path: str


@dataclass
class ElementRule:
    id: str
    path: str
    name: str
    slice_name: str | None
    min: int
    max: int | None  # None = unbounded
    types: tuple[str, ...]
    target_types: tuple[str, ...]
    type_profiles: tuple[str, ...] = ()  # canonical URLs of the extension (or type) profiles
    fixed: Any = None
    pattern: Any = None
    required_value_set: str | None = None
    constraints: tuple[Constraint, ...] = ()
    discriminators: tuple[Discriminator, ...] = ()
    closed: bool = False
    children: list[ElementRule] = field(default_factory=list)
    slices: list[ElementRule] = field(default_factory=list)
    short: str = ""
    # Worked out once, not per value walked: the JSON keys the element is written under (a
    # choice element's one per type), and whether its absence can be an issue (it, or one of its
    # slices, is required); ``_compile`` sets ``needed`` once the slices are known.
    is_choice: bool = field(init=False)
    keys: tuple[str, ...] = field(init=False)
    needed: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        self.is_choice = self.path.endswith("[x]")
        if not self.is_choice:
            self.keys = (self.name,)
        elif self.slice_name and len(self.types) == 1:
            self.keys = (self.name + self.types[0][:1].upper() + self.types[0][1:],)
        else:
            self.keys = tuple(self.name + t[:1].upper() + t[1:] for t in self.types)


@dataclass
class Profile:
    url: str
    name: str
    type: str
    root: ElementRule
    title: str = ""

    @cached_property
    def category(self) -> ElementRule | None:
        """The ``category`` element's rule, if the resource type has one."""
        return next((c for c in self.root.children if c.name == "category" and c.slice_name is None), None)

    @cached_property
    def category_slices(self) -> list[ElementRule]:
        """The mandatory slices of ``category``: what a resource of this profile is (``select``)."""
        return [s for s in self.category.slices if s.min > 0] if self.category is not None else []


def _value_with_prefix(element: dict[str, Any], prefix: str) -> Any:
    for key, value in element.items():
        if key.startswith(prefix) and key != prefix:
            return value
    return None


def _compile(sd: dict[str, Any], profile_types: dict[str, str]) -> Profile:
    rules: dict[str, ElementRule] = {}
    root: ElementRule | None = None
    for element in sd["snapshot"]["element"]:
        element_id: str = element["id"]
        path: str = element["path"]
        last = path.rsplit(".", 1)[-1]
        max_text = str(element.get("max", "*"))
        types: list[str] = []
        targets: list[str] = []
        type_profiles: list[str] = []
        for type_ in element.get("type", []):
            types.append(type_["code"])
            type_profiles.extend(type_.get("profile", []))
            for profile in type_.get("targetProfile", []):
                targets.append(profile_types.get(profile, profile.rsplit("/", 1)[-1]))
        binding = element.get("binding") or {}
        slicing = element.get("slicing") or {}
        rule = ElementRule(
            id=element_id,
            path=path,
            name=last[:-3] if last.endswith("[x]") else last,
            slice_name=element.get("sliceName"),
            min=int(element.get("min", 0)),
            max=None if max_text == "*" else int(max_text),
            types=tuple(types),
            target_types=tuple(targets),
            type_profiles=tuple(type_profiles),
            fixed=_value_with_prefix(element, "fixed"),
            pattern=_value_with_prefix(element, "pattern"),
            required_value_set=(
                str(binding["valueSet"]).split("|", 1)[0]
                if binding.get("strength") == "required" and "valueSet" in binding else None
            ),
            constraints=tuple(
                Constraint(c["key"], c.get("severity", "error"), c.get("human", ""), c["expression"])
                for c in element.get("constraint", [])
                if "expression" in c and not c["key"].startswith(_SKIPPED_INVARIANT_PREFIXES)
                and "resolve()" not in c["expression"]
            ),
            discriminators=tuple(Discriminator(d["type"], d["path"]) for d in slicing.get("discriminator", [])),
            closed=slicing.get("rules") == "closed",
            short=element.get("short", ""),
        )
        rules[element_id] = rule
        if "." not in element_id:
            root = rule
            continue
        parent_id, _, own = element_id.rpartition(".")
        if ":" in own:
            base_id = f"{parent_id}.{own.split(':', 1)[0]}"
            rules[base_id].slices.append(rule)
        else:
            rules[parent_id].children.append(rule)
    assert root is not None
    for rule in rules.values():
        rule.needed = rule.min > 0 or any(s.min > 0 for s in rule.slices)
    return Profile(url=sd["url"], name=sd.get("name") or sd.get("id", ""), type=sd["type"], root=root,
                   title=sd.get("title", ""))


def _matches_pattern(pattern: Any, value: Any) -> bool:
    """FHIR pattern semantics: every element of the pattern is present in the value."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and _matches_pattern(v, value[k]) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches_pattern(p, v) for v in value) for p in pattern)
    return bool(pattern == value)


def _values_at(value: Any, path: str) -> list[Any]:
    items = [value]
    if path in ("$this", ""):
        return items
    for step in path.split("."):
        nxt: list[Any] = []
        for item in items:
            if isinstance(item, dict) and step in item:
                got = item[step]
                nxt.extend(got if isinstance(got, list) else [got])
        items = nxt
    return items


def _reference_type(value: Any) -> str | None:
    if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
        return None
    parts = value["reference"].split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return parts[-2] if len(parts) >= 2 else None


def _rule_at(rule: ElementRule, path: str) -> ElementRule | None:
    if path in ("$this", ""):
        return rule
    current: ElementRule | None = rule
    for step in path.split("."):
        if current is None:
            return None
        current = next((c for c in current.children if c.name == step and c.slice_name is None), None)
    return current


@lru_cache(maxsize=4)
def _compiled(defs: Definitions) -> dict[str, Profile]:
    """``defs``' profiles, compiled once per Definitions (about 35 ms, which every service built
    paid: each app start, each tool and test that builds one); nothing changes a compiled profile."""
    profile_types = {url: sd["type"] for url, sd in defs.profiles.items()}
    return {url: _compile(sd, profile_types) for url, sd in defs.profiles.items()}


class ProfileValidator:
    """Validates resources against the profiles (snapshots) a Definitions object holds."""

    def __init__(self, defs: Definitions) -> None:
        self._defs = defs
        self.profiles = _compiled(defs)
        self._of_type: dict[str, list[Profile]] = {}
        for profile in self.profiles.values():
            self._of_type.setdefault(profile.type, []).append(profile)
        self._compiled: dict[str, Callable[..., list[Any]]] = {}
        self._native: dict[str, Callable[[Any], list[Any]] | None] = {}

    def profile_for_type(self, type_name: str) -> Profile | None:
        """The profile of ours that constrains a resource type: its default where it has several."""
        default = self.profiles.get(codes.DEFAULT_PROFILES.get(type_name, ""))
        return default or next((p for p in self.profiles.values() if p.type == type_name), None)

    def select(self, resource: dict[str, Any]) -> tuple[list[Profile], list[Issue]]:
        """The profiles of ours ``resource`` must conform to, or an issue saying which category
        would choose one (see the module's docstring)."""
        type_name = resource.get("resourceType", "")
        candidates = self._of_type.get(type_name, []) if isinstance(type_name, str) else []
        claimed = set((resource.get("meta") or {}).get("profile") or [])
        chosen = [p for p in candidates if p.category_slices and self._fills(p, resource)]
        if not chosen and len(candidates) > 1:
            default = self.profiles.get(codes.DEFAULT_PROFILES.get(type_name, ""))
            chosen = [default] if default is not None else []
        elif not chosen:
            chosen = candidates
        chosen += [p for p in candidates if p.url in claimed and p not in chosen]
        if chosen or not candidates:
            return chosen, []
        kinds = "; ".join(f"{p.name} ({self._describe(p)})" for p in candidates)
        titles = ", ".join(p.title or p.name for p in candidates)
        return [], [Issue(
            code="required",
            diagnostics=f"{type_name}.category: none of the categories that make a {type_name} one of "
                        f"our profiles: {kinds}",
            expression=(f"{type_name}.category",),
            details_sv=f"Kategorin saknas eller är okänd; den anger vilken sort det är ({titles}).",
        )]

    def _fills(self, profile: Profile, resource: dict[str, Any]) -> bool:
        category = profile.category
        assert category is not None  # a profile with category slices has the element
        values = resource.get("category")
        values = values if isinstance(values, list) else [values] if values is not None else []
        return all(any(self._in_slice(category, s, "", v) for v in values) for s in profile.category_slices)

    def _describe(self, profile: Profile) -> str:
        wanted: list[str] = []
        for slice_ in profile.category_slices:
            pattern = slice_.pattern if slice_.pattern is not None else slice_.fixed
            if isinstance(pattern, dict):
                wanted.extend(f"{c.get('system')}#{c.get('code')}" for c in pattern.get("coding", []))
            elif slice_.required_value_set is not None:
                got = self._defs.value_set_codes(slice_.required_value_set) or frozenset()
                wanted.append(" or ".join(f"{system}#{code}" for system, code in sorted(got))
                              or slice_.required_value_set)
        return "category " + " and ".join(wanted)

    def validate(self, resource: dict[str, Any], profile: Profile) -> list[Issue]:
        issues: list[Issue] = []
        where = resource.get("resourceType", profile.type)
        self._check_value(profile.root, resource, where, resource, issues)
        return issues

    # -- walking ---------------------------------------------------------------------------

    def _children(self, rule: ElementRule, obj: dict[str, Any], where: str, resource: dict[str, Any],
                  issues: list[Issue]) -> None:
        for child in rule.children:
            values: list[tuple[str, Any]] = []
            for key in child.keys:
                raw = obj.get(key)
                if raw is None:
                    continue
                if isinstance(raw, list):
                    values.extend((f"{where}.{key}[{i}]", v) for i, v in enumerate(raw))
                else:
                    values.append((f"{where}.{key}", raw))
            if values or child.needed:  # an absent optional element has nothing to check
                self._element(child, values, f"{where}.{child.keys[0]}", resource, issues)

    def _element(self, rule: ElementRule, values: list[tuple[str, Any]], where: str, resource: dict[str, Any],
                 issues: list[Issue]) -> None:
        self._cardinality(rule, len(values), where, issues)
        if not rule.slices:
            for at, value in values:
                self._check_value(rule, value, at, resource, issues)
            return
        assigned: dict[str, list[tuple[str, Any]]] = {s.id: [] for s in rule.slices}
        for at, value in values:
            match = next((s for s in rule.slices if self._in_slice(rule, s, at, value)), None)
            if match is None:
                if rule.closed:
                    issues.append(Issue(
                        code="structure", diagnostics=f"{at}: matches none of the allowed kinds "
                        f"({', '.join(s.slice_name or '' for s in rule.slices)})",
                        expression=(at,), details_sv="Värdet är inte av någon tillåten sort."))
                self._check_value(rule, value, at, resource, issues)
            else:
                assigned[match.id].append((at, value))
        for slice_ in rule.slices:
            got = assigned[slice_.id]
            self._cardinality(slice_, len(got), f"{where}:{slice_.slice_name}", issues, at=where)
            for at, value in got:
                self._check_value(slice_, value, at, resource, issues)

    def _in_slice(self, base: ElementRule, slice_: ElementRule, at: str, value: Any) -> bool:
        if base.is_choice:
            return at.rsplit(".", 1)[-1].split("[", 1)[0] in slice_.keys
        if not base.discriminators:
            return False
        for disc in base.discriminators:
            target = _rule_at(slice_, disc.path)
            found = _values_at(value, disc.path)
            if disc.type in ("value", "pattern"):
                if target is None and disc.path == "url" and slice_.type_profiles:
                    # An extension slice: the extension's canonical URL is its url.
                    if not (isinstance(value, dict) and value.get("url") in slice_.type_profiles):
                        return False
                    continue
                if target is None:
                    return False
                if target.fixed is not None:
                    if not any(v == target.fixed for v in found):
                        return False
                elif target.pattern is not None:
                    if not any(_matches_pattern(target.pattern, v) for v in found):
                        return False
                elif target.required_value_set is not None:
                    if not any(self._code_ok(target.required_value_set, v, target.types) for v in found):
                        return False
                else:
                    return False
            elif disc.type == "exists":
                if target is None or (target.min > 0) != bool(found):
                    return False
            elif disc.type in ("type", "profile") and disc.path.endswith("resolve()"):
                # The type of what a reference points at, read from the reference itself.
                ref_path = disc.path[: -len("resolve()")].rstrip(".") or "$this"
                ref_rule = _rule_at(slice_, ref_path)
                allowed = set(ref_rule.target_types) if ref_rule else set()
                if not any(_reference_type(v) in allowed for v in _values_at(value, ref_path)):
                    return False
            elif disc.type == "type":
                wanted = {t for t in (target.types if target else ())}
                if not any(isinstance(v, dict) and v.get("resourceType") in wanted for v in found):
                    return False
            else:
                return False
        return True

    def _cardinality(self, rule: ElementRule, count: int, where: str, issues: list[Issue],
                     at: str | None = None) -> None:
        label = rule.short or rule.slice_name or rule.name
        location = at or where
        if count < rule.min:
            issues.append(Issue(
                code="required",
                diagnostics=f"{where}: at least {rule.min} required ({label}), found {count}",
                expression=(location,),
                details_sv=f"{label}: minst {rule.min} krävs, {count} angivna.",
            ))
        if rule.max is not None and count > rule.max:
            issues.append(Issue(
                code="structure",
                diagnostics=f"{where}: at most {rule.max} allowed ({label}), found {count}",
                expression=(location,),
                details_sv=f"{label}: högst {rule.max} tillåtna, {count} angivna.",
            ))

    def _check_value(self, rule: ElementRule, value: Any, at: str, resource: dict[str, Any],
                     issues: list[Issue]) -> None:
        if rule.fixed is not None and value != rule.fixed:
            issues.append(Issue(code="value", diagnostics=f"{at}: must be {rule.fixed!r}", expression=(at,),
                                details_sv=f"Värdet ska vara {rule.fixed!r}."))
        if rule.pattern is not None and not _matches_pattern(rule.pattern, value):
            issues.append(Issue(code="value", diagnostics=f"{at}: must match {rule.pattern!r}", expression=(at,),
                                details_sv="Värdet har inte det föreskrivna innehållet."))
        if rule.required_value_set and not self._code_ok(rule.required_value_set, value, rule.types):
            issues.append(Issue(
                code="code-invalid",
                diagnostics=f"{at}: not a code from the required value set {rule.required_value_set}",
                expression=(at,), details_sv="Koden är inte tillåten här.",
            ))
        if rule.target_types and isinstance(value, dict) and isinstance(value.get("reference"), str):
            self._check_target(rule, value["reference"], at, issues)
        for constraint in rule.constraints:
            self._check_constraint(constraint, value, at, resource, issues)
        if rule.children and isinstance(value, dict):
            self._children(rule, value, at, resource, issues)
        for url in rule.type_profiles:
            extension = self.profiles.get(url)
            if extension is not None and extension.type == "Extension" and isinstance(value, dict):
                self._check_value(extension.root, value, at, resource, issues)

    def _check_target(self, rule: ElementRule, reference: str, at: str, issues: list[Issue]) -> None:
        if reference.startswith("#") or reference.startswith("urn:"):
            return
        parts = reference.split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        type_ = parts[-2] if len(parts) >= 2 else ""
        if type_ not in rule.target_types and "Resource" not in rule.target_types:
            allowed = ", ".join(sorted(set(rule.target_types)))
            issues.append(Issue(
                code="invalid",
                diagnostics=f"{at}.reference: must refer to {allowed}, not {type_ or reference!r}",
                expression=(f"{at}.reference",),
                details_sv=f"Referensen ska peka på {allowed}.",
            ))

    def _code_ok(self, url: str, value: Any, types: tuple[str, ...]) -> bool:
        codes = self._defs.value_set_codes(url)
        if codes is None:
            return True
        if isinstance(value, str):
            return value in {c for _, c in codes}
        if isinstance(value, dict):
            codings = value.get("coding") if "coding" in value or "text" in value else [value]
            return any(
                isinstance(c, dict) and (c.get("system"), c.get("code")) in codes for c in (codings or [])
            )
        return False

    def _evaluate(self, expression: str, value: Any, resource: dict[str, Any]) -> list[Any]:
        """The invariant's result as fhirpathpy gives it: from its compiled closures where they
        decide (``invariants``), else from fhirpathpy."""
        if expression not in self._native:
            self._native[expression] = compile_invariant(expression, _R4)
        native = self._native[expression]
        if native is not None:
            try:
                return native(value)
            except Undecided:
                pass
            except Exception:  # noqa: BLE001 - a value the closures did not foresee: fhirpathpy answers
                log.warning("invariant %r: the compiled form failed; fhirpathpy evaluates it", expression)
        compiled = self._compiled.get(expression)
        if compiled is None:
            compiled = fhirpathpy.compile(expression, _R4)
            self._compiled[expression] = compiled
        try:
            result: list[Any] = compiled(value, {"resource": resource, "rootResource": resource})
        except Exception as exc:  # noqa: BLE001 - a broken invariant must not pass silently
            result = [f"error: {exc}"]
        return result

    def _check_constraint(self, constraint: Constraint, value: Any, at: str, resource: dict[str, Any],
                          issues: list[Issue]) -> None:
        result = self._evaluate(constraint.expression, value, resource)
        if result == [True] or result == []:
            return
        severity = "error" if constraint.severity == "error" else "warning"
        issues.append(Issue(
            code="invariant",
            severity=severity,
            diagnostics=f"{at}: {constraint.key}: {constraint.human}",
            expression=(at,),
            details_sv=constraint.human,
        ))
