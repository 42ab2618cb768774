"""Strict types for the claims of every JWT the service checks (RFC 7519 §4.1).

Our access tokens, the clients' assertions (``private_key_jwt``, RFC 7523) and the external
provider's ID tokens (OpenID Connect Core §2) are all checked with a ``ClaimSet``: a date is a
JSON number (an integer, or a finite fraction; never a string, a boolean, NaN or infinity), an
identifier a string of a sane length, an audience a string or a list of strings. A claim of
another type is refused, never coerced: ``float("nan")`` compares false with every time, so an
``"exp": "nan"`` that was converted would never expire.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# 9999-12-31T23:59:59Z: a later date is no date any clock will reach
MAX_NUMERIC_DATE = 253_402_300_799
MAX_AUDIENCES = 16


class ClaimError(ValueError):
    """A claim is missing or of the wrong type; the message names the claim."""


@dataclass(frozen=True)
class Claim:
    """What one claim must be: ``kind`` is ``text``, ``date``, ``audience`` or ``choice``."""

    kind: str
    required: bool = False
    max_length: int = 255
    min_length: int = 1
    choices: frozenset[str] = frozenset()

    def check(self, name: str, value: Any) -> None:
        if self.kind == "date":
            numeric_date(name, value)
        elif self.kind == "audience":
            audience(value, self.max_length)
        else:
            _text(name, value, self.min_length, self.max_length)
            if self.kind == "choice" and value not in self.choices:
                raise ClaimError(f"{name} must be one of {', '.join(sorted(self.choices))}")


def text(required: bool = False, max_length: int = 255, min_length: int = 1) -> Claim:
    return Claim("text", required, max_length, min_length)


def date(required: bool = False) -> Claim:
    return Claim("date", required)


def choice(*values: str, required: bool = False) -> Claim:
    return Claim("choice", required, choices=frozenset(values))


AUDIENCE = Claim("audience", True, max_length=2048)


class ClaimSet:
    """The claims a kind of token may carry and their types; claims not named are ignored."""

    def __init__(self, **claims: Claim) -> None:
        self.claims = claims

    def check(self, claims: Mapping[str, Any]) -> None:
        """Raises ``ClaimError`` for the first missing or mistyped claim."""
        missing = [name for name, rule in self.claims.items() if rule.required and name not in claims]
        if missing:
            raise ClaimError(f"claims missing: {', '.join(missing)}")
        for name, rule in self.claims.items():
            if name in claims:
                rule.check(name, claims[name])


def numeric_date(name: str, value: Any) -> float:
    """A NumericDate (RFC 7519 §2): seconds since the epoch as a JSON number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClaimError(f"{name} must be a number of seconds since 1970 (a NumericDate), not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ClaimError(f"{name} must be a finite number")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise ClaimError(f"{name} is out of range")
    return float(value)


def audience(value: Any, max_length: int = 2048) -> list[str]:
    """``aud``: one string, or a non-empty list of strings (RFC 7519 §4.1.3)."""
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > MAX_AUDIENCES:
        raise ClaimError(f"aud must name 1 to {MAX_AUDIENCES} audiences")
    for item in values:
        _text("aud", item, 1, max_length)
    return values


def _text(name: str, value: Any, min_length: int, max_length: int) -> None:
    if not isinstance(value, str):
        raise ClaimError(f"{name} must be a string, not {type(value).__name__}")
    if not min_length <= len(value) <= max_length:
        raise ClaimError(f"{name} must be {min_length} to {max_length} characters long")
