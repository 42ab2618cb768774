"""The API explorer at ``/docs``: Swagger UI, served by the service itself.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN and starts it with an inline script;
under the service's Content-Security-Policy (``api/headers.py``: scripts from the service only,
none inline) it would not run, and a CDN would learn who reads the API documentation. Here the
page loads Swagger UI's files from the ``fastapi-offline`` package (``/static/docs/``) and starts
it with ``/static/docs-init.js``. ReDoc is not served.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SWAGGER_UI = Path(fastapi_offline.__file__).resolve().parent / "static"

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Patientkontrakt – API</title>
<link rel="stylesheet" href="/static/docs/swagger-ui.css">
<link rel="icon" href="/static/docs/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi="/openapi.json"></div>
<script src="/static/docs/swagger-ui-bundle.js"></script>
<script src="/static/docs-init.js"></script>
</body>
</html>
"""


@router.get("/docs")
async def docs() -> HTMLResponse:
    return HTMLResponse(_PAGE)


def install(app: FastAPI) -> None:
    """``/docs`` and Swagger UI's files (mounted before ``/static``, which would shadow them)."""
    app.include_router(router)
    app.mount("/static/docs", StaticFiles(directory=SWAGGER_UI), name="swagger-ui")
