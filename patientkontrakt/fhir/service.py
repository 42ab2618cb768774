"""The FHIR interactions (R4 http.html), framework-free.

``FhirService`` wires the definitions, validator, indexer, search and write pipeline to a
``Store``. Its methods are the interactions the HTTP layer calls; each returns a ``Result``
(status, body, FHIR headers) or raises a ``FhirError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from patientkontrakt.config import Settings
from patientkontrakt.fhir.access import Access, AccessLog, NoLog, bound
from patientkontrakt.fhir.conditional import NO_CONDITIONS, ReadConditions
from patientkontrakt.fhir.conformance import CONFORMANCE_TYPES, read_only
from patientkontrakt.fhir.definitions import Definitions, load_definitions
from patientkontrakt.fhir.errors import (
    BadRequest,
    FhirError,
    Forbidden,
    Gone,
    HiddenResource,
    Issue,
    NotFound,
    operation_outcome,
)
from patientkontrakt.fhir.everything import arguments, everything
from patientkontrakt.fhir.history import history_args, history_bundle
from patientkontrakt.fhir.hooks import NO_CONTEXT, NoHooks, WriteContext, WriteHooks
from patientkontrakt.fhir.indexing import Indexer
from patientkontrakt.fhir.interactions import Exchange, Interaction, Pipeline, Stage
from patientkontrakt.fhir.limits import Limits, exceeded
from patientkontrakt.fhir.offload import RENDER, SUBSET, VALIDATE, run_cpu, weight_of
from patientkontrakt.fhir.patch import patch
from patientkontrakt.fhir.rendering import Subsetter, dumps
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.fhir.resource_types import RESOURCE_TYPES
from patientkontrakt.fhir.results import Result
from patientkontrakt.fhir.search.engine import SearchEngine, SearchPage, searchset
from patientkontrakt.fhir.search.params import SearchParser, SearchQuery
from patientkontrakt.fhir.validate_operation import validate
from patientkontrakt.fhir.validation import Validator
from patientkontrakt.fhir.writes import ID_PATTERN, WriteOutcome, Writer
from patientkontrakt.storage.repository import Store, StoredResource, StoredVersion, Unit
from patientkontrakt.storage.search_sql import QueryBuilder


class FhirService:
    def __init__(self, settings: Settings, store: Store, defs: Definitions | None = None,
                 hooks: WriteHooks | None = None, log: AccessLog | None = None,
                 stages: Sequence[Stage] = ()) -> None:
        self.settings = settings
        self.store = store
        self.base = settings.fhir_base
        self.defs = defs or load_definitions(settings.profiles_dir)
        self.types = frozenset(RESOURCE_TYPES)
        self.validator = Validator(self.defs)
        self.indexer = Indexer(self.defs, self.types)
        self.limits: Limits = Limits.from_settings(settings)
        self.parser = SearchParser(self.defs, self.types, settings.default_page_size, settings.max_page_size,
                                   self.limits)
        self.search_engine = SearchEngine(self.defs, QueryBuilder(self.base), self.limits)
        self.subsetter = Subsetter(self.defs)
        self.hooks: WriteHooks = hooks or NoHooks()
        self.writer = Writer(self.indexer, self.base, self.types, self.matches, self.hooks,
                             self.defs.patient_compartment)
        self.log: AccessLog = log or NoLog()
        self.pipeline = Pipeline(self.log, stages)  # what every interaction passes (interactions.py)

    # -- helpers ---------------------------------------------------------------------------

    def check_type(self, type_: str) -> None:
        """``type_`` is one this engine stores; a conformance resource type is served read-only
        elsewhere (conformance.py), so every other interaction on it is 405."""
        if type_ not in self.types:
            if type_ in CONFORMANCE_TYPES:
                raise read_only(type_)
            raise NotFound(f"Unknown resource type {type_!r}", details_sv=f"Resurstypen {type_!r} finns inte här.")

    def check_id(self, type_: str, id_: str) -> None:
        if not ID_PATTERN.match(id_):
            raise NotFound(f"{type_}/{id_} is not known: not a valid FHIR id", details_sv="Resursen finns inte.")

    def prepare(self, type_: str, body: dict[str, Any]) -> dict[str, Any]:
        """Validate a body for a write to ``type_``: FHIR structure, then the domain rules."""
        return self.apply_rules(self.check_structure(type_, body))

    def apply_rules(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The domain's normalisation and profile validation (``WriteHooks.prepare``)."""
        return self.hooks.prepare(resource)

    def check_structure(self, type_: str, body: dict[str, Any]) -> dict[str, Any]:
        """The body is a valid FHIR R4 resource of ``type_``."""
        declared = body.get("resourceType")
        if declared != type_:
            raise BadRequest(
                f"The body is a {declared!r} but the URL is for {type_}",
                expression=("resourceType",),
                details_sv="Resurstypen i innehållet stämmer inte med adressen.",
            )
        self.validator.validate(body)
        return body

    def write_context(self, x_provenance: str | None) -> WriteContext:
        """The context of a write; ``X-Provenance`` must be a valid Provenance without target."""
        if x_provenance is None:
            return NO_CONTEXT
        try:
            provenance = orjson.loads(x_provenance)
        except orjson.JSONDecodeError:
            raise BadRequest("X-Provenance is not valid JSON", expression=("X-Provenance",),
                             details_sv="X-Provenance är inte giltig JSON.") from None
        if not isinstance(provenance, dict) or provenance.get("resourceType") != "Provenance":
            raise BadRequest("X-Provenance must be a Provenance resource", expression=("X-Provenance",),
                             details_sv="X-Provenance ska vara en Provenance-resurs.")
        placeholder = {"target": [{"reference": "Provenance/placeholder"}], "recorded": "2000-01-01T00:00:00Z"}
        self.check_structure("Provenance", {**placeholder, **provenance})
        return WriteContext(provenance=provenance)

    def full_url(self, type_: str, id_: str) -> str:
        return f"{self.base}/{type_}/{id_}"

    def location(self, stored: StoredResource) -> str:
        return f"{self.base}/{stored.type}/{stored.id}/_history/{stored.version_id}"

    def write_result(self, outcome: WriteOutcome, prefer: Preferences) -> Result:
        """The answer to a write; under ``Prefer: return=OperationOutcome`` its body carries the
        write's warnings (R4 http.html#return: "hints and warnings about the operation")."""
        stored = outcome.resource
        body: bytes | None = None
        if outcome.status != 204:
            if prefer.return_ == "representation":
                body = stored.body.encode()
            elif prefer.return_ == "OperationOutcome":
                body = dumps(operation_outcome([Issue(
                    code="informational", severity="information",
                    diagnostics=f"{stored.type}/{stored.id} version {stored.version_id} stored",
                    details_sv="Sparat.",
                ), *outcome.issues]))
        return Result(
            status=outcome.status,
            body=body,
            version_id=stored.version_id,
            last_updated=stored.last_updated,
            location=self.location(stored) if outcome.status in (200, 201) else None,
        )

    async def matches(self, unit: Unit, type_: str, pairs: list[tuple[str, str]], limit: int) -> list[StoredResource]:
        """Current resources matching criteria (strict: unknown parameters are errors)."""
        query = self.parser.parse(type_, pairs, strict=True)
        if not query.criteria:
            raise BadRequest("Conditional criteria must contain at least one search parameter",
                             details_sv="Villkoret saknar sökkriterier.")
        query.count, query.offset, query.includes = limit, 0, []
        page = await self.search_engine.find(unit, query)
        return page.matches

    # -- read ------------------------------------------------------------------------------

    async def read(self, access: Access, type_: str, id_: str, *, summary: str | None = None,
                   elements: tuple[str, ...] = (), conditions: ReadConditions = NO_CONDITIONS) -> Result:
        """R4 http.html#read: the stored JSON as it was written; deleted → 410; unchanged since
        the version the client holds → 304 (#cread), logged as the read it is.

        A resource the caller may not see is answered exactly like one that does not exist.
        """
        self.check_type(type_)
        async with self.pipeline.run(access, Interaction.of("read", type_, f"{type_}/{id_}")) as exchange:
            self.check_id(type_, id_)
            if len(elements) > self.limits.elements:
                raise exceeded("elements", self.limits.elements, f"_elements has {len(elements)} entries",
                               "_elements har för många element", expression=("_elements",))
            stored, visible = await self.store.read_current(type_, id_, access.restriction(type_), replica=True)
            if stored is None or not visible:
                # a resource the caller may not see and an absent one: the same answer, the same entry
                raise HiddenResource(f"{type_}/{id_} is not known", stored, details_sv="Resursen finns inte.")
            if stored.deleted:
                await exchange.shown([stored], status=410)
            if not stored.deleted and conditions.unchanged(stored.version_id, stored.last_updated):
                await exchange.shown([stored], status=304)
                return Result(304, version_id=stored.version_id, last_updated=stored.last_updated)
            result = self.read_result(stored, type_, id_, summary, elements)
            await exchange.shown([stored])
        return result

    def read_result(self, stored: StoredResource | None, type_: str, id_: str,
                    summary: str | None = None, elements: tuple[str, ...] = ()) -> Result:
        if stored is None:
            raise NotFound(f"{type_}/{id_} is not known", details_sv="Resursen finns inte.")
        if stored.deleted:
            raise Gone(f"{type_}/{id_} was deleted", details_sv="Resursen har tagits bort.",
                       headers={"ETag": f'W/"{stored.version_id}"'})
        body = self.subsetter.apply(stored.body, summary, elements)
        return Result(200, body.encode() if isinstance(body, str) else body,
                      version_id=stored.version_id, last_updated=stored.last_updated)

    async def vread(self, access: Access, type_: str, id_: str, version: str,
                    conditions: ReadConditions = NO_CONDITIONS) -> Result:
        """R4 http.html#vread; the caller must be able to see the resource as it is now. A client
        that holds the version already gets 304 (#cread)."""
        self.check_type(type_)
        interaction = Interaction.of("vread", type_, f"{type_}/{id_}/_history/{version}")
        async with self.pipeline.run(access, interaction) as exchange:
            self.check_id(type_, id_)
            if not (version.isascii() and version.isdigit()) or len(version) > 9:
                raise NotFound(f"{type_}/{id_} has no version {version!r}", details_sv="Versionen finns inte.")
            stored, visible = await self.store.read_current(type_, id_, access.restriction(type_), replica=True)
            if stored is None or not visible:
                raise HiddenResource(f"{type_}/{id_} has no version {version}", stored,
                                     details_sv="Versionen finns inte.")
            found = None
            if access.past_versions(type_) or int(version) == stored.version_id:
                async with self.store.replica_reading(access) as unit:
                    found = await unit.get_version(type_, id_, int(version))
                if found is None and int(version) <= stored.version_id:
                    # The current row may have come from the primary (the replica was behind for
                    # that statement) and the version from the replica, still behind it: the
                    # primary holds every version the current row counts.
                    async with self.store.reading(access) as unit:
                        found = await unit.get_version(type_, id_, int(version))
            if found is None:
                raise NotFound(f"{type_}/{id_} has no version {version}", details_sv="Versionen finns inte.")
            if found.deleted or found.body is None:
                raise Gone(f"{type_}/{id_} version {version} is a deletion",
                           details_sv="Versionen är en borttagning.")
            if conditions.unchanged(found.version_id, found.last_updated):
                await exchange.shown([stored], status=304)
                return Result(304, version_id=found.version_id, last_updated=found.last_updated)
            await exchange.shown([stored])
        return Result(200, found.body.encode(), version_id=found.version_id, last_updated=found.last_updated)

    # -- writes ----------------------------------------------------------------------------

    async def create(self, access: Access, type_: str, body: dict[str, Any], *, if_none_exist: str | None,
                     prefer: Preferences, context: WriteContext = NO_CONTEXT) -> Result:
        self.check_type(type_)
        also = ((type_, "search-type"),) if if_none_exist else ()
        async with self.pipeline.run(access, Interaction.of("create", type_, type_, *also)) as exchange:
            resource = await run_cpu(weight_of(body) * VALIDATE, self.prepare, type_, body)
            async with self.store.writing(access) as unit:
                outcome = await self.writer.create(unit, resource, if_none_exist=if_none_exist, context=context)
                await exchange.written(unit, outcome.status)
        return self.write_result(outcome, prefer)

    async def update(self, access: Access, type_: str, id_: str, body: dict[str, Any], *, if_match: str | None,
                     prefer: Preferences, context: WriteContext = NO_CONTEXT) -> Result:
        self.check_type(type_)
        if not ID_PATTERN.match(id_):
            raise BadRequest(f"{id_!r} is not a valid FHIR id", details_sv="Ogiltigt id.")
        if body.get("id") != id_:
            raise BadRequest(
                f"The body's id {body.get('id')!r} must equal the id in the URL ({id_!r})",
                expression=(f"{type_}.id",),
                details_sv="Id i innehållet ska vara samma som i adressen.",
            )
        async with self.pipeline.run(access, Interaction.of("update", type_, f"{type_}/{id_}")) as exchange:
            resource = await run_cpu(weight_of(body) * VALIDATE, self.prepare, type_, body)
            async with self.store.writing(access) as unit:
                outcome = await self.writer.update(unit, resource, if_match=if_match, context=context)
                await exchange.written(unit, outcome.status)
        return self.write_result(outcome, prefer)

    async def conditional_update(self, access: Access, type_: str, criteria: str, body: dict[str, Any], *,
                                 if_match: str | None, prefer: Preferences,
                                 context: WriteContext = NO_CONTEXT) -> Result:
        self.check_type(type_)
        interaction = Interaction.of("update", type_, f"{type_}?{criteria}", (type_, "search-type"))
        async with self.pipeline.run(access, interaction) as exchange:
            resource = await run_cpu(weight_of(body) * VALIDATE, self.prepare, type_, body)
            async with self.store.writing(access) as unit:
                outcome = await self.writer.conditional_update(unit, type_, criteria, resource, if_match=if_match,
                                                               context=context)
                await exchange.written(unit, outcome.status)
        return self.write_result(outcome, prefer)

    async def delete(self, access: Access, type_: str, id_: str, *, if_match: str | None) -> Result:
        self.check_type(type_)
        self.check_id(type_, id_)
        async with self.pipeline.run(access, Interaction.of("delete", type_, f"{type_}/{id_}")) as exchange:
            async with self.store.writing(access) as unit:
                outcome = await self.writer.delete(unit, type_, id_, if_match=if_match)
                await exchange.written(unit, 204)
        return Result(204, version_id=outcome.resource.version_id)

    async def conditional_delete(self, access: Access, type_: str, criteria: str) -> Result:
        self.check_type(type_)
        interaction = Interaction.of("delete", type_, f"{type_}?{criteria}", (type_, "search-type"))
        async with self.pipeline.run(access, interaction) as exchange:
            async with self.store.writing(access) as unit:
                outcome = await self.writer.conditional_delete(unit, type_, criteria)
                await exchange.written(unit, 204)
        return Result(204, version_id=outcome.resource.version_id)

    async def patch(self, access: Access, type_: str, id_: str | None, criteria: str | None,
                    operations: list[dict[str, Any]], *, if_match: str | None, prefer: Preferences,
                    context: WriteContext = NO_CONTEXT) -> Result:
        """R4 http.html#patch (JSON Patch), by id or conditional: see ``patch.py``."""
        return await patch(self, access, type_, id_, criteria, operations, if_match=if_match, prefer=prefer,
                           context=context)

    # -- $validate --------------------------------------------------------------------------

    async def validate(self, access: Access, type_: str, id_: str | None, body: dict[str, Any] | None,
                       pairs: list[tuple[str, str]]) -> Result:
        """R4 operation-resource-validate: 200 with an OperationOutcome whether or not the content is valid.

        ``mode=create|update|delete`` tries the real write in a transaction that is rolled back, so
        references and the rules across resources are checked too.
        """
        self.check_type(type_)
        request = f"{type_}/{id_}/$validate" if id_ is not None else f"{type_}/$validate"
        async with self.pipeline.run(access, Interaction.of("validate", type_, request)) as exchange:
            return await validate(self, exchange, type_, id_, body, pairs)

    # -- $everything -----------------------------------------------------------------------

    async def everything(self, access: Access, id_: str, pairs: list[tuple[str, str]], prefer: Preferences) -> Result:
        """R4 patient-operation-everything: the patient's record as the caller may see it, paged
        (fhir/everything.py); logged like $patientkontrakt, an operation on the Patient."""
        interaction = Interaction.of("operation", "Patient", f"Patient/{id_}/$everything")
        async with self.pipeline.run(access, interaction) as exchange:
            self.check_id("Patient", id_)
            args = arguments(pairs, self.types, self.settings.default_page_size, self.settings.max_page_size,
                             strict=prefer.strict)
            return await everything(self, exchange, id_, args)

    # -- search ----------------------------------------------------------------------------

    async def search(self, access: Access, type_: str, pairs: list[tuple[str, str]], prefer: Preferences) -> Result:
        """R4 http.html#search (GET and POST _search); only what the caller may see, filtered in
        the query before paging (and the same for what ``_include`` adds)."""
        self.check_type(type_)
        async with self.pipeline.run(access, Interaction.of("search-type", type_, type_)) as exchange:
            query = self.parser.parse(type_, pairs, strict=prefer.strict)
            self.require_includes(access, query)
            async with self.store.replica_reading(access) as unit:
                page = await self.search_engine.find(unit, query)
            self.drop_unscoped_includes(access, page)
            body = await run_cpu(_rendering_cost([*page.matches, *page.included], query.summary or query.elements),
                                 searchset, self.base, query, page, self.subsetter)
            await exchange.shown(page.matches + page.included, request=f"{type_}?{urlencode(query.used)}")
        return Result(200, body)

    @staticmethod
    def require_includes(access: Access, query: SearchQuery) -> None:
        """An ``_include``/``_revinclude`` that names a type the scopes do not cover is 403."""
        for include in query.includes:
            for included_type in (include.source_type, include.target_type):
                if included_type is not None and included_type != query.type:
                    access.require(included_type, "search-type")

    @staticmethod
    def drop_unscoped_includes(access: Access, page: SearchPage) -> None:
        """What an include reaches without naming its type is left out if the scopes do not cover it."""
        page.included = [r for r in page.included if _allowed(access, r.type, "search-type")]

    # -- history ---------------------------------------------------------------------------

    async def history(self, access: Access, type_: str | None, id_: str | None,
                      pairs: list[tuple[str, str]]) -> Result:
        """R4 http.html#history: instance, type or system level; newest first. The caller sees
        the history of the resources they may see as they are now."""
        kind = "history-system" if type_ is None else "history-type" if id_ is None else "history-instance"
        if type_ is not None:
            self.check_type(type_)
        path = "/".join(p for p in (type_, id_) if p) + ("/_history" if type_ else "_history")
        async with self.pipeline.run(access, Interaction.of(kind, type_, path)) as exchange:
            return await self._history(access, exchange, type_, id_, pairs, path)

    async def _history(self, access: Access, exchange: Exchange, type_: str | None, id_: str | None,
                       pairs: list[tuple[str, str]], path: str) -> Result:
        kind = exchange.interaction.kind
        types = sorted(self.types) if type_ is None else [type_]
        if type_ is None:
            types = [t for t in types if _allowed(access, t, kind)]
            if not types:
                raise Forbidden("The access token grants no history of any type",
                                details_sv="Du har inte behörighet att läsa historik.")
        if id_ is not None and type_ is not None:
            self.check_id(type_, id_)
        args = history_args(pairs, self.settings.default_page_size, self.settings.max_page_size)
        restrictions = {t: bound(access.restriction(t)) for t in types}
        current_only = frozenset(t for t in types if not access.past_versions(t))
        # S first, apart: the history below reads a snapshot taken after it (module history.py).
        until = args.until or await self.store.safe_point()
        async with self.store.reading(access) as unit:
            # A refusal is logged by the pipeline once the connection is back in the pool: the
            # log writer needs one of its own.
            if id_ is not None and type_ is not None:
                current = await unit.get(type_, id_)
                if current is None:
                    raise HiddenResource(f"{type_}/{id_} is not known", None, details_sv="Resursen finns inte.")
                if restrictions[type_] is not None \
                        and not await unit.visible_pks([current.pk], restrictions[type_]):
                    raise HiddenResource(f"{type_}/{id_} is not known", current, details_sv="Resursen finns inte.")
            window = args.window(until)
            rows = await unit.history(type_=type_, id_=id_, since=args.since, at=args.at, offset=args.offset,
                                      count=args.count, window=window, restrictions=restrictions,
                                      current_only=current_only)
            more = len(rows) > args.count
            rows = rows[: args.count]
            if args.backward:
                rows.reverse()
            # Beyond the page in the direction travelled there is more when the query said so; the
            # other way, when the page was reached by a cursor or an offset.
            came = args.cursor is not None or args.offset > 0
            has_next, has_previous = (came, more) if args.backward else (more, came)
            total = await unit.history_count(type_=type_, id_=id_, since=args.since, at=args.at, until=until,
                                             restrictions=restrictions, current_only=current_only)
            seen = await unit.get_many({(r.type, r.id) for r in rows}, include_deleted=True)
        body = await run_cpu(_rendering_cost(rows, False), history_bundle, self.base, path, pairs, rows, total,
                             args, until, has_next=has_next, has_previous=has_previous)
        await exchange.shown(seen)
        return Result(200, body)


def _rendering_cost(resources: list[StoredResource] | list[StoredVersion], subsetting: object) -> float:
    """``run_cpu``'s estimate for rendering a Bundle of ``resources``: their stored JSON is spliced
    in, or parsed and written again when subsetted."""
    size = sum(len(r.body) for r in resources if r.body is not None)
    return size * (SUBSET if subsetting else RENDER)


def _allowed(access: Access, type_: str, interaction: str) -> bool:
    try:
        access.require(type_, interaction)
    except FhirError:
        return False
    return True
