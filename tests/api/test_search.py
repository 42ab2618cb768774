"""FHIR search over HTTP (R4 search.html) against PostgreSQL: every parameter type from both
sides, chaining, includes, sorting, paging, result controls and error handling.

Resources are written with client-chosen ids (PUT) so that each test can name the exact set
of ids a search must return.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from patientkontrakt.fhir.access import bound
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.fhir.search import engine
from tests.factories import PNR, care_plan, care_team, create, goal, organization, patient, practitioner

SAMORDNING = "http://electronichealth.se/identifier/samordningsnummer"
FORM = {"content-type": "application/x-www-form-urlencoded"}
STRICT = {"Prefer": "handling=strict"}
Params = dict[str, str] | list[tuple[str, str]]


# -- helpers -------------------------------------------------------------------------------


def put(client: TestClient, id_: str, resource: dict[str, Any]) -> dict[str, Any]:
    """Create (or update) ``resource`` with the id ``id_``."""
    response = client.put(f"/fhir/{resource['resourceType']}/{id_}", json={**resource, "id": id_})
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def person(id_: str, family: str | None = "Tolvansson", given: str | None = "Tolvan", *,
           birth: str | None = None, gender: str | None = None,
           identifiers: list[tuple[str | None, str]] = (), **extra: Any) -> dict[str, Any]:
    """A Patient body (not stored) with only the elements a test names."""
    body: dict[str, Any] = {"resourceType": "Patient", "id": id_}
    if identifiers:
        body["identifier"] = [{"value": v} if s is None else {"system": s, "value": v} for s, v in identifiers]
    if family or given:
        name: dict[str, Any] = {}
        if family:
            name["family"] = family
        if given:
            name["given"] = [given]
        body["name"] = [name]
    if gender:
        body["gender"] = gender
    if birth:
        body["birthDate"] = birth
    body.update(extra)
    return body


def provenance(targets: list[str], agent: str, recorded: str = "2024-05-01T10:00:00+02:00") -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": t} for t in targets],
        "recorded": recorded,
        "agent": [{"who": {"reference": agent}}],
    }


def goal_due(patient_id: str, due: str | None = None, **target: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "Promenera varje dag"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if due is not None:
        body["target"] = [{"dueDate": due}]
    elif target:
        body["target"] = [target]
    return body


def get(client: TestClient, path: str, params: Params | None = None,
        headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = client.get(f"/fhir/{path}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


def matches(bundle: dict[str, Any]) -> list[str]:
    """Ids of the entries with search.mode = match, in Bundle order."""
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def included(bundle: dict[str, Any]) -> set[str]:
    """``Type/id`` of the entries with search.mode = include."""
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", []) if e["search"]["mode"] == "include"
    }


def found(client: TestClient, path: str, params: Params | None = None, **kw: Any) -> set[str]:
    ids = matches(get(client, path, params, **kw))
    assert len(ids) == len(set(ids)), f"duplicate matches: {ids}"
    return set(ids)


def ordered(client: TestClient, path: str, params: Params | None = None) -> list[str]:
    return matches(get(client, path, params))


def rejected(client: TestClient, path: str, params: Params | None = None, status: int = 400,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = client.get(f"/fhir/{path}", params=params, headers=headers)
    assert response.status_code == status, response.text
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert outcome["issue"][0]["diagnostics"]
    return outcome


def check(client: TestClient, path: str, cases: list[tuple[Params, set[str]]]) -> None:
    """Run every case (search parameters, exact set of matching ids) and report all that differ."""
    wrong = []
    for params, expected in cases:
        response = client.get(f"/fhir/{path}", params=params)
        if response.status_code != 200:
            wrong.append(f"{path}?{urlencode(params)}: HTTP {response.status_code} {response.text[:300]}")
            continue
        ids = matches(response.json())
        if len(ids) != len(set(ids)) or set(ids) != expected:
            wrong.append(f"{path}?{urlencode(params)}: got {sorted(ids)}, expected {sorted(expected)}")
    assert not wrong, "\n".join(wrong)


def _names_any(names: set[str], expression: list[str]) -> bool:
    """The error points at one of the parameters (or, in a chain, at its last link)."""
    return any(name == e or name.endswith(f".{e}") for name in names for e in expression)


def check_rejected(client: TestClient, path: str, cases: list[Params], status: int = 400,
                   headers: dict[str, str] | None = None) -> None:
    """Every case must be answered ``status`` with an OperationOutcome naming the parameter."""
    wrong = []
    for params in cases:
        response = client.get(f"/fhir/{path}", params=params, headers=headers)
        body = response.json()
        pairs = list(params.items()) if isinstance(params, dict) else params
        names = {name for name, _ in pairs}
        if response.status_code != status or body.get("resourceType") != "OperationOutcome":
            wrong.append(f"{path}?{urlencode(params)}: HTTP {response.status_code} {response.text[:300]}")
        elif status == 400 and not _names_any(names, body["issue"][0].get("expression", [])):
            wrong.append(f"{path}?{urlencode(params)}: expression {body['issue'][0].get('expression')}")
    assert not wrong, "\n".join(wrong)


def links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


def follow(client: TestClient, url: str) -> dict[str, Any]:
    assert url.startswith("http://testserver/fhir/"), url
    response = client.get(url)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


def tick() -> None:
    """Let the clock move on, so consecutive writes get distinct lastUpdated (milliseconds)."""
    time.sleep(0.005)


# -- token ---------------------------------------------------------------------------------


@pytest.fixture
def token_patients(client: TestClient) -> None:
    put(client, "p-pnr", person("p-pnr", identifiers=[(PNR, "191212121212")], gender="male", active=True))
    put(client, "p-pnr2", person("p-pnr2", identifiers=[(PNR, "200001012380")], gender="female", active=False))
    put(client, "p-samord", person("p-samord", identifiers=[(SAMORDNING, "191212121212")], gender="male"))
    put(client, "p-nosys", person("p-nosys", identifiers=[(None, "191212121212")]))
    put(client, "p-none", person("p-none"))


@pytest.mark.usefixtures("token_patients")
def test_token_system_and_code_forms(client: TestClient) -> None:
    check(client, "Patient", [({"identifier": value}, expected) for value, expected in [
        (f"{PNR}|191212121212", {"p-pnr"}),
        ("191212121212", {"p-pnr", "p-samord", "p-nosys"}),
        ("|191212121212", {"p-nosys"}),
        (f"{PNR}|", {"p-pnr", "p-pnr2"}),
        (f"{SAMORDNING}|", {"p-samord"}),
        (f"{PNR}|000000000000", set()),
        (f"{SAMORDNING}|200001012380", set()),
        ("http://unknown.example|191212121212", set()),
        ("19121212", set()),  # tokens match whole codes, never prefixes
        (f"{PNR}|191212121212,{PNR}|200001012380", {"p-pnr", "p-pnr2"}),
    ]])


@pytest.mark.usefixtures("token_patients")
def test_token_code_and_boolean(client: TestClient) -> None:
    assert found(client, "Patient", {"gender": "male"}) == {"p-pnr", "p-samord"}
    assert found(client, "Patient", {"gender": "female"}) == {"p-pnr2"}
    assert found(client, "Patient", {"gender": "Male"}) == set()
    assert found(client, "Patient", {"gender": "male,female"}) == {"p-pnr", "p-pnr2", "p-samord"}
    assert found(client, "Patient", {"active": "true"}) == {"p-pnr"}
    assert found(client, "Patient", {"active": "false"}) == {"p-pnr2"}


@pytest.mark.usefixtures("token_patients")
def test_token_parameters_are_anded(client: TestClient) -> None:
    assert found(client, "Patient", [("gender", "male"), ("identifier", f"{PNR}|")]) == {"p-pnr"}
    assert found(client, "Patient", [("identifier", "191212121212"), ("identifier", f"{SAMORDNING}|")]) == {
        "p-samord"}
    assert found(client, "Patient", [("gender", "female"), ("identifier", f"{SAMORDNING}|")]) == set()


@pytest.mark.usefixtures("token_patients")
def test_token_not_includes_resources_without_a_value(client: TestClient) -> None:
    # R4 search.html#token: :not also returns resources that have no value for the parameter.
    assert found(client, "Patient", {"gender:not": "male"}) == {"p-pnr2", "p-nosys", "p-none"}
    assert found(client, "Patient", {"gender:not": "male,female"}) == {"p-nosys", "p-none"}
    assert found(client, "Patient", {"identifier:not": f"{PNR}|"}) == {"p-samord", "p-nosys", "p-none"}


@pytest.mark.usefixtures("token_patients")
def test_token_missing(client: TestClient) -> None:
    assert found(client, "Patient", {"gender:missing": "true"}) == {"p-nosys", "p-none"}
    assert found(client, "Patient", {"gender:missing": "false"}) == {"p-pnr", "p-pnr2", "p-samord"}
    assert found(client, "Patient", {"identifier:missing": "true"}) == {"p-none"}
    rejected(client, "Patient", {"gender:missing": "yes"})


@pytest.mark.usefixtures("token_patients")
def test_token_unsupported_modifier_is_400(client: TestClient) -> None:
    check_rejected(client, "Patient", [{name: "male"} for name in [
        "gender:exact", "gender:contains", "gender:text", "gender:in", "gender:below", "gender:above",
        "identifier:of-type", "gender:Patient", "gender:iterate",
    ]])


def test_token_escaped_bar_is_part_of_the_code(client: TestClient) -> None:
    """R4 search.html#escaping: ``\\|`` is a literal bar, not the system separator."""
    put(client, "bar", person("bar", identifiers=[(None, "a|b")]))
    put(client, "sys-bar", person("sys-bar", identifiers=[("urn:x", "a|b")]))
    put(client, "split", person("split", identifiers=[("a", "b")]))
    put(client, "comma", person("comma", identifiers=[("urn:x", "c,d")]))
    check(client, "Patient", [
        ({"identifier": r"a\|b"}, {"bar", "sys-bar"}),
        ({"identifier": r"|a\|b"}, {"bar"}),
        ({"identifier": r"urn:x|a\|b"}, {"sys-bar"}),
        ({"identifier": "a|b"}, {"split"}),
        ({"identifier": r"urn:x|c\,d"}, {"comma"}),
        ({"identifier": "urn:x|c,d"}, set()),
    ])


