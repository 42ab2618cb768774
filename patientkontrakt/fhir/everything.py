"""``Patient/{id}/$everything`` (R4 patient-operation-everything.html): the Patient, every resource
of its compartment that the caller may see, and the directory resources those name
(PractitionerRole, Practitioner, Organization), as a searchset Bundle paged to the end.

What the caller may see is decided as for a search: each type's access rule is a condition in
the query (care unit, samtycke, spärr; a patient's own compartment), applied before paging and
counting, so a hidden resource is on no page and in no ``total``. A patient the caller may not
see is answered 404, like one that does not exist. Types the caller's scopes do not cover are
left out; naming one in ``_type`` is 403, as an ``_include`` of it would be.

Parameters: ``_since`` (an instant: only what changed at or after it), ``_type`` (comma-separated
types), ``_count`` (the page size). ``start`` and ``end`` (the care dates) are checked and
ignored: the whole record is returned, and the Bundle says so in an OperationOutcome entry.
Paging is by the stable key of ``storage/compartment.py`` (``_after``/``_before`` in the paging
links: opaque, made by the server).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from patientkontrakt.fhir.access import Access, blocked_notices, bound
from patientkontrakt.fhir.dates import DateFormatError, format_instant, now_utc, parse_range
from patientkontrakt.fhir.errors import BadRequest, FhirError, Gone, HiddenResource, Issue, operation_outcome
from patientkontrakt.fhir.interactions import Exchange
from patientkontrakt.fhir.paging import page_number
from patientkontrakt.fhir.rendering import dumps, render_bundle
from patientkontrakt.fhir.results import Result
from patientkontrakt.storage import compartment
from patientkontrakt.storage.repository import StoredResource, Unit

if TYPE_CHECKING:
    from patientkontrakt.fhir.service import FhirService

NAME = "$everything"
DIRECTORY = ("Organization", "Practitioner", "PractitionerRole")
# what a named PractitionerRole brings along: its Practitioner and Organization
_ROLE_PARAMS = [("PractitionerRole", "practitioner"), ("PractitionerRole", "organization")]
_CURSORS = ("_after", "_before")
_IGNORED = ("start", "end")
_GENERAL = frozenset({"_format", "_pretty"})  # R4 http.html#parameters: not the operation's


@dataclass
class Arguments:
    """The operation's parameters, checked."""

    since: datetime | None = None
    types: tuple[str, ...] | None = None  # None: every type
    count: int = 0
    after: int | None = None
    before: int | None = None
    kept: list[tuple[str, str]] = field(default_factory=list)  # repeated in the paging links
    warnings: list[Issue] = field(default_factory=list)


