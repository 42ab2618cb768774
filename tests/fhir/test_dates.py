"""FHIR date, dateTime and instant values as inclusive UTC ranges (R4 search.html#date)."""

from __future__ import annotations

import email.utils
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patientkontrakt.fhir.dates import MAX, MIN, DateFormatError, format_http, format_instant, parse_range

US = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2024", datetime(2024, 1, 1), datetime(2024, 12, 31, 23, 59, 59, 999999)),
        ("2024-03", datetime(2024, 3, 1), datetime(2024, 3, 31, 23, 59, 59, 999999)),
        ("2024-04", datetime(2024, 4, 1), datetime(2024, 4, 30, 23, 59, 59, 999999)),
        ("2024-02", datetime(2024, 2, 1), datetime(2024, 2, 29, 23, 59, 59, 999999)),
        ("2023-02", datetime(2023, 2, 1), datetime(2023, 2, 28, 23, 59, 59, 999999)),
        ("2000-02", datetime(2000, 2, 1), datetime(2000, 2, 29, 23, 59, 59, 999999)),
        ("1900-02", datetime(1900, 2, 1), datetime(1900, 2, 28, 23, 59, 59, 999999)),
        ("2024-02-29", datetime(2024, 2, 29), datetime(2024, 2, 29, 23, 59, 59, 999999)),
        ("2024-12-31", datetime(2024, 12, 31), datetime(2024, 12, 31, 23, 59, 59, 999999)),
        ("2024-03-05T10:30Z", datetime(2024, 3, 5, 10, 30), datetime(2024, 3, 5, 10, 30, 59, 999999)),
        ("2024-03-05T10:30:15Z", datetime(2024, 3, 5, 10, 30, 15), datetime(2024, 3, 5, 10, 30, 15, 999999)),
        ("2024-03-05T10:30:15", datetime(2024, 3, 5, 10, 30, 15), datetime(2024, 3, 5, 10, 30, 15, 999999)),
        ("2024-03-05T10:30:15.5Z", datetime(2024, 3, 5, 10, 30, 15, 500000), datetime(2024, 3, 5, 10, 30, 15, 599999)),
        ("2024-03-05T10:30:15.12Z", datetime(2024, 3, 5, 10, 30, 15, 120000), datetime(2024, 3, 5, 10, 30, 15, 129999)),
        ("2024-03-05T10:30:15.123Z", datetime(2024, 3, 5, 10, 30, 15, 123000),
         datetime(2024, 3, 5, 10, 30, 15, 123999)),
        ("2024-03-05T10:30:15.123456Z", datetime(2024, 3, 5, 10, 30, 15, 123456),
         datetime(2024, 3, 5, 10, 30, 15, 123456)),
        # Beyond microseconds the digits are cut; the range is the microsecond.
        ("2024-03-05T10:30:15.1234569Z", datetime(2024, 3, 5, 10, 30, 15, 123456),
         datetime(2024, 3, 5, 10, 30, 15, 123456)),
        ("2024-03-05T10:30:15.000Z", datetime(2024, 3, 5, 10, 30, 15), datetime(2024, 3, 5, 10, 30, 15, 999)),
    ],
)
def test_range_follows_the_precision_of_the_value(text: str, low: datetime, high: datetime) -> None:
    assert parse_range(text) == (low, high)


@pytest.mark.parametrize(
    ("text", "utc_low"),
    [
        ("2024-03-05T10:30:00+01:00", datetime(2024, 3, 5, 9, 30)),
        ("2024-03-05T10:30:00-05:30", datetime(2024, 3, 5, 16, 0)),
        ("2024-03-05T10:30:00+00:00", datetime(2024, 3, 5, 10, 30)),
        ("2024-03-05T10:30:00-00:00", datetime(2024, 3, 5, 10, 30)),
        # The offset moves the value across a day, month and year boundary.
        ("2024-01-01T01:00:00+02:00", datetime(2023, 12, 31, 23, 0)),
        ("2023-12-31T22:00:00-02:00", datetime(2024, 1, 1, 0, 0)),
        ("2024-03-01T00:30:00+01:00", datetime(2024, 2, 29, 23, 30)),
        ("2024-03-05T10:30:00+14:00", datetime(2024, 3, 4, 20, 30)),
        ("2024-03-05T10:30:00-12:00", datetime(2024, 3, 5, 22, 30)),
        ("2024-03-05T10:30+01:00", datetime(2024, 3, 5, 9, 30)),
    ],
)
def test_time_zones_are_converted_to_utc(text: str, utc_low: datetime) -> None:
    low, high = parse_range(text)
    assert low == utc_low
    assert high - low == (timedelta(minutes=1) if text.count(":") == 2 else timedelta(seconds=1)) - US