def test_token_on_meta_tag_and_security(client: TestClient) -> None:
    tags = "http://example.org/tags"
    put(client, "tagged", person("tagged", meta={"tag": [{"system": tags, "code": "demo"}]}))
    put(client, "other-tag", person("other-tag", meta={"tag": [{"system": tags, "code": "test"}]}))
    put(client, "plain", person("plain"))
    check(client, "Patient", [
        ({"_tag": f"{tags}|demo"}, {"tagged"}),
        ({"_tag": "demo,test"}, {"tagged", "other-tag"}),
        ({"_tag": f"{tags}|"}, {"tagged", "other-tag"}),
        ({"_tag:not": f"{tags}|demo"}, {"other-tag", "plain"}),
        ({"_tag:missing": "true"}, {"plain"}),
        ({"_security:missing": "false"}, set()),
    ])


def test_token_on_codeable_concept(client: TestClient) -> None:
    put(client, "p1", person("p1"))
    snomed = "http://snomed.info/sct"
    put(client, "cp-a", care_plan("p1", category=[{"coding": [{"system": snomed, "code": "734163000"}]}]))
    put(client, "cp-b", care_plan("p1", category=[{"coding": [{"system": "urn:oid:1.2.3", "code": "734163000"}]}],
                                  status="draft"))
    put(client, "cp-c", care_plan("p1"))
    assert found(client, "CarePlan", {"category": f"{snomed}|734163000"}) == {"cp-a"}
    assert found(client, "CarePlan", {"category": "734163000"}) == {"cp-a", "cp-b"}
    assert found(client, "CarePlan", {"category:missing": "true"}) == {"cp-c"}
    assert found(client, "CarePlan", {"status": "active"}) == {"cp-a", "cp-c"}
    assert found(client, "CarePlan", {"status:not": "active"}) == {"cp-b"}


# -- string --------------------------------------------------------------------------------


@pytest.fixture
def named_patients(client: TestClient) -> None:
    put(client, "asa", person("asa", "Öberg", "Åsa"))
    put(client, "marta", person("marta", "Äng", "Märta"))
    put(client, "tolvan", person("tolvan", "Tolvansson", "Tolvan"))
    put(client, "anna", person("anna", "Berg", "Anna"))
    put(client, "noname", person("noname", None, None))


@pytest.mark.usefixtures("named_patients")
def test_string_default_is_starts_with_ignoring_case_and_accents(client: TestClient) -> None:
    check(client, "Patient", [({param: value}, expected) for param, value, expected in [
        ("name", "Öberg", {"asa"}),
        ("name", "öberg", {"asa"}),
        ("name", "OBERG", {"asa"}),  # accents and case are ignored
        ("name", "obe", {"asa"}),  # starts-with
        ("name", "berg", {"anna"}),  # starts-with, not contains: Öberg does not start with berg
        ("name", "åsa", {"asa"}),
        ("name", "ASA", {"asa"}),
        ("name", "Märta", {"marta"}),
        ("name", "marta", {"marta"}),
        ("name", "MÄR", {"marta"}),
        ("name", "ang", {"marta"}),  # Äng; Anna starts with 'an', not 'ang'
        ("name", "an", {"marta", "anna"}),
        ("family", "ang", {"marta"}),
        ("given", "ang", set()),
        ("given", "an", {"anna"}),
        ("family", "Tolvan", {"tolvan"}),
        ("given", "Tolvansson", set()),
        ("name", "tolvan,berg", {"tolvan", "anna"}),
        ("name", "  tolvan ", {"tolvan"}),
        ("name", "Xyz", set()),
        ("name", "%", set()),  # LIKE wildcards are literal characters
        ("name", "T_lvan", set()),
        ("name", "Tolvanssons", set()),
    ]])


@pytest.mark.usefixtures("named_patients")
def test_string_contains(client: TestClient) -> None:
    check(client, "Patient", [({"name:contains": value}, expected) for value, expected in [
        ("berg", {"asa", "anna"}),
        ("ÄRT", {"marta"}),
        ("vans", {"tolvan"}),
        ("lvan", {"tolvan"}),
        ("n", {"marta", "tolvan", "anna"}),
        ("%", set()),
        ("zz", set()),
    ]])


@pytest.mark.usefixtures("named_patients")
def test_string_exact(client: TestClient) -> None:
    check(client, "Patient", [({"name:exact": value}, expected) for value, expected in [
        ("Öberg", {"asa"}),
        ("Åsa", {"asa"}),
        ("öberg", set()),  # exact is case-sensitive
        ("Oberg", set()),  # and accent-sensitive
        ("Öber", set()),  # and whole-string
        ("Tolvan", {"tolvan"}),
        ("Tolvan,Äng", {"tolvan", "marta"}),
    ]])


@pytest.mark.usefixtures("named_patients")
def test_string_missing(client: TestClient) -> None:
    assert found(client, "Patient", {"name:missing": "true"}) == {"noname"}
    assert found(client, "Patient", {"name:missing": "false"}) == {"asa", "marta", "tolvan", "anna"}


@pytest.mark.usefixtures("named_patients")
def test_string_unsupported_modifier_is_400(client: TestClient) -> None:
    check_rejected(client, "Patient", [{name: "berg"} for name in [
        "name:below", "name:not", "name:text", "family:above", "name:Patient", "name:missing", "given:in",
    ]])


def test_string_over_name_and_alias(client: TestClient) -> None:
    put(client, "vc", organization(hsa="SE1", name="Vårdcentralen Älvsjö", alias=["VC Söder"]))
    put(client, "sjh", organization(hsa="SE2", name="Sjukhuset"))
    assert found(client, "Organization", {"name": "vardcentralen"}) == {"vc"}
    assert found(client, "Organization", {"name": "vc sod"}) == {"vc"}
    assert found(client, "Organization", {"name:contains": "ALVSJO"}) == {"vc"}
    assert found(client, "Organization", {"name": "sj"}) == {"sjh"}
    assert found(client, "Organization", {"name:exact": "Sjukhuset"}) == {"sjh"}
    assert found(client, "Organization", {"name:exact": "Sjukhus"}) == set()


def test_empty_value_is_ignored(client: TestClient) -> None:
    put(client, "a", person("a"))
    put(client, "b", person("b", "Berg"))
    assert found(client, "Patient", {"name": ""}) == {"a", "b"}


# -- date ----------------------------------------------------------------------------------


@pytest.fixture
def born(client: TestClient) -> None:
    put(client, "b1912", person("b1912", birth="1912-12-12"))
    put(client, "b1950", person("b1950", birth="1950-06-15"))
    put(client, "b1980", person("b1980", birth="1980"))
    put(client, "b198005", person("b198005", birth="1980-05"))
    put(client, "b2000", person("b2000", birth="2000-01-01"))
    put(client, "bnone", person("bnone"))


@pytest.mark.usefixtures("born")
def test_date_prefixes_on_birthdate(client: TestClient) -> None:
    check(client, "Patient", [({"birthdate": value}, expected) for value, expected in [
        ("1950-06-15", {"b1950"}),
        ("eq1950-06-15", {"b1950"}),
        ("1950-06-16", set()),
        ("1950", {"b1950"}),
        ("1950-06", {"b1950"}),
        ("1980", {"b1980", "b198005"}),  # eq: the search range contains the value's range
        ("1980-05", {"b198005"}),  # the whole year 1980 is not inside May 1980
        ("1980-05-10", set()),
        ("ne1980", {"b1912", "b1950", "b2000"}),
        ("ne1980-05", {"b1912", "b1950", "b1980", "b2000"}),
        ("gt1980", {"b2000"}),
        ("gt1980-04", {"b1980", "b198005", "b2000"}),  # ranges reaching past April 1980
        ("gt2000-01-01", set()),
        ("lt1950-06-15", {"b1912"}),
        ("lt1980-06", {"b1912", "b1950", "b1980", "b198005"}),
        ("le1950-06-15", {"b1912", "b1950"}),
        ("le1912", {"b1912"}),
        ("ge1950-06-15", {"b1950", "b1980", "b198005", "b2000"}),
        ("ge2000", {"b2000"}),
        ("ge2000-01-02", set()),
        ("sa1950-06-15", {"b1980", "b198005", "b2000"}),
        ("sa1980-05-10", {"b2000"}),  # the year 1980 and May 1980 overlap the 10th
        ("eb1980-05-10", {"b1912", "b1950"}),
        ("eb1912-12-12", set()),
        ("1912,2000", {"b1912", "b2000"}),
        ("1950-06-15T12:00:00Z", set()),  # a day is not inside one second
        ("gt1950-06-15T12:00:00Z", {"b1950", "b1980", "b198005", "b2000"}),  # the rest of the day is later
        ("lt1950-06-15T12:00:00Z", {"b1912", "b1950"}),
        ("sa1950-06-15T12:00:00Z", {"b1980", "b198005", "b2000"}),
    ]])


