"""The patch interaction (R4 http.html#patch): JSON Patch on a resource, then an update.

The patched resource takes exactly the path of an update: the same interaction in the pipeline
(scope ``u``, logged as ``update``), the same structural and profile validation and domain rules
(``FhirService.prepare``), and ``Writer.update`` (the access rules, another provider's record 403,
``If-Match``, ``X-Provenance``). What the patch adds is checked before: the target must be one the
caller may see (404 otherwise, as absent), live (410), at the version ``If-Match`` names (412),
and the patch must apply (422) without changing ``resourceType`` or ``id``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from patientkontrakt.fhir.errors import FhirError, Gone, HiddenResource, NotFound, PreconditionFailed
from patientkontrakt.fhir.hooks import NO_CONTEXT, WriteContext
from patientkontrakt.fhir.interactions import Interaction
from patientkontrakt.fhir.json_patch import PatchFailed, apply_patch
from patientkontrakt.fhir.offload import VALIDATE, run_cpu, weight_of
from patientkontrakt.fhir.results import Result, parse_etag
from patientkontrakt.fhir.writes import WriteOutcome
from patientkontrakt.storage.repository import Unit

if TYPE_CHECKING:
    from patientkontrakt.fhir.access import Access
    from patientkontrakt.fhir.requests import Preferences
    from patientkontrakt.fhir.service import FhirService


async def patch(service: FhirService, access: Access, type_: str, id_: str | None, criteria: str | None,
                operations: list[dict[str, Any]], *, if_match: str | None, prefer: Preferences,
                context: WriteContext) -> Result:
    """Patch ``type_/id_``, or the single match of ``criteria`` (conditional patch: none is 404,
    several 412, and a resource the caller may not see never matches)."""
    service.check_type(type_)
    if id_ is not None:
        service.check_id(type_, id_)
    request = f"{type_}/{id_}" if id_ is not None else f"{type_}?{criteria}"
    also = ((type_, "search-type"),) if id_ is None else ()
    async with service.pipeline.run(access, Interaction.of("update", type_, request, *also)) as exchange:
        async with service.store.writing(access) as unit:
            outcome = await patch_in(service, unit, type_, id_, criteria, operations, if_match=if_match,
                                     context=context)
            await exchange.written(unit, outcome.status)
    return service.write_result(outcome, prefer)


async def patch_in(service: FhirService, unit: Unit, type_: str, id_: str | None, criteria: str | None,
                   operations: list[dict[str, Any]], *, if_match: str | None,
                   context: WriteContext = NO_CONTEXT) -> WriteOutcome:
    """The patch inside ``unit``'s transaction (a request's or a batch entry's)."""
    resource = await patched_resource(service, unit, type_, id_, criteria, operations, if_match=if_match)
    resource = await run_cpu(weight_of(resource) * VALIDATE, valid_patched, service, type_, resource, rules=True)
    return await service.writer.update(unit, resource, if_match=if_match, context=context)


async def patched_resource(service: FhirService, unit: Unit, type_: str, id_: str | None, criteria: str | None,
                           operations: list[dict[str, Any]], *, if_match: str | None) -> dict[str, Any]:
    """The current version of the target with ``operations`` applied, not yet validated. The
    target must be visible to the caller before anything else is said about it (no answer may
    tell a hidden resource from an absent one: not a 412, not a failed ``test``)."""
    writer = service.writer
    if id_ is None:
        found = await writer.find_one(unit, type_, criteria or "", "Conditional patch")
        if found is None:
            raise NotFound(f"No {type_} matches {criteria!r}", details_sv="Ingen resurs matchar villkoret.")
        id_ = found.id
    row = await unit.get(type_, id_, lock=True)
    if row is None or not await writer.may_see(unit, row):
        raise HiddenResource(f"{type_}/{id_} is not known", row, details_sv="Resursen finns inte.")
    if row.deleted:
        raise Gone(f"{type_}/{id_} was deleted: there is nothing to patch", details_sv="Resursen har tagits bort.")
    if if_match is not None and parse_etag(if_match) != str(row.version_id):
        raise PreconditionFailed(
            f'If-Match {if_match} does not match the current version of {type_}/{id_} (W/"{row.version_id}")',
            details_sv="Resursen har ändrats av någon annan sedan du läste den. Läs in den igen.")
    patched = apply_patch(orjson.loads(row.body), operations, service.settings.max_body_bytes)
    if not isinstance(patched, dict) or patched.get("resourceType") != type_ or patched.get("id") != id_:
        raise PatchFailed(f"A patch may not change the resource's resourceType or id ({type_}/{id_})",
                          details_sv="En ändring får inte byta resurstyp eller id.")
    return patched


def valid_patched(service: FhirService, type_: str, resource: dict[str, Any], *, rules: bool) -> dict[str, Any]:
    """The patched resource checked as an update's body is (``rules``: the domain's too; a
    transaction applies them later, to every entry). The patch document was well formed, so what
    is wrong with its result is a 422, not a 400."""
    try:
        checked = service.check_structure(type_, resource)
        return service.apply_rules(checked) if rules else checked
    except FhirError as error:
        if error.status != 400:
            raise
        raise PatchFailed(f"The patched resource is not valid: {error.diagnostics}", issues=error.issues) from None
