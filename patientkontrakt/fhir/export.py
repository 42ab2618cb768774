"""Bulk Data ``$export`` (HL7 Bulk Data Access IG 2.0.0, export.html), for SMART Backend Services
clients: kick-off, status, files, cancel, and the background runner.

* **Kick-off** (``GET|POST [base]/$export``, ``Patient/$export``, ``Group/[id]/$export``) needs
  ``Prefer: respond-async``; its parameters are checked here (``_outputFormat``, ``_type``,
  ``_since``, and ``patient`` at Patient and Group level); one this server does not support is
  400 unless ``Prefer: handling=lenient``, then it is ignored and named in the manifest's
  ``error`` file. The job is stored (``storage/export.py``) with what rebuilds the caller's access
  (``security/stored_access.py``): 202 and ``Content-Location``.
* **Group level**: the Group must be one the caller may read (another unit's, a deleted one and
  an unknown id are the same 404); its members at the kick-off (``member.entity`` Patients, not
  ``inactive``) are the patients of the export, which then runs as a Patient-level one for them.
  At run time only the members whose Patient the caller may still read are exported.
* **Who**: a backend system (``system/`` scopes) acting for a care unit, or the bare engine's
  scoped system client. Patients, staff and the directory client are refused (403).
* **The runner** (``work_once``, called by each API process's background task and by
  ``patientkontrakt worker``) claims one due job and reads, type by type, in keyset batches under
  the caller's access condition (care unit, samtycke, spärr; scope narrowing), as a search would:
  exactly what the same client may read through search, as of the job's ``transactionTime``. The
  stored JSON text becomes the ndjson lines as it is.
* **Status** (``GET``): 202 with ``X-Progress`` and ``Retry-After`` while it runs, the manifest
  when done, a 500 OperationOutcome if it failed; ``DELETE`` removes the job and its files. Only
  the client (and principal and care unit) that kicked it off sees it: anyone else gets 404.
  Expired jobs (``PK_EXPORT_EXPIRY`` after they finished) are 404 and removed.
* **Files** are served under the rules of their download: each file knows the row of each line,
  and a line the caller may no longer read (a spärr since, say) is left out.
* **The access log**: a file is a disclosure when it is downloaded, so each download logs one
  entry per patient in what it served (the names of at most 200 resources each), in one append.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from patientkontrakt.fhir.access import Access, bound, visible
from patientkontrakt.fhir.dates import DateFormatError, format_http, format_instant, now_utc, parse_range
from patientkontrakt.fhir.errors import (
    BadRequest,
    FhirError,
    Forbidden,
    HiddenResource,
    Issue,
    NotFound,
    operation_outcome,
)
from patientkontrakt.fhir.indexing import parse_reference
from patientkontrakt.fhir.interactions import Interaction
from patientkontrakt.fhir.rendering import dumps
from patientkontrakt.fhir.results import Result
from patientkontrakt.logs import describe
from patientkontrakt.storage import export as sql
from patientkontrakt.storage.repository import StoredResource

if TYPE_CHECKING:
    from patientkontrakt.fhir.service import FhirService

log = logging.getLogger("patientkontrakt.export")

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
STATUS_PATH = "$export-status"
FILE_PATH = "$export-file"
# Kick-off parameters of the IG this server does not support (400 unless handling=lenient).
NOT_SUPPORTED = ("_typeFilter", "_elements", "includeAssociatedData", "_until", "organizeOutputBy",
                 "allowPartialManifests")
_GENERAL = frozenset({"_format", "_pretty"})  # R4 http.html#parameters: not the operation's
NAMES_PER_PATIENT = 200  # resources named in one access log entry (as audit/log.py keeps them)


class TooManyExports(FhirError):
    """The client already has as many exports queued or running as it may."""

    status: ClassVar[int] = 429
    code: ClassVar[str] = "throttled"


@dataclass
class Arguments:
    """The checked kick-off parameters, as the job keeps them."""

    level: str  # system | patient | group
    types: list[str]
    since: str | None = None  # as given (a FHIR instant)
    patients: list[str] | None = None  # Patient ids (the ``patient`` parameter; a Group's members)
    ignored: list[str] = field(default_factory=list)  # unsupported parameters under handling=lenient


def preferences(header: str | None) -> tuple[bool, bool]:
    """(``respond-async`` asked, ``handling=lenient`` asked) of a ``Prefer`` header."""
    tokens = {t.strip().replace(" ", "") for part in (header or "").split(",") for t in part.split(";")}
    return "respond-async" in tokens, "handling=lenient" in tokens


def parameters_of(body: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The parameters of a POST kick-off: a ``Parameters`` resource whose parameters have a name
    and one value (a primitive, or a Reference for ``patient``)."""
    if body is None:
        return []
    if body.get("resourceType") != "Parameters":
        raise BadRequest("The body of POST $export must be a Parameters resource", expression=("resourceType",),
                         details_sv="Innehållet ska vara en Parameters-resurs.")
    pairs = []
    for index, parameter in enumerate(body.get("parameter") or []):
        values = [v for k, v in parameter.items() if k.startswith("value")] if isinstance(parameter, dict) else []
        name = parameter.get("name") if isinstance(parameter, dict) else None
        value = values[0] if len(values) == 1 else None
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            value = value["reference"]
        if not isinstance(name, str) or not isinstance(value, str):
            raise BadRequest("Each parameter of $export has a name and one value (a string, an instant, or a "
                             "Reference for patient)", expression=(f"Parameters.parameter[{index}]",),
                             details_sv="Varje parameter ska ha ett namn och ett värde.")
        pairs.append((name, value))
    return pairs


