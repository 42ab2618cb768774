"""Swedish identifiers: check digit and date rules, the separator forms, samordningsnummer, HSA-id."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum import luhn

from patientkontrakt.domain.identifiers import (
    PERSONNUMMER,
    SAMORDNINGSNUMMER,
    IdentifierError,
    normalize_system,
    parse_person_number,
    validate_hsa_id,
)

TODAY = datetime.date(2026, 11, 23)


def _number(birth: datetime.date, serial: int, coordination: bool = False) -> str:
    """12 digits with a correct check digit (Luhn over the last 9 before it)."""
    day = birth.day + (60 if coordination else 0)
    body = f"{birth.year:04d}{birth.month:02d}{day:02d}{serial:03d}"
    return body + luhn.calc_check_digit(body[2:])


births = st.dates(min_value=datetime.date(1900, 1, 1), max_value=TODAY)
serials = st.integers(min_value=0, max_value=999)


@given(births, serials)
def test_every_valid_personnummer_normalises_to_12_digits_in_all_forms(birth: datetime.date, serial: int) -> None:
    full = _number(birth, serial)
    long_dash = f"{full[:8]}-{full[8:]}"
    assert parse_person_number(full, TODAY).value == full
    assert parse_person_number(long_dash, TODAY).value == full
    short_sep = "+" if TODAY.year - birth.year >= 100 else "-"
    short = f"{full[2:8]}{short_sep}{full[8:]}"
    if TODAY.year - birth.year != 100:  # the year someone turns 100 depends on the day the + is used
        parsed = parse_person_number(short, TODAY)
        assert parsed.value == full
        assert parsed.system == PERSONNUMMER
        assert parsed.birth_date == birth


@given(births, serials, st.integers(min_value=1, max_value=9))
def test_a_wrong_check_digit_is_refused(birth: datetime.date, serial: int, delta: int) -> None:
    full = _number(birth, serial)
    wrong = full[:-1] + str((int(full[-1]) + delta) % 10)
    with pytest.raises(IdentifierError) as caught:
        parse_person_number(wrong, TODAY)
    assert "check digit" in caught.value.english
    assert "Kontrollsiffran" in caught.value.swedish


@given(births, serials)
def test_samordningsnummer_is_day_plus_60(birth: datetime.date, serial: int) -> None:
    full = _number(birth, serial, coordination=True)
    parsed = parse_person_number(f"{full[:8]}-{full[8:]}", TODAY)
    assert parsed.system == SAMORDNINGSNUMMER
    assert parsed.value == full
    assert parsed.birth_date == birth


@pytest.mark.parametrize("body", ["19990230000", "19991332000", "19990100000", "19990192000"])
def test_invalid_dates_are_refused(body: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        parse_person_number(body + luhn.calc_check_digit(body[2:]), TODAY)
    assert "date" in caught.value.english


def test_future_birth_date_is_refused() -> None:
    body = "20301212121"
    with pytest.raises(IdentifierError) as caught:
        parse_person_number(body + luhn.calc_check_digit(body[2:]), TODAY)
    assert "future" in caught.value.english


def test_known_test_numbers() -> None:
    assert parse_person_number("19121212-1212", TODAY).value == "191212121212"
    assert parse_person_number("121212+1212", TODAY).value == "191212121212"
    assert parse_person_number("121212-1212", TODAY).value == "201212121212"


@pytest.mark.parametrize("text", ["", "abc", "1212121212121212", "19121212_1212", "19121212-121"])
def test_malformed_input_is_refused(text: str) -> None:
    with pytest.raises(IdentifierError):
        parse_person_number(text, TODAY)


def test_oid_systems_are_normalised() -> None:
    assert normalize_system("urn:oid:1.2.752.129.2.1.3.1") == PERSONNUMMER
    assert normalize_system("urn:oid:1.2.752.129.2.1.3.3") == SAMORDNINGSNUMMER
    assert normalize_system(PERSONNUMMER) == PERSONNUMMER
    assert normalize_system(None) is None


@pytest.mark.parametrize("value", ["SE2321000016-15CQ", "SE162321000255-O16655", "SE2321000016-A"])
def test_valid_hsa_ids(value: str) -> None:
    assert validate_hsa_id(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "2321000016-15CQ", "SE2321000016", "SE2321000017-15CQ", "SE2321000016-ÅÄÖ", "SE2321000016-a@b",
     "SE2321000016-" + "X" * 20],
)
def test_invalid_hsa_ids(value: str) -> None:
    with pytest.raises(IdentifierError):
        validate_hsa_id(value)