def test_the_extreme_values_of_the_range_are_representable() -> None:
    assert parse_range("0001") == (MIN, datetime(1, 12, 31, 23, 59, 59, 999999))
    assert parse_range("0001-01-01T00:00:00Z")[0] == MIN
    assert parse_range("9999")[1] == MAX
    assert parse_range("9999-12")[1] == MAX
    assert parse_range("9999-12-31")[1] == MAX
    assert parse_range("9999-12-31T23:59Z") == (datetime(9999, 12, 31, 23, 59), MAX)
    assert parse_range("9999-12-31T23:59:59Z") == (datetime(9999, 12, 31, 23, 59, 59), MAX)
    assert parse_range("9999-12-31T23:59:59.9Z") == (datetime(9999, 12, 31, 23, 59, 59, 900000), MAX)
    assert parse_range("9999-12-31T23:59:59.999999Z") == (MAX, MAX)
    assert parse_range("9999-12-31T23:59:59+01:00")[1] == datetime(9999, 12, 31, 22, 59, 59, 999999)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "24",
        "202",
        "20245",
        "2024-1",
        "2024-13",
        "2024-00",
        "2024-01-00",
        "2024-01-32",
        "2023-02-29",
        "1900-02-29",
        "2024-04-31",
        "0000",
        "2024-03-05T",
        "2024-03-05T10",
        "2024-03-05T24:00:00Z",
        "2024-03-05T10:60:00Z",
        "2024-03-05T10:30:60Z",
        "2024-03-05T10:3:00Z",
        "2024-03-05T10:30:00.Z",
        "2024-03-05T10:30:00+2:00",
        "2024-03-05T10:30:00+0200",
        "2024-03-05T10:30:00+02",
        "2024-03-05T10:30:00+15:00",
        "2024-03-05T10:30:00-14:30",
        "2024-03-05T10:30:00+01:60",
        "2024-03-05T10:30:00z",
        "2024-03-05 10:30:00",
        "2024-03-05T10:30:00ZZ",
        "2024/03/05",
        "05-03-2024",
        " 2024",
        "2024 ",
        "2024\n",
        "2024-03-05\n",
        "٢٠٢٤",
        "２０２４-03",
        "abcd",
        "eq2024",
        "+2024",
        "-2024",
        "10000",
        # Overflow: the UTC value falls outside years 1..9999.
        "0001-01-01T00:00:00+01:00",
        "0001-01-01T00:59:59+01:00",
        "9999-12-31T23:00:00-01:00",
        "9999-12-31T23:59:59.5-00:01",
    ],
)
def test_invalid_values_raise_date_format_error(text: str) -> None:
    with pytest.raises(DateFormatError):
        parse_range(text)


def test_date_format_error_is_a_value_error_naming_the_input() -> None:
    with pytest.raises(ValueError, match="2024-13"):
        parse_range("2024-13")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2024, 3, 5, 10, 30, 15, 123456), "2024-03-05T10:30:15.123Z"),
        (datetime(2024, 3, 5, 10, 30, 15), "2024-03-05T10:30:15.000Z"),
        (datetime(2024, 3, 5, 10, 30, 15, 999999), "2024-03-05T10:30:15.999Z"),
        (datetime(2024, 3, 5, 10, 30, 15, 999), "2024-03-05T10:30:15.000Z"),
        (MIN, "0001-01-01T00:00:00.000Z"),
        (datetime(999, 12, 31, 23, 59, 59), "0999-12-31T23:59:59.000Z"),
        (MAX, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_instant_renders_milliseconds_in_utc(value: datetime, text: str) -> None:
    assert format_instant(value) == text
    assert parse_range(text)[0] == value.replace(microsecond=value.microsecond // 1000 * 1000)


def test_format_http_is_an_rfc9110_date() -> None:
    assert format_http(datetime(2024, 3, 5, 9, 7, 3)) == "Tue, 05 Mar 2024 09:07:03 GMT"


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)))
def test_format_http_agrees_with_the_standard_library(value: datetime) -> None:
    assert format_http(value) == email.utils.format_datetime(value.replace(tzinfo=UTC), usegmt=True)


# -- properties ------------------------------------------------------------------------------

instants = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60)


def _offset(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _texts(value: datetime, digits: int) -> list[str]:
    """The value at every precision, coarsest first."""
    seconds = value.strftime("%S") + (f".{value.microsecond:06d}"[: digits + 1] if digits else "")
    date = f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    return [
        date[:4],
        date[:7],
        date,
        f"{date}T{value:%H:%M}Z",
        f"{date}T{value:%H:%M}:{seconds}Z",
    ]


@given(instants, st.integers(min_value=0, max_value=6))
def test_low_is_at_most_high_and_finer_ranges_nest_in_coarser(value: datetime, digits: int) -> None:
    ranges = [parse_range(text) for text in _texts(value, digits)]
    for low, high in ranges:
        assert low <= high
        assert low <= value <= high
    for (outer_low, outer_high), (inner_low, inner_high) in zip(ranges, ranges[1:], strict=False):
        assert outer_low <= inner_low <= inner_high <= outer_high


@given(instants)
def test_a_datetime_lies_inside_its_date(value: datetime) -> None:
    text = format_instant(value)
    low, high = parse_range(text)
    day_low, day_high = parse_range(text[:10])
    assert day_low <= low <= high <= day_high
    assert high - low == timedelta(milliseconds=1) - US


@given(instants, offsets)
def test_an_offset_shifts_the_range_by_the_offset(value: datetime, minutes: int) -> None:
    local = value.replace(microsecond=0).isoformat()
    utc_low, utc_high = parse_range(local + "Z")
    low, high = parse_range(local + _offset(minutes))
    assert (low, high) == (utc_low - timedelta(minutes=minutes), utc_high - timedelta(minutes=minutes))
    assert parse_range(local) == (utc_low, utc_high)


@given(st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 30)))
def test_consecutive_days_meet_without_gap_or_overlap(day: date) -> None:
    first = parse_range(day.isoformat())
    following = parse_range((day + timedelta(days=1)).isoformat())
    assert first[1] + US == following[0]


@given(instants)
def test_format_instant_round_trips_through_parse_range(value: datetime) -> None:
    low, high = parse_range(format_instant(value))
    assert low == value.replace(microsecond=value.microsecond // 1000 * 1000)
    assert low <= value <= high


@given(st.text(alphabet="0123456789-T:.Z+ ", max_size=30))
def test_any_text_either_parses_to_an_ordered_range_or_raises(text: str) -> None:
    try:
        low, high = parse_range(text)
    except DateFormatError:
        return
    assert MIN <= low <= high <= MAX
