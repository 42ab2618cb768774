"""FHIR date, dateTime and instant values as ranges.

Every FHIR date value stands for a range: ``2024`` is the whole year, ``2024-03-05`` the whole
day (R4 search.html#date). We index and search with the inclusive bounds [low, high] as naive
UTC datetimes; a value without a zone is read as UTC. Open ends use ``MIN``/``MAX``.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

MIN = datetime(1, 1, 1)
MAX = datetime(9999, 12, 31, 23, 59, 59, 999999)

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$",
    re.ASCII,  # int() would read other scripts' digits: "٢٠٢٤" is not a FHIR date
)


class DateFormatError(ValueError):
    pass


@lru_cache(maxsize=4096)
def parse_range(text: str) -> tuple[datetime, datetime]:
    """Parse a FHIR date/dateTime/instant into its inclusive UTC range (remembered: a write's
    dates are read by the index, the lifecycle rules and the warnings, and many recur)."""
    match = _DATE_RE.fullmatch(text)  # not match: "$" also matches before a final newline
    if not match:
        raise DateFormatError(f"{text!r} is not a FHIR date or dateTime")
    g = match.groupdict()
    try:
        year = int(g["y"])
        if g["m"] is None:
            low = datetime(year, 1, 1)
            return low, datetime(year, 12, 31, 23, 59, 59, 999999)
        month = int(g["m"])
        if g["d"] is None:
            low = datetime(year, month, 1)
            last = calendar.monthrange(year, month)[1]
            return low, datetime(year, month, last, 23, 59, 59, 999999)
        day = int(g["d"])
        if g["H"] is None:
            low = datetime(year, month, day)
            return low, low + timedelta(days=1, microseconds=-1)
        second = int(g["S"]) if g["S"] is not None else 0
        frac = g["f"] or ""
        micro = int((frac[1:] + "000000")[:6]) if frac else 0
        low = datetime(year, month, day, int(g["H"]), int(g["M"]), second, micro)
        tz = g["tz"]
        if tz and tz != "Z":
            if int(tz[4:6]) > 59 or tz[1:] > "14:00":
                raise ValueError(f"time zone offset {tz} is not between -14:00 and +14:00")
            sign = 1 if tz[0] == "+" else -1
            low = low - sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
        if g["S"] is None:
            span = timedelta(minutes=1)
        elif not frac:
            span = timedelta(seconds=1)
        else:
            span = timedelta(microseconds=10 ** (6 - min(len(frac) - 1, 6)))
        return low, low + (span - timedelta(microseconds=1))  # no overflow in 9999-12-31T23:59:59
    except (ValueError, OverflowError) as exc:
        raise DateFormatError(f"{text!r} is not a valid date: {exc}") from None


def now_utc() -> datetime:
    """The current instant, naive UTC, truncated to milliseconds (what we store and show)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_instant(value: datetime) -> str:
    """Render a naive UTC datetime as a FHIR instant with milliseconds."""
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
            f"{value.second:02d}.{value.microsecond // 1000:03d}Z")


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_http(value: datetime) -> str:
    """RFC 9110 HTTP-date (IMF-fixdate) of a naive UTC datetime, for Last-Modified.

    Day and month names are written out rather than taken from ``strftime``, whose ``%a``/``%b``
    follow the process locale (a Swedish locale would give "tor"/"dec"); it is also several
    times faster, and this runs on every read."""
    return (f"{_DAYS[value.weekday()]}, {value.day:02d} {_MONTHS[value.month - 1]} {value.year:04d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} GMT")