@pytest.mark.usefixtures("born")
def test_date_range_by_two_parameters_and_missing(client: TestClient) -> None:
    assert found(client, "Patient", [("birthdate", "ge1950"), ("birthdate", "lt2000")]) == {
        "b1950", "b1980", "b198005"}
    assert found(client, "Patient", [("birthdate", "gt2000"), ("birthdate", "lt1912")]) == set()
    assert found(client, "Patient", {"birthdate:missing": "true"}) == {"bnone"}
    assert found(client, "Patient", {"birthdate:missing": "false"}) == {
        "b1912", "b1950", "b1980", "b198005", "b2000"}


@pytest.mark.usefixtures("born")
def test_malformed_date_is_400(client: TestClient) -> None:
    check_rejected(client, "Patient", [{"birthdate": value} for value in [
        "1950-13-01", "1950-02-30", "15/06/1950", "xx1950", "eq", "1950-6-15", "yesterday", "1950-06-15T25:00",
        "1950-06-15T10:00:00+2", "19500615", "1950-06-15 10:00", "ge", "1950-06-15T10", "gt1950,1951-00",
    ]])
    outcome = rejected(client, "Patient", {"birthdate": "1950-13-01"})
    assert outcome["issue"][0]["details"]["text"]


@pytest.mark.usefixtures("born")
def test_date_unsupported_modifier_is_400(client: TestClient) -> None:
    check_rejected(client, "Patient", [{name: "1950"} for name in [
        "birthdate:exact", "birthdate:not", "birthdate:contains", "birthdate:above"
    ]])


def test_date_approximately(client: TestClient) -> None:
    """``ap``: within 10 % of the distance from now (at least a day), R4 search.html#prefix."""
    put(client, "p1", person("p1"))
    today = datetime.now(UTC).date()

    def day(offset: int) -> str:
        return (today + timedelta(days=offset)).isoformat()

    for offset in (70, 100, 105, 130):
        put(client, f"g{offset}", goal_due("p1", day(offset)))
    assert found(client, "Goal", {"target-date": f"ap{day(100)}"}) == {"g100", "g105"}
    assert found(client, "Goal", {"target-date": f"ap{day(130)}"}) == {"g130"}
    assert found(client, "Goal", {"target-date": f"ap{day(400)}"}) == set()
    assert found(client, "Goal", {"target-date": f"eq{day(100)}"}) == {"g100"}


def test_date_with_time_zone(client: TestClient) -> None:
    put(client, "p1", person("p1"))
    put(client, "pr1", practitioner())
    put(client, "prov", provenance(["Patient/p1"], "Practitioner/pr1", recorded="2024-05-01T10:00:00+02:00"))
    put(client, "prov-late", provenance(["Patient/p1"], "Practitioner/pr1", recorded="2024-05-01T23:30:00Z"))
    assert found(client, "Provenance", {"recorded": "2024-05-01T08:00:00Z"}) == {"prov"}
    assert found(client, "Provenance", {"recorded": "2024-05-01T10:00:00+02:00"}) == {"prov"}
    assert found(client, "Provenance", {"recorded": "2024-05-01T10:00:00Z"}) == set()
    assert found(client, "Provenance", {"recorded": "2024-05-01"}) == {"prov", "prov-late"}
    assert found(client, "Provenance", {"recorded": "2024-05-02T01:30:00+02:00"}) == {"prov-late"}
    assert found(client, "Provenance", {"recorded": "gt2024-05-01T12:00:00Z"}) == {"prov-late"}
    assert found(client, "Provenance", {"recorded": "lt2024-05-01T09:00:01+01:00"}) == {"prov"}
    assert found(client, "Provenance", {"recorded": "2024-05-01T08:00Z"}) == {"prov"}  # minute precision


@pytest.fixture
def plan_periods(client: TestClient) -> None:
    put(client, "p1", person("p1"))
    put(client, "march", care_plan("p1", period={"start": "2024-03-01", "end": "2024-03-31"}))
    put(client, "open-end", care_plan("p1", period={"start": "2024-06-01"}))
    put(client, "open-start", care_plan("p1", period={"end": "2023-12-31"}))
    no_period = care_plan("p1")
    del no_period["period"]
    put(client, "no-period", no_period)


@pytest.mark.usefixtures("plan_periods")
def test_date_prefixes_on_period(client: TestClient) -> None:
    check(client, "CarePlan", [({"date": value}, expected) for value, expected in [
        ("2024-03", {"march"}),
        ("2024", {"march"}),  # an open end reaches past 2024
        ("2024-03-15", set()),  # a month is not inside one day
        ("ne2024-03", {"open-end", "open-start"}),
        ("gt2024-03-15", {"march", "open-end"}),
        ("gt2030", {"open-end"}),
        ("ge2024-05-01", {"open-end"}),
        ("ge2024-03-01", {"march", "open-end"}),
        ("lt2024-03-15", {"march", "open-start"}),
        ("lt1900", {"open-start"}),
        ("le2024-01-01", {"open-start"}),
        ("le2024-03-31", {"march", "open-start"}),
        ("sa2024-04-01", {"open-end"}),
        ("sa2024-03-30", {"open-end"}),
        ("eb2024-02-01", {"open-start"}),
        ("eb2024-06-01", {"march", "open-start"}),
    ]])


@pytest.mark.usefixtures("plan_periods")
def test_period_missing(client: TestClient) -> None:
    assert found(client, "CarePlan", {"date:missing": "true"}) == {"no-period"}
    assert found(client, "CarePlan", {"date:missing": "false"}) == {"march", "open-end", "open-start"}


def test_goal_target_date(client: TestClient) -> None:
    put(client, "p1", person("p1"))
    put(client, "summer", goal_due("p1", "2025-06-01"))
    put(client, "xmas", goal_due("p1", "2025-12-24"))
    put(client, "duration", goal_due("p1", dueDuration={"value": 3, "unit": "mo", "system": "http://unitsofmeasure.org",
                                                         "code": "mo"}))
    put(client, "untargeted", goal_due("p1"))
    assert found(client, "Goal", {"target-date": "2025-06-01"}) == {"summer"}
    assert found(client, "Goal", {"target-date": "2025"}) == {"summer", "xmas"}
    assert found(client, "Goal", {"target-date": "lt2025-07"}) == {"summer"}
    assert found(client, "Goal", {"target-date": "ge2025-12-24"}) == {"xmas"}
    assert found(client, "Goal", {"target-date": "gt2025-12-24"}) == set()
    assert found(client, "Goal", {"target-date": "2026"}) == set()
    assert found(client, "Goal", {"target-date:missing": "true"}) == {"duration", "untargeted"}


def _activity(scheduled: dict[str, Any]) -> dict[str, Any]:
    return {"detail": {"status": "scheduled", "description": "Promenad", **scheduled}}


@pytest.fixture
def plan_activities(client: TestClient) -> None:
    put(client, "p1", person("p1"))
    put(client, "period", care_plan("p1", activity=[
        _activity({"scheduledPeriod": {"start": "2024-04-01", "end": "2024-04-30"}})]))
    put(client, "event", care_plan("p1", activity=[
        _activity({"scheduledTiming": {"event": ["2024-05-10T09:00:00Z"]}})]))
    put(client, "bounds", care_plan("p1", activity=[
        _activity({"scheduledTiming": {"repeat": {
            "boundsPeriod": {"start": "2024-06-01", "end": "2024-08-31"},
            "frequency": 1, "period": 1, "periodUnit": "wk"}}})]))
    put(client, "text", care_plan("p1", activity=[_activity({"scheduledString": "Varje morgon"})]))
    put(client, "none", care_plan("p1"))


@pytest.mark.usefixtures("plan_activities")
def test_activity_date_on_scheduled_period_and_timing(client: TestClient) -> None:
    check(client, "CarePlan", [({"activity-date": value}, expected) for value, expected in [
        ("2024-04", {"period"}),
        ("2024-05-10", {"event"}),
        ("2024-05-10T09:00:00Z", {"event"}),
        ("2024-05-11", set()),
        ("2024", {"period", "event", "bounds"}),
        ("ge2024-07-01", {"bounds"}),
        ("gt2024-05-10", {"bounds"}),
        ("lt2024-05-01", {"period"}),
        ("le2024-05-10", {"period", "event"}),
        ("sa2024-05-31", {"bounds"}),
        ("eb2024-06-01", {"period", "event"}),
        ("ne2024-05-10", {"period", "bounds"}),
        ("2023", set()),
    ]])


@pytest.mark.usefixtures("plan_activities")
def test_activity_date_missing(client: TestClient) -> None:
    assert found(client, "CarePlan", {"activity-date:missing": "true"}) == {"text", "none"}


# -- reference -----------------------------------------------------------------------------


@pytest.fixture
def referenced(client: TestClient) -> None:
    put(client, "p1", person("p1"))
    put(client, "p2", person("p2"))
    put(client, "pr1", practitioner())
    put(client, "team1", care_team("p1"))
    put(client, "cp1", care_plan("p1", "team1"))
    put(client, "cp2", care_plan("p2"))
    put(client, "cp-abs", care_plan("p1", subject={"reference": "http://testserver/fhir/Patient/p1"}))
    put(client, "cp-ext", care_plan("p2", author={"reference": "http://other.example/fhir/Practitioner/ext1"}))
    put(client, "cp-author", care_plan("p2", author={"reference": "Practitioner/pr1"}))