def parameters_of(body: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The parameters of a POST: a ``Parameters`` resource (R4 operations.html#request), each
    ``parameter`` a name and one primitive ``value[x]``."""
    if body is None:
        return []
    if body.get("resourceType") != "Parameters":
        raise BadRequest("The body of POST $everything must be a Parameters resource", expression=("resourceType",),
                         details_sv="Innehållet ska vara en Parameters-resurs.")
    pairs = []
    for index, parameter in enumerate(body.get("parameter") or []):
        values = [v for k, v in parameter.items() if k.startswith("value")] if isinstance(parameter, dict) else []
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if not isinstance(name, str) or len(values) != 1 or not isinstance(values[0], str | int) \
                or isinstance(values[0], bool):
            raise BadRequest("Each parameter of $everything has a name and one primitive value[x]",
                             expression=(f"Parameters.parameter[{index}]",),
                             details_sv="Varje parameter ska ha ett namn och ett värde.")
        pairs.append((name, str(values[0])))
    return pairs


def arguments(pairs: list[tuple[str, str]], types: frozenset[str], default_count: int, max_count: int,
              *, strict: bool) -> Arguments:
    args = Arguments(count=default_count)
    for key, value in pairs:
        if key == "_since":
            try:
                args.since = parse_range(value)[0]
            except (DateFormatError, ValueError):
                raise BadRequest(f"_since must be a FHIR instant, not {value!r}", expression=("_since",),
                                 details_sv="Ogiltig tidpunkt i _since.") from None
            args.kept.append((key, value))
        elif key == "_type":
            named = [t.strip() for t in value.split(",") if t.strip()]
            unknown = [t for t in named if t not in types]
            if unknown or not named:
                raise BadRequest(f"_type names {', '.join(unknown) or 'no type'}: it takes a comma-separated list "
                                 f"of {', '.join(sorted(types))}", expression=("_type",),
                                 details_sv="_type anger en resurstyp som inte finns här.")
            args.types = tuple(dict.fromkeys([*(args.types or ()), *named]))
            args.kept.append((key, value))
        elif key == "_count":
            args.count = page_number(key, value, max_count)
        elif key in _CURSORS:
            setattr(args, key[1:], page_number(key, value))
        elif key in _IGNORED:
            try:
                parse_range(value)
            except (DateFormatError, ValueError):
                raise BadRequest(f"{key} must be a FHIR date, not {value!r}", expression=(key,),
                                 details_sv=f"Ogiltigt datum i {key}.") from None
            args.kept.append((key, value))
            args.warnings.append(Issue(
                code="not-supported", severity="warning", expression=(key,),
                diagnostics=f"{key} is not supported by this server and was ignored: every date is returned",
                details_sv=f"{key} stöds inte och har inte använts: allt returneras."))
        elif key not in _GENERAL:
            if strict:
                raise BadRequest(f"$everything has no parameter {key!r} (it takes _since, _type, _count, start, "
                                 "end)", expression=(key,), details_sv=f"Parametern {key} finns inte.")
            args.warnings.append(Issue(code="not-supported", severity="warning", expression=(key,),
                                       diagnostics=f"Unknown parameter {key!r} was ignored",
                                       details_sv=f"Okänd parameter {key} har inte använts."))
    if args.after is not None and args.before is not None:
        raise BadRequest("_after and _before cannot both be given", expression=("_before",))
    return args


def _allowed(access: Access, type_: str) -> bool:
    try:
        access.require(type_, "read")
    except FhirError:
        return False
    return True


async def everything(service: FhirService, exchange: Exchange, patient_id: str, args: Arguments) -> Result:
    """One page of the patient's everything (see the module's docstring)."""
    access = exchange.access
    compartment_types = {t for t in service.types if service.defs.patient_compartment.get(t)} | {"Patient"}
    if args.types is not None:
        for type_ in args.types:
            exchange.require(type_, "read")  # named: 403 without the scope
    readable = sorted(t for t in service.types if _allowed(access, t))
    wanted = set(args.types if args.types is not None else readable)
    seen = {t: bound(access.restriction(t)) for t in readable}
    path = f"Patient/{patient_id}/{NAME}"
    async with service.store.replica_reading(access) as unit:
        patient = await unit.get("Patient", patient_id)
        visible = patient is not None and await _sees(unit, patient.pk, seen["Patient"])
    # absent and hidden alike; the pipeline logs the refusal (with the connection back in the pool)
    if patient is None or not visible:
        raise HiddenResource(f"Patient/{patient_id} is not known", patient, details_sv="Patienten finns inte.")
    if patient.deleted:  # as a read answers it, and logs it
        await exchange.shown([patient], status=410)
        raise Gone(f"Patient/{patient_id} was deleted", details_sv="Patienten har tagits bort.")
    async with service.store.replica_reading(access) as unit:
        own = {t: c for t, c in seen.items() if t in compartment_types}
        directory = {t: c for t, c in seen.items() if t in DIRECTORY and t in wanted}
        named: list[tuple[str, str]] = []
        if directory:
            named = await compartment.named_by(unit, patient_id, own, DIRECTORY)
            roles = [key for key in named if key[0] == "PractitionerRole"]
            if roles:
                role_pks = [r.pk for r in await unit.get_many(roles)]
                named += await unit.references_from(role_pks, _ROLE_PARAMS)
        where = compartment.everything(patient_id, {t: c for t, c in own.items() if t in wanted}, directory,
                                       named, args.since)
        total = await compartment.count(unit, where)
        rows: list[StoredResource] = []
        has_previous = has_next = False
        if args.count > 0:
            rows = await compartment.page(unit, where, args.count, after=args.after, before=args.before)
            if args.before is not None:
                has_previous = len(rows) > args.count
                rows = rows[-args.count:] if has_previous else rows
                has_next = await compartment.any_beyond(unit, where, above=args.before)
            else:
                has_next = len(rows) > args.count
                rows = rows[: args.count]
                has_previous = args.after is not None and await compartment.any_beyond(unit, where, below=args.after)
        # the first page tells staff that the record holds what they are not shown (a spärr, no
        # samtycke), never what (``Access.blocked``)
        first = args.count > 0 and args.after is None and args.before is None  # _count=0: the total alone
        notices = await blocked_notices(unit, patient_id) if first else []
    body = _bundle(service.base, path, args, rows, total, has_previous, has_next, notices)
    # the access log keeps one entry per patient among what is shown: a page of directory
    # resources only (or of none) is still an access to this patient's record
    shown = rows if any(r.patient_id == patient_id for r in rows) else [patient, *rows]
    query = urlencode([*args.kept, ("_count", str(args.count)),
                       *((k, str(v)) for k in _CURSORS if (v := getattr(args, k[1:])) is not None)])
    await exchange.shown(shown, request=f"{path}?{query}")
    return Result(200, body)


async def _sees(unit: Unit, pk: int, condition: Any) -> bool:
    return condition is None or bool(await unit.visible_pks([pk], condition))


def _bundle(base: str, path: str, args: Arguments, rows: list[StoredResource], total: int, has_previous: bool,
            has_next: bool, notices: list[Issue]) -> bytes:
    url = f"{base}/{path}"

    def link(*cursor: tuple[str, str]) -> str:
        return f"{url}?{urlencode([*args.kept, ('_count', str(args.count)), *cursor])}"

    here = [(k, str(v)) for k in _CURSORS if (v := getattr(args, k[1:])) is not None]
    links = [{"relation": "self", "url": link(*here)}]
    if args.count > 0:
        links.append({"relation": "first", "url": link()})
        # on an empty page (what it held was deleted meanwhile), from where the page was asked
        if has_previous:
            first = rows[0].pk if rows else (args.after or 0) + 1
            links.append({"relation": "previous", "url": link(("_before", str(first)))})
        if has_next:
            last = rows[-1].pk if rows else (args.before or 1) - 1
            links.append({"relation": "next", "url": link(("_after", str(last)))})
    head = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"lastUpdated": format_instant(now_utc())},
            "type": "searchset", "total": total, "link": links}
    entries: list[tuple[dict[str, Any], str | bytes | None, dict[str, Any]]] = [
        ({"fullUrl": f"{base}/{r.type}/{r.id}"}, r.body, {"search": {"mode": "match"}}) for r in rows]
    if args.warnings or notices:
        entries.append(({}, dumps(operation_outcome([*args.warnings, *notices])), {"search": {"mode": "outcome"}}))
    return render_bundle(head, entries)
