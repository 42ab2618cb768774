"""``$validate`` (R4 operation-resource-validate): 200 with an OperationOutcome whether or not the
content is valid. ``mode=create|update|delete`` tries the real write in a transaction that is
rolled back, so references and the rules across resources are checked too; an instance's check
is answered from the stored resource, so it is logged like a read of it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from patientkontrakt.fhir.errors import BadRequest, FhirError, HiddenResource, Issue, operation_outcome
from patientkontrakt.fhir.interactions import Exchange
from patientkontrakt.fhir.rendering import dumps
from patientkontrakt.fhir.results import Result

if TYPE_CHECKING:
    from patientkontrakt.fhir.service import FhirService


async def validate(service: FhirService, exchange: Exchange, type_: str, id_: str | None,
                   body: dict[str, Any] | None, pairs: list[tuple[str, str]]) -> Result:
    """The operation, once the pipeline runs it (``FhirService.validate``)."""
    access = exchange.access
    resource, mode, profile = validate_args(body, pairs)
    if mode not in (None, "create", "update", "delete"):
        raise BadRequest(f"mode must be create, update or delete, not {mode!r}", expression=("mode",))
    if mode in ("update", "delete") and id_ is None:
        raise BadRequest(f"mode={mode} needs the instance: POST [base]/{type_}/[id]/$validate",
                         expression=("mode",))
    if id_ is not None:
        service.check_id(type_, id_)
    if resource is None and mode != "delete":
        raise BadRequest("$validate needs a resource (the body, or a Parameters 'resource')",
                         details_sv="Ange resursen som ska kontrolleras.")
    if profile is not None and resource is not None and service.hooks.profile_issues(resource, profile) is None:
        raise BadRequest(f"Unknown profile {profile}", expression=("profile",), details_sv="Okänd profil.")
    issues: list[Issue] = []
    stored = None
    if mode in ("update", "delete"):
        # checked against the stored resource, and answered from it: logged like a read of it,
        # a hidden one like an absent one (the answer is the same: an issue, not a 404)
        assert id_ is not None
        stored, visible = await service.store.read_current(type_, id_, access.restriction(type_))
        if stored is None or not visible:
            await exchange.refused(HiddenResource(f"{type_}/{id_} is not known", stored))
            stored = None
    try:
        if mode == "delete":
            assert id_ is not None
            access.require(type_, "delete")
            async with service.store.trial(access) as unit:
                await service.writer.delete(unit, type_, id_)
                await access.confirm(unit, unit.written)
        else:
            assert resource is not None
            checked = service.check_structure(type_, resource)
            if profile is not None:
                issues.extend(service.hooks.profile_issues(checked, profile) or [])
            checked = service.apply_rules(checked)
            if mode == "update" and checked.get("id") != id_:
                raise BadRequest(f"The resource's id must be {id_!r} for mode=update",
                                 expression=(f"{type_}.id",))
            if mode in ("create", "update") and not issues:
                access.require(type_, mode)
                async with service.store.trial(access) as unit:
                    if mode == "create":
                        outcome = await service.writer.create(unit, checked)
                    else:
                        outcome = await service.writer.update(unit, checked)
                    await access.confirm(unit, unit.written)
                issues.extend(outcome.issues)
    except FhirError as error:
        # The type's own profile may be the one named in ``profile``: report each issue once.
        issues.extend(i for i in error.issues if i not in issues)
    if not issues:
        issues = [Issue(code="informational", severity="information", diagnostics="All OK",
                        details_sv="Inga fel hittades.")]
    if stored is not None:
        await exchange.shown([stored])
    return Result(200, dumps(operation_outcome(issues)))


def validate_args(body: dict[str, Any] | None, pairs: list[tuple[str, str]]
                   ) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(resource, mode, profile) from a Parameters body or a plain resource plus query parameters."""
    query = dict(pairs)
    mode, profile = query.get("mode"), query.get("profile")
    if body is not None and body.get("resourceType") == "Parameters":
        resource = None
        for parameter in body.get("parameter") or []:
            if not isinstance(parameter, dict):
                continue
            name = parameter.get("name")
            if name == "resource" and isinstance(parameter.get("resource"), dict):
                resource = parameter["resource"]
            elif name == "mode":
                mode = parameter.get("valueCode", mode)
            elif name == "profile":
                profile = parameter.get("valueUri") or parameter.get("valueCanonical") or profile
        return resource, mode, profile
    return body, mode, profile