@pytest.mark.usefixtures("referenced")
def test_reference_forms(client: TestClient) -> None:
    check(client, "CarePlan", [({param: value}, expected) for param, value, expected in [
        ("subject", "p1", {"cp1", "cp-abs"}),
        ("subject", "Patient/p1", {"cp1", "cp-abs"}),
        ("subject", "http://testserver/fhir/Patient/p1", {"cp1", "cp-abs"}),
        ("subject", "Patient/p1/_history/1", {"cp1", "cp-abs"}),
        ("subject:Patient", "p1", {"cp1", "cp-abs"}),
        ("subject:Patient", "Patient/p1", {"cp1", "cp-abs"}),
        ("subject", "p2", {"cp2", "cp-ext", "cp-author"}),
        ("subject", "p1,Patient/p2", {"cp1", "cp-abs", "cp2", "cp-ext", "cp-author"}),
        ("subject", "Patient/nobody", set()),
        ("subject", "http://elsewhere.example/fhir/Patient/p1", set()),
        ("patient", "p1", {"cp1", "cp-abs"}),
        ("patient", "Patient/p2", {"cp2", "cp-ext", "cp-author"}),
        ("care-team", "CareTeam/team1", {"cp1"}),
        ("care-team", "team1", {"cp1"}),
        ("care-team:missing", "true", {"cp2", "cp-abs", "cp-ext", "cp-author"}),
        ("care-team:missing", "false", {"cp1"}),
        ("author", "http://other.example/fhir/Practitioner/ext1", {"cp-ext"}),
        ("author", "Practitioner/ext1", set()),
        ("author", "Practitioner/pr1", {"cp-author"}),
        ("author:Practitioner", "pr1", {"cp-author"}),
        ("author:Organization", "pr1", set()),
        ("author", "http://testserver/fhir/Practitioner/pr1", {"cp-author"}),
    ]])


@pytest.mark.usefixtures("referenced")
def test_reference_invalid_is_400(client: TestClient) -> None:
    check_rejected(client, "CarePlan", [{param: value} for param, value in [
        ("subject:Practitioner", "p1"),  # Practitioner is not a target of CarePlan.subject
        ("subject:Patient", "Practitioner/pr1"),  # the value contradicts the modifier
        ("subject:Nonsense", "p1"),
        ("subject", "patient/p1"),
        ("subject", "Patient/"),
        ("subject:exact", "p1"),
        ("subject:missing", "maybe"),
    ]])


# -- uri -----------------------------------------------------------------------------------


@pytest.fixture
def profiled(client: TestClient) -> None:
    def org(id_: str, profile: str | None) -> None:
        body = organization(hsa=f"SE-{id_}", name=id_)
        if profile:
            body["meta"] = {"profile": [profile]}
        put(client, id_, body)

    org("o1", "http://example.org/fhir/StructureDefinition/org")
    org("o2", "http://example.org/fhir/StructureDefinition/org-extended")
    org("o3", "http://other.example/StructureDefinition/org")
    org("o4", None)
    org("o5", "http://example.org/a_b")


@pytest.mark.usefixtures("profiled")
def test_uri_profile(client: TestClient) -> None:
    check(client, "Organization", [({param: value}, expected) for param, value, expected in [
        ("_profile", "http://example.org/fhir/StructureDefinition/org", {"o1"}),
        ("_profile", "http://example.org/fhir/StructureDefinition/or", set()),
        ("_profile", "http://example.org/fhir/StructureDefinition/org,http://example.org/a_b", {"o1", "o5"}),
        ("_profile:below", "http://example.org/fhir/", {"o1", "o2"}),
        ("_profile:below", "http://example.org/fhir/StructureDefinition/org", {"o1", "o2"}),
        ("_profile:below", "http://example.org/", {"o1", "o2", "o5"}),
        ("_profile:below", "http://example.org/a%", set()),
        ("_profile:below", "http://nowhere.example/", set()),
        ("_profile:above", "http://example.org/fhir/StructureDefinition/org/_history/2", {"o1"}),
        ("_profile:above", "http://other.example/StructureDefinition/org", {"o3"}),
        ("_profile:above", "http://example.org/fhir/StructureDefinition", set()),
        ("_profile:above", "http://example.org/aXb/c", set()),  # '_' is not a wildcard
        ("_profile:above", "http://example.org/a_b/c", {"o5"}),
        ("_profile:missing", "true", {"o4"}),
        ("_profile:missing", "false", {"o1", "o2", "o3", "o5"}),
    ]])


@pytest.mark.usefixtures("profiled")
def test_uri_unsupported_modifier_is_400(client: TestClient) -> None:
    check_rejected(client, "Organization", [{name: "http://example.org/"} for name in [
        "_profile:contains", "_profile:exact", "_profile:not"
    ]])


# -- _id and _lastUpdated --------------------------------------------------------------------


def test_id(client: TestClient) -> None:
    for id_ in ("a", "b", "c"):
        put(client, id_, person(id_))
    put(client, "pr-a", practitioner())
    assert found(client, "Patient", {"_id": "a"}) == {"a"}
    assert found(client, "Patient", {"_id": "a,c"}) == {"a", "c"}
    assert found(client, "Patient", {"_id": "pr-a"}) == set()  # another type's id
    assert found(client, "Patient", {"_id": "A"}) == set()
    assert found(client, "Patient", {"_id": "nobody"}) == set()
    assert found(client, "Patient", {"_id:not": "a"}) == {"b", "c"}
    assert found(client, "Patient", {"_id:not": "a,b"}) == {"c"}
    assert found(client, "Patient", [("_id", "a,b"), ("_id:not", "b")]) == {"a"}
    rejected(client, "Patient", {"_id:missing": "true"})
    rejected(client, "Patient", {"_id:exact": "a"})


def test_last_updated(client: TestClient) -> None:
    stamps: dict[str, str] = {}
    for id_ in ("first", "second", "third"):
        stamps[id_] = put(client, id_, person(id_))["meta"]["lastUpdated"]
        tick()
    first, second, third = stamps["first"], stamps["second"], stamps["third"]
    assert first < second < third
    assert found(client, "Patient", {"_lastUpdated": second}) == {"second"}
    assert found(client, "Patient", {"_lastUpdated": f"eq{second}"}) == {"second"}
    assert found(client, "Patient", {"_lastUpdated": f"ne{second}"}) == {"first", "third"}
    assert found(client, "Patient", {"_lastUpdated": f"gt{second}"}) == {"third"}
    assert found(client, "Patient", {"_lastUpdated": f"ge{second}"}) == {"second", "third"}
    assert found(client, "Patient", {"_lastUpdated": f"lt{second}"}) == {"first"}
    assert found(client, "Patient", {"_lastUpdated": f"le{second}"}) == {"first", "second"}
    assert found(client, "Patient", {"_lastUpdated": f"sa{second}"}) == {"third"}
    assert found(client, "Patient", {"_lastUpdated": f"eb{second}"}) == {"first"}
    assert found(client, "Patient", {"_lastUpdated": f"ap{second}"}) == {"first", "second", "third"}
    assert found(client, "Patient", [("_lastUpdated", f"gt{first}"), ("_lastUpdated", f"lt{third}")]) == {"second"}
    today = second[:10]
    assert found(client, "Patient", {"_lastUpdated": today}) >= {"second"}
    assert found(client, "Patient", {"_lastUpdated": "gt2999"}) == set()
    assert found(client, "Patient", {"_lastUpdated": "lt2000-01-01T00:00:00Z"}) == set()
    assert found(client, "Patient", {"_lastUpdated": "ge2000"}) == {"first", "second", "third"}
    rejected(client, "Patient", {"_lastUpdated": "last tuesday"})
    rejected(client, "Patient", {"_lastUpdated:missing": "true"})


def test_last_updated_follows_updates(client: TestClient) -> None:
    old = put(client, "old", person("old"))["meta"]["lastUpdated"]
    tick()
    put(client, "other", person("other"))
    tick()
    mark = put(client, "marker", person("marker"))["meta"]["lastUpdated"]
    tick()
    put(client, "old", person("old", "Nyberg"))
    assert found(client, "Patient", {"_lastUpdated": f"gt{mark}"}) == {"old"}
    assert found(client, "Patient", {"_lastUpdated": old}) == set()


# -- chaining --------------------------------------------------------------------------------


@pytest.fixture
def chained(client: TestClient) -> None:
    put(client, "p1", person("p1", "Tolvansson", "Tolvan", identifiers=[(PNR, "191212121212")]))
    put(client, "p2", person("p2", "Öberg", "Åsa", identifiers=[(PNR, "200001012380")], birth="2000-01-01"))
    put(client, "pr1", practitioner(hsa="SE-pr1"))
    put(client, "pr2", practitioner(hsa="SE-pr2", family="Sjuksköterska", given="Sara"))
    put(client, "team1", care_team("p1", ["Practitioner/pr1"]))
    put(client, "team2", care_team("p2", ["Practitioner/pr2"]))
    put(client, "cp1", care_plan("p1", "team1"))
    put(client, "cp2", care_plan("p2", "team2"))
    put(client, "cp3", care_plan("p1"))


@pytest.mark.usefixtures("chained")
def test_chained_search(client: TestClient) -> None:
    check(client, "CarePlan", [({param: value}, expected) for param, value, expected in [
        ("patient.identifier", f"{PNR}|191212121212", {"cp1", "cp3"}),
        ("patient.identifier", f"{PNR}|200001012380", {"cp2"}),
        ("patient.identifier", "200001012380", {"cp2"}),
        ("patient.identifier", f"{PNR}|000", set()),
        ("patient.identifier", f"{PNR}|191212121212,{PNR}|200001012380", {"cp1", "cp2", "cp3"}),
        ("subject:Patient.name", "öberg", {"cp2"}),
        ("subject:Patient.name", "åsa", {"cp2"}),
        ("subject:Patient.name", "tolv", {"cp1", "cp3"}),
        ("subject:Patient.name", "nobody", set()),
        ("subject.name", "Oberg", {"cp2"}),
        ("subject:Patient.name:exact", "Öberg", {"cp2"}),
        ("subject:Patient.name:exact", "öberg", set()),
        ("subject:Patient.birthdate", "2000", {"cp2"}),
        ("subject:Patient.birthdate:missing", "true", {"cp1", "cp3"}),
        ("subject:Patient._id", "p1", {"cp1", "cp3"}),
        ("care-team.participant", "Practitioner/pr2", {"cp2"}),
        ("care-team.participant", "pr1", {"cp1"}),
        ("care-team.status", "active", {"cp1", "cp2"}),
    ]])


