"""Running a parsed search: one page of matches, includes, totals, and the searchset Bundle."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa

from patientkontrakt.fhir.access import access_of, bound, visible
from patientkontrakt.fhir.dates import format_instant, now_utc
from patientkontrakt.fhir.definitions import Definitions
from patientkontrakt.fhir.errors import Issue, operation_outcome
from patientkontrakt.fhir.rendering import Subsetter, dumps, render_bundle
from patientkontrakt.fhir.search.params import Include, SearchQuery
from patientkontrakt.fhir.search.query import QueryBuilder, Restrict
from patientkontrakt.storage.repository import StoredResource, Unit
from patientkontrakt.storage.tables import RESOURCE

R = RESOURCE.c
_COLUMNS = (R.pk, R.res_type, R.res_id, R.version_id, R.last_updated, R.deleted, R.body, R.patient_id)
MAX_INCLUDED = 1000
MAX_ITERATIONS = 4
# How far ``SearchEngine.driver`` counts a criterion's matches: enough to tell one patient's
# resources from a whole status or category; beyond it the order of the criteria decides.
PROBE_LIMIT = 1000
REACH = -1  # ``SearchEngine.driver``: start from the caller's reach


@dataclass
class SearchPage:
    matches: list[StoredResource]
    included: list[StoredResource]
    total: int | None
    has_next: bool


class SearchEngine:
    def __init__(self, defs: Definitions, builder: QueryBuilder) -> None:
        self._defs = defs
        self.builder = builder

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
        reach = reach_size is not None and reach_size < PROBE_LIMIT
        if not candidates:
            return REACH if reach else None
        if len(candidates) == 1 and not reach:
            return candidates[0] if len(query.criteria) > 1 else None
        selects = [self.builder.matching(query, index, restrict) for index in candidates]
        counts = list(await unit.row(self.builder.probe(selects, PROBE_LIMIT)))
        if reach:
            candidates.append(REACH)
            counts.append(reach_size)
        return min(zip(counts, candidates, strict=True), key=lambda pair: pair[0])[1]

    @staticmethod
    async def _count(unit: Unit, where: list[Any]) -> int:
        total: int = await unit.scalar(sa.select(sa.func.count()).select_from(RESOURCE).where(*where))
        return total

    async def find(self, unit: Unit, query: SearchQuery) -> SearchPage:
        where = await self._conditions(unit, query)
        if query.summary == "count" or query.count == 0:
            return SearchPage([], [], await self._count(unit, where), False)
        params = self._defs.params_for(query.type)
        select = (
            sa.select(*_COLUMNS)
            .where(*where)
            .order_by(*self.builder.order_by(query, params))
            .offset(query.offset)
            .limit(query.count + 1)
        )
        rows = await unit.search(select)
        has_next = len(rows) > query.count
        rows = rows[: query.count]
        if query.total in ("accurate", "estimate"):
            total: int | None = await self._count(unit, where)
        elif query.total != "none" and not has_next and (rows or query.offset == 0):
            total = query.offset + len(rows)
        else:
            total = None
        included = await self._includes(unit, query.includes, rows) if query.includes else []
        return SearchPage(rows, included, total, has_next)

    async def _includes(self, unit: Unit, includes: list[Include], matches: list[StoredResource]
                        ) -> list[StoredResource]:
        seen = {(r.type, r.id) for r in matches}
        included: list[StoredResource] = []
        current = matches
        for round_ in range(MAX_ITERATIONS):
            added: list[StoredResource] = []
            for inc in includes:
                if round_ > 0 and not inc.iterate:
                    continue
                found = await (self._reverse(unit, inc, current) if inc.reverse else self._forward(unit, inc, current))
                for resource in found:
                    key = (resource.type, resource.id)
                    if key not in seen and len(included) + len(added) < MAX_INCLUDED:
                        seen.add(key)
                        added.append(resource)
            if not added:
                break
            included.extend(added)
            current = added
        return included

    async def _forward(self, unit: Unit, inc: Include, sources: list[StoredResource]) -> list[StoredResource]:
        pks = [r.pk for r in sources if r.type == inc.source_type or inc.param is None]
        params = None if inc.param is None else [(inc.source_type, inc.param)]
        targets = await unit.references_from(pks, params, inc.target_type)
        return await visible(unit, await unit.get_many(targets))

    async def _reverse(self, unit: Unit, inc: Include, targets: list[StoredResource]) -> list[StoredResource]:
        keys = [(r.type, r.id) for r in targets]
        pks = await unit.referencing(inc.source_type, inc.param, keys, MAX_INCLUDED)
        found = await unit.get_by_pks(pks)
        return await visible(unit, [r for r in found if not r.deleted])


def searchset(
    base: str,
    query: SearchQuery,
    page: SearchPage,
    subsetter: Subsetter,
    path: str | None = None,
) -> bytes:
    """Render a searchset Bundle (R4 bundle.html, search.html#return)."""
    link_base = f"{base}/{path if path is not None else query.type}"
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(now_utc())},
        "type": "searchset",
    }
    if page.total is not None:
        head["total"] = page.total
    head["link"] = _links(link_base, query, page)
    entries: list[tuple[dict[str, Any], str | bytes | None, dict[str, Any]]] = []
    for resource in page.matches:
        raw = subsetter.apply(resource.body, query.summary, query.elements)
        entries.append(({"fullUrl": f"{base}/{resource.type}/{resource.id}"}, raw, {"search": {"mode": "match"}}))
    for resource in page.included:
        entries.append(({"fullUrl": f"{base}/{resource.type}/{resource.id}"}, resource.body,
                        {"search": {"mode": "include"}}))
    warnings: list[Issue] = query.warnings()
    if warnings:
        entries.append(({}, dumps(operation_outcome(warnings)), {"search": {"mode": "outcome"}}))
    return render_bundle(head, entries)


def _links(link_base: str, query: SearchQuery, page: SearchPage) -> list[dict[str, str]]:
    fixed = [(k, v) for k, v in query.used if k not in ("_count", "_offset")]

    def url(offset: int) -> str:
        pairs = [*fixed, ("_count", str(query.count))]
        if offset:
            pairs.append(("_offset", str(offset)))
        return f"{link_base}?{urlencode(pairs)}"

    links = [{"relation": "self", "url": url(query.offset)}]
    if query.summary == "count" or query.count == 0:
        return links
    links.append({"relation": "first", "url": url(0)})
    if query.offset > 0:
        links.append({"relation": "previous", "url": url(max(0, query.offset - query.count))})
    if page.has_next:
        links.append({"relation": "next", "url": url(query.offset + query.count)})
    if page.total is not None and page.total > 0:
        links.append({"relation": "last", "url": url((page.total - 1) // query.count * query.count)})
    return links