def arguments(pairs: list[tuple[str, str]], level: str, types: list[str], *, lenient: bool) -> Arguments:
    """Check the kick-off parameters against ``types`` (what the level exports, in order)."""
    named: list[str] = []
    args = Arguments(level=level, types=[])
    for key, value in pairs:
        if key == "_outputFormat":
            if value.strip() not in OUTPUT_FORMATS:
                raise BadRequest(f"_outputFormat {value!r} is not supported: use {NDJSON} (or application/ndjson, "
                                 "ndjson)", expression=("_outputFormat",),
                                 details_sv="Formatet stöds inte; använd ndjson.")
        elif key == "_since":
            try:
                parse_range(value)
            except (DateFormatError, ValueError):
                raise BadRequest(f"_since must be a FHIR instant, not {value!r}", expression=("_since",),
                                 details_sv="Ogiltig tidpunkt i _since.") from None
            args.since = value
        elif key == "_type":
            for type_ in (t.strip() for t in value.split(",")):
                if type_ not in types:
                    where = "on this server" if level == "system" else "at this level (the patient compartment)"
                    raise BadRequest(f"_type names {type_ or 'no type'!r}, which cannot be exported {where}: "
                                     f"it takes a comma-separated list of {', '.join(types)}", expression=("_type",),
                                     details_sv="_type anger en resurstyp som inte kan exporteras här.")
                named.append(type_)
        elif key == "patient" and level != "system":
            patient = value.strip()
            if not patient.startswith("Patient/") or not patient[8:] or "/" in patient[8:]:
                raise BadRequest(f"patient must be a reference Patient/[id], not {value!r}", expression=("patient",),
                                 details_sv="patient ska vara en referens till en patient.")
            args.patients = [*(args.patients or []), patient[8:]]
        elif key not in _GENERAL:
            known = key in NOT_SUPPORTED or key == "patient"
            what = "is not supported by this server" if known else "is not a parameter of $export"
            if not lenient:
                raise BadRequest(f"{key} {what} (send Prefer: handling=lenient to have it ignored)",
                                 expression=(key,), details_sv=f"Parametern {key} stöds inte.")
            args.ignored.append(key)
    args.types = list(dict.fromkeys(named)) if named else list(types)
    return args