@pytest.mark.usefixtures("chained")
def test_chain_on_reference_from_reference(client: TestClient) -> None:
    put(client, "org1", organization(hsa="SE-org1", name="Region"))
    put(client, "org2", organization(hsa="SE-org2", name="Vårdcentralen", partOf={"reference": "Organization/org1"}))
    put(client, "org3", organization(hsa="SE-org3", name="Annan", partOf={"reference": "Organization/org2"}))
    assert found(client, "Organization", {"partof.name": "region"}) == {"org2"}
    assert found(client, "Organization", {"partof.partof": "Organization/org1"}) == {"org3"}
    assert found(client, "Organization", {"partof.partof:missing": "true"}) == {"org2"}


@pytest.mark.usefixtures("chained")
def test_chained_and_plain_criteria_combine(client: TestClient) -> None:
    assert found(client, "CarePlan", [("patient.identifier", f"{PNR}|191212121212"),
                                      ("care-team:missing", "true")]) == {"cp3"}
    assert found(client, "CarePlan", [("subject:Patient.name", "tolv"), ("subject:Patient.name", "åsa")]) == set()


@pytest.mark.usefixtures("chained")
def test_invalid_chain_is_400(client: TestClient) -> None:
    check_rejected(client, "CarePlan", [{param: "x"} for param in [
        "status.code",  # status is a token, not a reference
        "patient.unknown",  # Patient has no parameter 'unknown'
        "patient.organization.name",  # two levels
        "subject:Practitioner.name",  # Practitioner is not a target of CarePlan.subject
        "subject:Nonsense.name",
        "subject:missing.name",
        "patient.name:below",  # unsupported modifier inside the chain
        "patient.birthdate",  # a malformed date inside the chain
    ]])


@pytest.mark.usefixtures("chained")
def test_chain_follows_updates_of_the_target(client: TestClient) -> None:
    put(client, "p2", person("p2", "Nyström", "Åsa", identifiers=[(PNR, "200001012380")]))
    assert found(client, "CarePlan", {"subject:Patient.name": "oberg"}) == set()
    assert found(client, "CarePlan", {"subject:Patient.name": "nystrom"}) == {"cp2"}


# -- _include, _revinclude -----------------------------------------------------------------


@pytest.fixture
def agreement(client: TestClient) -> None:
    put(client, "p1", person("p1"))
    put(client, "p2", person("p2"))
    put(client, "pr1", practitioner(hsa="SE-pr1"))
    put(client, "pr2", practitioner(hsa="SE-pr2"))
    put(client, "org1", organization(hsa="SE-org1"))
    put(client, "team1", care_team("p1", ["Practitioner/pr1", "Organization/org1"]))
    put(client, "team2", care_team("p2", ["Practitioner/pr2"]))
    put(client, "cp1", care_plan("p1", "team1"))
    put(client, "cp2", care_plan("p2", "team2"))
    put(client, "cp3", care_plan("p2"))
    put(client, "prov1", provenance(["CarePlan/cp1"], "Practitioner/pr1"))
    put(client, "prov2", provenance(["CareTeam/team2"], "Practitioner/pr2"))


def _entries_well_formed(bundle: dict[str, Any]) -> None:
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"http://testserver/fhir/{resource['resourceType']}/{resource['id']}"


@pytest.mark.usefixtures("agreement")
def test_include_forward(client: TestClient) -> None:
    bundle = get(client, "CarePlan", [("_id", "cp1"), ("_include", "CarePlan:care-team")])
    assert matches(bundle) == ["cp1"]
    assert included(bundle) == {"CareTeam/team1"}
    assert bundle["total"] == 1  # included resources are not counted
    _entries_well_formed(bundle)
    bundle = get(client, "CarePlan", {"_include": "CarePlan:care-team"})
    assert set(matches(bundle)) == {"cp1", "cp2", "cp3"}
    assert included(bundle) == {"CareTeam/team1", "CareTeam/team2"}
    bundle = get(client, "CarePlan", [("_id", "cp3"), ("_include", "CarePlan:care-team")])
    assert matches(bundle) == ["cp3"] and included(bundle) == set()


@pytest.mark.usefixtures("agreement")
def test_include_with_target_type_and_several(client: TestClient) -> None:
    bundle = get(client, "CarePlan", [("_id", "cp1"), ("_include", "CarePlan:subject:Patient")])
    assert included(bundle) == {"Patient/p1"}
    bundle = get(client, "CareTeam", [("_id", "team1"), ("_include", "CareTeam:participant:Practitioner")])
    assert included(bundle) == {"Practitioner/pr1"}
    bundle = get(client, "CareTeam", [("_id", "team1"), ("_include", "CareTeam:participant:Organization")])
    assert included(bundle) == {"Organization/org1"}
    bundle = get(client, "CareTeam", [("_id", "team1"), ("_include", "CareTeam:participant")])
    assert included(bundle) == {"Practitioner/pr1", "Organization/org1"}
    bundle = get(client, "CarePlan", [("_id", "cp1"), ("_include", "CarePlan:subject"),
                                      ("_include", "CarePlan:care-team")])
    assert included(bundle) == {"Patient/p1", "CareTeam/team1"}


@pytest.mark.usefixtures("agreement")
def test_include_wildcard(client: TestClient) -> None:
    bundle = get(client, "CarePlan", [("_id", "cp1"), ("_include", "*")])
    assert matches(bundle) == ["cp1"]
    assert included(bundle) == {"Patient/p1", "CareTeam/team1"}


@pytest.mark.usefixtures("agreement")
def test_revinclude(client: TestClient) -> None:
    bundle = get(client, "CarePlan", [("_id", "cp1,cp2"), ("_revinclude", "Provenance:target")])
    assert set(matches(bundle)) == {"cp1", "cp2"}
    assert included(bundle) == {"Provenance/prov1"}
    _entries_well_formed(bundle)
    bundle = get(client, "CareTeam", [("_id", "team1"), ("_revinclude", "CarePlan:care-team")])
    assert matches(bundle) == ["team1"] and included(bundle) == {"CarePlan/cp1"}
    bundle = get(client, "CareTeam", [("_revinclude", "CarePlan:care-team"), ("_revinclude", "Provenance:target")])
    assert included(bundle) == {"CarePlan/cp1", "CarePlan/cp2", "Provenance/prov2"}
    bundle = get(client, "Patient", [("_id", "p2"), ("_revinclude", "CarePlan:subject")])
    assert included(bundle) == {"CarePlan/cp2", "CarePlan/cp3"}
    bundle = get(client, "Patient", [("_id", "p2"), ("_revinclude", "CarePlan:care-team")])
    assert included(bundle) == set()


@pytest.mark.usefixtures("agreement")
def test_include_iterate(client: TestClient) -> None:
    bundle = get(client, "CarePlan", [("_id", "cp1"), ("_include", "CarePlan:care-team"),
                                      ("_include:iterate", "CareTeam:participant")])
    assert matches(bundle) == ["cp1"]
    assert included(bundle) == {"CareTeam/team1", "Practitioner/pr1", "Organization/org1"}
    bundle = get(client, "CarePlan", [("_id", "cp1"), ("_include", "CarePlan:care-team"),
                                      ("_include:iterate", "CareTeam:participant:Practitioner")])
    assert included(bundle) == {"CareTeam/team1", "Practitioner/pr1"}
    # Without the first step, the iteration has nothing to start from.
    bundle = get(client, "CarePlan", [("_id", "cp1"), ("_include:iterate", "CareTeam:participant")])
    assert included(bundle) == set()
    # Reverse, then forward: the plans of a team, then those plans' patients.
    bundle = get(client, "CareTeam", [("_id", "team2"), ("_revinclude", "CarePlan:care-team"),
                                      ("_include:iterate", "CarePlan:subject")])
    assert matches(bundle) == ["team2"]
    assert included(bundle) == {"CarePlan/cp2", "Patient/p2"}
    # Forward, then reverse: the team's plans and the Provenance of those plans.
    bundle = get(client, "CarePlan", [("_id", "cp1"), ("_include", "CarePlan:care-team"),
                                      ("_revinclude:iterate", "Provenance:target")])
    assert included(bundle) == {"CareTeam/team1", "Provenance/prov1"}


@pytest.mark.usefixtures("agreement")
def test_a_resource_is_in_the_bundle_once(client: TestClient) -> None:
    put(client, "region", organization(hsa="SE-region", name="Region"))
    put(client, "vc", organization(hsa="SE-vc", name="Vårdcentral", partOf={"reference": "Organization/region"}))
    bundle = get(client, "Organization", [("_include", "Organization:partof")])
    assert set(matches(bundle)) == {"org1", "region", "vc"}
    assert included(bundle) == set()  # region is already a match
    bundle = get(client, "Organization", [("_id", "vc"), ("_include", "Organization:partof")])
    assert matches(bundle) == ["vc"] and included(bundle) == {"Organization/region"}
    keys = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]]
    assert len(keys) == len(set(keys))


