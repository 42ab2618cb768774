"""A Bundle entry's request as the processor sees it: method and URL forms, the interaction and
permissions it needs, and errors that name the entry. Pure: no database."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from patientkontrakt.fhir.bundle_entries import entry_error, interaction_of, needs_of, parse_entry, parse_numbered_entry
from patientkontrakt.fhir.errors import BadRequest, FhirError, NotFound, UnsupportedMediaType
from patientkontrakt.fhir.json_patch import JSON_PATCH

BASE = "https://example.org/fhir"
TYPES = {"Patient", "CarePlan", "Goal"}


def check_type(type_: str) -> None:
    if type_ not in TYPES:
        raise NotFound(f"Unknown resource type {type_!r}")


def binary(document: Any) -> dict[str, Any]:
    """A PATCH entry's resource: the JSON Patch ``document`` (one operation when empty) as a
    Binary (R4 http.html#patch)."""
    ops = document if document != [] else [{"op": "remove", "path": "/note"}]
    return {"resourceType": "Binary", "contentType": JSON_PATCH,
            "data": base64.b64encode(json.dumps(ops).encode()).decode()}


def entry(method: str, url: str, resource: dict[str, Any] | None = None, **request: str) -> dict[str, Any]:
    raw: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        raw["resource"] = resource
    return raw


@pytest.mark.parametrize(("raw", "interaction", "needs"), [
    (entry("GET", "Goal/g1"), "read", [("Goal", "read")]),
    (entry("GET", "Goal/g1/_history/2"), "vread", [("Goal", "vread")]),
    (entry("GET", "Goal?patient=p1"), "search-type", [("Goal", "search-type")]),
    (entry("POST", "Goal", {"resourceType": "Goal"}), "create", [("Goal", "create")]),
    (entry("POST", "Goal", {"resourceType": "Goal"}, ifNoneExist="identifier=x"), "create",
     [("Goal", "create"), ("Goal", "search-type")]),
    (entry("PUT", "Goal/g1", {"resourceType": "Goal", "id": "g1"}), "update", [("Goal", "update")]),
    (entry("PUT", "Goal?identifier=x", {"resourceType": "Goal"}), "update",
     [("Goal", "update"), ("Goal", "search-type")]),
    (entry("DELETE", "Goal/g1"), "delete", [("Goal", "delete")]),
    (entry("DELETE", "Goal?identifier=x"), "delete", [("Goal", "delete"), ("Goal", "search-type")]),
    (entry("PATCH", "Goal/g1", binary([])), "update", [("Goal", "update")]),
    (entry("PATCH", "Goal?identifier=x", binary([])), "update", [("Goal", "update"), ("Goal", "search-type")]),
])
def test_each_entry_needs_its_interaction_and_search_for_its_conditions(
        raw: dict[str, Any], interaction: str, needs: list[tuple[str, str]]) -> None:
    parsed = parse_entry(raw, BASE, check_type)
    assert interaction_of(parsed) == interaction
    assert list(needs_of(parsed)) == needs


def test_an_absolute_url_on_this_server_is_the_same_as_a_relative_one() -> None:
    absolute = parse_entry(entry("GET", f"{BASE}/CarePlan/c1/_history/3"), BASE, check_type)
    assert (absolute.type, absolute.id, absolute.version) == ("CarePlan", "c1", "3")


def test_the_resource_is_a_copy() -> None:
    resource = {"resourceType": "Goal", "subject": {"reference": "urn:uuid:1"}}
    parsed = parse_entry(entry("POST", "Goal", resource), BASE, check_type)
    assert parsed.resource is not None
    parsed.resource["subject"]["reference"] = "Patient/p1"
    assert resource["subject"]["reference"] == "urn:uuid:1"


@pytest.mark.parametrize(("raw", "error", "expression"), [
    ("not an object", BadRequest, "Bundle.entry[3]"),
    ({"resource": {}}, BadRequest, "Bundle.entry[3].request"),
    (entry("TRACE", "Goal/g1"), BadRequest, "Bundle.entry[3].request.method"),
    (entry("PATCH", "Goal/g1"), BadRequest, "Bundle.entry[3].resource"),
    (entry("PATCH", "Goal/g1", {"resourceType": "Goal"}), BadRequest, "Bundle.entry[3].resource"),
    (entry("PATCH", "Goal/g1", {"resourceType": "Parameters"}), UnsupportedMediaType, "Bundle.entry[3].resource"),
    (entry("PATCH", "Goal/g1", {**binary([]), "contentType": "application/json"}), UnsupportedMediaType,
     "Bundle.entry[3].resource.contentType"),
    (entry("PATCH", "Goal/g1", {**binary([]), "data": "not base64!"}), BadRequest, "Bundle.entry[3].resource.data"),
    (entry("PATCH", "Goal/g1", {"resourceType": "Binary", "contentType": JSON_PATCH}), BadRequest,
     "Bundle.entry[3].resource.data"),
    (entry("PATCH", "Goal/g1", binary({"op": "remove"})), BadRequest, "Bundle.entry[3]"),
    (entry("PATCH", "Goal", binary([])), BadRequest, "Bundle.entry[3].request.url"),
    (entry("PATCH", "Goal/g1/_history/1", binary([])), BadRequest, "Bundle.entry[3].request.url"),
    (entry("GET", "/"), BadRequest, "Bundle.entry[3].request.url"),
    (entry("GET", "Goal/g1/x/y/z"), BadRequest, "Bundle.entry[3].request.url"),
    (entry("PUT", "Goal/not%20an%20id", {"resourceType": "Goal"}), BadRequest, "Bundle.entry[3].request.url"),
    (entry("POST", "Goal"), BadRequest, "Bundle.entry[3].resource"),
    (entry("GET", "Observation/o1"), NotFound, "Bundle.entry[3]"),
])
def test_a_bad_entry_is_refused_naming_the_entry(raw: Any, error: type[FhirError], expression: str) -> None:
    with pytest.raises(error) as refused:
        parse_numbered_entry(3, raw, BASE, check_type)
    assert refused.value.issues[0].expression[0] == expression
    assert refused.value.diagnostics.startswith("Bundle.entry[3]: ")


def test_an_entry_error_points_into_the_entrys_resource() -> None:
    error = entry_error(2, BadRequest("bad subject", expression=("CarePlan.subject", "request.url")))
    assert error.issues[0].expression == ("Bundle.entry[2].resource.subject", "Bundle.entry[2].request.url")
