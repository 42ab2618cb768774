"""OpenTelemetry tracing (api/tracing.py): with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, each request
is a server span exported over OTLP/HTTP, here to a receiver of the test's own, and a caller's
``traceparent`` makes it a child of the caller's span; the span names the route template, never
the path. Configured without the SDK installed, the service refuses to start, saying why."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from api import tracing
from api.app import create_app
from patientkontrakt import cli
from tests.conftest import BASE_URL, engine_token, make_settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    """An OTLP/HTTP endpoint: the bodies POSTed to /v1/traces."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path == "/v1/traces":
                bodies.append(body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", bodies
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_each_request_is_a_span_named_by_its_route(receiver: tuple[str, list[bytes]], clean_pg: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, bodies = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    settings = make_settings(clean_pg)
    with TestClient(create_app(settings, domain_rules=False), base_url=BASE_URL) as http:
        http.headers.update({"content-type": "application/fhir+json",
                             "authorization": f"Bearer {engine_token(settings)}"})
        id_ = http.post("/fhir/Patient", json={"resourceType": "Patient", "active": True}).json()["id"]
        read = http.get(f"/fhir/Patient/{id_}", headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01",
                                                         "x-request-id": "7a6b5c4d3e2f1a0b"})
        assert read.status_code == 200
    # the app has stopped: its provider has exported what was left
    spans = [span for body in bodies for resource in ExportTraceServiceRequest.FromString(body).resource_spans
             for scope in resource.scope_spans for span in scope.spans]
    names = [span.name for span in spans]
    assert "POST /fhir/Patient" in names and "GET /fhir/Patient/{id_}" in names, names
    [span] = [span for span in spans if span.name == "GET /fhir/Patient/{id_}"]
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["http.route"].string_value == "/fhir/Patient/{id_}"
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["patientkontrakt.request_id"].string_value == "7a6b5c4d3e2f1a0b"
    assert not [body for body in bodies if id_.encode() in body]  # no id, no path in any span


def test_configured_without_the_sdk_it_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert not cli._tracing_without_sdk()  # installed here (the test extra)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with pytest.raises(tracing.TracingUnavailable, match=r"patientkontrakt\[otel\]"):
        tracing.provider()
    assert cli._tracing_without_sdk()  # `patientkontrakt serve` refuses before uvicorn starts
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.provider() is None and not cli._tracing_without_sdk()
