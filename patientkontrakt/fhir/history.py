"""The history Bundle (R4 http.html#history): its parameters and its rendering;
``FhirService.history`` reads the page.

History is how an EHR catches up after downtime (docs/api.md "History sync"), so one history
answer is taken from a fixed set of versions, with neither gaps nor repeats under concurrent
writes:

- Its upper bound is the *safe point* S (``Store.safe_point``): every version stamped before S
  is committed, and no transaction still in flight can add one there (``Unit.stamp``). The
  answer holds the versions with ``_since`` <= lastUpdated < S, and ``Bundle.meta.lastUpdated``
  is S: the client's next ``_since``. Sync after sync, the windows [_since, S) tile time: a
  version is in exactly one of them, and is final by the time its window is read.
- S is fixed at the first page and carried by the paging links in ``_cursor``, with the place
  of the page's last (or first) entry: (lastUpdated, seq), a total order. A page is the entries
  past that place, found by key (keyset paging), not by counting from the start, so that rows
  written while the client pages neither shift the pages nor appear in them. ``_offset`` (what
  the links carried before) is still read: counted inside the window.

``_cursor`` is ``S`` or ``S.LAST.SEQ.D``: microseconds since 1970 (UTC) of S and of the entry's
lastUpdated, the entry's ``seq``, and ``n`` for the page after that entry or ``p`` for the page
before it. It is opaque to clients: they follow the links.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from patientkontrakt.fhir.dates import DateFormatError, format_instant, now_utc, parse_range
from patientkontrakt.fhir.errors import BadRequest
from patientkontrakt.fhir.paging import page_number
from patientkontrakt.fhir.rendering import render_bundle
from patientkontrakt.fhir.results import status_text
from patientkontrakt.storage.history_sql import HistoryWindow
from patientkontrakt.storage.repository import StoredVersion

_EPOCH = datetime(1970, 1, 1)
# R5 http.html#history defines _sort for history with these values; R4 has no _sort there.
_SORTS = {"-_lastUpdated": False, "_lastUpdated": True, "none": False}
# How far the clock of the server that wrote a cursor may be ahead of this one's.
_CLOCKS_APART = timedelta(minutes=1)


@dataclass
class HistoryArgs:
    since: datetime | None = None
    at: datetime | tuple[datetime, datetime] | None = None
    count: int = 0
    offset: int = 0
    ascending: bool = False
    until: datetime | None = None  # S, when a link carries it
    cursor: tuple[datetime, int] | None = None
    backward: bool = False  # the page before ``cursor`` (a ``previous`` link)

    def window(self, safe_point: datetime) -> HistoryWindow:
        return HistoryWindow(self.until or safe_point, self.cursor, self.ascending, self.backward)


def history_args(pairs: list[tuple[str, str]], default_count: int, max_count: int) -> HistoryArgs:
    args = HistoryArgs(count=default_count)
    for key, value in pairs:
        if key in ("_since", "_at"):
            try:
                low, high = parse_range(value)
            except DateFormatError:
                raise BadRequest(f"{key} must be a FHIR instant, not {value!r}", expression=(key,),
                                 details_sv="Ogiltig tidpunkt.") from None
            if key == "_since":
                args.since = low
            else:
                args.at = (low, high)
        elif key == "_count":
            args.count = page_number(key, value, max_count)
        elif key == "_offset":
            args.offset = page_number(key, value)
        elif key == "_sort":
            if value not in _SORTS:
                raise BadRequest(f"_sort on history is one of {', '.join(_SORTS)}, not {value!r}",
                                 expression=("_sort",),
                                 details_sv="Historik kan bara sorteras på _lastUpdated (stigande eller fallande).")
            args.ascending = _SORTS[value]
        elif key == "_cursor":
            args.until, args.cursor, args.backward = _parse_cursor(value)
    if args.count == 0:
        args.count = 1
    return args


def _parse_cursor(value: str) -> tuple[datetime, tuple[datetime, int] | None, bool]:
    parts = value.split(".")
    try:
        if len(parts) not in (1, 4) or not all(p.isascii() and p.isdigit() and len(p) <= 18 for p in parts[:3]):
            raise ValueError(value)
        until = _EPOCH + timedelta(microseconds=int(parts[0]))
        if until > now_utc() + _CLOCKS_APART:
            raise ValueError(value)  # no safe point is in the future
        if len(parts) == 1:
            return until, None, False
        if parts[3] not in ("n", "p"):
            raise ValueError(value)
        return until, (_EPOCH + timedelta(microseconds=int(parts[1])), int(parts[2])), parts[3] == "p"
    except (ValueError, OverflowError):
        raise BadRequest(f"_cursor {value!r} is not one this server wrote: follow the Bundle's links",
                         expression=("_cursor",),
                         details_sv="Ogiltig sidmarkör: använd länkarna i svaret.") from None


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)


def _cursor(until: datetime, row: StoredVersion, direction: str) -> str:
    return f"{_micros(until)}.{_micros(row.last_updated)}.{row.seq}.{direction}"


def history_links(url: str, pairs: list[tuple[str, str]], args: HistoryArgs, until: datetime,
                  rows: list[StoredVersion], *, has_next: bool, has_previous: bool) -> list[dict[str, str]]:
    """``self`` (the request as made), and ``next``/``previous`` by key from the page's last and
    first entries, with S (R4 http.html#paging leaves the continuation method to the server)."""
    kept = [(k, v) for k, v in pairs if k in ("_since", "_at", "_sort")]
    asked = [(k, v) for k, v in pairs if k in ("_since", "_at", "_sort", "_count", "_offset", "_cursor")]
    links = [{"relation": "self", "url": f"{url}?{urlencode(asked)}" if asked else url}]

    def at(row: StoredVersion, direction: str) -> str:
        return f"{url}?{urlencode([*kept, ('_count', str(args.count)), ('_cursor', _cursor(until, row, direction))])}"

    if rows and has_previous:
        links.append({"relation": "previous", "url": at(rows[0], "p")})
    if rows and has_next:
        links.append({"relation": "next", "url": at(rows[-1], "n")})
    return links


def history_bundle(base: str, path: str, pairs: list[tuple[str, str]], rows: list[StoredVersion], total: int,
                   args: HistoryArgs, until: datetime, *, has_next: bool, has_previous: bool) -> bytes:
    """The page ``rows`` of the history at ``base/path`` (``Type/id/_history`` and the like),
    taken before the safe point ``until``: its ``meta.lastUpdated``, the next sync's ``_since``
    (never before this one's)."""
    links = history_links(f"{base}/{path}", pairs, args, until, rows, has_next=has_next, has_previous=has_previous)
    point = until if args.since is None else max(until, args.since)
    head = {"resourceType": "Bundle", "meta": {"lastUpdated": format_instant(point)}, "type": "history",
            "total": total, "link": links}
    entries = []
    for row in rows:
        method = row.method
        request_url = row.type if method == "POST" else f"{row.type}/{row.id}"
        status = {"POST": 201, "PUT": 200 if row.version_id > 1 else 201, "DELETE": 204}.get(method, 200)
        after = {
            "request": {"method": method, "url": request_url},
            "response": {"status": status_text(status), "etag": f'W/"{row.version_id}"',
                         "lastModified": format_instant(row.last_updated)},
        }
        entries.append(({"fullUrl": f"{base}/{row.type}/{row.id}"}, row.body, after))
    return render_bundle(head, entries)
