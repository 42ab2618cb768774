"""Running a parsed search: one page of matches, includes, totals, and the searchset Bundle.

This is the FHIR side of a search: where it starts, paging, totals, what includes reach. Every
statement is built in storage (``storage/search_sql.py``); the conditions passed around here (a
search's, what the caller may see) are storage's, handed back unopened."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from patientkontrakt.fhir.access import access_of, bound, visible
from patientkontrakt.fhir.dates import format_instant, now_utc
from patientkontrakt.fhir.definitions import Definitions
from patientkontrakt.fhir.errors import Issue, operation_outcome
from patientkontrakt.fhir.limits import DEFAULT_LIMITS, Limits, incomplete
from patientkontrakt.fhir.paging import page_links
from patientkontrakt.fhir.rendering import Subsetter, dumps, render_bundle
from patientkontrakt.fhir.search.params import Include, SearchQuery
from patientkontrakt.storage.repository import StoredResource, Unit
from patientkontrakt.storage.search_sql import QueryBuilder, Restrict

# How far ``SearchEngine.driver`` counts a criterion's matches: enough to tell one patient's
# resources from a whole status or category; beyond it the order of the criteria decides.
PROBE_LIMIT = 1000
REACH = -1  # ``SearchEngine.driver``: start from the caller's reach
_SLICE = 200  # ``SearchEngine._forward``: the fewest candidates loaded at once when they are capped


@dataclass
class SearchPage:
    matches: list[StoredResource]
    included: list[StoredResource]
    total: int | None
    has_next: bool
    # Why the page may lack resources its includes reach (``PK_MAX_INCLUDE_*``): warnings of code
    # ``incomplete`` for the Bundle's OperationOutcome entry.
    incomplete: list[Issue] = field(default_factory=list)


class SearchEngine:
    def __init__(self, defs: Definitions, builder: QueryBuilder, limits: Limits = DEFAULT_LIMITS) -> None:
        self._defs = defs
        self.builder = builder
        self.limits = limits

    async def _conditions(self, unit: Unit, query: SearchQuery) -> list[Any]:
        """The query's criteria and what the unit's caller may see (of the searched type and of
        every type a chain passes through), so the database filters before paging."""
        access = access_of(unit)

        def restrict(type_: str) -> Any:
            return bound(access.restriction(type_))

        reach = bound(access.reach(query.type))
        reach_size = await access.reach_size(unit, query.type, PROBE_LIMIT) if reach is not None else None
        driver = await self.driver(unit, query, restrict, reach_size)
        conditions = self.builder.conditions(query, restrict, driver=driver)
        if driver == REACH:
            conditions.append(reach)
        own = restrict(query.type)
        return conditions if own is None else [*conditions, own]

    async def driver(self, unit: Unit, query: SearchQuery, restrict: Restrict, reach_size: int | None = None
                     ) -> int | None:
        """What a search starts from: the index in ``query.criteria`` of one criterion, ``REACH``
        (what the caller may see, found from the caller outward: ``Access.reach``, of
        ``reach_size`` resources), or None (no choice to make: the database's).

        The generic plans our connections use cannot see the values searched for, so the choice
        is made here, by counting: a positive ``_id`` (a primary-key look-up) if there is one,
        else of the criteria an index lists and a reach under ``PROBE_LIMIT``, the one with the
        fewest entries, the criteria counted up to ``PROBE_LIMIT`` in one statement (ties: the
        first criterion given, the reach last).
        """
        for index, criterion in enumerate(query.criteria):
            if criterion.param.code == "_id" and criterion.modifier != "not":
                return index
        candidates = self.builder.candidates(query)
        reach = reach_size if reach_size is not None and reach_size < PROBE_LIMIT else None
        if not candidates:
            return REACH if reach is not None else None
        if len(candidates) == 1 and reach is None:
            return candidates[0] if len(query.criteria) > 1 else None
        counts = await self.builder.counts(unit, query, candidates, restrict, PROBE_LIMIT)
        if reach is not None:
            candidates.append(REACH)
            counts.append(reach)
        return min(zip(counts, candidates, strict=True), key=lambda pair: pair[0])[1]

    async def find(self, unit: Unit, query: SearchQuery) -> SearchPage:
        where = await self._conditions(unit, query)
        if query.summary == "count" or query.count == 0:
            return SearchPage([], [], await self.builder.count(unit, where), False)
        rows = await self.builder.page(unit, query, where, self._defs.params_for(query.type))
        has_next = len(rows) > query.count
        rows = rows[: query.count]
        if query.total in ("accurate", "estimate"):
            total: int | None = await self.builder.count(unit, where)
        elif query.total != "none" and not has_next and (rows or query.offset == 0):
            total = query.offset + len(rows)
        else:
            total = None
        page = SearchPage(rows, [], total, has_next)
        if query.includes:
            await self._includes(unit, query.includes, page)
        return page

    async def _includes(self, unit: Unit, includes: list[Include], page: SearchPage) -> None:
        """Add what ``includes`` reach from the matches to ``page.included``: the first round
        follows every include from the matches, each further round (at most
        ``PK_MAX_INCLUDE_ITERATIONS``) the ``:iterate`` ones from what the round before added; at
        most ``PK_MAX_INCLUDED_RESOURCES`` in all. Where either limit cut something off, the page
        says so (``page.incomplete``): a round after the last one only looks whether there is more."""
        seen = {(r.type, r.id) for r in page.matches}
        current = page.matches
        room = self.limits.included_resources
        rounds = self.limits.include_iterations + 1
        for round_ in range(rounds + 1):
            probing = round_ == rounds
            added: list[StoredResource] = []
            for inc in includes:
                if round_ > 0 and not inc.iterate:
                    continue
                space = 0 if probing else room - len(added)
                if inc.reverse:
                    found, cut = await self._reverse(unit, inc, current, seen, space)
                else:
                    found, cut = await self._forward(unit, inc, current, seen, space)
                seen.update((resource.type, resource.id) for resource in found)
                added.extend(found)
                if cut:
                    page.included.extend(added)
                    page.incomplete.append(self._depth_reached() if probing else self._room_exhausted())
                    return
            if not added:
                return
            page.included.extend(added)
            room -= len(added)
            current = added

    def _room_exhausted(self) -> Issue:
        limit = self.limits.included_resources
        return incomplete(f"Included resources are truncated: a page gets at most {limit} (limit "
                          "PK_MAX_INCLUDED_RESOURCES); ask for fewer matches per page (_count) to get them all",
                          f"Alla inkluderade resurser kom inte med (högst {limit} per sida); begär färre "
                          "träffar per sida (_count).")

    def _depth_reached(self) -> Issue:
        limit = self.limits.include_iterations
        return incomplete(f"Included resources are truncated: _include:iterate follows references at most {limit} "
                          "times (limit PK_MAX_INCLUDE_ITERATIONS), and there are more",
                          f"Alla inkluderade resurser kom inte med: referenser följs högst {limit} steg.")

    async def _forward(self, unit: Unit, inc: Include, sources: list[StoredResource], seen: set[tuple[str, str]],
                       room: int) -> tuple[list[StoredResource], bool]:
        """The resources ``inc`` reaches from ``sources`` that the caller may see and ``seen`` lacks,
        at most ``room``, and whether there were more."""
        pks = [r.pk for r in sources if r.type == inc.source_type or inc.param is None]
        params = None if inc.param is None else [(inc.source_type, inc.param)]
        targets = [key for key in await unit.references_from(pks, params, inc.target_type) if key not in seen]
        if len(targets) <= room:
            return await visible(unit, await unit.get_many(targets)), False
        # More candidates than room: load them a slice at a time until one more than fits is found
        # (some may be deleted or hidden from the caller, and must not count).
        found: list[StoredResource] = []
        start = 0
        while start < len(targets) and len(found) <= room:
            size = max(room + 1 - len(found), _SLICE)
            found.extend(await visible(unit, await unit.get_many(targets[start:start + size])))
            start += size
        return found[:room], len(found) > room

    async def _reverse(self, unit: Unit, inc: Include, targets: list[StoredResource], seen: set[tuple[str, str]],
                       room: int) -> tuple[list[StoredResource], bool]:
        """The resources of ``inc.source_type`` that reference ``targets``, the caller may see and
        ``seen`` lacks, at most ``room``, and whether there were more. The database applies what the
        caller may see, so the first ``room`` + 1 + (those already seen) rows tell."""
        keys = [(r.type, r.id) for r in targets]
        already = sum(1 for type_, _ in seen if type_ == inc.source_type)
        restriction = bound(access_of(unit).restriction(inc.source_type))
        found = await unit.referencing_current(inc.source_type, inc.param, keys, restriction, room + 1 + already)
        new = [r for r in found if (r.type, r.id) not in seen]
        return new[:room], len(new) > room


def searchset(
    base: str,
    query: SearchQuery,
    page: SearchPage,
    subsetter: Subsetter,
    path: str | None = None,
    bundle_id: str | None = None,
) -> bytes:
    """Render a searchset Bundle (R4 bundle.html, search.html#return); its id is ``bundle_id``
    or a new UUID."""
    link_base = f"{base}/{path if path is not None else query.type}"
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": bundle_id or str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(now_utc())},
        "type": "searchset",
    }
    if page.total is not None:
        head["total"] = page.total
    count = 0 if query.summary == "count" else query.count  # a count has no pages
    head["link"] = page_links(link_base, query.used, count, query.offset, has_next=page.has_next,
                              total=page.total, ends=True)
    entries: list[tuple[dict[str, Any], str | bytes | None, dict[str, Any]]] = []
    for resource in page.matches:
        raw = subsetter.apply(resource.body, query.summary, query.elements)
        entries.append(({"fullUrl": f"{base}/{resource.type}/{resource.id}"}, raw, {"search": {"mode": "match"}}))
    for resource in page.included:
        entries.append(({"fullUrl": f"{base}/{resource.type}/{resource.id}"}, resource.body,
                        {"search": {"mode": "include"}}))
    warnings: list[Issue] = [*query.warnings(), *page.incomplete]
    if warnings:
        entries.append(({}, dumps(operation_outcome(warnings)), {"search": {"mode": "outcome"}}))
    return render_bundle(head, entries)
