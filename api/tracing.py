"""OpenTelemetry tracing, when configured (docs/operations.md, "Observability").

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and
``OTEL_SDK_DISABLED`` is not ``true``: each request is a server span, exported over OTLP/HTTP in
batches by the SDK (``OTEL_*`` variables as the SDK reads them: headers, timeout, service name).
A W3C ``traceparent`` from the caller makes the span a child of the caller's.

The span is named and labelled as the request log is (``api/requestlog.py``): method and route
template (``GET /fhir/Patient/{id_}``), the status, and the request id; never the path, the query,
a header or a body, whose ids and values are patient data. The optional extra ``otel``
installs the SDK and the exporter; configured without them, the service refuses to start.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.asgi import HttpWrapper
from api.requestlog import method_of, route_of
from patientkontrakt.logs import REQUEST_ID

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class TracingUnavailable(RuntimeError):
    """Tracing is configured but OpenTelemetry is not installed."""


def configured() -> bool:
    return any(os.environ.get(name) for name in _ENDPOINTS) \
        and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true"


def provider() -> Any | None:
    """A tracer provider exporting over OTLP/HTTP, or None when tracing is not configured."""
    if not configured():
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingUnavailable(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set, but OpenTelemetry is not installed: install the extra "
            "(pip install 'patientkontrakt[otel]') or unset the variable") from None
    name = os.environ.get("OTEL_SERVICE_NAME") or "patientkontrakt"
    made = TracerProvider(resource=Resource.create({"service.name": name}))
    made.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return made


class Tracing(HttpWrapper):
    """A server span around each request (inside ``RequestLog``, which sets the request id)."""

    def __init__(self, app: ASGIApp, tracer_provider: Any) -> None:
        super().__init__(app)
        from opentelemetry import propagate, trace

        self._tracer = tracer_provider.get_tracer("patientkontrakt")
        self._extract = propagate.extract
        self._server = trace.SpanKind.SERVER
        self._error = trace.StatusCode.ERROR

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
                   if name in (b"traceparent", b"tracestate")}
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        method = method_of(scope)
        with self._tracer.start_as_current_span(method, context=self._extract(carrier), kind=self._server) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                route = route_of(scope)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("patientkontrakt.request_id", REQUEST_ID.get() or "")
                if status >= 500 or not status:
                    span.set_status(self._error)
