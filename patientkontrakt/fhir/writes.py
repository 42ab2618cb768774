"""The write pipeline shared by single interactions and Bundles.

Every write goes through ``Writer`` inside a unit of work (one database transaction): the new
version gets ``meta.versionId``/``meta.lastUpdated``, the canonical JSON is serialised once and
stored in ``resource`` and ``resource_version``, and the search index rows are replaced in the
same transaction. Conditional create/update/delete are built once on top of the primitives
(R4 http.html#ccreate, #cond-update, #cdelete): search with a limit of two under a lock on the
criteria, so two concurrent conditional creates cannot both create.

Its length (over 400 lines) is the one write path every interaction shares (create, update,
delete, their conditional forms, the references each write may name), kept in one class so that
no write can take a path around ``store``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from patientkontrakt.fhir.access import access_of, bound, visible
from patientkontrakt.fhir.dates import format_instant, now_utc
from patientkontrakt.fhir.errors import (
    Conflict,
    HiddenResource,
    InvalidResource,
    Issue,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from patientkontrakt.fhir.hooks import NO_CONTEXT, NoHooks, WriteContext, WriteHooks
from patientkontrakt.fhir.indexing import Indexer, parse_reference, reference_elements
from patientkontrakt.fhir.observers import NoObserver, WriteObserver
from patientkontrakt.fhir.results import parse_etag
from patientkontrakt.storage.repository import StoredResource, Unit

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_CONDITIONAL = re.compile(r"^[A-Z][A-Za-z]+\?")
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^\s?]+$")
_RELATIVE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?$")

# Finds current resources matching search criteria: (unit, type, query pairs, limit).
Matcher = Callable[[Unit, str, list[tuple[str, str]], int], Awaitable[list[StoredResource]]]


@dataclass(frozen=True)
class WriteOutcome:
    """What a write did: ``status`` is the HTTP status of the interaction; ``issues`` the
    warnings about it (``WriteHooks.warnings``)."""

    status: int
    resource: StoredResource
    created: bool = False
    issues: tuple[Issue, ...] = ()


def new_id() -> str:
    return str(uuid.uuid4())


def criteria_pairs(criteria: str) -> list[tuple[str, str]]:
    """Query pairs from ``If-None-Exist`` or a conditional URL's query string."""
    text = criteria.split("?", 1)[1] if "?" in criteria else criteria
    return parse_qsl(text, keep_blank_values=True)


def without_version_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        out["meta"] = meta
    return out


def versioned_body(resource: dict[str, Any], version: int, now: datetime) -> dict[str, Any]:
    """The stored form of ``resource`` as ``version``: type, id, then ``meta`` with the server's
    ``versionId``/``lastUpdated`` (other meta kept), then the other elements in their order.

    Public so that bulk loaders (bench/) store exactly what a write through the API stores.
    """
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    body: dict[str, Any] = {
        "resourceType": resource["resourceType"],
        "id": resource["id"],
        "meta": {"versionId": str(version), "lastUpdated": format_instant(now), **meta},
    }
    body.update((k, v) for k, v in resource.items() if k not in body)
    return body


