"""Conditional read and vread (R4 http.html#cread): 304 for what the client holds already."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fastapi.testclient import TestClient

from patientkontrakt.fhir.conditional import ReadConditions
from tests.factories import create, patient


def _http_date(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC), usegmt=True)


def test_if_none_match_of_the_current_version_is_304_without_a_body(client: TestClient) -> None:
    created = create(client, patient())
    read = client.get(f"/fhir/Patient/{created['id']}")
    response = client.get(f"/fhir/Patient/{created['id']}", headers={"if-none-match": read.headers["etag"]})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["last-modified"] == read.headers["last-modified"]


@pytest.mark.parametrize("header", ['W/"2"', '"1"', '1', 'W/"7", W/"1"', "*"])
def test_if_none_match_forms(client: TestClient, header: str) -> None:
    pid = create(client, patient())["id"]
    client.put(f"/fhir/Patient/{pid}", json={**patient(), "id": pid, "gender": "female"})
    status = client.get(f"/fhir/Patient/{pid}", headers={"if-none-match": header}).status_code
    assert status == (304 if header in ('W/"2"', "*") else 200)


def test_a_stale_etag_gets_the_resource(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    client.put(f"/fhir/Patient/{pid}", json={**patient(), "id": pid, "gender": "female"})
    response = client.get(f"/fhir/Patient/{pid}", headers={"if-none-match": 'W/"1"'})
    assert response.status_code == 200
    assert response.json()["gender"] == "female"
    assert response.headers["etag"] == 'W/"2"'


def test_if_modified_since(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    last_modified = client.get(f"/fhir/Patient/{pid}").headers["last-modified"]
    url = f"/fhir/Patient/{pid}"
    assert client.get(url, headers={"if-modified-since": last_modified}).status_code == 304
    later = _http_date(datetime.now(UTC) + timedelta(days=1))
    assert client.get(url, headers={"if-modified-since": later}).status_code == 304
    earlier = _http_date(datetime.now(UTC) - timedelta(days=1))
    assert client.get(url, headers={"if-modified-since": earlier}).status_code == 200
    assert client.get(url, headers={"if-modified-since": "not a date"}).status_code == 200


def test_if_none_match_decides_over_if_modified_since(client: TestClient) -> None:
    """RFC 9110 §13.1.3: with If-None-Match present, If-Modified-Since is ignored."""
    pid = create(client, patient())["id"]
    later = _http_date(datetime.now(UTC) + timedelta(days=1))
    response = client.get(f"/fhir/Patient/{pid}", headers={"if-none-match": 'W/"9"', "if-modified-since": later})
    assert response.status_code == 200


def test_with_summary_too(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    assert client.get(f"/fhir/Patient/{pid}?_summary=true", headers={"if-none-match": 'W/"1"'}).status_code == 304


def test_vread(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    client.put(f"/fhir/Patient/{pid}", json={**patient(), "id": pid, "gender": "female"})
    first = client.get(f"/fhir/Patient/{pid}/_history/1", headers={"if-none-match": 'W/"1"'})
    assert first.status_code == 304
    assert first.headers["etag"] == 'W/"1"'
    assert client.get(f"/fhir/Patient/{pid}/_history/1", headers={"if-none-match": 'W/"2"'}).status_code == 200


def test_absent_and_deleted_are_not_304(client: TestClient) -> None:
    headers = {"if-none-match": "*", "if-modified-since": _http_date(datetime.now(UTC) + timedelta(days=1))}
    assert client.get("/fhir/Patient/nobody", headers=headers).status_code == 404
    assert client.get("/fhir/Patient/nobody/_history/1", headers=headers).status_code == 404
    pid = create(client, patient())["id"]
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    assert client.get(f"/fhir/Patient/{pid}", headers=headers).status_code == 410


def test_conditions_compare_whole_seconds() -> None:
    updated = datetime(2026, 12, 6, 10, 0, 0, 750000)
    assert ReadConditions(if_modified_since="Sun, 06 Dec 2026 10:00:00 GMT").unchanged(1, updated)
    assert not ReadConditions(if_modified_since="Sun, 06 Dec 2026 09:59:59 GMT").unchanged(1, updated)
    assert not ReadConditions().unchanged(1, updated)
