"""Conditional read (R4 http.html#cread, RFC 9110 §13.1.2 and §13.1.3).

A client that holds a version sends its ``ETag`` back in ``If-None-Match``, or its
``Last-Modified`` in ``If-Modified-Since``; when the resource is unchanged it is answered
``304 Not Modified`` without a body. Only a resource the caller may see is ever compared: a hidden
or absent one is 404 whatever the headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from patientkontrakt.fhir.results import parse_etag


@dataclass(frozen=True)
class ReadConditions:
    """The validators a read was sent with (None: the header was absent)."""

    if_none_match: str | None = None
    if_modified_since: str | None = None

    def unchanged(self, version_id: int, last_updated: datetime) -> bool:
        """Whether the version the client holds is ``version_id``, last updated at ``last_updated``
        (naive UTC). ``If-None-Match`` decides when present (RFC 9110 §13.1.3: a recipient then
        ignores ``If-Modified-Since``); it compares weakly, and ``*`` matches any current version.
        An ``If-Modified-Since`` that is not an HTTP date is ignored; it is compared with the
        ``Last-Modified`` the server sends, whole seconds."""
        if self.if_none_match is not None:
            tags = [t.strip() for t in self.if_none_match.split(",") if t.strip()]
            return "*" in tags or any(parse_etag(t) == str(version_id) for t in tags)
        if self.if_modified_since is not None:
            since = _http_date(self.if_modified_since)
            return since is not None and since >= last_updated.replace(microsecond=0)
        return False


NO_CONDITIONS = ReadConditions()


def _http_date(value: str) -> datetime | None:
    """An RFC 9110 HTTP-date as naive UTC, None when it is not one."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed
