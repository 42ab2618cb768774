"""Request bodies as JSON (fhir/requests.py): what is refused, and where the answer says it is."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from patientkontrakt.fhir.errors import BadRequest, FhirError
from patientkontrakt.fhir.requests import parse_body, parse_json


def _refused(raw: bytes, max_depth: int = 8) -> FhirError:
    with pytest.raises(FhirError) as caught:
        parse_json(raw, max_depth)
    return caught.value


def test_a_resource_is_parsed() -> None:
    resource = {"resourceType": "Patient", "name": [{"family": "Tolvansson", "given": ["Tolvan", "Åke"]}]}
    assert parse_body(orjson.dumps(resource)) == resource


@pytest.mark.parametrize(("body", "at"), [
    ({"resourceType": "Patient", "name": [{"family": "a\x00b"}]}, "Patient.name[0].family"),
    ({"resourceType": "Patient", "name": [{"given": ["x", "\x00"]}]}, "Patient.name[0].given[1]"),
    ({"resourceType": "Patient", "extension": [{"url\x00": "x"}]}, "Patient.extension[0].url\x00"),
    ([{"op": "add", "path": "/x", "value": "\x00"}], "$[0].value"),
])
def test_u0000_is_refused_where_it_is(body: Any, at: str) -> None:
    error = _refused(orjson.dumps(body))
    assert isinstance(error, BadRequest) and error.status == 400
    assert error.issues[0].expression == (at,)
    assert "U+0000" in error.diagnostics


def test_an_escaped_backslash_before_u0000_is_text() -> None:
    raw = orjson.dumps({"resourceType": "Patient", "name": [{"family": "\\u0000"}]})
    assert b"\\\\u0000" in raw  # the text "\u0000", six characters
    assert parse_json(raw)["name"][0]["family"] == "\\u0000"


def test_nesting_past_the_limit_is_refused_at_the_first_node_too_deep() -> None:
    deep: dict[str, Any] = {"url": "x"}
    for _ in range(4):
        deep = {"url": "x", "extension": [deep]}
    body = {"resourceType": "Patient", "extension": [deep]}  # Patient 1, extension[] 2, {} 3, ...: 11 levels
    assert parse_json(orjson.dumps(body), 11) == body
    error = _refused(orjson.dumps(body), 10)
    assert error.status == 413
    assert error.issues[0].expression == ("Patient.extension[0].extension[0].extension[0].extension[0].extension[0]",)


@pytest.mark.parametrize("raw", [b"", b"  ", b"{", b"[1,", b"nul"])
def test_empty_or_broken_json_is_a_400(raw: bytes) -> None:
    assert _refused(raw).status == 400


def test_a_body_that_is_not_an_object_is_not_a_resource() -> None:
    with pytest.raises(BadRequest):
        parse_body(b"[]")
