"""FHIR REST routes under ``/fhir`` (design §3). Thin: negotiate, call the core, render."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import Match
from starlette.types import Scope

from api.auth import caller_of
from api.deps import AuditEventsDep, BundlesDep, OverviewDep, PreferDep, ServiceDep, get_prefer, get_service
from api.errors import FHIR_JSON
from patientkontrakt.fhir.capability import AUDIT_EVENT, CONFORMANCE_RESOURCES, capability_statement, smart_security
from patientkontrakt.fhir.conditional import NO_CONDITIONS, ReadConditions
from patientkontrakt.fhir.conformance import CONFORMANCE_TYPES, ConformanceResources, read_only
from patientkontrakt.fhir.errors import BadRequest, MethodNotAllowed, NotAcceptable, UnsupportedMediaType
from patientkontrakt.fhir.everything import parameters_of
from patientkontrakt.fhir.hooks import WriteContext
from patientkontrakt.fhir.json_patch import JSON_PATCH, check_patch
from patientkontrakt.fhir.offload import PARSE, run_cpu
from patientkontrakt.fhir.rendering import SUMMARY_PARAMS, dumps
from patientkontrakt.fhir.requests import no_in_parameters, parse_body, parse_json
from patientkontrakt.fhir.results import Result
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.notify.status_operation import subscription_status as status_of
from patientkontrakt.notify.topics import topic_extensions

router = APIRouter(prefix="/fhir")


class _ConformanceType(Convertor[str]):
    """A path segment naming a conformance resource type, so that their few routes precede the
    engine's ``/{type_}`` ones without a check in each of those."""

    regex = "|".join(sorted(CONFORMANCE_TYPES))

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("conformance", _ConformanceType())