@pytest.mark.usefixtures("agreement")
def test_invalid_include_is_400(client: TestClient) -> None:
    check_rejected(client, "CarePlan", [[(name, value)] for name, value in [
        ("_include", "CareTeam:participant"),  # not the searched type and not :iterate
        ("_include", "CarePlan:status"),  # not a reference parameter
        ("_include", "CarePlan:nothing"),
        ("_include", "Nonsense:subject"),
        ("_include", "CarePlan"),
        ("_include", "CarePlan:care-team:Nonsense"),
        ("_include", "CarePlan:care-team:CareTeam:extra"),
        ("_include:reverse", "CarePlan:care-team"),
        ("_revinclude", "Provenance:recorded"),
        ("_revinclude", "Provenance"),
    ]])


@pytest.mark.usefixtures("agreement")
def test_deleted_resources_are_not_included(client: TestClient) -> None:
    assert client.delete("/fhir/Provenance/prov1").status_code == 204
    bundle = get(client, "CarePlan", [("_id", "cp1"), ("_revinclude", "Provenance:target")])
    assert matches(bundle) == ["cp1"] and included(bundle) == set()
    put(client, "cp1", care_plan("p1"))  # drop the team from the plan, then delete the team
    assert client.delete("/fhir/Provenance/prov2").status_code == 204
    assert client.delete("/fhir/CarePlan/cp2").status_code == 204
    assert client.delete("/fhir/CareTeam/team2").status_code == 204
    bundle = get(client, "CarePlan", [("_include", "CarePlan:care-team")])
    assert set(matches(bundle)) == {"cp1", "cp3"} and included(bundle) == set()
    bundle = get(client, "CareTeam", [("_revinclude", "CarePlan:care-team")])
    assert matches(bundle) == ["team1"] and included(bundle) == set()


# -- _sort ---------------------------------------------------------------------------------


@pytest.fixture
def sortable(client: TestClient) -> None:
    put(client, "d", person("d", "Dahl", "Dan", birth="1990-01-01", gender="male"))
    tick()
    put(client, "b", person("b", "Berg", "Bo", birth="1970-05-05", gender="male"))
    tick()
    put(client, "a2", person("a2", "Andersson", "Cecilia", birth="1985-03-03", gender="female"))
    tick()
    put(client, "a1", person("a1", "Andersson", "Britt", birth="2001-02-02", gender="female"))
    tick()
    put(client, "c", person("c", "Carlsson", "Carl", birth="1960-12-24", gender="male"))


@pytest.mark.usefixtures("sortable")
def test_sort(client: TestClient) -> None:
    cases = [
        ({"_sort": "family,given"}, ["a1", "a2", "b", "c", "d"]),
        ({"_sort": "family,-given"}, ["a2", "a1", "b", "c", "d"]),
        ({"_sort": "-family,given"}, ["d", "c", "b", "a1", "a2"]),
        ([("_sort", "family"), ("_sort", "-given")], ["a2", "a1", "b", "c", "d"]),
        ({"_sort": "birthdate"}, ["c", "b", "a2", "d", "a1"]),
        ({"_sort": "-birthdate"}, ["a1", "d", "a2", "b", "c"]),
        ({"_sort": "gender,birthdate"}, ["a2", "a1", "c", "b", "d"]),
        ({"_sort": "-gender,-birthdate"}, ["d", "b", "c", "a1", "a2"]),
        ({"_sort": "_id"}, ["a1", "a2", "b", "c", "d"]),
        ({"_sort": "-_id"}, ["d", "c", "b", "a2", "a1"]),
        ({"_sort": "_lastUpdated"}, ["d", "b", "a2", "a1", "c"]),
        ({"_sort": "-_lastUpdated"}, ["c", "a1", "a2", "b", "d"]),
        ({"_sort": "birthdate", "gender": "male"}, ["c", "b", "d"]),
        ({"_sort": "-family", "_count": "2"}, ["d", "c"]),
    ]
    wrong = [f"{params}: {got}" for params, expected in cases
             if (got := ordered(client, "Patient", params)) != expected]
    assert not wrong, wrong


@pytest.mark.usefixtures("sortable")
def test_sort_by_last_updated_follows_updates(client: TestClient) -> None:
    tick()
    put(client, "d", person("d", "Dahl", "Dan", birth="1990-01-02", gender="male"))
    assert ordered(client, "Patient", {"_sort": "-_lastUpdated"})[0] == "d"
    assert ordered(client, "Patient", {"_sort": "_lastUpdated"})[-1] == "d"


def test_sort_by_period_date(client: TestClient) -> None:
    put(client, "p1", person("p1"))
    put(client, "mid", care_plan("p1", period={"start": "2024-03-01", "end": "2024-03-31"}))
    put(client, "early", care_plan("p1", period={"start": "2023-01-01", "end": "2023-02-01"}))
    put(client, "late", care_plan("p1", period={"start": "2025-01-01", "end": "2025-01-31"}))
    assert ordered(client, "CarePlan", {"_sort": "date"}) == ["early", "mid", "late"]
    assert ordered(client, "CarePlan", {"_sort": "-date"}) == ["late", "mid", "early"]


@pytest.mark.usefixtures("sortable")
def test_sort_by_unknown_parameter_is_400(client: TestClient) -> None:
    check_rejected(client, "Patient", [{"_sort": sort} for sort in [
        "nonsense", "family,nonsense", "-", "family,,given", "Family", "-_nonsense", "given:exact",
    ]])


# -- paging and totals -----------------------------------------------------------------------


@pytest.fixture
def seven(client: TestClient) -> list[str]:
    ids = [f"p{i}" for i in range(7)]
    for i, id_ in enumerate(ids):
        put(client, id_, person(id_, "Berg", f"Given{i}", birth=f"19{50 + i}-01-01"))
    put(client, "other", person("other", "Annan"))
    return ids


def _walk(client: TestClient, bundle: dict[str, Any], relation: str) -> list[list[str]]:
    pages = [matches(bundle)]
    seen_urls = set()
    while relation in links(bundle):
        url = links(bundle)[relation]
        assert url not in seen_urls, f"{relation} loops at {url}"
        seen_urls.add(url)
        bundle = follow(client, url)
        pages.append(matches(bundle))
    return pages


def test_paging_visits_every_result_once(client: TestClient, seven: list[str]) -> None:
    first = get(client, "Patient", {"name": "berg", "_count": "3", "_sort": "birthdate"})
    assert "previous" not in links(first)
    assert "total" not in first  # unknown without _total=accurate while more pages remain
    pages = _walk(client, first, "next")
    assert pages == [seven[0:3], seven[3:6], seven[6:7]]
    assert [id_ for page in pages for id_ in page] == seven
    last = follow(client, links(follow(client, links(first)["next"]))["next"])
    assert last["total"] == 7  # on the last page the total is known
    assert "next" not in links(last)
    backwards = _walk(client, last, "previous")
    assert backwards == [seven[6:7], seven[3:6], seven[0:3]]
    assert matches(follow(client, links(last)["first"])) == seven[0:3]


def test_paging_without_sort_is_stable(client: TestClient, seven: list[str]) -> None:
    first = get(client, "Patient", {"_count": "2"})
    pages = _walk(client, first, "next")
    flat = [id_ for page in pages for id_ in page]
    assert sorted(flat) == sorted([*seven, "other"])
    assert len(pages) == 4 and all(len(page) == 2 for page in pages)


def test_paging_with_total_accurate_and_last(client: TestClient, seven: list[str]) -> None:
    first = get(client, "Patient", {"name": "berg", "_count": "3", "_sort": "-birthdate", "_total": "accurate"})
    assert first["total"] == 7
    rel = links(first)
    assert set(rel) == {"self", "first", "next", "last"}
    last = follow(client, rel["last"])
    assert matches(last) == [seven[0]]
    assert last["total"] == 7
    middle = follow(client, rel["next"])
    assert matches(middle) == list(reversed(seven))[3:6]
    assert middle["total"] == 7
    assert set(links(middle)) == {"self", "first", "previous", "next", "last"}
    # Links keep the criteria and result parameters, so totals stay accurate on every page.
    for relation in ("self", "first", "previous", "next", "last"):
        url = links(middle)[relation]
        assert "name=berg" in url and "_total=accurate" in url and "_sort=-birthdate" in url
    assert matches(follow(client, links(middle)["self"])) == matches(middle)


def test_default_page_size_is_twenty(client: TestClient) -> None:
    for i in range(21):
        put(client, f"p{i:02d}", person(f"p{i:02d}"))
    first = get(client, "Patient", {"_sort": "_id"})
    assert matches(first) == [f"p{i:02d}" for i in range(20)]
    assert "total" not in first
    rest = follow(client, links(first)["next"])
    assert matches(rest) == ["p20"] and rest["total"] == 21


def test_includes_belong_to_their_page(client: TestClient) -> None:
    put(client, "p1", person("p1"))
    for n in (1, 2, 3):
        put(client, f"team{n}", care_team("p1"))
        put(client, f"cp{n}", care_plan("p1", f"team{n}"))
    first = get(client, "CarePlan", [("_sort", "_id"), ("_count", "2"), ("_include", "CarePlan:care-team")])
    assert matches(first) == ["cp1", "cp2"] and included(first) == {"CareTeam/team1", "CareTeam/team2"}
    assert "_include=CarePlan%3Acare-team" in links(first)["next"]
    second = follow(client, links(first)["next"])
    assert matches(second) == ["cp3"] and included(second) == {"CareTeam/team3"}


