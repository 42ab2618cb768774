"""The SQL of ``Patient/$everything`` (``fhir/everything.py``): one patient's compartment and the
directory resources it names, as one set of ``resource`` rows ordered by ``pk``.

The set is paged by its key (``pk`` after the last one shown, or before the first), never by an
offset: ``pk`` is given when a resource is created and kept by every update, so a resource keeps
its place while others are written, created (they come last) or deleted (the rest do not move),
and a client paging to the end meets every resource that was there all along exactly once.

The conditions of what the caller may see come from the access rules (``access_sql.py``), per
type, over ``resource``; the executor passes their values (``Unit.parameters``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from patientkontrakt.storage.repository import CURRENT_COLUMNS, StoredResource, Unit, current
from patientkontrakt.storage.tables import INDEX_TABLES, RESOURCE

R = RESOURCE.c
REF = INDEX_TABLES["reference"].c
Condition = sa.ColumnElement[bool]
Seen = Mapping[str, Condition | None]  # type -> what the caller may see of it (None: all)


def _of_types(seen: Seen) -> Condition:
    return sa.or_(*(R.res_type == type_ if condition is None else sa.and_(R.res_type == type_, condition)
                    for type_, condition in sorted(seen.items(), key=lambda item: item[0])))


def everything(patient_id: str, compartment: Seen, directory: Seen, named: Sequence[tuple[str, str]],
               since: datetime | None) -> Condition:
    """The rows of the set: current, not deleted, of the patient's compartment (the Patient
    itself included: its ``patient_id`` is its own id) of the ``compartment`` types, and of the
    ``directory`` types those in ``named``; each as the caller may see it; changed at or after
    ``since``."""
    parts: list[Condition] = []
    if compartment:
        parts.append(sa.and_(R.patient_id == patient_id, _of_types(compartment)))
    wanted = [key for key in dict.fromkeys(named) if key[0] in directory]
    if directory and wanted:
        parts.append(sa.and_(sa.tuple_(R.res_type, R.res_id).in_(wanted), _of_types(directory)))
    where = [R.deleted.is_(False), sa.or_(*parts) if parts else sa.false()]
    if since is not None:
        where.append(R.last_updated >= since)
    return sa.and_(*where)


async def page(unit: Unit, where: Condition, count: int, *, after: int | None = None,
               before: int | None = None) -> list[StoredResource]:
    """Up to ``count + 1`` rows of the set in ``pk`` order: the first after ``after``, or (with
    ``before``) the last before it, so that one more than asked tells whether there are more."""
    query = sa.select(*CURRENT_COLUMNS).where(where)
    if before is not None:
        query = query.where(R.pk < before).order_by(R.pk.desc())
    else:
        if after is not None:
            query = query.where(R.pk > after)
        query = query.order_by(R.pk)
    rows = [current(r) for r in (await unit.conn.execute(query.limit(count + 1), unit.parameters)).all()]
    if before is not None:
        # the ``count`` nearest ``before`` in ascending order, the extra one (furthest) first
        rows.reverse()
    return rows


async def any_beyond(unit: Unit, where: Condition, *, below: int | None = None, above: int | None = None) -> bool:
    """Whether the set has a row with ``pk`` at most ``below`` or at least ``above``."""
    bound = R.pk <= below if below is not None else R.pk >= above
    query = sa.select(sa.exists().where(where, bound))
    return bool((await unit.conn.execute(query, unit.parameters)).scalar_one())


async def count(unit: Unit, where: Condition) -> int:
    total: int = (await unit.conn.execute(
        sa.select(sa.func.count()).select_from(RESOURCE).where(where), unit.parameters)).scalar_one()
    return total


async def named_by(unit: Unit, patient_id: str, compartment: Seen, targets: Iterable[str]) -> list[tuple[str, str]]:
    """(type, id) of the ``targets`` types that the patient's compartment names, from the rows of
    it the caller may see (``compartment``)."""
    wanted = sorted(set(targets))
    if not compartment or not wanted:
        return []
    query = (sa.select(REF.target_type, REF.target_id).distinct()
             .select_from(INDEX_TABLES["reference"].join(RESOURCE, R.pk == REF.resource_pk))
             .where(R.patient_id == patient_id, R.deleted.is_(False), _of_types(compartment),
                    REF.target_type.in_(wanted), REF.target_id.is_not(None)))
    found: list[Any] = list((await unit.conn.execute(query, unit.parameters)).all())
    return [(str(t), str(i)) for t, i in found]
