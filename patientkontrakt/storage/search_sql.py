"""The SQL of a FHIR search (R4 search.html): a parsed ``SearchQuery`` and what the caller may
see in, the rows of a page, a total or the counts that choose where a search starts out.

It lives in storage so that the FHIR engine (``fhir/search/engine.py``: paging, totals,
includes, the Bundle) never builds a statement: it hands over the query, gets conditions it
passes back unopened, and rows. ``QueryBuilder`` reads the query model
(``fhir/search/params.py``) and the pure value helpers (``fhir.dates``, ``fhir.indexing``), none
of which imports storage.

Each criterion becomes a semi-join ``resource.pk IN (SELECT resource_pk FROM idx_… WHERE …)``
so that PostgreSQL can answer it from the covering indexes; values of one parameter are ORed,
parameters are ANDed. ``_id`` and ``_lastUpdated`` read columns of the resource table.

A search with several criteria names one of them its *driver* (``SearchEngine.driver`` chooses
it by counting, see ``counts``): that one stays a semi-join, and every other becomes a check of
each row the driver finds, ``EXISTS (SELECT … WHERE resource_pk = resource.pk … OFFSET 0)``. The
OFFSET keeps PostgreSQL from turning the check into a join it could start from. Our connections
use generic plans (``storage/database.py``), which do not see the values searched for, and left
to itself the planner started ``CarePlan?patient=…&status=active`` from every active agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import util as sql_util
from sqlalchemy.sql.elements import ColumnElement

from patientkontrakt.fhir.dates import MAX, MIN, DateFormatError, now_utc, parse_range
from patientkontrakt.fhir.errors import BadRequest
from patientkontrakt.fhir.indexing import cut, normalize_string, parse_reference
from patientkontrakt.fhir.search.params import Criterion, SearchQuery, split_token
from patientkontrakt.storage.repository import CURRENT_COLUMNS, StoredResource, Unit, current
from patientkontrakt.storage.tables import INDEX_TABLES, RESOURCE

R = RESOURCE.c
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")

Condition = ColumnElement[bool]
Column = ColumnElement[Any]
Restrict = Callable[[str], Any]


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _bad_value(criterion: Criterion, value: str, why: str, sv: str) -> BadRequest:
    return BadRequest(f"{criterion.name}={value!r}: {why}", expression=(criterion.name,), details_sv=sv)


class QueryBuilder:
    """The statements of a search: its WHERE (``conditions``) and ORDER BY, run on a unit as a
    page, a total or the counts of its candidates. ``local_base``: the service's base URL, which
    reference values may begin with."""

    def __init__(self, local_base: str) -> None:
        self._base = local_base

    # -- criteria --------------------------------------------------------------------------

    def conditions(self, query: SearchQuery, restrict: Restrict | None = None, *,
                   driver: int | None = None) -> list[Condition]:
        """The WHERE of a search. ``restrict(type)`` is what the caller may see of a type (a
        condition over ``resource``, or None); it is applied to the targets of chained
        parameters, so a chain cannot probe resources the caller may not see. ``driver`` is the
        index in ``query.criteria`` of the criterion to start from; every other criterion is
        then checked row by row (the module's docstring)."""
        conditions: list[Condition] = [R.res_type == query.type, R.deleted.is_(False)]
        for index, criterion in enumerate(query.criteria):
            check = driver is not None and index != driver
            conditions.append(self._criterion(query.type, criterion, R.pk, R.res_id, R.last_updated, restrict,
                                              check=check))
        return conditions

    @staticmethod
    def candidates(query: SearchQuery) -> list[int]:
        """The criteria a search can start from: those whose matches an index lists (not
        ``_lastUpdated``, ``:not`` or ``:missing``; ``_id``, a primary-key look-up, the engine
        takes before counting), by their index in ``query.criteria``."""
        return [index for index, criterion in enumerate(query.criteria)
                if criterion.param.code not in ("_id", "_lastUpdated") and criterion.modifier not in ("not", "missing")]

    def narrowing(self, queries: Iterable[SearchQuery]) -> Condition:
        """The resources that match any of ``queries`` (their criteria only: a SMART scope's
        ``?param=`` narrowing, ``security/rules.py``)."""
        return sa.or_(*(sa.and_(*self.conditions(query)[2:]) for query in queries))

    def _criterion(self, type_: str, criterion: Criterion, pk: Column, res_id: Column, updated: Column,
                   restrict: Restrict | None = None, *, check: bool = False) -> Condition:
        param = criterion.param
        if param.code == "_id" and not criterion.chain:
            match = res_id.in_(list(criterion.values))
            return sa.not_(match) if criterion.modifier == "not" else match
        if param.code == "_lastUpdated":
            return sa.or_(*(self._date_condition(criterion, v, updated, updated) for v in criterion.values))
        if criterion.modifier == "missing":
            table = INDEX_TABLES[param.type]
            every = sa.select(table.c.resource_pk).where(table.c.res_type == type_, table.c.param == param.code)
            present = _among(pk, every, check)
            return sa.or_(*(sa.not_(present) if v == "true" else present for v in criterion.values))
        among = _among(pk, self._matching(type_, criterion, restrict), check)
        return sa.not_(among) if criterion.modifier == "not" else among

    def _matching(self, type_: str, criterion: Criterion, restrict: Restrict | None) -> sa.Select[Any]:
        """``SELECT resource_pk`` of the index entries that match ``criterion`` (the values of a
        ``:not`` criterion: the caller negates)."""
        if criterion.chain:
            return self._chain(type_, criterion, restrict)
        param = criterion.param
        table = INDEX_TABLES[param.type]
        build: Callable[[Criterion, str, Any], Condition] = getattr(self, f"_{param.type}")
        matches = sa.or_(*(build(criterion, value, table) for value in criterion.values))
        return sa.select(table.c.resource_pk).where(table.c.res_type == type_, table.c.param == param.code, matches)

    def _chain(self, type_: str, criterion: Criterion, restrict: Restrict | None) -> sa.Select[Any]:
        ref = INDEX_TABLES["reference"]
        target = RESOURCE.alias("chained")
        options = []
        for target_type, inner in criterion.chain:
            inner_condition = self._criterion(target_type, inner, target.c.pk, target.c.res_id, target.c.last_updated)
            where: list[Any] = [target.c.res_type == target_type, target.c.deleted.is_(False), inner_condition]
            seen = restrict(target_type) if restrict is not None else None
            if seen is not None:
                where.append(sql_util.ClauseAdapter(target).traverse(seen))  # the restriction, on the alias
            ids = sa.select(target.c.res_id).where(*where)
            options.append(sa.and_(ref.c.target_type == target_type, ref.c.target_id.in_(ids)))
        return sa.select(ref.c.resource_pk).where(
            ref.c.res_type == type_, ref.c.param == criterion.param.code, sa.or_(*options)
        )

    def _token(self, criterion: Criterion, value: str, table: sa.Table) -> Condition:
        system, code, system_given = split_token(value)
        parts: list[Condition] = []
        if code is not None:
            parts.append(table.c.code == cut(code))
        if system_given:
            parts.append(table.c.system.is_(None) if system is None else table.c.system == cut(system))
        if not parts:
            raise _bad_value(criterion, value, "a token needs a code or a system", "Ange en kod eller ett system.")
        return sa.and_(*parts)

    def _string(self, criterion: Criterion, value: str, table: sa.Table) -> Condition:
        if criterion.modifier == "exact":
            return table.c.exact == cut(value)
        normalized = normalize_string(value)
        if criterion.modifier == "contains":
            return table.c.value.like(f"%{_escape_like(normalized)}%", escape="\\")
        return table.c.value.like(f"{_escape_like(normalized)}%", escape="\\")

    def _uri(self, criterion: Criterion, value: str, table: sa.Table) -> Condition:
        if criterion.modifier == "below":
            return table.c.uri.like(f"{_escape_like(value)}%", escape="\\")
        if criterion.modifier == "above":
            # The stored URI is a prefix of the value; IN over the prefixes keeps '_' and '%' literal.
            text = cut(value)
            return table.c.uri.in_([text[:end] for end in range(1, len(text) + 1)])
        return table.c.uri == cut(value)

    def _reference(self, criterion: Criterion, value: str, table: sa.Table) -> Condition:
        modifier = criterion.modifier
        parsed = parse_reference(value, self._base)
        if parsed.id is not None:
            type_ = parsed.type
            if modifier and type_ and modifier != type_:
                raise _bad_value(criterion, value, f"the value names {type_} but the modifier {modifier}",
                                 "Typen i värdet och modifieraren stämmer inte.")
            return sa.and_(table.c.target_type == (type_ or modifier), table.c.target_id == parsed.id)
        if parsed.url is not None and ("://" in value or value.startswith("urn:")):
            return table.c.url == parsed.url
        if "/" in value:
            raise _bad_value(criterion, value, "not a reference", "Ogiltig referens.")
        condition = table.c.target_id == value
        if modifier:
            condition = sa.and_(condition, table.c.target_type == modifier)
        return condition

    def _date(self, criterion: Criterion, value: str, table: sa.Table) -> Condition:
        return self._date_condition(criterion, value, table.c.low, table.c.high)

    def _date_condition(self, criterion: Criterion, value: str, low: Column, high: Column) -> Condition:
        prefix = value[:2] if value[:2] in _PREFIXES else "eq"
        text = value[2:] if value[:2] in _PREFIXES else value
        try:
            s_low, s_high = parse_range(text)
        except DateFormatError:
            raise _bad_value(criterion, value, "not a FHIR date, dateTime or instant",
                             "Ogiltigt datum; använd till exempel 2024-05-01.") from None
        contained = sa.and_(low >= s_low, high <= s_high)
        if prefix == "eq":
            return contained
        if prefix == "ne":
            return sa.not_(contained)
        if prefix == "gt":
            return high > s_high
        if prefix == "lt":
            return low < s_low
        if prefix == "ge":
            return sa.or_(high > s_high, contained)
        if prefix == "le":
            return sa.or_(low < s_low, contained)
        if prefix == "sa":
            return low > s_high
        if prefix == "eb":
            return high < s_low
        gap = _approximate_gap(s_low, s_high)
        return sa.and_(low <= _shift(s_high, gap), high >= _shift(s_low, -gap))

    # -- ordering --------------------------------------------------------------------------

    def order_by(self, query: SearchQuery, params: dict[str, Any]) -> list[Any]:
        order: list[Any] = []
        for code, descending in query.sort:
            if code == "_id":
                key: Any = R.res_id
            elif code == "_lastUpdated":
                key = R.last_updated
            else:
                param = params[code]
                table = INDEX_TABLES[param.type]
                column = {
                    "token": table.c.get("code"),
                    "string": table.c.get("value"),
                    "date": table.c.get("high") if descending else table.c.get("low"),
                    "reference": table.c.get("target_id"),
                    "uri": table.c.get("uri"),
                }[param.type]
                aggregate = sa.func.max(column) if descending else sa.func.min(column)
                key = (
                    sa.select(aggregate)
                    .where(table.c.resource_pk == R.pk, table.c.param == code)
                    .scalar_subquery()
                )
            order.append(key.desc().nulls_last() if descending else key.asc().nulls_last())
        order.append(R.pk.asc())
        return order

    # -- statements ------------------------------------------------------------------------

    async def counts(self, unit: Unit, query: SearchQuery, candidates: list[int], restrict: Restrict | None,
                     limit: int) -> list[int]:
        """For each of ``candidates`` (indexes in ``query.criteria``), how many index entries match
        it, counted up to ``limit``: one statement, an index scan of at most ``limit`` entries each."""
        selects = [self._matching(query.type, query.criteria[index], restrict) for index in candidates]
        probe = sa.select(*(sa.select(sa.func.count()).select_from(select.limit(limit).subquery()).scalar_subquery()
                            for select in selects))
        return [int(count) for count in (await unit.conn.execute(probe, unit.parameters)).one()]

    async def page(self, unit: Unit, query: SearchQuery, where: list[Any], params: dict[str, Any]
                   ) -> list[StoredResource]:
        """The current resources ``where`` selects (``conditions``, plus what the caller may see),
        in the query's order, from ``query.offset``: one more than ``query.count``, which tells
        whether there is a next page. ``params``: the search parameters of ``query.type``."""
        select = (
            sa.select(*CURRENT_COLUMNS)
            .where(*where)
            .order_by(*self.order_by(query, params))
            .offset(query.offset)
            .limit(query.count + 1)
        )
        return [current(r) for r in (await unit.conn.execute(select, unit.parameters)).all()]

    @staticmethod
    async def count(unit: Unit, where: list[Any]) -> int:
        """How many resources ``where`` selects (``_total``, ``_summary=count``)."""
        select = sa.select(sa.func.count()).select_from(RESOURCE).where(*where)
        total: int = (await unit.conn.execute(select, unit.parameters)).scalar_one()
        return total


def _among(pk: Column, matching: sa.Select[Any], check: bool) -> Condition:
    """``pk`` is one of the ``resource_pk`` that ``matching`` selects: as a semi-join the database
    may start from, or (``check``) as a test of the one row, which the OFFSET keeps a subplan."""
    if not check:
        return pk.in_(matching)
    return matching.where(matching.selected_columns[0] == pk).offset(0).exists()


def _shift(value: datetime, delta: timedelta) -> datetime:
    try:
        return value + delta
    except OverflowError:
        return MAX if delta > timedelta(0) else MIN


def _approximate_gap(low: datetime, high: datetime) -> timedelta:
    """R4 'ap': within 10 % of the distance from now, at least one day."""
    distance = abs(now_utc() - low) if low > now_utc() else abs(now_utc() - high)
    return max(distance / 10, timedelta(days=1))