class Writer:
    def __init__(self, indexer: Indexer, local_base: str, served_types: frozenset[str], matcher: Matcher,
                 hooks: WriteHooks | None = None, compartment: dict[str, tuple[str, ...]] | None = None,
                 observer: WriteObserver | None = None) -> None:
        self._indexer = indexer
        self._base = local_base
        self._types = served_types
        self._match = matcher
        self.hooks: WriteHooks = hooks or NoHooks()
        self._compartment = compartment or {}
        self.observer: WriteObserver = observer or NoObserver()

    # -- primitives ------------------------------------------------------------------------

    async def store(
        self,
        unit: Unit,
        resource: dict[str, Any],
        existing: StoredResource | None,
        method: str,
        *,
        check_references: bool = True,
        context: WriteContext = NO_CONTEXT,
    ) -> StoredResource:
        """Store ``resource`` as the next version after ``existing`` (or as version 1).

        ``check_references=False`` defers ``verify`` to the caller (a transaction verifies every
        entry once all are written).
        """
        type_, id_ = resource["resourceType"], resource["id"]
        resource = await access_of(unit).admit(unit, resource, existing)
        resource = await self.hooks.before_store(unit, resource, existing, context)
        resource = await self.observer.before_store(unit, resource, existing)
        if check_references:
            await self.verify(unit, resource)
            if context.provenance is not None:
                # The X-Provenance is written after the resource it records: its references are
                # checked now, against what the caller could see before this write.
                await self.check_references(unit, {**context.provenance, "resourceType": "Provenance"})
        version = existing.version_id + 1 if existing else 1
        now = await unit.stamp()
        body = versioned_body(resource, version, now)
        text = orjson.dumps(body).decode()
        rows = self._indexer.extract(body, self._base)
        tables = list(rows.tables())  # read twice: a Provenance's patient is its targets'
        patient_id = await self.patient_of(unit, type_, id_, tables)
        if existing is not None:
            # An update keeps the owner: the record stays the creating provider's.
            pk = await unit.store_version(type_, id_, version, now, method, text, tables, patient_id=patient_id,
                                          replacing=existing.pk)
            owner = (existing.owner_unit, existing.owner_provider)
        else:
            new_owner = access_of(unit).owner(type_)
            pk = await unit.store_version(type_, id_, version, now, method, text, tables, patient_id=patient_id,
                                          owner=new_owner)
            owner = new_owner or (None, None)
        stored = StoredResource(pk, type_, id_, version, now, False, text, patient_id, *owner)
        unit.written.append(stored)
        unit.touched.append(stored)
        await self.observer.stored(unit, stored, existing)
        if context.provenance is not None:
            await self._provenance(unit, context.provenance, stored)
        await self.hooks.after_store(unit, stored, existing, context, self)
        return stored

    async def patient_of(self, unit: Unit, type_: str, id_: str, tables: Any) -> str | None:
        """The patient whose compartment the resource is in (R4 CompartmentDefinition-patient):
        a Patient is its own; a Provenance that names no patient is about its targets' patient."""
        patient = patient_from_index(type_, id_, tables, self._compartment)
        if patient is None and type_ == "Provenance":
            targets = [(row["target_type"], row["target_id"]) for name, rows in tables if name == "reference"
                       for row in rows if row.get("param") == "target" and row.get("target_type")
                       and row.get("target_id")]
            patients = await unit.patients_of(targets) if targets else []
            return patients[0] if patients else None
        return patient

    async def verify(self, unit: Unit, resource: dict[str, Any]) -> None:
        """References resolve and the domain rules across resources hold."""
        await self.check_references(unit, resource)
        await self.hooks.verify(unit, resource, self)

    async def _provenance(self, unit: Unit, provenance: dict[str, Any], stored: StoredResource) -> None:
        """R4 http.html#provenance: the ``X-Provenance`` resource, targeting the new version."""
        target = {"reference": f"{stored.type}/{stored.id}/_history/{stored.version_id}"}
        record = {**provenance, "target": [target], "recorded": provenance.get("recorded") or format_instant(now_utc())}
        record.pop("id", None)
        await self.create(unit, record)

    async def check_references(self, unit: Unit, resource: dict[str, Any],
                               created: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset()) -> None:
        """Literal references must be well formed, and local ones must point at live resources the
        caller may see. ``created``: what the caller's transaction is about to create, which its
        entries may name. Called before the write it checks, so that the answer is about what the
        caller could see before it (a write must not make its own targets visible)."""
        wanted = self.references_wanted(resource, created)
        if wanted:
            self.require_found(wanted, await self.found_references(unit, wanted))

    def references_wanted(self, resource: dict[str, Any], created: set[tuple[str, str]] | frozenset[tuple[str, str]]
                          = frozenset()) -> dict[tuple[str, str], str]:
        """The local resources ``resource`` refers to (other than itself and ``created``), each
        with where it is named first; a malformed reference raises ``InvalidResource``."""
        own = (resource["resourceType"], resource.get("id"))
        contained = {c.get("id") for c in resource.get("contained", []) if isinstance(c, dict)}
        wanted: dict[tuple[str, str], str] = {}
        issues: list[Issue] = []
        for where, element in reference_elements(resource):
            ref: str = element["reference"]
            at = f"{where}.reference"
            if ref.startswith("#"):
                if ref[1:] and ref[1:] not in contained:
                    issues.append(_ref_issue(at, f"{ref!r} names no contained resource",
                                             "Referensen pekar inte på någon inbäddad resurs."))
                continue
            if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
                issues.append(_ref_issue(at, f"{ref!r} is not resolved: urn references are only "
                                             "meaningful between the entries of a transaction Bundle",
                                         "Referensen kan inte lösas upp utanför en transaktion."))
                continue
            if _CONDITIONAL.match(ref):
                issues.append(_ref_issue(at, f"{ref!r} is a conditional reference; those are resolved only "
                                             "inside a transaction Bundle",
                                         "Villkorade referenser löses bara upp i en transaktion."))
                continue
            parsed = parse_reference(ref, self._base)
            if parsed.id is None:
                if not _ABSOLUTE.match(ref):
                    issues.append(_ref_issue(at, f"{ref!r} is not a valid reference; use Type/id",
                                             "Ogiltig referens; ange Typ/id."))
                continue
            if parsed.type is None or not _RELATIVE.match(f"{parsed.type}/{parsed.id}"):
                issues.append(_ref_issue(at, f"{ref!r} is not a valid reference; use Type/id",
                                         "Ogiltig referens; ange Typ/id."))
            elif parsed.type in self._types and (parsed.type, parsed.id) != own \
                    and (parsed.type, parsed.id) not in created:
                wanted.setdefault((parsed.type, parsed.id), at)
        if issues:
            raise InvalidResource(issues[0].diagnostics, issues=issues)
        return wanted

    @staticmethod
    async def found_references(unit: Unit, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``keys`` are live resources the caller may see, locked FOR SHARE until the
        transaction ends: a reference to one they may not see is treated as one to nothing (no
        existence leaks through a write's answer)."""
        keys = set(keys)
        access = access_of(unit)
        return await unit.existing_visible(keys, {t: bound(access.restriction(t)) for t in {t for t, _ in keys}})

    @staticmethod
    def require_found(wanted: dict[tuple[str, str], str], found: set[tuple[str, str]]) -> None:
        """422 naming every reference of ``wanted`` not in ``found``."""
        missing = [(key, at) for key, at in wanted.items() if key not in found]
        if missing:
            (t0, i0), at0 = missing[0]
            raise Unprocessable(
                f"{at0}: {t0}/{i0} does not exist on this server",
                issues=[
                    Issue(
                        code="not-found",
                        diagnostics=f"{at}: {t}/{i} does not exist on this server",
                        expression=(at,),
                        details_sv=f"Den refererade resursen {t}/{i} finns inte.",
                    )
                    for (t, i), at in missing
                ],
            )

    @staticmethod
    async def _visible_keys(unit: Unit, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """The keys the caller may see: a reference to what they may not is treated as one to
        nothing (no existence leaks through a write's answer)."""
        access = access_of(unit)
        if all(access.restriction(t) is None for t, _ in keys):
            return keys
        resources = await unit.get_many(keys)
        return {(r.type, r.id) for r in await visible(unit, resources)}

    @staticmethod
    def client_ids(unit: Unit, type_: str) -> bool:
        """Whether the unit's caller may create ``type_`` resources with ids of their own (update
        as create, R4 http.html#upsert): only where they may see every resource of the type.
        Otherwise an id they cannot see and an unknown one would get different answers (404
        against 201), telling them which ids exist; they create with POST instead."""
        return access_of(unit).restriction(type_) is None

    async def visible_existing(self, unit: Unit, type_: str, id_: str, *, lock: bool) -> StoredResource | None:
        """The current row of Type/id if the caller may see it (or it is deleted and was theirs
        to see before: then the restriction is checked on what is left), else None."""
        existing = await unit.get(type_, id_, lock=lock)
        return existing if existing is not None and await self.may_see(unit, existing) else None

    @staticmethod
    async def may_see(unit: Unit, existing: StoredResource) -> bool:
        """Whether the caller may see ``existing``, a row this unit has just read (and locked):
        the restriction is checked by a statement of its own, after the lock is held."""
        restriction = access_of(unit).restriction(existing.type)
        return restriction is None or bool(await unit.visible_pks([existing.pk], bound(restriction)))

    # -- interactions ----------------------------------------------------------------------

    async def create(
        self,
        unit: Unit,
        resource: dict[str, Any],
        *,
        if_none_exist: str | None = None,
        assigned_id: str | None = None,
        check_references: bool = True,
        context: WriteContext = NO_CONTEXT,
    ) -> WriteOutcome:
        """R4 http.html#create, with ``If-None-Exist`` (#ccreate)."""
        type_ = resource["resourceType"]
        if if_none_exist:
            found = await self.find_one(unit, type_, if_none_exist, "If-None-Exist")
            if found is not None:
                unit.touched.append(found)  # returned to the caller: a read of it, for the access log
                return WriteOutcome(200, found)
        resource = {**resource, "id": assigned_id or new_id()}
        stored = await self.store(unit, resource, None, "POST", check_references=check_references, context=context)
        return WriteOutcome(201, stored, created=True, issues=tuple(self.hooks.warnings(resource, None)))

    async def find_one(self, unit: Unit, type_: str, criteria: str, what: str) -> StoredResource | None:
        """The single match of conditional criteria, None for none; several is 412."""
        pairs = criteria_pairs(criteria)
        if not pairs:
            raise PreconditionFailed(f"{what} has no search criteria", details_sv="Villkoret saknar sökkriterier.")
        await unit.lock_key(f"{type_}?{sorted(pairs)}")
        matches = await self._match(unit, type_, pairs, 2)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"{what} {criteria!r} matches more than one {type_}",
                details_sv="Villkoret matchar mer än en resurs.",
            )
        return matches[0] if matches else None

    async def update(
        self,
        unit: Unit,
        resource: dict[str, Any],
        *,
        if_match: str | None = None,
        check_references: bool = True,
        context: WriteContext = NO_CONTEXT,
    ) -> WriteOutcome:
        """R4 http.html#update: update, or create with the client's id; ``If-Match`` → 412."""
        type_, id_ = resource["resourceType"], resource["id"]
        existing = await unit.get(type_, id_, lock=True)
        if existing is None:
            await unit.lock_key(f"{type_}/{id_}")
            existing = await unit.get(type_, id_, lock=True)
        if existing is not None and not await self.may_see(unit, existing):
            # Another care unit's resource (or a deleted one no longer visible): as if unknown,
            # but it cannot be created anew under the same id.
            raise not_writable(type_, id_, existing)
        if existing is None and not self.client_ids(unit, type_):
            raise not_writable(type_, id_, None)
        if if_match is not None and (
            existing is None or existing.deleted or parse_etag(if_match) != str(existing.version_id)
        ):
            current = "none" if existing is None or existing.deleted else f'W/"{existing.version_id}"'
            raise PreconditionFailed(
                f"If-Match {if_match} does not match the current version of {type_}/{id_} ({current})",
                details_sv="Resursen har ändrats av någon annan sedan du läste den. Läs in den igen.",
            )
        if existing is None or existing.deleted:
            access_of(unit).require(type_, "create")  # an update that creates needs both permissions
        if existing is not None and not existing.deleted and _same_content(existing.body, resource):
            unit.touched.append(existing)
            return WriteOutcome(200, existing)
        stored = await self.store(unit, resource, existing, "PUT", check_references=check_references,
                                  context=context)
        created = existing is None or existing.deleted
        return WriteOutcome(201 if created else 200, stored, created=created,
                            issues=tuple(self.hooks.warnings(resource, existing)))

    async def conditional_update(
        self, unit: Unit, type_: str, criteria: str, resource: dict[str, Any], *, if_match: str | None = None,
        context: WriteContext = NO_CONTEXT,
    ) -> WriteOutcome:
        """R4 http.html#cond-update."""
        id_, new = await self.conditional_target(unit, type_, criteria, resource)
        if new:
            return await self.create(unit, resource, assigned_id=id_, context=context)
        return await self.update(unit, {**resource, "id": id_}, if_match=if_match, context=context)

    async def conditional_target(self, unit: Unit, type_: str, criteria: str, resource: dict[str, Any]
                                 ) -> tuple[str, bool]:
        """The id a conditional update writes, and whether it creates a new resource (R4
        http.html#cond-update): the single match; else the body's id (update as create, where the
        caller may choose ids: ``client_ids``), or a new server id when the body has none."""
        found = await self.find_one(unit, type_, criteria, "Conditional update")
        if found is not None:
            if resource.get("id", found.id) != found.id:
                raise InvalidResource(
                    f"The body's id {resource['id']!r} differs from the matched {type_}/{found.id}",
                    expression=(f"{type_}.id",),
                    details_sv="Id i innehållet stämmer inte med den matchade resursen.",
                )
            return found.id, False
        if "id" not in resource:
            return new_id(), True
        id_ = str(resource["id"])
        if not ID_PATTERN.match(id_):
            raise InvalidResource("id is not a valid FHIR id", expression=(f"{type_}.id",))
        existing = await unit.get(type_, id_, lock=True)
        if existing is not None and not await self.may_see(unit, existing):
            raise not_writable(type_, id_, existing)
        if existing is not None and not existing.deleted:
            raise Conflict(f"No {type_} matches {criteria!r}, but the body's id names the existing "
                           f"{type_}/{id_}", expression=(f"{type_}.id",),
                           details_sv="Villkoret matchar ingen resurs, men id i innehållet finns redan.")
        if existing is not None:
            return id_, False  # a deleted resource of the caller's, written anew
        if not self.client_ids(unit, type_):
            # update as create, which this caller may not do (else a hidden id and an unknown one
            # would get different answers)
            raise not_writable(type_, id_, None)
        return id_, True

    async def delete(self, unit: Unit, type_: str, id_: str, *, if_match: str | None = None,
                     check_referrers: bool = True) -> WriteOutcome:
        """R4 http.html#delete: a new, deleted version; reads then answer 410.

        A transaction passes ``check_referrers=False`` and calls ``check_referrers`` once every
        entry is written, so that its outcome does not depend on the order of its entries.
        """
        existing = await unit.get(type_, id_, lock=True)
        if existing is None:
            raise HiddenResource(f"{type_}/{id_} is not known", None, details_sv="Resursen finns inte.")
        if not await self.may_see(unit, existing):
            raise HiddenResource(f"{type_}/{id_} is not known", existing, details_sv="Resursen finns inte.")
        if if_match is not None and parse_etag(if_match) != str(existing.version_id):
            raise PreconditionFailed(f"If-Match {if_match} does not match {type_}/{id_}",
                                     details_sv="Resursen har ändrats sedan du läste den.")
        if existing.deleted:
            return WriteOutcome(204, existing)
        await access_of(unit).admit_delete(unit, existing)
        if check_referrers:
            await self.check_referrers(unit, type_, id_, existing.pk)
        version, now = existing.version_id + 1, await unit.stamp()
        await unit.update(existing.pk, version, now, existing.body, deleted=True)
        await unit.add_version(type_, id_, version, now, "DELETE", None)
        # The index rows stay: searches skip deleted resources anyway, and the access rules still
        # see whose the resource was, so its owners get 410 and everyone else 404.
        gone = StoredResource(existing.pk, type_, id_, version, now, True, existing.body, existing.patient_id,
                              existing.owner_unit, existing.owner_provider)
        unit.touched.append(gone)
        await self.observer.deleted(unit, gone)
        return WriteOutcome(204, gone)

    async def check_referrers(self, unit: Unit, type_: str, id_: str, pk: int) -> None:
        """A resource that current resources still reference cannot be deleted (409)."""
        referrers = await unit.referrers(type_, id_, exclude_pk=pk)
        if referrers:
            shown = await self._visible_keys(unit, set(referrers))
            names = ", ".join(f"{t}/{i}" if (t, i) in shown else "a resource you cannot see" for t, i in referrers)
            raise Conflict(
                f"{type_}/{id_} is referenced by {names}; change or delete those first",
                details_sv=f"Resursen används av {names} och kan inte tas bort.",
            )

    async def conditional_delete(self, unit: Unit, type_: str, criteria: str, *,
                                 check_referrers: bool = True) -> WriteOutcome:
        """R4 http.html#cdelete (single match); no match is 404, several 412."""
        found = await self.find_one(unit, type_, criteria, "Conditional delete")
        if found is None:
            raise NotFound(f"No {type_} matches {criteria!r}", details_sv="Ingen resurs matchar villkoret.")
        return await self.delete(unit, type_, found.id, check_referrers=check_referrers)


def not_writable(type_: str, id_: str, existing: StoredResource | None) -> HiddenResource:
    """The one answer to a write of Type/id that the caller may not see (``existing``) or that does
    not exist and may not be created under that id: the two must not be told apart."""
    return HiddenResource(
        f"{type_}/{id_} is not known to you, and new {type_} resources get their id from the server "
        "(create them with POST): it cannot be written", existing,
        details_sv="Resursen finns inte eller får inte ändras av dig.")


def patient_from_index(type_: str, id_: str, tables: Any, compartment: dict[str, tuple[str, ...]]) -> str | None:
    """The patient a resource's own index rows name through the compartment's parameters, in
    the CompartmentDefinition's order (a CareTeam's ``patient`` before its ``participant``s); a
    Patient is its own. Public so that bulk loaders (bench/) store what a write stores."""
    if type_ == "Patient":
        return id_
    rows = [row for name, found in tables if name == "reference" for row in found
            if row.get("target_type") == "Patient" and row.get("target_id")]
    for param in compartment.get(type_, ()):
        for row in rows:
            if row.get("param") == param:
                return str(row["target_id"])
    return None


def _same_content(stored_body: str, resource: dict[str, Any]) -> bool:
    return without_version_meta(orjson.loads(stored_body)) == without_version_meta(resource)


def _ref_issue(at: str, message: str, sv: str) -> Issue:
    return Issue(code="invalid", diagnostics=f"{at}: {message}", expression=(at,), details_sv=sv)
