"""Limits on what one request may ask (docs/security.md, "Limits").

Every limit is a ``PK_*`` setting (``patientkontrakt/config.py``). The limits on the shape of a
request (parameters, values, chains, includes, sort keys, elements, Bundle entries, JSON depth)
are checked before any expensive work, by counting, and a request over one is refused with an
OperationOutcome that names the limit and its setting. The limits on what includes add (rounds
of ``:iterate``, resources) cap the result instead; the Bundle then says it is incomplete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from patientkontrakt.config import Settings
from patientkontrakt.fhir.errors import FhirError, Issue


class LimitExceeded(FhirError):
    """A request asks for more than a configured limit allows: 400, ``too-costly`` (R4 issue type:
    the operation was not completed because it would need more resources than the server allows)."""

    status = 400
    code = "too-costly"
    default_sv = "Begäran är för omfattande."


class ContentLimitExceeded(LimitExceeded):
    """The request body holds more than a limit allows (like a body over ``PK_MAX_BODY_BYTES``): 413."""

    status = 413
    code = "too-long"
    default_sv = "Innehållet är för stort."


@dataclass(frozen=True)
class Limits:
    """The limits of ``Settings`` the FHIR core enforces (field ``x`` is the setting ``max_x``)."""

    search_parameters: int
    search_values: int
    chained_parameters: int
    include_parameters: int
    include_iterations: int
    included_resources: int
    sort_keys: int
    elements: int
    bundle_entries: int
    json_depth: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(**{f.name: getattr(settings, f"max_{f.name}") for f in fields(cls)})


DEFAULT_LIMITS = Limits.from_settings(Settings.model_construct())


def setting(name: str) -> str:
    """The environment variable of limit ``name`` (a field of ``Limits``)."""
    return f"PK_MAX_{name.upper()}"


def exceeded(name: str, limit: int, what: str, sv: str, *, expression: tuple[str, ...] = (),
             error: type[LimitExceeded] = LimitExceeded) -> LimitExceeded:
    """The error for a request over limit ``name``: ``what`` says in English what there is too
    much of ("The search has 101 parameters"), ``sv`` the same for people, in Swedish."""
    return error(f"{what}; at most {limit} are allowed (limit {setting(name)})", expression=expression,
                 details_sv=f"{sv} (högst {limit}).")


def count_values(raw: str) -> int:
    """How many values a comma-separated search value holds (``\\,`` is a literal comma)."""
    count, escaped = 1, False
    for ch in raw:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            count += 1
    return count


def check_values(limits: Limits, name: str, raw: str) -> None:
    """``name=raw`` has at most ``limits.search_values`` comma-separated values."""
    if raw.count(",") >= limits.search_values and (count := count_values(raw)) > limits.search_values:
        raise exceeded("search_values", limits.search_values, f"{name} has {count} comma-separated values",
                       f"Sökparametern {name} har för många värden", expression=(name,))


def check_parameter_count(limits: Limits, pairs: Sequence[tuple[str, str]]) -> None:
    if len(pairs) > limits.search_parameters:
        raise exceeded("search_parameters", limits.search_parameters, f"The search has {len(pairs)} parameters",
                       "Sökningen har för många parametrar")


def incomplete(diagnostics: str, details_sv: str) -> Issue:
    """The warning that marks a searchset Bundle incomplete, as the Microsoft FHIR server marks a
    page whose includes it cut: an OperationOutcome entry (``search.mode = outcome``) with a
    warning of code ``incomplete``."""
    return Issue(code="incomplete", severity="warning", diagnostics=diagnostics, details_sv=details_sv)
