"""The history Bundle (R4 http.html#history): its parameters (``_since``, ``_at``, ``_count``,
``_offset``) and its rendering; ``FhirService.history`` reads the page."""

from __future__ import annotations

from typing import Any

from patientkontrakt.fhir.dates import DateFormatError, format_instant, parse_range
from patientkontrakt.fhir.errors import BadRequest
from patientkontrakt.fhir.paging import page_links, page_number
from patientkontrakt.fhir.rendering import render_bundle
from patientkontrakt.fhir.results import status_text
from patientkontrakt.storage.repository import StoredVersion


def history_args(pairs: list[tuple[str, str]], default_count: int, max_count: int) -> dict[str, Any]:
    args: dict[str, Any] = {"since": None, "at": None, "count": default_count, "offset": 0}
    for key, value in pairs:
        if key in ("_since", "_at"):
            try:
                low, high = parse_range(value)
            except DateFormatError:
                raise BadRequest(f"{key} must be a FHIR instant, not {value!r}", expression=(key,),
                                 details_sv="Ogiltig tidpunkt.") from None
            args["since" if key == "_since" else "at"] = low if key == "_since" else (low, high)
        elif key == "_count":
            args["count"] = page_number(key, value, max_count)
        elif key == "_offset":
            args["offset"] = page_number(key, value)
    if args["count"] == 0:
        args["count"] = 1
    return args


def history_bundle(base: str, path: str, pairs: list[tuple[str, str]], rows: list[StoredVersion], total: int,
                   has_next: bool, args: dict[str, Any]) -> bytes:
    """The page ``rows`` of the history at ``base/path`` (``Type/id/_history`` and the like)."""
    kept = [(k, v) for k, v in pairs if k in ("_since", "_at")]
    links = page_links(f"{base}/{path}", kept, args["count"], args["offset"], has_next=has_next)
    head = {"resourceType": "Bundle", "type": "history", "total": total, "link": links}
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
