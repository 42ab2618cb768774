"""Bulk Data ``$export`` routes (patientkontrakt/fhir/export.py). Declared before the FHIR
routes: ``/fhir/{type_}/{id_}`` would take ``Patient/$export`` for a read."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth import caller_of
from api.errors import FHIR_JSON
from api.fhir import _json_body, _negotiate
from patientkontrakt.fhir.errors import NotAcceptable
from patientkontrakt.fhir.export import FILE_PATH, NDJSON, STATUS_PATH, BulkExport, parameters_of
from patientkontrakt.fhir.results import Result

router = APIRouter(prefix="/fhir")
_NDJSON_ACCEPT = ("application/fhir+ndjson", "application/ndjson", "*/*", "application/*")


def _export(request: Request) -> BulkExport:
    export: BulkExport = request.app.state.export
    return export


def _respond(result: Result, media_type: str = FHIR_JSON) -> Response:
    return Response(content=result.body, status_code=result.status, headers=result.headers(),
                    media_type=media_type if result.body is not None else None)


async def _kick_off(request: Request, level: str, group_id: str | None = None) -> Response:
    _negotiate(request)
    pairs = list(request.query_params.multi_items())
    if request.method == "POST" and (await request.body()).strip():
        pairs += parameters_of(await _json_body(request))
    result = await _export(request).kick_off(caller_of(request), level, group_id, pairs,
                                             request.headers.get("prefer"), str(request.url))
    return _respond(result)


@router.get("/$export")
@router.post("/$export")
async def export_system(request: Request) -> Response:
    """Bulk Data IG: export every resource the client may read."""
    return await _kick_off(request, "system")


@router.get("/Patient/$export")
@router.post("/Patient/$export")
async def export_patients(request: Request) -> Response:
    """Bulk Data IG: export the patient compartments the client may read."""
    return await _kick_off(request, "patient")


@router.get("/Group/{group_id}/$export")
@router.post("/Group/{group_id}/$export")
async def export_group(group_id: str, request: Request) -> Response:
    """Bulk Data IG: the data of a Group's member patients (a Group the client may read)."""
    return await _kick_off(request, "group", group_id)


@router.get(f"/{STATUS_PATH}/{{job_id}}")
async def export_status(job_id: str, request: Request) -> Response:
    """202 while running, the manifest (application/json) when done."""
    result = await _export(request).status(caller_of(request), job_id)
    return _respond(result, "application/json")


@router.delete(f"/{STATUS_PATH}/{{job_id}}")
async def export_cancel(job_id: str, request: Request) -> Response:
    return _respond(await _export(request).cancel(caller_of(request), job_id))


@router.get(f"/{FILE_PATH}/{{job_id}}/{{file_id}}")
async def export_file(job_id: str, file_id: str, request: Request) -> Response:
    accept = request.headers.get("accept")
    if accept and not any(part.split(";")[0].strip().lower() in _NDJSON_ACCEPT for part in accept.split(",")):
        raise NotAcceptable(f"Accept: {accept} cannot be met; export files are {NDJSON}")
    content = await _export(request).file(caller_of(request), job_id, file_id)
    return Response(content=content, media_type=NDJSON)
