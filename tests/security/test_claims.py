"""The strict claim types of ``patientkontrakt.security.claims`` on their own; the tokens that
use them are tested over HTTP in ``test_oauth.py`` and ``test_external_idp.py``."""

from __future__ import annotations

from typing import Any

import pytest

from patientkontrakt.security.claims import AUDIENCE, ClaimError, ClaimSet, audience, choice, date, numeric_date, text

CLAIMS = ClaimSet(iss=text(required=True), aud=AUDIENCE, exp=date(required=True), kind=choice("a", "b"),
                  name=text(max_length=5, min_length=0))


@pytest.mark.parametrize("value", [0, 1_700_000_000, 1_700_000_000.5, 253_402_300_799])
def test_numeric_dates_are_json_numbers(value: Any) -> None:
    assert numeric_date("exp", value) == float(value)


@pytest.mark.parametrize("value", ["nan", "1700000000", True, False, None, float("nan"), float("inf"),
                                   float("-inf"), -1, 253_402_300_800, [1], {"t": 1}])
def test_anything_else_is_no_date(value: Any) -> None:
    with pytest.raises(ClaimError, match="exp"):
        numeric_date("exp", value)


def test_an_audience_is_a_string_or_a_list_of_strings() -> None:
    assert audience("https://a.example") == ["https://a.example"]
    assert audience(["https://a.example", "b"]) == ["https://a.example", "b"]
    for wrong in ([], [1], ["a", None], 5, {"aud": "a"}, [""], ["a"] * 17, "x" * 2049):
        with pytest.raises(ClaimError, match="aud"):
            audience(wrong)


def test_a_claim_set_names_the_first_claim_that_is_wrong() -> None:
    CLAIMS.check({"iss": "me", "aud": "you", "exp": 1, "kind": "a", "name": "", "other": [1, 2]})
    with pytest.raises(ClaimError, match="claims missing: iss, exp"):
        CLAIMS.check({"aud": "you"})
    for wrong, message in [({"iss": 1}, "iss must be a string"), ({"kind": "c"}, "kind must be one of a, b"),
                           ({"name": "toolong"}, "name must be 0 to 5"), ({"iss": ""}, "iss must be 1 to"),
                           ({"exp": "1"}, "exp must be a number")]:
        with pytest.raises(ClaimError, match=message):
            CLAIMS.check({"iss": "me", "aud": "you", "exp": 1, **wrong})
