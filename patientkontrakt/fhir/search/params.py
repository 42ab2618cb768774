"""Parsing a FHIR search request (R4 search.html) into criteria and result controls."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from patientkontrakt.fhir.definitions import Definitions, SearchParam
from patientkontrakt.fhir.errors import BadRequest, Issue
from patientkontrakt.fhir.limits import DEFAULT_LIMITS, Limits, check_parameter_count, check_values, exceeded
from patientkontrakt.fhir.paging import page_number

# Result parameters we implement (R4 search.html#return) plus our paging offset.
RESULT_PARAMS = frozenset({
    "_count", "_offset", "_sort", "_include", "_revinclude", "_total", "_summary", "_elements",
    "_format", "_pretty",
})
SUMMARY_VALUES = frozenset({"true", "false", "count", "data", "text"})
TOTAL_VALUES = frozenset({"none", "estimate", "accurate"})

_MODIFIERS = {
    "token": {"not", "missing"},
    "string": {"exact", "contains", "missing"},
    "date": {"missing"},
    "reference": {"missing"},  # plus a resource type
    "uri": {"below", "above", "missing"},
}


@dataclass(frozen=True)
class Criterion:
    """One search parameter occurrence: its values are ORed; criteria are ANDed."""

    name: str
    param: SearchParam
    modifier: str | None
    values: tuple[str, ...]
    chain: tuple[tuple[str, Criterion], ...] = ()  # (target type, criterion on that type)


@dataclass(frozen=True)
class Include:
    source_type: str
    param: str | None  # None for '*'
    target_type: str | None
    iterate: bool
    raw: str
    reverse: bool


@dataclass
class SearchQuery:
    type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param code, descending)
    includes: list[Include] = field(default_factory=list)
    total: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] = ()
    ignored: list[str] = field(default_factory=list)
    used: list[tuple[str, str]] = field(default_factory=list)  # for the self link

    def warnings(self) -> list[Issue]:
        return [
            Issue(
                code="not-supported",
                severity="warning",
                diagnostics=f"Unknown search parameter {name!r} was ignored",
                details_sv=f"Okänd sökparameter {name!r} ignorerades.",
            )
            for name in self.ignored
        ]


def split_values(raw: str, *, keep_bar: bool = False) -> list[str]:
    """Split at unescaped commas (R4 search.html#escaping).

    ``keep_bar`` leaves ``\\|`` and ``\\\\`` escaped for ``split_token``, which must tell a literal
    bar from the system separator.
    """
    values, current, escaped = [], [], False
    for ch in raw:
        if escaped:
            if ch not in ",|$\\" or (keep_bar and ch in "|\\"):
                current.append("\\")
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    values.append("".join(current))
    return [v for v in values if v != ""]


def split_token(value: str) -> tuple[str | None, str | None, bool]:
    """(system, code, system_given) from ``[system]|[code]``; ``\\|`` is a literal bar."""
    index, escaped = -1, False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|":
            index = i
            break
    if index < 0:
        return None, _unescape_token(value), False
    system, code = _unescape_token(value[:index]), _unescape_token(value[index + 1:])
    return (system or None), (code or None), True


def _unescape_token(text: str) -> str:
    return re.sub(r"\\([|\\])", r"\1", text)


def check_limits(limits: Limits, pairs: list[tuple[str, str]]) -> None:
    """Refuse a search that asks for more than ``limits`` allow, by counting alone: before any
    parameter is parsed or any SQL is built (docs/security.md, "Limits")."""
    check_parameter_count(limits, pairs)
    chains = includes = sort_keys = elements = 0
    for name, raw in pairs:
        if name in ("_sort", "_elements"):
            keys = sum(1 for part in raw.split(",") if part.strip())
            if name == "_sort":
                sort_keys += keys
            else:
                elements += keys
        elif name.startswith(("_include", "_revinclude")):
            includes += 1
        elif name.partition(":")[0] not in RESULT_PARAMS:
            check_values(limits, name, raw)
            chains += "." in name
    if chains > limits.chained_parameters:
        raise exceeded("chained_parameters", limits.chained_parameters, f"The search has {chains} chained parameters",
                       "Sökningen har för många kedjade parametrar")
    if includes > limits.include_parameters:
        raise exceeded("include_parameters", limits.include_parameters,
                       f"The search has {includes} _include and _revinclude parameters",
                       "Sökningen har för många _include och _revinclude")
    if sort_keys > limits.sort_keys:
        raise exceeded("sort_keys", limits.sort_keys, f"_sort has {sort_keys} keys",
                       "_sort har för många sorteringsnycklar", expression=("_sort",))
    if elements > limits.elements:
        raise exceeded("elements", limits.elements, f"_elements has {elements} entries",
                       "_elements har för många element", expression=("_elements",))


class SearchParser:
    """Turns query pairs into a SearchQuery for one resource type."""

    def __init__(self, defs: Definitions, served_types: frozenset[str], default_count: int, max_count: int,
                 limits: Limits = DEFAULT_LIMITS):
        self._defs = defs
        self._types = served_types
        self._default_count = default_count
        self._max_count = max_count
        self.limits = limits

    def parse(self, type_: str, pairs: list[tuple[str, str]], *, strict: bool) -> SearchQuery:
        check_limits(self.limits, pairs)
        query = SearchQuery(type=type_, count=self._default_count)
        params = self._defs.params_for(type_)
        for name, raw in pairs:
            if raw == "":
                continue  # R4: a parameter with an empty value is ignored
            if "\x00" in name or "\x00" in raw:
                raise BadRequest(f"Search parameter {name!r} contains U+0000, which no FHIR value can hold",
                                 expression=(name,), details_sv="Sökparametern innehåller ett otillåtet tecken.")
            base, _, _ = name.partition(":")
            if base in RESULT_PARAMS or name.startswith("_include") or name.startswith("_revinclude"):
                self._result_param(query, name, raw)
                continue
            head = base.split(".", 1)[0]
            if head not in params:
                if strict:
                    raise BadRequest(
                        f"Unknown search parameter {name!r} for {type_}",
                        expression=(name,),
                        details_sv=f"Okänd sökparameter {name!r}.",
                    )
                query.ignored.append(name)
                continue
            query.criteria.append(self._criterion(type_, name, raw, params, strict))
            query.used.append((name, raw))
        return query

    def _criterion(self, type_: str, name: str, raw: str, params: dict[str, SearchParam],
                   strict: bool) -> Criterion:
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        param = params[code]
        values = tuple(split_values(raw, keep_bar=param.type == "token"))
        if not values:
            raise BadRequest(f"{name}={raw!r} has no value between its commas", expression=(name,),
                             details_sv="Sökparametern saknar värde.")
        if dot:
            if param.type != "reference":
                raise BadRequest(f"{code} is a {param.type} parameter and cannot be chained",
                                 expression=(name,), details_sv="Den här parametern kan inte kedjas.")
            if "." in rest:
                raise BadRequest("Only one level of chaining is supported", expression=(name,),
                                 details_sv="Bara en nivå av kedjad sökning stöds.")
            if modifier and param.targets and modifier not in param.targets:
                raise BadRequest(f"{code} cannot refer to a {modifier}; its targets are {', '.join(param.targets)}",
                                 expression=(name,), details_sv=f"{code} kan inte peka på {modifier}.")
            targets = [modifier] if modifier else list(param.targets)
            chain = []
            child_code = rest.partition(":")[0]
            for target in targets:
                if target not in self._types:
                    continue
                target_params = self._defs.params_for(target)
                if child_code in target_params:
                    chain.append((target, self._criterion(target, rest, raw, target_params, strict)))
            if not chain:
                raise BadRequest(f"No resource type that {code} refers to has a search parameter {child_code!r}",
                                 expression=(name,), details_sv="Den kedjade sökparametern finns inte.")
            return Criterion(name=name, param=param, modifier=None, values=values, chain=tuple(chain))
        if modifier:
            self._check_modifier(type_, name, param, modifier)
        if modifier == "missing" and any(v not in ("true", "false") for v in values):
            raise BadRequest(f"{name} takes true or false", expression=(name,),
                             details_sv=":missing ska vara true eller false.")
        return Criterion(name=name, param=param, modifier=modifier or None, values=values)

    def _check_modifier(self, type_: str, name: str, param: SearchParam, modifier: str) -> None:
        allowed = _MODIFIERS.get(param.type, set())
        if param.code == "_id":
            allowed = {"not"}
        elif param.code == "_lastUpdated":
            allowed = set()
        if modifier in allowed:
            return
        if param.type == "reference" and modifier in self._types and (
            not param.targets or modifier in param.targets
        ):
            return
        raise BadRequest(
            f"Modifier :{modifier} is not supported on {type_}.{param.code} ({param.type})",
            expression=(name,),
            details_sv=f"Modifieraren :{modifier} stöds inte för {param.code}.",
        )

    def _result_param(self, query: SearchQuery, name: str, raw: str) -> None:
        if name == "_count":
            query.count = page_number("_count", raw, self._max_count)
        elif name == "_offset":
            query.offset = page_number("_offset", raw)
        elif name == "_sort":
            params = self._defs.params_for(query.type)
            for part in raw.split(","):
                code = part.strip()
                descending = code.startswith("-")
                code = code.lstrip("-")
                if code not in params or params[code].type not in ("token", "string", "date", "reference", "uri"):
                    raise BadRequest(f"Cannot sort {query.type} by {code!r}", expression=("_sort",),
                                     details_sv=f"Det går inte att sortera på {code!r}.")
                query.sort.append((code, descending))
        elif name == "_total":
            if raw not in TOTAL_VALUES:
                raise BadRequest("_total must be none, estimate or accurate", expression=("_total",),
                                 details_sv="_total ska vara none, estimate eller accurate.")
            query.total = raw
        elif name == "_summary":
            if raw not in SUMMARY_VALUES:
                raise BadRequest("_summary must be true, false, count, data or text", expression=("_summary",),
                                 details_sv="Ogiltigt värde för _summary.")
            query.summary = raw
        elif name == "_elements":
            query.elements = tuple(e.strip() for e in raw.split(",") if e.strip())
        elif name.startswith("_include") or name.startswith("_revinclude"):
            query.includes.append(self._include(query.type, name, raw))
        elif name in ("_format", "_pretty"):
            return
        else:
            raise BadRequest(f"Unsupported result parameter {name!r}", expression=(name,),
                             details_sv=f"Parametern {name!r} stöds inte.")
        query.used.append((name, raw))

    def _include(self, type_: str, name: str, raw: str) -> Include:
        reverse = name.startswith("_revinclude")
        base, _, modifier = name.partition(":")
        if base not in ("_include", "_revinclude") or modifier not in ("", "iterate", "recurse"):
            raise BadRequest(f"Unsupported parameter {name!r}", expression=(name,),
                             details_sv=f"Parametern {name!r} stöds inte.")
        iterate = modifier in ("iterate", "recurse")
        if raw == "*":
            return Include(type_, None, None, iterate, raw, reverse)
        parts = raw.split(":")
        if len(parts) not in (2, 3):
            raise BadRequest(f"{name} must be Type:param[:TargetType], not {raw!r}", expression=(name,),
                             details_sv="Fel format på _include.")
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if source not in self._types:
            raise BadRequest(f"{name}: unknown resource type {source!r}", expression=(name,),
                             details_sv="Okänd resurstyp i _include.")
        param = self._defs.params_for(source).get(code)
        if param is None or param.type != "reference":
            raise BadRequest(f"{name}: {source} has no reference parameter {code!r}", expression=(name,),
                             details_sv="Okänd referensparameter i _include.")
        if target is not None and target not in self._types:
            raise BadRequest(f"{name}: unknown target type {target!r}", expression=(name,),
                             details_sv="Okänd måltyp i _include.")
        if not iterate and not reverse and source != type_:
            raise BadRequest(f"{name}={raw} does not start from {type_}; use {base}:iterate",
                             expression=(name,), details_sv="_include måste utgå från den sökta typen.")
        return Include(source, code, target, iterate, raw, reverse)