def test_offset(client: TestClient, seven: list[str]) -> None:
    bundle = get(client, "Patient", {"name": "berg", "_sort": "birthdate", "_count": "3", "_offset": "5"})
    assert matches(bundle) == seven[5:7]
    assert "next" not in links(bundle)
    assert matches(follow(client, links(bundle)["previous"])) == seven[2:5]
    beyond = get(client, "Patient", {"name": "berg", "_count": "3", "_offset": "50"})
    assert matches(beyond) == []
    assert "next" not in links(beyond)
    assert matches(get(client, "Patient", {"name": "berg", "_sort": "birthdate", "_offset": "6"})) == seven[6:]


def test_total_modes(client: TestClient, seven: list[str]) -> None:
    assert get(client, "Patient", {"name": "berg"})["total"] == 7  # one page: the total is free
    assert get(client, "Patient", {"name": "nobody"})["total"] == 0
    assert "total" not in get(client, "Patient", {"name": "berg", "_total": "none"})
    assert get(client, "Patient", {"name": "berg", "_total": "accurate", "_count": "1"})["total"] == 7
    assert get(client, "Patient", {"_total": "accurate", "_count": "1"})["total"] == 8
    rejected(client, "Patient", {"_total": "exact"})


def test_summary_count_and_count_zero(client: TestClient, seven: list[str]) -> None:
    for params in ({"name": "berg", "_summary": "count"}, {"name": "berg", "_count": "0"}):
        bundle = get(client, "Patient", params)
        assert bundle["total"] == 7
        assert "entry" not in bundle
        assert set(links(bundle)) == {"self"}
    assert get(client, "Patient", {"_summary": "count", "birthdate": "lt1953"})["total"] == 3


def test_invalid_result_parameter_is_400(client: TestClient) -> None:
    check_rejected(client, "Patient", [{name: value} for name, value in [
        ("_count", "abc"), ("_count", "-1"), ("_count", "1.5"), ("_offset", "-3"), ("_offset", "x"),
        ("_summary", "yes"), ("_summary", "TRUE"), ("_total", "all"), ("_count:exact", "3"),
    ]])


def test_count_above_maximum_is_capped(client: TestClient, seven: list[str]) -> None:
    bundle = get(client, "Patient", {"_count": "100000"})
    assert len(matches(bundle)) == 8
    assert "_count=1000" in links(bundle)["self"]


# -- _summary and _elements ------------------------------------------------------------------


def _subsetted(resource: dict[str, Any]) -> bool:
    return any(tag.get("code") == "SUBSETTED" for tag in resource.get("meta", {}).get("tag", []))


def test_summary_true(client: TestClient) -> None:
    put(client, "p1", person("p1"))
    put(client, "team1", care_team("p1"))
    put(client, "cp1", care_plan("p1", "team1", note=[{"text": "Anteckning"}]))
    bundle = get(client, "CarePlan", [("_summary", "true"), ("_include", "CarePlan:care-team")])
    plan = bundle["entry"][0]["resource"]
    assert plan["id"] == "cp1" and _subsetted(plan)
    assert {"status", "intent", "subject", "title", "period"} <= set(plan)
    assert "careTeam" not in plan and "note" not in plan
    full = get(client, "CarePlan", {})["entry"][0]["resource"]
    assert "careTeam" in full and "note" in full and not _subsetted(full)
    assert get(client, "CarePlan", {"_summary": "false"})["entry"][0]["resource"] == full


def test_summary_data_and_text(client: TestClient) -> None:
    text = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Tolvan</div>'}
    put(client, "p1", person("p1", text=text))
    data = get(client, "Patient", {"_summary": "data"})["entry"][0]["resource"]
    assert "text" not in data and "name" in data and _subsetted(data)
    texts = get(client, "Patient", {"_summary": "text"})["entry"][0]["resource"]
    assert texts["text"] == text and "name" not in texts and _subsetted(texts)


