"""The SQL of Bulk Data ``$export`` (``fhir/export.py``): jobs, their files, and the batches a
job reads.

A job reads a type in two steps: ``visible``, one statement that finds the ``pk``s of every
current resource of the type that the caller's access condition admits, and then ``rows``, the
bodies of those in batches by primary key, returning the stored JSON text as it is, so the
runner joins it into ndjson lines without parsing a resource.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from patientkontrakt.storage.repository import Store, Unit
from patientkontrakt.storage.tables import EXPORT_FILE, EXPORT_JOB, RESOURCE

J = EXPORT_JOB.c
F = EXPORT_FILE.c
R = RESOURCE.c
ACTIVE = ("queued", "running")
_IDS_PER_STATEMENT = 1000  # Patient ids bound in one statement (SQLite allows 32766 parameters)


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    access: str
    request: str
    params: str
    status: str
    progress: str | None
    created: datetime
    transaction_time: datetime | None
    finished: datetime | None
    expires: datetime | None
    error: str | None


_JOB_COLUMNS = (J.id, J.owner, J.access, J.request, J.params, J.status, J.progress, J.created,
                J.transaction_time, J.finished, J.expires, J.error)


@dataclass(frozen=True)
class FileInfo:
    id: int
    type: str
    part: int
    count: int


@dataclass(frozen=True)
class Row:
    pk: int
    id: str
    patient_id: str | None
    body: str


def _job(row: Sequence[Any]) -> Job:
    return Job(*row)


def _file(row: Sequence[Any]) -> FileInfo:
    return FileInfo(*row)


def _row(row: Sequence[Any]) -> Row:
    return Row(*row)


async def create_job(store: Store, job: dict[str, Any], max_active: int) -> bool:
    """Insert ``job`` unless its owner already has ``max_active`` jobs queued or running (False)."""
    async with store.writing() as unit:
        await unit.lock_key(f"export:{job['owner']}")
        active = (await unit.conn.execute(sa.select(sa.func.count()).select_from(EXPORT_JOB).where(
            J.owner == job["owner"], J.status.in_(ACTIVE)))).scalar_one()
        if active >= max_active:
            return False
        await unit.conn.execute(sa.insert(EXPORT_JOB).values(**job))
    return True


async def get_job(store: Store, job_id: str) -> Job | None:
    async with store.reading() as unit:
        row = (await unit.conn.execute(sa.select(*_JOB_COLUMNS).where(J.id == job_id))).first()
    return _job(row) if row else None


async def files_of(store: Store, job_id: str) -> list[FileInfo]:
    async with store.reading() as unit:
        rows = (await unit.conn.execute(sa.select(F.id, F.res_type, F.part, F.count).where(F.job_id == job_id)
                                        .order_by(F.res_type, F.part))).all()
    return [_file(row) for row in rows]


async def file_content(store: Store, job_id: str, file_id: int) -> tuple[str, str, str] | None:
    """(resource type, ndjson, JSON of its lines' [pk, id, patient]) of the file, or None."""
    async with store.reading() as unit:
        row = (await unit.conn.execute(sa.select(F.res_type, F.content, F.lines).where(
            F.job_id == job_id, F.id == file_id))).first()
    return (str(row[0]), str(row[1]), str(row[2])) if row else None


async def delete_job(store: Store, job_id: str) -> None:
    """The job and its files (``ON DELETE CASCADE``)."""
    async with store.writing() as unit:
        await unit.conn.execute(sa.delete(EXPORT_FILE).where(F.job_id == job_id))
        await unit.conn.execute(sa.delete(EXPORT_JOB).where(J.id == job_id))


async def delete_expired(store: Store, now: datetime) -> int:
    """Remove the finished jobs whose time is up, with their files; how many."""
    async with store.writing() as unit:
        ids: list[str] = list((await unit.conn.execute(sa.select(J.id).where(J.expires.is_not(None), J.expires <= now)
                                            .limit(100))).scalars())
        if ids:
            await unit.conn.execute(sa.delete(EXPORT_FILE).where(F.job_id.in_(ids)))
            await unit.conn.execute(sa.delete(EXPORT_JOB).where(J.id.in_(ids)))
    return len(ids)


async def anything_due(store: Store, now: datetime) -> bool:
    """Whether a job waits to be run (or taken over) or to be removed: one read, so that an idle
    runner writes nothing."""
    due = sa.or_(J.status == "queued", sa.and_(J.status == "running", J.lease_until < now),
                 sa.and_(J.expires.is_not(None), J.expires <= now))
    async with store.reading() as unit:
        return bool((await unit.conn.execute(sa.select(sa.exists().where(due)))).scalar_one())


async def claim(store: Store, lease_owner: str, now: datetime, lease_until: datetime,
                transaction_time: datetime) -> Job | None:
    """Take the oldest queued job, or a running one whose lease ran out (its runner is gone: its
    files so far are dropped and it starts again). PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so
    processes claiming at once get different jobs; SQLite: the write lock (``BEGIN IMMEDIATE``).
    ``transaction_time``: the instant up to which (inclusive) the job exports, one before which
    every write has committed (``Store.safe_point``)."""
    due = sa.or_(J.status == "queued", sa.and_(J.status == "running", J.lease_until < now))
    query = sa.select(*_JOB_COLUMNS).where(due).order_by(J.created).limit(1)
    async with store.writing() as unit:
        if unit.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        row = (await unit.conn.execute(query)).first()
        if row is None:
            return None
        job = _job(row)
        await unit.conn.execute(sa.delete(EXPORT_FILE).where(F.job_id == job.id))
        await unit.conn.execute(sa.update(EXPORT_JOB).where(J.id == job.id).values(
            status="running", lease_owner=lease_owner, lease_until=lease_until,
            transaction_time=transaction_time, progress="started"))
    return Job(**{**job.__dict__, "status": "running", "transaction_time": transaction_time})


async def _renew(unit: Unit, job_id: str, runner: str, lease_until: datetime, **values: Any) -> bool:
    result = await unit.conn.execute(sa.update(EXPORT_JOB).where(
        J.id == job_id, J.lease_owner == runner, J.status == "running").values(lease_until=lease_until, **values))
    return bool(result.rowcount)


async def write_file(store: Store, job_id: str, lease_owner: str, lease_until: datetime, progress: str,
                     file: dict[str, Any]) -> bool:
    """Add a file to the job, renewing the lease; False if the job is gone or no longer this
    runner's (cancelled, or taken over after the lease ran out): then nothing is written."""
    async with store.writing() as unit:
        if not await _renew(unit, job_id, lease_owner, lease_until, progress=progress):
            return False
        await unit.conn.execute(sa.insert(EXPORT_FILE).values(job_id=job_id, **file))
    return True


async def renew(store: Store, job_id: str, lease_owner: str, lease_until: datetime, progress: str) -> bool:
    async with store.writing() as unit:
        return await _renew(unit, job_id, lease_owner, lease_until, progress=progress)


async def finish(store: Store, job_id: str, lease_owner: str, now: datetime, expires: datetime,
                 error: str | None = None) -> bool:
    async with store.writing() as unit:
        return await _renew(unit, job_id, lease_owner, now, status="failed" if error else "done", finished=now,
                            expires=expires, error=error, lease_owner=None, progress=None)


def _current(type_: str, until: datetime, since: datetime | None) -> list[Any]:
    """The current resources of ``type_`` changed after ``since`` and not after ``until``."""
    where = [R.res_type == type_, R.deleted.is_(False), R.last_updated <= until]
    if since is not None:
        where.append(R.last_updated > since)
    return where


async def visible(store: Store, access: Any, conditions: dict[str, Any], *, since: datetime | None,
                  until: datetime, patients: Sequence[str] | None, compartment_only: bool) -> dict[str, list[int]]:
    """For each type of ``conditions``, the ``pk``s, in order, of its current resources that its
    condition (the caller's access condition, None: all) admits, changed after ``since`` and
    not after ``until``; of the ``patients`` only, or of some patient (``compartment_only``).

    Not one statement per batch: the access condition is an OR of ``EXISTS`` paths, and over
    many rows PostgreSQL evaluates each path as a hashed subplan, the set of what it admits
    built once for the statement and probed per row. Under a small ``LIMIT`` it probed per row
    instead, and a keyset batch sorted every remaining row of the type after testing it, so each
    batch cost as much as the whole rest of the type (N = 100,000: about 200 goals a second).
    On PostgreSQL every type is found in one statement, one pass over the table (the rows of a
    type are spread over all of it, so a statement per type read the whole table once for each);
    on SQLite, one per type. The rules are the conditions a search uses; only the plan differs.
    Only ``pk`` is returned: the bodies are read in batches (``rows``)."""
    where: list[Any] = [R.deleted.is_(False)]
    if since is not None:
        where.append(R.last_updated > since)
    if patients is not None:
        where.append(R.patient_id.in_(list(patients)))
    elif compartment_only:
        where.append(R.patient_id.is_not(None))

    def admitted(type_: str) -> Any:
        is_type = R.res_type == sa.literal_column("'" + type_.replace("'", "''") + "'", sa.String())
        return is_type if conditions[type_] is None else sa.and_(is_type, conditions[type_])

    found: dict[str, list[int]] = {type_: [] for type_ in conditions}
    if not conditions:
        return found
    async with store.reading(access) as unit:
        if unit.dialect == "postgresql":
            # ``until`` as a literal: with a parameter the generic plan guessed that a third of
            # the table was older and read it by ``ix_resource_type_updated``; it is nearly all
            # of it, which a sequential scan reads in half the time.
            until_literal = sa.bindparam("export_until", until, type_=sa.DateTime(), literal_execute=True)
            query = sa.select(R.res_type, R.pk).where(*where, R.last_updated <= until_literal,
                                                      sa.or_(*(admitted(t) for t in conditions)))
            for row in (await unit.conn.execute(query, unit.parameters)).all():
                found[row[0]].append(row[1])
        else:
            for type_ in conditions:
                query = sa.select(R.pk).where(*where, R.last_updated <= until, admitted(type_))
                found[type_] = list((await unit.conn.execute(query, unit.parameters)).scalars())
    for pks in found.values():
        pks.sort()
    return found


# ``rows`` on PostgreSQL: sent through the driver, without SQLAlchemy's handling of each row
# (a third of the time of reading a million bodies), the body as the text of the jsonb.
_ROWS_SQL = ("SELECT pk, res_id, patient_id, body::text FROM resource WHERE pk = ANY($1::bigint[]) "
             "AND res_type = $2 AND deleted IS false AND last_updated <= $3{since} ORDER BY pk")
_ROWS = _ROWS_SQL.format(since="")
_ROWS_SINCE = _ROWS_SQL.format(since=" AND last_updated > $4")


async def rows(store: Store, type_: str, pks: Sequence[int], *, since: datetime | None,
               until: datetime) -> list[Row]:
    """The resources ``pks`` (found by ``visible``, in its order) with their stored JSON text,
    those of them still current and unchanged since (``until``, ``since``) only: one look-up
    of the primary key each."""
    if store.dialect == "postgresql":
        async with store.driver() as driver:
            if since is None:
                found = await driver.fetch(_ROWS, list(pks), type_, until)
            else:
                found = await driver.fetch(_ROWS_SINCE, list(pks), type_, until, since)
        return [Row(row[0], row[1], row[2], row[3]) for row in found]
    query = sa.select(R.pk, R.res_id, R.patient_id, R.body).where(
        R.pk.in_(list(pks)), *_current(type_, until, since)).order_by(R.pk)
    async with store.reading() as unit:
        return [_row(row) for row in (await unit.conn.execute(query)).all()]


async def readable_patients(store: Store, access: Any, condition: Any, patients: Sequence[str]) -> list[str]:
    """Of the Patient ids ``patients``, those of current Patients that ``condition`` (the caller's
    access condition on Patient, None: all) admits, in the order given."""
    found: set[str] = set()
    async with store.reading(access) as unit:
        for start in range(0, len(patients), _IDS_PER_STATEMENT):
            where = [R.res_type == "Patient", R.res_id.in_(list(patients[start:start + _IDS_PER_STATEMENT])),
                     R.deleted.is_(False)]
            if condition is not None:
                where.append(condition)
            rows = await unit.conn.execute(sa.select(R.res_id).where(*where), unit.parameters)
            found.update(str(row[0]) for row in rows)
    return [p for p in patients if p in found]