def owner_of(access: Access) -> str:
    """Who may see a job: the same client, as the same principal, for the same care unit."""
    who = access.principal
    unit = getattr(access, "care_unit_org", None) or ""
    return "|".join((who.kind, who.client_id or "", who.id, unit))


def kept_lines(content: str, pks: list[int], keep: set[int]) -> str:
    """The lines of the ndjson ``content`` (whose lines are the rows ``pks``) of the rows in
    ``keep``. Split at "\n" only: ``str.splitlines`` would also split at U+2028 or U+0085, which
    JSON leaves unescaped inside a string."""
    lines = content.split("\n")[:-1]
    return "".join(f"{line}\n" for line, pk in zip(lines, pks, strict=True) if pk in keep)


def _allowed(access: Access, type_: str) -> bool:
    try:
        access.require(type_, "search-type")
    except FhirError:
        return False
    return True


class BulkExport:
    """The export operation and its runner, over the service's store and rules.

    ``record`` turns a caller's access into what the job keeps (None: this caller may not
    export), ``rebuild`` the reverse (``security/stored_access.py``; the core does not import the
    rules).
    """

    def __init__(self, service: FhirService, record: Callable[[Access], str | None],
                 rebuild: Callable[[str], Access]) -> None:
        self.service = service
        self.settings = service.settings
        self.store = service.store
        self.base = service.base
        self._record = record
        self._rebuild = rebuild
        self.runner_id = uuid.uuid4().hex

    def status_url(self, job_id: str) -> str:
        return f"{self.base}/{STATUS_PATH}/{job_id}"

    # -- kick-off --------------------------------------------------------------------------

    def _level_types(self, level: str) -> list[str]:
        types = sorted(self.service.types)
        if level != "system":
            compartment = self.service.defs.patient_compartment
            types = [t for t in types if t == "Patient" or compartment.get(t)]
        return types

    def _admit(self, access: Access, level: str, pairs: list[tuple[str, str]], lenient: bool
               ) -> tuple[str, Arguments]:
        """What the job keeps of the caller, and its checked parameters; 403 for a caller that
        may not export, or for a type named without the scope."""
        if access.principal.kind != "system":
            raise Forbidden("$export is for backend systems (SMART Backend Services, system/ scopes), not "
                            f"{access.principal.kind} tokens", details_sv="Bara system får göra bulkexport.")
        stored = self._record(access)
        if stored is None:
            raise Forbidden("This client may not export: it acts for no care unit",
                            details_sv="Klienten får inte göra bulkexport.")
        args = arguments(pairs, level, self._level_types(level), lenient=lenient)
        named = any(key == "_type" for key, _ in pairs)
        for type_ in args.types if named else ():
            access.require(type_, "search-type")  # named without the scope: 403, as in a search
        args.types = [t for t in args.types if _allowed(access, t)]
        if not args.types:
            raise Forbidden("The access token grants search of no type to export",
                            details_sv="Du har inte behörighet att exportera något.")
        return stored, args

    async def kick_off(self, access: Access, level: str, group_id: str | None, pairs: list[tuple[str, str]],
                       prefer: str | None, request_url: str) -> Result:
        """Bulk Data IG export.html#bulk-data-kick-off-request."""
        respond_async, lenient = preferences(prefer)
        if not respond_async:
            raise BadRequest("$export runs asynchronously: send Prefer: respond-async (Bulk Data IG)",
                             expression=("Prefer",), details_sv="Ange Prefer: respond-async.")
        path = {"patient": "Patient/$export", "group": f"Group/{group_id}/$export"}.get(level, "$export")
        # a refusal (403, or 404 for a Group the caller may not read) is logged, as for every
        # interaction (fhir/interactions.py)
        async with self.service.pipeline.run(access, Interaction("operation", None, path)):
            stored, args = self._admit(access, level, pairs, lenient)
            if level == "group":
                members = await self._members(access, group_id or "")
                args.patients = members if args.patients is None else [p for p in members if p in args.patients]
        job_id = secrets.token_urlsafe(32)
        job = {"id": job_id, "owner": owner_of(access), "access": stored,
               "request": request_url, "params": orjson.dumps(args.__dict__).decode(), "status": "queued",
               "created": now_utc()}
        if not await sql.create_job(self.store, job, self.settings.export_max_jobs):
            raise TooManyExports(f"This client already has {self.settings.export_max_jobs} exports queued or "
                                 "running; wait for one to finish or cancel one (DELETE its status URL)",
                                 details_sv="För många pågående exporter.",
                                 headers={"Retry-After": str(self.settings.export_retry_after * 5)})
        body = dumps(operation_outcome([Issue(code="informational", severity="information",
                                              diagnostics=f"Export started: poll {self.status_url(job_id)}",
                                              details_sv="Exporten har startat.")]))
        return Result(202, body, extra_headers={"Content-Location": self.status_url(job_id)})

    async def _members(self, access: Access, group_id: str) -> list[str]:
        """The Patient ids of the Group's current members (R4 ``Group.member``: ``inactive`` ones
        are no longer in the group), if the caller may read the Group; else 404, as for a read."""
        access.require("Group", "read")
        self.service.check_id("Group", group_id)
        stored, visible = await self.store.read_current("Group", group_id, access.restriction("Group"))
        if stored is None or not visible or stored.deleted:
            raise HiddenResource(f"Group/{group_id} is not known", stored, details_sv="Gruppen finns inte.")
        members = []
        for member in orjson.loads(stored.body).get("member") or []:
            reference = parse_reference(str((member.get("entity") or {}).get("reference") or ""), self.base)
            if reference.type == "Patient" and reference.id and member.get("inactive") is not True:
                members.append(reference.id)
        return list(dict.fromkeys(members))

    # -- status, cancel, files -------------------------------------------------------------

    async def _job(self, access: Access, job_id: str) -> sql.Job:
        job = await sql.get_job(self.store, job_id) if len(job_id) <= 64 else None
        if job is None or job.owner != owner_of(access):
            raise NotFound("No such export job", details_sv="Exporten finns inte.")
        if job.expires is not None and job.expires <= now_utc():
            await sql.delete_job(self.store, job.id)
            raise NotFound("The export has expired and its files were removed",
                           details_sv="Exporten har gått ut och filerna är borttagna.")
        return job

    async def status(self, access: Access, job_id: str) -> Result:
        """export.html#bulk-data-status-request."""
        job = await self._job(access, job_id)
        if job.status in sql.ACTIVE:
            return Result(202, extra_headers={"X-Progress": job.progress or job.status,
                                              "Retry-After": str(self.settings.export_retry_after)})
        if job.status == "failed":
            raise ExportFailed(job.error or "The export failed", details_sv="Exporten misslyckades.")
        files = await sql.files_of(self.store, job.id)
        transaction_time = job.transaction_time or job.created

        def entry(file: sql.FileInfo) -> dict[str, Any]:
            return {"type": file.type, "url": f"{self.base}/{FILE_PATH}/{job.id}/{file.id}", "count": file.count}

        manifest = {
            "transactionTime": format_instant(transaction_time),
            "request": job.request,
            "requiresAccessToken": True,
            "output": [entry(f) for f in files if f.type != "OperationOutcome"],
            "error": [entry(f) for f in files if f.type == "OperationOutcome"],
        }
        headers = {"Expires": format_http(job.expires)} if job.expires else {}
        return Result(200, orjson.dumps(manifest), extra_headers=headers)

    async def cancel(self, access: Access, job_id: str) -> Result:
        """export.html#bulk-data-delete-request: the job and its files are removed."""
        job = await self._job(access, job_id)
        await sql.delete_job(self.store, job.id)
        body = dumps(operation_outcome([Issue(code="informational", severity="information",
                                              diagnostics="The export was cancelled and its files removed",
                                              details_sv="Exporten är avbruten och filerna borttagna.")]))
        return Result(202, body)

    async def file(self, access: Access, job_id: str, file_id: str) -> bytes:
        """export.html#file-request: the ndjson, logged as disclosed to the caller (one entry per
        patient in it) before it is returned. A file is served under the rules as they are now,
        not as they were when it was written: a resource the caller may no longer read (a spärr
        or a withdrawn samtycke since, the unit gone from the agreement) is left out of it."""
        job = await self._job(access, job_id)
        found = await sql.file_content(self.store, job.id, int(file_id)) \
            if job.status == "done" and file_id.isdigit() and len(file_id) < 19 else None
        if found is None:
            raise NotFound("No such file of this export", details_sv="Filen finns inte.")
        type_, content, index = found
        request = f"{FILE_PATH}/{job.id}/{file_id}"
        if type_ == "OperationOutcome":  # the manifest's error file: what the server said, no data
            return content.encode()
        access.require(type_, "search-type")  # the token of this download, which may be narrower
        written = [StoredResource(pk, type_, id_, 0, job.created, False, "", patient)
                   for pk, id_, patient in orjson.loads(index)]
        kept = await self._readable(access, written)
        if len(kept) < len(written):
            content = kept_lines(content, [resource.pk for resource in written], {r.pk for r in kept})
        shown: list[StoredResource] = []
        named: dict[str, int] = {}
        for resource in kept:
            if resource.patient_id is not None and named.get(resource.patient_id, 0) < NAMES_PER_PATIENT:
                named[resource.patient_id] = named.get(resource.patient_id, 0) + 1
                shown.append(resource)
        async with self.service.pipeline.run(access, Interaction("operation", None, request)) as exchange:
            await exchange.shown(shown, request=request)
        return content.encode()

    async def _readable(self, access: Access, resources: list[StoredResource]) -> list[StoredResource]:
        """Those of ``resources`` the caller may read now, in a statement per thousand."""
        kept: list[StoredResource] = []
        async with self.store.reading(access) as unit:
            for start in range(0, len(resources), 1000):
                kept += await visible(unit, resources[start:start + 1000])
        return kept

    # -- the runner ------------------------------------------------------------------------

    async def work_once(self) -> bool:
        """Remove expired jobs, then claim one due job and run it to the end; whether there was
        work. Safe in several processes at once (``storage.export.claim``)."""
        now = now_utc()
        if not await sql.anything_due(self.store, now):
            return False
        removed = await sql.delete_expired(self.store, now)
        # transactionTime: the IG's "SHALL include any matching resources modified up to and
        # including this instant" needs an instant before which every write has committed (a
        # write in flight may have stamped earlier than now): the history's safe point, less the
        # millisecond it excludes. A next export with _since=transactionTime then misses nothing.
        transaction_time = await self.store.safe_point() - timedelta(milliseconds=1)
        job = await sql.claim(self.store, self.runner_id, now, self._lease(), transaction_time)
        if job is None:
            return removed > 0
        try:
            await self._run(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the job fails; the runner goes on (nothing of the data is logged)
            log.error("export job failed: %s", describe(exc))
            message = exc.diagnostics if isinstance(exc, FhirError) else "The export failed on the server"
            await sql.finish(self.store, job.id, self.runner_id, now_utc(), self._expires(), error=message)
        return True

    def _lease(self) -> datetime:
        return now_utc() + timedelta(seconds=self.settings.export_lease)

    @property
    def _renew_every(self) -> float:
        """Seconds between renewals of a job's lease while it reads (a tenth of the lease, at most
        one second)."""
        return min(1.0, self.settings.export_lease / 10)

    def _expires(self) -> datetime:
        return now_utc() + timedelta(seconds=self.settings.export_expiry)

    async def _run(self, job: sql.Job) -> None:
        params = orjson.loads(job.params)
        access = self._rebuild(job.access)
        since = parse_range(params["since"])[0] if params["since"] else None
        until = job.transaction_time or job.created
        batch_size, file_size = self.settings.export_batch_size, self.settings.export_file_size
        done = 0
        if params["ignored"]:
            outcome = operation_outcome([Issue(code="not-supported", severity="warning", expression=(name,),
                                               diagnostics=f"{name} is not supported and was ignored",
                                               details_sv=f"Parametern {name} stöds inte och har inte använts.")
                                         for name in params["ignored"]])
            if not await self._write(job, "started", "OperationOutcome", 0, [orjson.dumps(outcome).decode()], []):
                return
        of_patients: list[str] | None = params["patients"]
        if params["level"] == "group" and of_patients:
            # the members whose Patient the caller may read now (the rules as they are today)
            of_patients = await sql.readable_patients(self.store, access, bound(access.restriction("Patient")),
                                                      of_patients)
        # What the caller may see of each type, found at once (storage.export.visible), then read
        # type by type in batches by primary key.
        found = await sql.visible(self.store, access, {type_: bound(access.restriction(type_))
                                                       for type_ in params["types"] if _allowed(access, type_)},
                                  since=since, until=until, patients=of_patients,
                                  compartment_only=params["level"] != "system")
        renewed = time.monotonic()
        # A file is stored while the next is read (the database compresses it meanwhile): at most
        # one write is in flight, and its outcome is known before the next one starts.
        writing: asyncio.Task[bool] | None = None
        try:
            for type_, pks in found.items():
                part = 0
                lines: list[str] = []
                index: list[tuple[int, str, str | None]] = []  # (pk, id, patient) of each line
                for start in range(0, len(pks), batch_size):
                    for row in await sql.rows(self.store, type_, pks[start:start + batch_size], since=since,
                                              until=until):
                        lines.append(row.body)
                        index.append((row.pk, row.id, row.patient_id))
                    last = start + batch_size >= len(pks)
                    if lines and (last or len(lines) >= file_size):
                        done += len(lines)
                        if writing is not None and not await writing:
                            return  # cancelled, or taken over
                        writing = asyncio.create_task(
                            self._write(job, f"{type_}: {done} resources", type_, part, lines, index))
                        part, lines, index = part + 1, [], []
                        renewed = time.monotonic()
                    elif not last and time.monotonic() - renewed >= self._renew_every:
                        # the lease, and the progress a status request shows: not every batch
                        if not await sql.renew(self.store, job.id, self.runner_id, self._lease(),
                                               f"{type_}: {done + len(lines)} resources"):
                            return  # cancelled, or taken over
                        renewed = time.monotonic()
            if writing is not None and not await writing:
                return
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writing
        await sql.finish(self.store, job.id, self.runner_id, now_utc(), self._expires())

    async def _write(self, job: sql.Job, progress: str, type_: str, part: int, lines: list[str],
                     index: list[tuple[int, str, str | None]]) -> bool:
        file = {"res_type": type_, "part": part, "count": len(lines), "content": "\n".join(lines) + "\n",
                "lines": orjson.dumps(index).decode()}
        return await sql.write_file(self.store, job.id, self.runner_id, self._lease(), progress, file)


class ExportFailed(FhirError):
    """A job that failed: its status request answers 500 (export.html#response---error-status)."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "exception"


async def work_once(export: BulkExport) -> bool:
    """One round of export work (``BulkExport.work_once``): for ``patientkontrakt worker``."""
    return await export.work_once()


async def run_forever(export: BulkExport, idle: float) -> None:
    """Keep doing export work; ``idle`` seconds between looks when there was none. An outage or
    a bug is logged (by type only) and tried again later."""
    while True:
        try:
            busy = await export.work_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("export runner: %s", describe(exc))
            busy = False
        if not busy:
            await asyncio.sleep(idle)
