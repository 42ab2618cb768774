"""Paging of every Bundle a search or history returns (searchsets, history, the access log as
AuditEvents): the one check of ``_count`` and ``_offset`` and the one builder of the paging links
(R4 http.html#paging: ``self``, ``first``, ``previous``, ``next``, ``last``)."""

from __future__ import annotations

from urllib.parse import urlencode

from patientkontrakt.fhir.errors import BadRequest

# The databases take a signed 64-bit OFFSET; a larger _offset is an error, not a crash.
MAX_OFFSET = 2**63 - 1


def page_number(name: str, value: str, cap: int | None = None) -> int:
    """``_count`` or ``_offset``: a non-negative integer (at most ``MAX_OFFSET``), a count capped
    at ``cap`` (the server's largest page) rather than refused."""
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > MAX_OFFSET:
        raise BadRequest(f"{name} must be a non-negative integer (at most {MAX_OFFSET}), not {value!r}",
                         expression=(name,), details_sv=f"{name} ska vara ett heltal, 0 eller större.")
    number = int(value)
    return number if cap is None else min(number, cap)


def page_links(url: str, kept: list[tuple[str, str]], count: int, offset: int, *, has_next: bool,
               total: int | None = None, ends: bool = False) -> list[dict[str, str]]:
    """The links of the page at ``offset`` of ``count`` entries; ``kept``: the request's other
    parameters, repeated in every link. ``ends``: also ``first`` and, when ``total`` is known,
    ``last``. A page of no entries (``_count=0``: the total only) has only ``self``."""
    fixed = [(k, v) for k, v in kept if k not in ("_count", "_offset")]

    def at(where: int) -> str:
        pairs = [*fixed, ("_count", str(count))] + ([("_offset", str(where))] if where else [])
        return f"{url}?{urlencode(pairs)}"

    links = [{"relation": "self", "url": at(offset)}]
    if count == 0:
        return links
    if ends:
        links.append({"relation": "first", "url": at(0)})
    if offset > 0:
        links.append({"relation": "previous", "url": at(max(0, offset - count))})
    if has_next:
        links.append({"relation": "next", "url": at(offset + count)})
    if ends and total is not None and total > 0:
        links.append({"relation": "last", "url": at((total - 1) // count * count)})
    return links