def test_elements(client: TestClient) -> None:
    put(client, "p1", person("p1", identifiers=[(PNR, "191212121212")], gender="male", birth="1912-12-12"))
    put(client, "team1", care_team("p1"))
    put(client, "cp1", care_plan("p1", "team1"))
    resource = get(client, "Patient", {"_elements": "identifier,gender"})["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "identifier", "gender"}
    assert _subsetted(resource)
    # Mandatory elements stay; included resources are whole.
    bundle = get(client, "CarePlan", [("_elements", "title"), ("_include", "CarePlan:care-team")])
    plan = next(e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match")
    assert set(plan) == {"resourceType", "id", "meta", "title", "status", "intent", "subject"}
    team = next(e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include")
    assert "subject" in team and not _subsetted(team)


# -- unknown parameters, strictness, errors ---------------------------------------------------


def _outcome_entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]


def test_unknown_parameter_is_ignored_and_reported(client: TestClient) -> None:
    put(client, "a", person("a", "Berg"))
    put(client, "b", person("b", "Dahl"))
    bundle = get(client, "Patient", [("name", "berg"), ("favourite-colour", "blue")])
    assert matches(bundle) == ["a"]
    outcomes = _outcome_entries(bundle)
    assert len(outcomes) == 1
    assert outcomes[0]["resourceType"] == "OperationOutcome"
    issue = outcomes[0]["issue"][0]
    assert issue["severity"] == "warning"
    assert "favourite-colour" in issue["diagnostics"]
    assert "favourite-colour" not in links(bundle)["self"]
    assert "name=berg" in links(bundle)["self"]
    lenient = get(client, "Patient", [("name", "berg"), ("favourite-colour", "blue")],
                  headers={"Prefer": "handling=lenient"})
    assert matches(lenient) == ["a"] and len(_outcome_entries(lenient)) == 1
    assert _outcome_entries(get(client, "Patient", {"name": "berg"})) == []


def test_unknown_parameter_under_strict_handling_is_400(client: TestClient) -> None:
    put(client, "a", person("a"))
    names = ["favourite-colour", "_nonsense", "_has:Goal:subject:lifecycle-status", "foo.bar", "given-name:exact"]
    check_rejected(client, "Patient", [[(name, "x")] for name in names], headers=STRICT)
    check_rejected(client, "Patient", [[(names[0], "x")]], headers={"Prefer": "return=minimal, handling=strict"})
    for name in names:
        bundle = get(client, "Patient", [(name, "x")])
        assert matches(bundle) == ["a"], name
        assert len(_outcome_entries(bundle)) == 1, name


def test_strict_handling_still_answers_valid_searches(client: TestClient) -> None:
    put(client, "a", person("a", "Berg"))
    put(client, "b", person("b", "Dahl"))
    bundle = get(client, "Patient", [("name", "dahl"), ("_count", "5"), ("_format", "json")], headers=STRICT)
    assert matches(bundle) == ["b"] and _outcome_entries(bundle) == []


def test_unsupported_modifier_is_400_even_when_lenient(client: TestClient) -> None:
    outcome = rejected(client, "Patient", {"name:sounds-like": "berg"}, headers={"Prefer": "handling=lenient"})
    assert "sounds-like" in outcome["issue"][0]["diagnostics"]


def test_search_of_unknown_type_is_404(client: TestClient) -> None:
    rejected(client, "Observation", {"code": "x"}, status=404)


# -- POST _search ----------------------------------------------------------------------------


@pytest.fixture
def posted(client: TestClient) -> None:
    put(client, "a", person("a", "Öberg", "Åsa", birth="1950-06-15"))
    put(client, "b", person("b", "Berg", "Bo", birth="1970-01-01"))
    put(client, "c", person("c", "Dahl", "Dan", birth="1990-01-01"))


@pytest.mark.usefixtures("posted")
def test_post_search_equals_get(client: TestClient) -> None:
    for pairs in [
        [("name", "berg")],
        [("name", "öberg"), ("name", "åsa")],
        [("name:contains", "berg"), ("_sort", "-birthdate")],
        [("birthdate", "ge1960"), ("_sort", "birthdate")],
        [("_id", "a,c"), ("_sort", "-_id")],
        [("identifier:missing", "true"), ("_total", "accurate"), ("_count", "1")],
        [],
    ]:
        via_get = get(client, "Patient", pairs)
        response = client.post("/fhir/Patient/_search", content=urlencode(pairs), headers=FORM)
        assert response.status_code == 200, response.text
        via_post = response.json()
        assert via_post["type"] == "searchset"
        assert matches(via_post) == matches(via_get), pairs
        assert via_post.get("total") == via_get.get("total"), pairs
        assert links(via_post) == links(via_get), pairs


@pytest.mark.usefixtures("posted")
def test_post_search_combines_url_and_body_and_pages_by_get(client: TestClient) -> None:
    response = client.post("/fhir/Patient/_search?_sort=birthdate", content=urlencode({"_count": "2"}),
                           headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"})
    assert response.status_code == 200, response.text
    first = response.json()
    assert matches(first) == ["a", "b"]
    assert matches(follow(client, links(first)["next"])) == ["c"]


@pytest.mark.usefixtures("posted")
def test_post_search_strictness_and_errors(client: TestClient) -> None:
    body = urlencode({"name": "berg", "unknown": "1"})
    lenient = client.post("/fhir/Patient/_search", content=body, headers=FORM)
    assert lenient.status_code == 200 and matches(lenient.json()) == ["b"]
    assert len(_outcome_entries(lenient.json())) == 1
    strict = client.post("/fhir/Patient/_search", content=body, headers={**FORM, **STRICT})
    assert strict.status_code == 400
    bad_date = client.post("/fhir/Patient/_search", content=urlencode({"birthdate": "1950-99"}), headers=FORM)
    assert bad_date.status_code == 400
    assert client.post("/fhir/Nonsense/_search", content="", headers=FORM).status_code == 404


@pytest.mark.usefixtures("posted")
def test_post_search_with_wrong_content_type_is_415(client: TestClient) -> None:
    for content_type in ["application/fhir+json", "application/json", "text/plain", "multipart/form-data; boundary=x"]:
        response = client.post("/fhir/Patient/_search", content=b"name=berg", headers={"content-type": content_type})
        assert response.status_code == 415, content_type
        assert response.json()["resourceType"] == "OperationOutcome"


# -- deleted and updated resources -----------------------------------------------------------


def test_deleted_resources_are_not_found(client: TestClient) -> None:
    put(client, "keep", person("keep", "Berg", identifiers=[(PNR, "191212121212")], gender="male"))
    put(client, "gone", person("gone", "Berg", identifiers=[(PNR, "200001012380")], gender="male",
                               birth="2000-01-01"))
    assert client.delete("/fhir/Patient/gone").status_code == 204
    assert found(client, "Patient", {"name": "berg"}) == {"keep"}
    assert found(client, "Patient", {"identifier": f"{PNR}|200001012380"}) == set()
    assert found(client, "Patient", {"_id": "gone"}) == set()
    assert found(client, "Patient", {"_id:not": "keep"}) == set()
    assert found(client, "Patient", {"gender:not": "female"}) == {"keep"}
    assert found(client, "Patient", {"birthdate:missing": "true"}) == {"keep"}
    assert found(client, "Patient", {"birthdate": "2000"}) == set()
    assert found(client, "Patient", {}) == {"keep"}
    assert get(client, "Patient", {"_total": "accurate"})["total"] == 1
    assert get(client, "Patient", {"_summary": "count"})["total"] == 1
    assert ordered(client, "Patient", {"_sort": "-_lastUpdated"}) == ["keep"]


def test_deleted_then_recreated_is_found_again(client: TestClient) -> None:
    put(client, "p", person("p", "Berg"))
    assert client.delete("/fhir/Patient/p").status_code == 204
    put(client, "p", person("p", "Dahl"))
    assert found(client, "Patient", {"name": "dahl"}) == {"p"}
    assert found(client, "Patient", {"name": "berg"}) == set()


def test_updated_resources_are_found_by_their_new_values_only(client: TestClient) -> None:
    put(client, "p", person("p", "Gammalsson", identifiers=[(PNR, "191212121212")], gender="male",
                            birth="1912-12-12"))
    put(client, "p", person("p", "Nysson", identifiers=[(PNR, "200001012380")], gender="female"))
    assert found(client, "Patient", {"name": "gammal"}) == set()
    assert found(client, "Patient", {"name": "nys"}) == {"p"}
    assert found(client, "Patient", {"identifier": f"{PNR}|191212121212"}) == set()
    assert found(client, "Patient", {"identifier": f"{PNR}|200001012380"}) == {"p"}
    assert found(client, "Patient", {"gender": "male"}) == set()
    assert found(client, "Patient", {"gender": "female"}) == {"p"}
    assert found(client, "Patient", {"birthdate": "1912"}) == set()
    assert found(client, "Patient", {"birthdate:missing": "true"}) == {"p"}
    assert get(client, "Patient", {"name": "nys"})["entry"][0]["resource"]["meta"]["versionId"] == "2"


def test_updated_reference_is_searched_by_its_new_target(client: TestClient) -> None:
    put(client, "p1", person("p1"))
    put(client, "p2", person("p2"))
    put(client, "t1", care_team("p1"))
    put(client, "cp", care_plan("p1", "t1"))
    put(client, "cp", care_plan("p2"))
    assert found(client, "CarePlan", {"subject": "Patient/p1"}) == set()
    assert found(client, "CarePlan", {"subject": "Patient/p2"}) == {"cp"}
    assert found(client, "CarePlan", {"care-team:missing": "true"}) == {"cp"}
    bundle = get(client, "CareTeam", [("_revinclude", "CarePlan:care-team")])
    assert matches(bundle) == ["t1"] and included(bundle) == set()


# -- which criterion a search with several starts from ---------------------------------------


@pytest.fixture
def crowd(client: TestClient) -> None:
    """Eight patients with an active plan each; p1 also has a completed one and a team."""
    for n in range(1, 9):
        put(client, f"p{n}", person(f"p{n}", identifiers=[(PNR, f"19121212{n:04d}")]))
        put(client, f"cp{n}", care_plan(f"p{n}"))
    put(client, "t1", care_team("p1"))
    put(client, "cp1-done", care_plan("p1", "t1", status="completed"))


def chosen(client: TestClient, params: Params) -> str | None:
    """The name of the criterion the engine starts ``CarePlan?params`` from, for this client's caller."""
    app: Any = client.app
    service = app.state.service
    access = app.state.authenticator.access(client.headers["authorization"])
    pairs = list(params.items()) if isinstance(params, dict) else params
    query = service.parser.parse("CarePlan", pairs, strict=Preferences().strict)

    async def choose() -> int | None:
        async with service.store.reading(access) as unit:
            driver: int | None = await service.search_engine.driver(
                unit, query, lambda type_: bound(access.restriction(type_)))
            return driver

    index = client.portal.call(choose)  # type: ignore[union-attr]
    return None if index is None else query.criteria[index].name


@pytest.mark.usefixtures("crowd")
def test_a_search_starts_from_its_most_selective_criterion(client: TestClient,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Generic plans cannot see the values searched for; the engine counts matches (up to a
    limit, here 5 for eight active plans) and starts from the criterion with the fewest."""
    monkeypatch.setattr(engine, "PROBE_LIMIT", 5)
    assert chosen(client, [("status", "active"), ("subject", "Patient/p1")]) == "subject"
    assert chosen(client, [("subject", "Patient/p1"), ("status", "active")]) == "subject"
    assert chosen(client, [("intent", "plan"), ("status", "completed")]) == "status"
    assert chosen(client, [("status", "active"), ("patient.identifier", f"{PNR}|191212120003")]) \
        == "patient.identifier"
    assert chosen(client, [("status", "active"), ("intent", "plan")]) == "status"  # both past the limit: the first
    assert chosen(client, [("status", "active"), ("_id", "cp2")]) == "_id"
    assert chosen(client, [("status:not", "completed"), ("subject", "Patient/p1")]) == "subject"
    assert chosen(client, [("status", "active"), ("care-team:missing", "true")]) == "status"
    assert chosen(client, [("status", "active")]) is None
    assert chosen(client, [("status:not", "active"), ("care-team:missing", "false")]) is None


@pytest.mark.usefixtures("crowd")
def test_every_criterion_finds_the_same_matches_whichever_the_search_starts_from(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A criterion is a semi-join when the search starts from it and a row-by-row check when
    not: both forms, for each kind of criterion, must select the same resources."""
    cases: list[tuple[Params, set[str]]] = [
        ([("subject", "Patient/p1"), ("status", "active")], {"cp1"}),
        ([("subject", "Patient/p1,Patient/p2"), ("status", "active,completed")], {"cp1", "cp2", "cp1-done"}),
        ([("subject", "Patient/p1"), ("status:not", "active")], {"cp1-done"}),
        ([("subject", "Patient/p1"), ("care-team:missing", "true")], {"cp1"}),
        ([("subject", "Patient/p1"), ("care-team:missing", "false")], {"cp1-done"}),
        ([("patient.identifier", f"{PNR}|191212120001"), ("status", "completed")], {"cp1-done"}),
        ([("status", "active"), ("care-team.status", "active")], set()),
        ([("status", "completed"), ("care-team.status", "active")], {"cp1-done"}),
        ([("status", "active"), ("intent", "plan"), ("subject", "Patient/p3")], {"cp3"}),
        ([("status", "active"), ("date", "ge2024-01-01"), ("subject", "Patient/p4")], {"cp4"}),
        ([("status", "active"), ("_id", "cp5,cp1-done")], {"cp5"}),
        ([("subject", "Patient/p6"), ("_lastUpdated", "ge2000-01-01")], {"cp6"}),
    ]
    for params, expected in cases:
        pairs = list(params.items()) if isinstance(params, dict) else params
        for start in [None, *range(len(pairs))]:
            monkeypatch.setattr(engine.SearchEngine, "driver", _always(start))
            assert found(client, "CarePlan", params) == expected, (params, start)
            total = get(client, "CarePlan", [*pairs, ("_summary", "count")])["total"]
            assert total == len(expected), (params, start)


def _always(index: int | None) -> Any:
    async def driver(*_args: Any) -> int | None:
        return index
    return driver


# -- Bundle.total --------------------------------------------------------------------------------------------


def test_total_accurate_is_there_with_includes_and_counts_the_matches_only(client: TestClient) -> None:
    owner = create(client, patient())
    plans = [create(client, care_plan(owner["id"])) for _ in range(3)]
    create(client, goal(owner["id"]))
    for params in ({"_include": "CarePlan:subject"}, {"_revinclude": "Provenance:target"},
                   {"_include": "CarePlan:subject", "_count": "1"}, {"_include": "*", "_count": "2"},
                   {"_include": "CarePlan:subject", "_count": "0"}):
        response = client.get("/fhir/CarePlan", params={**params, "_total": "accurate"})
        assert response.status_code == 200, response.text
        assert response.json()["total"] == len(plans), params
    by_post = client.post("/fhir/CarePlan/_search", content="_include=CarePlan:subject&_total=accurate&_count=1",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert by_post.json()["total"] == len(plans)
    patients = client.get("/fhir/Patient", params={"_revinclude": "CarePlan:subject", "_total": "accurate",
                                                  "_count": "1"}).json()
    assert patients["total"] == 1
    assert {e["search"]["mode"] for e in patients["entry"]} == {"match", "include"}
