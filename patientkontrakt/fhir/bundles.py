"""Batch and transaction Bundles (R4 http.html#transaction).

A *transaction* runs in one database transaction: entries are processed in the order the
specification gives (DELETE, POST, PUT and PATCH, GET; a PATCH becomes the PUT of its result),
``urn:uuid:`` full URLs get server ids before any write so that entries can reference each
other, conditional creates and conditional references resolve inside the transaction,
references are checked once every entry is written, and any failing entry rolls everything
back. A *batch* runs each entry on its own.
Each write is told what the whole transaction writes (``WriteContext.transaction``), so a rule
can accept a Provenance entry as the reason for a change; warnings about an entry's write go in
its ``response.outcome``.

An entry's parsing and what it needs are ``bundle_entries.py``; what stays here (a little over
400 lines) is the two processings, which share the entries' writes and answers.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from patientkontrakt.fhir.access import Access, access_of
from patientkontrakt.fhir.bundle_entries import (
    ORDER,
    Entry,
    EntryResponse,
    entry_error,
    interaction_of,
    needs_of,
    parse_entry,
    parse_numbered_entry,
)
from patientkontrakt.fhir.dates import format_instant
from patientkontrakt.fhir.errors import (
    BadRequest,
    FhirError,
    HiddenResource,
    NotFound,
    operation_outcome,
)
from patientkontrakt.fhir.hooks import WriteContext
from patientkontrakt.fhir.indexing import reference_elements
from patientkontrakt.fhir.interactions import Exchange, Interaction
from patientkontrakt.fhir.limits import ContentLimitExceeded, exceeded
from patientkontrakt.fhir.offload import COPY, RULES, VALIDATE, run_cpu, weight_of
from patientkontrakt.fhir.patch import patch_in, patched_resource, valid_patched
from patientkontrakt.fhir.rendering import render_bundle
from patientkontrakt.fhir.results import Result, status_text
from patientkontrakt.fhir.search.engine import searchset
from patientkontrakt.fhir.writes import WriteOutcome, new_id, not_writable
from patientkontrakt.storage.repository import StoredResource, Unit

if TYPE_CHECKING:
    from patientkontrakt.fhir.requests import Preferences
    from patientkontrakt.fhir.service import FhirService

_CONDITIONAL = re.compile(r"^[A-Z][A-Za-z]+\?.")


class BundleProcessor:
    def __init__(self, service: FhirService) -> None:
        self.service = service

    async def process(self, access: Access, body: dict[str, Any], prefer: Preferences) -> Result:
        if body.get("resourceType") != "Bundle":
            raise BadRequest("POST to the base needs a Bundle", expression=("resourceType",),
                             details_sv="Innehållet ska vara en Bundle.")
        kind = body.get("type")
        if kind not in ("batch", "transaction"):
            raise BadRequest(f"Bundle.type must be batch or transaction, not {kind!r}", expression=("Bundle.type",),
                             details_sv="Bundle.type ska vara batch eller transaction.")
        raw_entries = body.get("entry", [])
        if not isinstance(raw_entries, list):
            raise BadRequest("Bundle.entry must be an array", expression=("Bundle.entry",),
                             details_sv="Bundle.entry ska vara en lista.")
        if len(raw_entries) > (limit := self.service.limits.bundle_entries):
            raise exceeded("bundle_entries", limit, f"The Bundle has {len(raw_entries)} entries",
                           "Bundlen har för många poster", expression=("Bundle.entry",), error=ContentLimitExceeded)
        if kind == "transaction":
            base, check_type = self.service.base, self.service.check_type
            depth = self.service.limits.json_depth
            entries = [await run_cpu(weight_of(e) * COPY, parse_numbered_entry, i, e, base, check_type, depth)
                       for i, e in enumerate(raw_entries)]
            interaction = Interaction("transaction", None, f"transaction of {len(entries)} entries")
            async with self.service.pipeline.run(access, interaction) as exchange:
                for index, entry in enumerate(entries):
                    try:
                        for type_, needed in needs_of(entry):
                            exchange.require(type_, needed)
                    except FhirError as error:
                        raise entry_error(index, error) from None
                responses = await self._transaction(exchange, entries, prefer)
        else:
            responses = await self._batch(access, raw_entries, prefer)
        return Result(200, self._render(f"{kind}-response", responses))

    # -- transaction -----------------------------------------------------------------------

    async def _transaction(self, exchange: Exchange, entries: list[Entry], prefer: Preferences) -> list[EntryResponse]:
        access = exchange.access
        for i, entry in enumerate(entries):
            entry.index = i
        self._check_duplicates(entries)
        for entry in entries:
            if entry.resource is not None:
                try:
                    await run_cpu(weight_of(entry.resource) * VALIDATE, self.service.check_structure, entry.type,
                                  entry.resource)
                    if entry.method == "PUT" and entry.id is not None and entry.resource.get("id") != entry.id:
                        raise BadRequest("resource.id must equal the id in request.url",
                                         expression=(f"{entry.type}.id",),
                                         details_sv="Id i resursen ska vara samma som i adressen.")
                except FhirError as error:
                    raise entry_error(entry.index, error) from None
        responses: dict[int, EntryResponse] = {}
        ordered = sorted(entries, key=lambda e: (ORDER[e.method], e.index))
        async with self.service.store.writing(access) as unit:
            ids: dict[str, str] = {}
            written: list[dict[str, Any]] = []
            claimed: dict[tuple[str, str], int] = {}
            deleted: list[tuple[Entry, StoredResource]] = []
            for entry in ordered:
                try:
                    if entry.method == "DELETE":
                        responses[entry.index] = await self._delete(unit, entry, deleted)
                    elif entry.method == "PATCH":
                        await self._patched(unit, entry)
                    elif entry.method in ("POST", "PUT"):
                        await self._assign(unit, entry, ids)
                    if entry.method in ("DELETE", "PUT"):
                        self._claim(claimed, entry)
                except FhirError as error:
                    raise entry_error(entry.index, error) from None
            for entry in ordered:
                if entry.resource is not None:
                    try:
                        await self._resolve_references(unit, entry, ids)
                        entry.resource = await run_cpu(weight_of(entry.resource) * RULES, self.service.apply_rules,
                                                       entry.resource)
                    except FhirError as error:
                        raise entry_error(entry.index, error) from None
            await self._check_before_writing(unit, ordered)
            context = WriteContext(transaction=tuple({**e.resource, "id": e.id} for e in ordered
                                                     if e.resource is not None and e.version != "existing"))
            for entry in ordered:
                try:
                    if entry.method in ("POST", "PUT"):
                        response, resource = await self._write(unit, entry, prefer, context)
                        responses[entry.index] = response
                        if resource is not None:
                            written.append(resource)
                    elif entry.method in ("GET", "HEAD"):
                        responses[entry.index] = await self._get(unit, entry)
                except FhirError as error:
                    raise entry_error(entry.index, error) from None
            for resource in written:
                try:
                    await self.service.writer.hooks.verify(unit, resource, self.service.writer)
                except FhirError as error:
                    index = next(e.index for e in entries if e.resource is resource)
                    raise entry_error(index, error) from None
            for entry, stored in deleted:
                try:
                    await self.service.writer.check_referrers(unit, stored.type, stored.id, stored.pk)
                except FhirError as error:
                    raise entry_error(entry.index, error) from None
            await exchange.written(unit)
        return [responses[i] for i in range(len(entries))]

    async def _check_before_writing(self, unit: Unit, entries: list[Entry]) -> None:
        """Every check that depends on what the caller may see, run before any entry is written
        (only the deletions have run), so that it answers for what the caller could see before the
        transaction, as each entry alone would be answered: an entry's write could otherwise make
        another entry's target visible (a new agreement naming another unit's CareTeam makes the
        team visible to its author, and a PUT of that team would then pass).

        An entry may change only what the caller can see now (404 otherwise, as alone), and refer
        only to what the caller can see now or to what the transaction itself creates (422 as for a
        missing resource, as alone). The rules across resources (``WriteHooks.verify``) run once
        every entry is written, since entries may depend on each other in any order.
        """
        writer = self.service.writer
        created: set[tuple[str, str]] = set()
        for entry in entries:
            if entry.method not in ("POST", "PUT") or entry.version == "existing":
                continue
            assert entry.id is not None
            if entry.method == "PUT":
                try:
                    existing = await unit.get(entry.type, entry.id, lock=True)
                    if existing is not None and not await writer.may_see(unit, existing):
                        raise not_writable(entry.type, entry.id, existing)
                    if existing is None and entry.version != "new" and not writer.client_ids(unit, entry.type):
                        raise not_writable(entry.type, entry.id, None)
                except FhirError as error:
                    raise entry_error(entry.index, error) from None
                if existing is not None and not existing.deleted:
                    continue
            created.add((entry.type, entry.id))
        # Every entry's references looked up at once; then each entry answered in order, as alone.
        references: list[tuple[Entry, dict[tuple[str, str], str] | FhirError]] = []
        for entry in entries:
            if entry.resource is not None and entry.version != "existing":
                try:
                    references.append((entry, writer.references_wanted({**entry.resource, "id": entry.id}, created)))
                except FhirError as error:
                    references.append((entry, error))
        keys = {key for _, wanted in references if not isinstance(wanted, FhirError) for key in wanted}
        found = await writer.found_references(unit, keys) if keys else set()
        for entry, wanted in references:
            try:
                if isinstance(wanted, FhirError):
                    raise wanted
                writer.require_found(wanted, found)
            except FhirError as error:
                raise entry_error(entry.index, error) from None

    @staticmethod
    def _claim(claimed: dict[tuple[str, str], int], entry: Entry) -> None:
        """R4 http.html#trules: identities, including those conditional URLs resolve to, may not overlap."""
        assert entry.id is not None
        first = claimed.setdefault((entry.type, entry.id), entry.index)
        if first != entry.index:
            raise BadRequest(f"{entry.type}/{entry.id} is changed by entry {first} too; a transaction may "
                             "change a resource only once", details_sv="Samma resurs förekommer två gånger.")

    def _check_duplicates(self, entries: list[Entry]) -> None:
        seen: dict[tuple[str, str], int] = {}
        for entry in entries:
            if entry.method in ("PUT", "PATCH", "DELETE") and entry.id is not None:
                key = (entry.type, entry.id)
                if key in seen:
                    raise entry_error(entry.index, BadRequest(
                        f"{entry.type}/{entry.id} appears in entry {seen[key]} too; a transaction may "
                        "change a resource only once", details_sv="Samma resurs förekommer två gånger."))
                seen[key] = entry.index
        full_urls: dict[str, int] = {}
        for entry in entries:
            if entry.full_url and entry.resource is not None:
                if entry.full_url in full_urls:
                    raise entry_error(entry.index, BadRequest(
                        f"fullUrl {entry.full_url} is used by entry {full_urls[entry.full_url]} too",
                        details_sv="Samma fullUrl förekommer två gånger."))
                full_urls[entry.full_url] = entry.index

    async def _patched(self, unit: Unit, entry: Entry) -> None:
        """A PATCH entry becomes the PUT of its result, before any entry is written (only the
        deletions have run): its target is found and checked as the caller could see it before
        the transaction, and from here on it is written, checked and answered as a PUT is."""
        assert entry.patch is not None
        resource = await patched_resource(self.service, unit, entry.type, entry.id, entry.query, entry.patch,
                                          if_match=entry.if_match)
        entry.resource = await run_cpu(weight_of(resource) * VALIDATE, valid_patched, self.service, entry.type,
                                       resource, rules=False)
        entry.id, entry.method = str(resource["id"]), "PUT"

    async def _assign(self, unit: Unit, entry: Entry, ids: dict[str, str]) -> None:
        """Decide the id each POST/PUT will get, so references can be rewritten first."""
        assert entry.resource is not None
        writer = self.service.writer
        if entry.method == "POST":
            found = None
            if entry.if_none_exist:
                found = await writer.find_one(unit, entry.type, entry.if_none_exist, "ifNoneExist")
            entry.id = found.id if found else new_id()
            entry.version = "existing" if found else None
        elif entry.id is None:
            entry.id, created = await writer.conditional_target(unit, entry.type, entry.query or "", entry.resource)
            entry.version = "new" if created else None
        if entry.full_url:
            ids[entry.full_url] = f"{entry.type}/{entry.id}"

    async def _resolve_references(self, unit: Unit, entry: Entry, ids: dict[str, str]) -> None:
        assert entry.resource is not None
        for where, element in reference_elements(entry.resource):
            ref = element["reference"]
            if ref in ids:
                element["reference"] = ids[ref]
            elif ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
                raise NotFound(f"{where}.reference {ref!r} matches no entry's fullUrl",
                               expression=(f"{where}.reference",),
                               details_sv="Referensen matchar ingen post i transaktionen.")
            elif _CONDITIONAL.match(ref):
                target_type, criteria = ref.split("?", 1)
                self.service.check_type(target_type)
                found = await self.service.writer.find_one(unit, target_type, criteria, "Conditional reference")
                if found is None:
                    raise NotFound(f"{where}.reference {ref!r} matches no resource",
                                   expression=(f"{where}.reference",),
                                   details_sv="Den villkorade referensen matchar ingen resurs.")
                element["reference"] = f"{target_type}/{found.id}"

    async def _write(self, unit: Unit, entry: Entry, prefer: Preferences, context: WriteContext
                     ) -> tuple[EntryResponse, dict[str, Any] | None]:
        """Write one entry; ``context`` names what the whole transaction writes (``WriteContext``)."""
        assert entry.resource is not None and entry.id is not None
        writer = self.service.writer
        resource = {**entry.resource, "id": entry.id}
        if entry.method == "POST":
            if entry.version == "existing":
                stored = await unit.get(entry.type, entry.id)
                assert stored is not None
                unit.touched.append(stored)  # returned to the caller: logged as read
                outcome = WriteOutcome(200, stored)
            else:
                outcome = await writer.create(unit, resource, assigned_id=entry.id, check_references=False,
                                              context=context)
        elif entry.version == "new":  # a conditional update that matched nothing
            outcome = await writer.create(unit, resource, assigned_id=entry.id, check_references=False,
                                          context=context)
        else:
            outcome = await writer.update(unit, resource, if_match=entry.if_match, check_references=False,
                                          context=context)
        entry.resource = resource
        return self._from_outcome(outcome, prefer), (None if entry.version == "existing" else resource)

    async def _delete(self, unit: Unit, entry: Entry,
                      deferred: list[tuple[Entry, StoredResource]] | None = None) -> EntryResponse:
        """Delete; with ``deferred``, leave the referrer check to the caller (after every write)."""
        writer = self.service.writer
        check = deferred is None
        if entry.id is None:
            outcome = await writer.conditional_delete(unit, entry.type, entry.query or "", check_referrers=check)
        else:
            outcome = await writer.delete(unit, entry.type, entry.id, if_match=entry.if_match, check_referrers=check)
        entry.id = outcome.resource.id
        if deferred is not None:
            deferred.append((entry, outcome.resource))
        return EntryResponse(204, version_id=outcome.resource.version_id)

    async def _get(self, unit: Unit, entry: Entry) -> EntryResponse:
        service = self.service
        access = access_of(unit)
        if entry.id is None:
            query = service.parser.parse(entry.type, entry.pairs, strict=False)
            service.require_includes(access, query)
            page = await service.search_engine.find(unit, query)
            service.drop_unscoped_includes(access, page)
            unit.touched.extend(page.matches + page.included)
            # The searchset has no URL of its own: its fullUrl is the urn:uuid of its id.
            bundle_id = str(uuid.uuid4())
            return EntryResponse(200, body=searchset(service.base, query, page, service.subsetter,
                                                     bundle_id=bundle_id), full_url=f"urn:uuid:{bundle_id}")
        current = await service.writer.visible_existing(unit, entry.type, entry.id, lock=False)
        if current is None:
            stored = await unit.get(entry.type, entry.id)
            raise HiddenResource(f"{entry.type}/{entry.id} is not known", stored, details_sv="Resursen finns inte.")
        if entry.version is not None:
            found = await unit.get_version(entry.type, entry.id, int(entry.version)) \
                if current is not None and entry.version.isascii() and entry.version.isdigit() \
                and len(entry.version) < 10 and (access.past_versions(entry.type)
                                                 or int(entry.version) == current.version_id) else None
            if found is None or found.body is None:
                raise NotFound(f"{entry.type}/{entry.id} has no version {entry.version}",
                               details_sv="Versionen finns inte.")
            assert current is not None
            unit.touched.append(current)
            if entry.conditions.unchanged(found.version_id, found.last_updated):
                return EntryResponse(304, version_id=found.version_id,
                                     last_modified=format_instant(found.last_updated))
            return EntryResponse(200, body=found.body, version_id=found.version_id,
                                 full_url=f"{service.base}/{entry.type}/{entry.id}")
        if not current.deleted and entry.conditions.unchanged(current.version_id, current.last_updated):
            unit.touched.append(current)  # a read of it, as alone (R4 http.html#cread)
            return EntryResponse(304, version_id=current.version_id, last_modified=format_instant(current.last_updated))
        result = service.read_result(current, entry.type, entry.id)
        assert current is not None
        unit.touched.append(current)
        return EntryResponse(200, body=result.body, version_id=result.version_id,
                             full_url=f"{service.base}/{entry.type}/{entry.id}")

    def _from_outcome(self, outcome: WriteOutcome, prefer: Preferences) -> EntryResponse:
        """An entry's response; the write's warnings go in ``response.outcome`` whatever the
        ``Prefer`` (R4 Bundle.entry.response.outcome: "hints and warnings produced as part of
        processing this entry in a batch or transaction")."""
        result = self.service.write_result(outcome, prefer)
        stored = outcome.resource
        return EntryResponse(
            status=outcome.status,
            body=result.body,
            location=self.service.location(stored) if outcome.status == 201 else None,
            version_id=stored.version_id,
            last_modified=format_instant(stored.last_updated),
            outcome=operation_outcome(list(outcome.issues)) if outcome.issues else None,
            full_url=f"{self.service.base}/{stored.type}/{stored.id}",
        )

    # -- batch -----------------------------------------------------------------------------

    async def _batch(self, access: Access, raw_entries: list[Any], prefer: Preferences) -> list[EntryResponse]:
        responses = []
        for index, raw in enumerate(raw_entries):
            try:
                entry = parse_entry(raw, self.service.base, self.service.check_type, self.service.limits.json_depth)
                entry.index = index
                interaction = Interaction(interaction_of(entry), entry.type, f"batch entry {index}", needs_of(entry))
                async with self.service.pipeline.run(access, interaction) as exchange:
                    responses.append(await self._batch_entry(exchange, entry, prefer))
            except FhirError as error:
                responses.append(EntryResponse(error.status, outcome=error.outcome()))
        return responses

    async def _batch_entry(self, exchange: Exchange, entry: Entry, prefer: Preferences) -> EntryResponse:
        """One entry in a transaction of its own, logged with it (reads: once it has returned)."""
        async with self.service.store.writing(exchange.access) as unit:
            response = await self._batch_entry_in(unit, entry, prefer)
            if entry.method not in ("GET", "HEAD"):
                await exchange.written(unit, response.status)
        if entry.method in ("GET", "HEAD"):
            await exchange.shown(unit.touched)
        return response

    async def _batch_entry_in(self, unit: Unit, entry: Entry, prefer: Preferences) -> EntryResponse:
        service = self.service
        if entry.resource is not None:
            entry.resource = await run_cpu(weight_of(entry.resource) * VALIDATE, service.prepare, entry.type,
                                           entry.resource)
            for _, element in reference_elements(entry.resource):
                if element["reference"].startswith("urn:uuid:"):
                    raise BadRequest("A batch cannot resolve urn:uuid references between entries; use a transaction",
                                     details_sv="Använd en transaktion för referenser mellan poster.")
        if entry.method == "DELETE":
            return await self._delete(unit, entry)
        if entry.method in ("GET", "HEAD"):
            return await self._get(unit, entry)
        if entry.method == "PATCH":
            assert entry.patch is not None
            outcome = await patch_in(service, unit, entry.type, entry.id, entry.query, entry.patch,
                                     if_match=entry.if_match)
            return self._from_outcome(outcome, prefer)
        assert entry.resource is not None
        if entry.method == "POST":
            outcome = await service.writer.create(unit, entry.resource, if_none_exist=entry.if_none_exist)
        elif entry.id is None:
            outcome = await service.writer.conditional_update(unit, entry.type, entry.query or "",
                                                              entry.resource, if_match=entry.if_match)
        else:
            if entry.resource.get("id") != entry.id:
                raise BadRequest("resource.id must equal the id in request.url",
                                 details_sv="Id i resursen ska vara samma som i adressen.")
            outcome = await service.writer.update(unit, entry.resource, if_match=entry.if_match)
        return self._from_outcome(outcome, prefer)

    # -- rendering -------------------------------------------------------------------------

    def _render(self, kind: str, responses: list[EntryResponse]) -> bytes:
        entries: list[tuple[dict[str, Any], str | bytes | None, dict[str, Any]]] = []
        for response in responses:
            status = status_text(response.status)
            out: dict[str, Any] = {"status": status}
            if response.location:
                out["location"] = response.location
            if response.version_id is not None:
                out["etag"] = f'W/"{response.version_id}"'
            if response.last_modified is not None:
                out["lastModified"] = response.last_modified
            if response.outcome is not None:
                out["outcome"] = response.outcome
            # R4 Bundle.entry.fullUrl: SHALL be there whenever the entry has a resource or a location
            before = {"fullUrl": response.full_url} if response.full_url else {}
            entries.append((before, response.body, {"response": out}))
        return render_bundle({"resourceType": "Bundle", "type": kind}, entries)