class PathArgumentsRoute(APIRoute):
    """A route whose endpoint takes ``str`` path parameters and the ``Request``, and nothing else,
    called with them directly. FastAPI's handler solves an endpoint's parameters on every request,
    about 9 % of a read's CPU (docs/performance.md), where here there is nothing to solve: no
    dependency, no query, header, cookie or body parameter, no conversion. Its OpenAPI entry is
    FastAPI's, from the signature; an endpoint this does not fit is refused when the route is made."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        needs = self.dependant
        name = needs.request_param_name
        if (name is None or needs.dependencies or needs.query_params or needs.header_params
                or needs.cookie_params or needs.body_params
                or any(field.field_info.annotation is not str for field in needs.path_params)):
            raise TypeError(f"{self.path}: only str path parameters and the Request can be passed directly")
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(**request.path_params, **{name: request})
            return response

        return handler

_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}


def _respond(result: Result) -> Response:
    return Response(content=result.body, status_code=result.status, headers=result.headers(),
                    media_type=FHIR_JSON if result.body is not None else None)


def _negotiate(request: Request) -> None:
    """JSON only: ``_format`` and ``Accept`` asking for anything else get 406."""
    fmt = request.query_params.get("_format")
    if fmt is not None and fmt.split(";")[0].strip() not in _FORMATS:
        raise NotAcceptable(f"_format={fmt} is not supported; this server speaks FHIR JSON",
                            expression=("_format",))
    accept = request.headers.get("accept")
    if accept:
        kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
        if not any(k in _JSON_TYPES or k in ("*/*", "application/*") for k in kinds):
            raise NotAcceptable(f"Accept: {accept} cannot be met; this server answers application/fhir+json")


async def _json_body(request: Request) -> dict[str, object]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'} is not supported; send application/fhir+json"
        )
    raw = await request.body()
    return await run_cpu(len(raw) * PARSE, parse_body, raw, request.app.state.service.limits.json_depth)


def _conditions(request: Request) -> ReadConditions:
    """The validators of a conditional read (R4 http.html#cread)."""
    headers = request.headers
    if "if-none-match" not in headers and "if-modified-since" not in headers:
        return NO_CONDITIONS
    return ReadConditions(headers.get("if-none-match"), headers.get("if-modified-since"))


def _subset_args(request: Request) -> tuple[str | None, tuple[str, ...]]:
    summary = request.query_params.get("_summary")
    if summary is not None and summary not in SUMMARY_PARAMS:
        raise BadRequest("_summary must be true, false, text or data on a read", expression=("_summary",))
    elements = tuple(e for e in request.query_params.get("_elements", "").split(",") if e)
    return summary, elements


async def _write_input(type_: str, request: Request, service: FhirService) -> tuple[dict[str, object], WriteContext]:
    """What a create or update writes: its JSON body and the context of its ``X-Provenance``, once
    the answer's format and the type are known to be served."""
    _negotiate(request)
    service.check_type(type_)
    body = await _json_body(request)
    return body, service.write_context(request.headers.get("x-provenance"))


async def _search_parameters(request: Request) -> list[tuple[str, str]]:
    """The parameters of a search by POST: those in the URL, then those of its form body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if raw and content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True) if raw else []
    except UnicodeDecodeError:
        raise BadRequest("The form body is not UTF-8") from None
    return [*request.query_params.multi_items(), *form]


# The conformance resources (fhir/conformance.py): read and search only, public like /metadata
# (api/auth.py), from memory, not logged.
@router.get("/{type_:conformance}")
async def conformance_search(type_: str, request: Request, prefer: PreferDep) -> Response:
    _negotiate(request)
    return _respond(_conformance(request).search(type_, request.query_params.multi_items(), strict=prefer.strict))


@router.post("/{type_:conformance}/_search")
async def conformance_search_post(type_: str, request: Request, prefer: PreferDep) -> Response:
    _negotiate(request)
    return _respond(_conformance(request).search(type_, await _search_parameters(request), strict=prefer.strict))


@router.get("/{type_:conformance}/{id_}")
async def conformance_read(type_: str, id_: str, request: Request) -> Response:
    _negotiate(request)
    return _respond(_conformance(request).read(type_, id_))


@router.api_route("/{type_:conformance}", methods=["POST", "PUT", "DELETE"], include_in_schema=False)
@router.api_route("/{type_:conformance}/{id_}", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
async def conformance_write(type_: str) -> Response:
    raise read_only(type_)


def _conformance(request: Request) -> ConformanceResources:
    resources: ConformanceResources = request.app.state.conformance
    return resources


# The access log as AuditEvent: read and search only, served from the log itself (audit/events.py).
@router.get("/AuditEvent")
async def audit_search(request: Request, events: AuditEventsDep) -> Response:
    _negotiate(request)
    return _respond(await events.search(caller_of(request), request.query_params.multi_items()))


@router.post("/AuditEvent/_search")
async def audit_search_post(request: Request, events: AuditEventsDep) -> Response:
    """Search by POST (R4 http.html#search: a server supporting search supports both forms), so
    parameters need not be in the URL; otherwise ``/{type_}/_search`` would answer "no such type"."""
    _negotiate(request)
    return _respond(await events.search(caller_of(request), await _search_parameters(request)))


@router.get("/AuditEvent/{id_}")
async def audit_read(id_: str, request: Request, events: AuditEventsDep) -> Response:
    _negotiate(request)
    return _respond(await events.read(caller_of(request), id_))


@router.api_route("/AuditEvent", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
@router.api_route("/AuditEvent/{id_}", methods=["PUT", "DELETE", "PATCH"], include_in_schema=False)
async def audit_write(request: Request) -> Response:
    raise MethodNotAllowed("AuditEvent is written by the server only: the access log cannot be changed",
                           details_sv="Loggen kan inte ändras.", headers={"Allow": "GET"})


# $validate has a resource in-parameter, so it cannot be invoked by GET (R4 operations.html#request);
# without these the type-level form would be taken for a read of the id "$validate".
@router.get("/{type_}/$validate", include_in_schema=False)
@router.get("/{type_}/{id_}/$validate", include_in_schema=False)
async def validate_by_get(request: Request) -> Response:
    raise MethodNotAllowed("$validate takes a resource, so it must be invoked with POST (R4 operations.html)",
                           details_sv="$validate anropas med POST.", headers={"Allow": "POST"})


# Read by id is the most frequent interaction and routes are tried in order, so it comes first;
# the type history must precede it, or "_history" would be taken for an id (docs/performance.md).
@router.get("/{type_}/_history")
async def history_type(type_: str, request: Request, service: ServiceDep) -> Response:
    _negotiate(request)
    return _respond(await service.history(caller_of(request), type_, None, request.query_params.multi_items()))


async def read(type_: str, id_: str, request: Request) -> Response:
    # The hottest route takes the service without a FastAPI dependency (resolving one is about
    # 7 % of a read's CPU time) and its arguments without FastAPI's solving (docs/performance.md).
    service = await get_service(request)
    if request.query_params:
        _negotiate(request)
        summary, elements = _subset_args(request)
        return _respond(await service.read(caller_of(request), type_, id_, summary=summary, elements=elements,
                                           conditions=_conditions(request)))
    if "accept" in request.headers:
        _negotiate(request)
    return _respond(await service.read(caller_of(request), type_, id_, conditions=_conditions(request)))


router.add_api_route("/{type_}/{id_}", read, methods=["GET"], route_class_override=PathArgumentsRoute)


class _FhirId(Convertor[str]):
    """A FHIR id (R4 datatypes.html#id): never ``_history`` or an ``$operation``."""

    regex = r"[A-Za-z0-9\-\.]{1,64}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _EngineType(Convertor[str]):
    """A capitalised type name that is neither a conformance type nor AuditEvent, whose routes
    precede the engine's."""

    regex = "(?!(?:" + "|".join(sorted({*CONFORMANCE_TYPES, "AuditEvent"})) + ")(?:/|$))[A-Z][A-Za-z]{0,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("fhir_id", _FhirId())
register_url_convertor("engine_type", _EngineType())


class _FirstRoute(PathArgumentsRoute):
    """A route at the head of the table that matches a request fully or not at all: matching
    its path only, it would answer 405 with its one method where the table allows more."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        return (match, child) if match == Match.FULL else (Match.NONE, {})


def _first(path: str, template: str, endpoint: Callable[..., Any], method: str) -> APIRoute:
    route = _FirstRoute(path, endpoint, methods=[method], include_in_schema=False)
    route.path = route.path_format = template  # the template logs, metrics and traces name
    return route


# Read by id once more, for the application's first route (api/app.py): the router tries its
# routes in order, about a microsecond each, and this one is the 34th (docs/performance.md). Its
# pattern matches only what no route before the read would take (a test compares the routes each
# path reaches with and without it), so what answers a request is unchanged.
READ_FIRST = _first("/fhir/{type_:engine_type}/{id_:fhir_id}", "/fhir/{type_}/{id_}", read, "GET")


@router.get("/metadata")
async def metadata(request: Request, service: ServiceDep) -> Response:
    _negotiate(request)
    statement = capability_statement(service.defs, service.types, service.base, request.app.state.started,
                                     getattr(request.app.state, "operations", None),
                                     security=smart_security(request.app.state.oauth.endpoints()),
                                     extra_resources=[AUDIT_EVENT, *CONFORMANCE_RESOURCES],
                                     update_create=getattr(request.app.state, "update_create", None),
                                     extensions={"Subscription": topic_extensions()})
    return Response(dumps(statement), media_type=FHIR_JSON)


@router.post("")
async def bundle(request: Request, bundles: BundlesDep, prefer: PreferDep) -> Response:
    _negotiate(request)
    return _respond(await bundles.process(caller_of(request), await _json_body(request), prefer))


@router.get("/_history")
async def history_system(request: Request, service: ServiceDep) -> Response:
    _negotiate(request)
    return _respond(await service.history(caller_of(request), None, None, request.query_params.multi_items()))


@router.get("/{type_}")
async def search(type_: str, request: Request, service: ServiceDep, prefer: PreferDep) -> Response:
    _negotiate(request)
    return _respond(await service.search(caller_of(request), type_, request.query_params.multi_items(), prefer))


@router.post("/{type_}/$validate")
async def validate_type(type_: str, request: Request, service: ServiceDep) -> Response:
    _negotiate(request)
    service.check_type(type_)
    body = await _json_body(request)
    return _respond(await service.validate(caller_of(request), type_, None, body, request.query_params.multi_items()))


@router.post("/{type_}/{id_}/$validate")
async def validate_instance(type_: str, id_: str, request: Request, service: ServiceDep) -> Response:
    _negotiate(request)
    service.check_type(type_)
    body = await _json_body(request) if await request.body() else None
    return _respond(await service.validate(caller_of(request), type_, id_, body, request.query_params.multi_items()))


@router.get("/Patient/{id_}/$patientkontrakt")
async def patientkontrakt_for_patient(id_: str, request: Request, overview: OverviewDep) -> Response:
    """The whole Patientkontrakt as one Bundle (fhir_profiles OperationDefinition patientkontrakt)."""
    _negotiate(request)
    return _respond(Result(200, await overview.for_patient(caller_of(request), id_)))


@router.get("/Patient/{id_}/$everything")
async def everything(id_: str, request: Request, service: ServiceDep, prefer: PreferDep) -> Response:
    """R4 patient-operation-everything (patientkontrakt/fhir/everything.py)."""
    _negotiate(request)
    return _respond(await service.everything(caller_of(request), id_, request.query_params.multi_items(), prefer))


@router.post("/Patient/{id_}/$everything")
async def everything_post(id_: str, request: Request, service: ServiceDep, prefer: PreferDep) -> Response:
    """The same by POST (R4 operations.html: every operation), its parameters in a Parameters body."""
    _negotiate(request)
    body = await _json_body(request) if await request.body() else None
    return _respond(await service.everything(caller_of(request), id_,
                                             [*request.query_params.multi_items(), *parameters_of(body)], prefer))


@router.get("/CarePlan/{id_}/$patientkontrakt")
async def patientkontrakt_for_plan(id_: str, request: Request, overview: OverviewDep) -> Response:
    _negotiate(request)
    return _respond(Result(200, await overview.for_plan(caller_of(request), id_)))


async def _no_operation_input(request: Request, operation: str) -> None:
    """The body of an operation without in-parameters invoked by POST: none, or an empty
    ``Parameters`` (R4 operations.html: servers SHALL support POST for every operation)."""
    _negotiate(request)
    if (await request.body()).strip():
        no_in_parameters(await _json_body(request), operation)


@router.post("/Patient/{id_}/$patientkontrakt")
async def patientkontrakt_for_patient_post(id_: str, request: Request, overview: OverviewDep) -> Response:
    """The same operation by POST: answered, logged and refused exactly as by GET."""
    await _no_operation_input(request, "$patientkontrakt")
    return _respond(Result(200, await overview.for_patient(caller_of(request), id_)))


@router.post("/CarePlan/{id_}/$patientkontrakt")
async def patientkontrakt_for_plan_post(id_: str, request: Request, overview: OverviewDep) -> Response:
    await _no_operation_input(request, "$patientkontrakt")
    return _respond(Result(200, await overview.for_plan(caller_of(request), id_)))


@router.get("/Subscription/{id_}/$status")
async def subscription_status(id_: str, request: Request, service: ServiceDep) -> Response:
    """The Backport IG's $status of one Subscription (patientkontrakt/notify/status_operation.py)."""
    _negotiate(request)
    return _respond(await status_of(service, caller_of(request), id_))


@router.post("/Subscription/{id_}/$status")
async def subscription_status_post(id_: str, request: Request, service: ServiceDep) -> Response:
    """The same by POST (its only in-parameter, ``id``, is ignored at the instance level)."""
    _negotiate(request)
    if (await request.body()).strip() and (await _json_body(request)).get("resourceType") != "Parameters":
        raise BadRequest("The body of $status by POST is a Parameters resource",
                         details_sv="Skicka en Parameters-resurs.")
    return _respond(await status_of(service, caller_of(request), id_))


@router.post("/{type_}/_search")
async def search_post(type_: str, request: Request, service: ServiceDep, prefer: PreferDep) -> Response:
    _negotiate(request)
    return _respond(await service.search(caller_of(request), type_, await _search_parameters(request), prefer))


async def create(type_: str, request: Request) -> Response:
    # Like read: the service and Prefer without FastAPI's dependencies and solving (see
    # WRITE_FIRST); neither adds anything to the OpenAPI document.
    service = await get_service(request)
    prefer = await get_prefer(request)
    body, context = await _write_input(type_, request, service)
    return _respond(await service.create(caller_of(request), type_, body,
                                         if_none_exist=request.headers.get("if-none-exist"), prefer=prefer,
                                         context=context))


router.add_api_route("/{type_}", create, methods=["POST"], route_class_override=PathArgumentsRoute)


@router.put("/{type_}")
async def conditional_update(type_: str, request: Request, service: ServiceDep, prefer: PreferDep) -> Response:
    body, context = await _write_input(type_, request, service)
    return _respond(await service.conditional_update(
        caller_of(request), type_, request.url.query, body, if_match=request.headers.get("if-match"),
        prefer=prefer, context=context))


@router.delete("/{type_}")
async def conditional_delete(type_: str, request: Request, service: ServiceDep) -> Response:
    _negotiate(request)
    return _respond(await service.conditional_delete(caller_of(request), type_, request.url.query))


async def update(type_: str, id_: str, request: Request) -> Response:
    service = await get_service(request)  # as create
    prefer = await get_prefer(request)
    body, context = await _write_input(type_, request, service)
    return _respond(await service.update(caller_of(request), type_, id_, body, if_match=request.headers.get("if-match"),
                                         prefer=prefer, context=context))


router.add_api_route("/{type_}/{id_}", update, methods=["PUT"], route_class_override=PathArgumentsRoute)


# Create and update once more at the head of the route table, as READ_FIRST (the 51st and 54th
# routes otherwise: about 50 microseconds of a write), called as READ_FIRST is (FastAPI's solving
# of the two dependencies they had was about 4 % of an update's CPU); the same test holds them to
# what the table would have reached.
WRITE_FIRST = (_first("/fhir/{type_:engine_type}", "/fhir/{type_}", create, "POST"),
               _first("/fhir/{type_:engine_type}/{id_:fhir_id}", "/fhir/{type_}/{id_}", update, "PUT"))


async def _patch_input(type_: str, request: Request, service: FhirService
                       ) -> tuple[list[dict[str, object]], WriteContext]:
    """A JSON Patch document (R4 http.html#patch) and the context of its ``X-Provenance``."""
    _negotiate(request)
    service.check_type(type_)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != JSON_PATCH:
        fhirpath = " (FHIRPath Patch, a Parameters resource, is not supported)" if content_type in _JSON_TYPES else ""
        raise UnsupportedMediaType(f"PATCH takes a JSON Patch document as {JSON_PATCH}, not "
                                   f"{content_type or '(none)'}{fhirpath}",
                                   details_sv=f"Skicka ändringen som JSON Patch ({JSON_PATCH}).")
    raw = await request.body()
    document = await run_cpu(len(raw) * PARSE, parse_json, raw, service.limits.json_depth)
    return check_patch(document), service.write_context(request.headers.get("x-provenance"))


@router.patch("/{type_}/{id_}")
async def patch(type_: str, id_: str, request: Request, service: ServiceDep, prefer: PreferDep) -> Response:
    operations, context = await _patch_input(type_, request, service)
    return _respond(await service.patch(caller_of(request), type_, id_, None, operations,
                                        if_match=request.headers.get("if-match"), prefer=prefer, context=context))


@router.patch("/{type_}")
async def conditional_patch(type_: str, request: Request, service: ServiceDep, prefer: PreferDep) -> Response:
    operations, context = await _patch_input(type_, request, service)
    return _respond(await service.patch(caller_of(request), type_, None, request.url.query, operations,
                                        if_match=request.headers.get("if-match"), prefer=prefer, context=context))


@router.delete("/{type_}/{id_}")
async def delete(type_: str, id_: str, request: Request, service: ServiceDep) -> Response:
    _negotiate(request)
    return _respond(await service.delete(caller_of(request), type_, id_, if_match=request.headers.get("if-match")))


@router.get("/{type_}/{id_}/_history")
async def history_instance(type_: str, id_: str, request: Request, service: ServiceDep) -> Response:
    _negotiate(request)
    return _respond(await service.history(caller_of(request), type_, id_, request.query_params.multi_items()))


@router.get("/{type_}/{id_}/_history/{version}")
async def vread(type_: str, id_: str, version: str, request: Request, service: ServiceDep) -> Response:
    _negotiate(request)
    return _respond(await service.vread(caller_of(request), type_, id_, version, _conditions(request)))
