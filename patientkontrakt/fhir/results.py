"""What an interaction returns to the HTTP layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from patientkontrakt.fhir.dates import format_http

# A Bundle entry's ``response.status`` (R4: the status code, optionally with its text).
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


def status_text(status: int) -> str:
    return STATUS_TEXT.get(status, str(status))


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def parse_etag(value: str) -> str:
    """The version in ``W/"3"`` (or ``"3"``, or ``3``)."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


@dataclass
class Result:
    """Status, body (FHIR JSON bytes) and the FHIR headers of a response."""

    status: int
    body: bytes | None = None
    version_id: int | None = None
    last_updated: datetime | None = None
    location: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.version_id is not None:
            headers["ETag"] = etag(self.version_id)
        if self.last_updated is not None:
            headers["Last-Modified"] = format_http(self.last_updated)
        if self.location is not None:
            headers["Location"] = self.location
        return headers
