"""Parsing a search request into criteria and result controls (R4 search.html), without a database."""

from __future__ import annotations

import pytest

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.fhir.definitions import load_definitions
from patientkontrakt.fhir.errors import BadRequest
from patientkontrakt.fhir.search.params import Include, SearchParser, SearchQuery, split_token, split_values
from patientkontrakt.fhir.service import RESOURCE_TYPES

PNR = "http://electronichealth.se/identifier/personnummer"


@pytest.fixture(scope="module")
def parser() -> SearchParser:
    return SearchParser(load_definitions(PROJECT_ROOT / "fhir_profiles"), frozenset(RESOURCE_TYPES), 20, 1000)


def parse(parser: SearchParser, type_: str, *pairs: tuple[str, str], strict: bool = False) -> SearchQuery:
    return parser.parse(type_, list(pairs), strict=strict)


def refused(parser: SearchParser, type_: str, *pairs: tuple[str, str], strict: bool = False) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parser.parse(type_, list(pairs), strict=strict)
    error = info.value
    assert error.status == 400
    outcome = error.outcome()
    assert outcome["issue"][0]["code"] == "invalid"
    assert outcome["issue"][0]["details"]["text"]  # Swedish text for people
    return error


# -- value splitting -----------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "values"), [
    ("a", ["a"]),
    ("a,b", ["a", "b"]),
    ("a,,b,", ["a", "b"]),
    (r"a\,b", ["a,b"]),
    (r"a\,b,c", ["a,b", "c"]),
    (r"a\$b", ["a$b"]),
    (r"a\\b", ["a\\b"]),
    (r"a\|b", ["a|b"]),
    (r"a\xb", [r"a\xb"]),  # an unknown escape is kept as written
    ("a\\", ["a\\"]),
    (",", []),
    ("Åsa,Märta", ["Åsa", "Märta"]),
])
def test_split_values(raw: str, values: list[str]) -> None:
    assert split_values(raw) == values


@pytest.mark.parametrize(("raw", "values"), [
    (r"a\|b", [r"a\|b"]),  # the bar stays escaped for split_token
    (r"a\\|b", [r"a\\|b"]),  # and so does an escaped backslash before a separator
    (r"s|a\,b,t|c", [r"s|a,b", "t|c"]),
])
def test_split_values_for_tokens_keeps_bar_escapes(raw: str, values: list[str]) -> None:
    assert split_values(raw, keep_bar=True) == values


@pytest.mark.parametrize(("value", "parts"), [
    (f"{PNR}|191212121212", (PNR, "191212121212", True)),
    ("|191212121212", (None, "191212121212", True)),
    (f"{PNR}|", (PNR, None, True)),
    ("191212121212", (None, "191212121212", False)),
    (r"urn:x|a\|b", ("urn:x", "a|b", True)),
    (r"a\|b", (None, "a|b", False)),
    ("a|b|c", ("a", "b|c", True)),
    (r"a\\|b", ("a\\", "b", True)),  # an escaped backslash, then the separator
    (r"urn:a\|x|b", ("urn:a|x", "b", True)),
])
def test_split_token(value: str, parts: tuple[str | None, str | None, bool]) -> None:
    assert split_token(value) == parts


# -- criteria ------------------------------------------------------------------------------


def test_one_criterion(parser: SearchParser) -> None:
    query = parse(parser, "Patient", ("name", "Öberg"))
    assert query.type == "Patient"
    [criterion] = query.criteria
    assert criterion.name == "name" and criterion.modifier is None
    assert criterion.param.code == "name" and criterion.param.type == "string"
    assert criterion.values == ("Öberg",)
    assert criterion.chain == ()
    assert query.used == [("name", "Öberg")]
    assert query.ignored == [] and query.warnings() == []


def test_values_are_ored_and_parameters_anded(parser: SearchParser) -> None:
    query = parse(parser, "Patient", ("birthdate", "ge1950"), ("birthdate", "lt2000"), ("gender", "male,female"))
    assert [(c.name, c.values) for c in query.criteria] == [
        ("birthdate", ("ge1950",)), ("birthdate", ("lt2000",)), ("gender", ("male", "female"))]


def test_empty_value_is_ignored(parser: SearchParser) -> None:
    query = parse(parser, "Patient", ("name", ""), ("_count", ""), strict=True)
    assert query.criteria == [] and query.used == [] and query.count == 20


@pytest.mark.parametrize(("type_", "name", "param_type"), [
    ("Patient", "identifier", "token"),
    ("Patient", "birthdate", "date"),
    ("Patient", "_id", "token"),
    ("Patient", "_lastUpdated", "date"),
    ("Organization", "_profile", "uri"),
    ("CarePlan", "subject", "reference"),
    ("CarePlan", "patient", "reference"),
    ("CarePlan", "date", "date"),
    ("CarePlan", "activity-date", "date"),
    ("CarePlan", "author", "reference"),
    ("Goal", "target-date", "date"),
    ("Provenance", "target", "reference"),
])
def test_registered_parameters(parser: SearchParser, type_: str, name: str, param_type: str) -> None:
    [criterion] = parse(parser, type_, (name, "x"), strict=True).criteria
    assert criterion.param.type == param_type


def test_unknown_parameter_is_ignored_with_a_warning_when_lenient(parser: SearchParser) -> None:
    query = parse(parser, "Patient", ("colour", "blue"), ("name", "berg"), ("_has:Goal:subject:status", "x"))
    assert [c.name for c in query.criteria] == ["name"]
    assert query.ignored == ["colour", "_has:Goal:subject:status"]
    assert query.used == [("name", "berg")]
    warnings = query.warnings()
    assert [w.severity for w in warnings] == ["warning", "warning"]
    assert "colour" in warnings[0].diagnostics and warnings[0].code == "not-supported"


@pytest.mark.parametrize("name", ["colour", "_has:Goal:subject:status", "target-date", "colour.name", "_text"])
def test_unknown_parameter_is_an_error_when_strict(parser: SearchParser, name: str) -> None:
    error = refused(parser, "Patient", (name, "x"), strict=True)
    assert error.expression == (name,)


def test_parameter_of_another_type_is_unknown(parser: SearchParser) -> None:
    assert parse(parser, "Patient", ("lifecycle-status", "active")).ignored == ["lifecycle-status"]
    refused(parser, "Patient", ("lifecycle-status", "active"), strict=True)


# -- modifiers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("type_", "name", "value", "modifier"), [
    ("Patient", "gender:not", "male", "not"),
    ("Patient", "gender:missing", "true", "missing"),
    ("Patient", "name:exact", "Åsa", "exact"),
    ("Patient", "name:contains", "berg", "contains"),
    ("Patient", "name:missing", "false", "missing"),
    ("Patient", "birthdate:missing", "true", "missing"),
    ("CarePlan", "subject:missing", "true", "missing"),
    ("CarePlan", "subject:Patient", "p1", "Patient"),
    ("CareTeam", "participant:Practitioner", "pr1", "Practitioner"),
    ("Organization", "_profile:below", "http://example.org/", "below"),
    ("Organization", "_profile:above", "http://example.org/a/b", "above"),
    ("Organization", "_profile:missing", "true", "missing"),
    ("Patient", "_id:not", "a", "not"),
])
def test_supported_modifiers(parser: SearchParser, type_: str, name: str, value: str, modifier: str) -> None:
    [criterion] = parse(parser, type_, (name, value), strict=True).criteria
    assert criterion.modifier == modifier
    assert criterion.name == name


@pytest.mark.parametrize(("type_", "name"), [
    ("Patient", "gender:exact"),
    ("Patient", "gender:text"),
    ("Patient", "identifier:of-type"),
    ("Patient", "gender:in"),
    ("Patient", "name:not"),
    ("Patient", "name:below"),
    ("Patient", "birthdate:not"),
    ("Patient", "birthdate:exact"),
    ("Patient", "_id:missing"),
    ("Patient", "_id:exact"),
    ("Patient", "_lastUpdated:missing"),
    ("Patient", "_lastUpdated:not"),
    ("Organization", "_profile:contains"),
    ("CarePlan", "subject:Practitioner"),  # not a target of CarePlan.subject
    ("CarePlan", "subject:Observation"),  # not served here
    ("CarePlan", "subject:exact"),
    ("CarePlan", "subject:identifier"),
])
def test_unsupported_modifier_is_an_error_even_when_lenient(parser: SearchParser, type_: str, name: str) -> None:
    error = refused(parser, type_, (name, "x"))
    assert error.expression == (name,)


@pytest.mark.parametrize("value", ["yes", "1", "TRUE", "true,maybe"])
def test_missing_takes_true_or_false(parser: SearchParser, value: str) -> None:
    refused(parser, "Patient", ("gender:missing", value))


def test_missing_with_both_values(parser: SearchParser) -> None:
    [criterion] = parse(parser, "Patient", ("gender:missing", "true,false")).criteria
    assert criterion.values == ("true", "false")


# -- chaining ------------------------------------------------------------------------------


def test_chain_through_a_single_target(parser: SearchParser) -> None:
    [criterion] = parse(parser, "Appointment", ("patient.identifier", f"{PNR}|191212121212"), strict=True).criteria
    assert criterion.param.code == "patient"
    [(target, inner)] = criterion.chain
    assert target == "Patient"
    assert inner.param.code == "identifier" and inner.param.type == "token"
    assert inner.values == (f"{PNR}|191212121212",)
    assert criterion.values == inner.values


def test_chain_through_every_served_target(parser: SearchParser) -> None:
    """CarePlan's ``patient`` targets Patient and Group (R4 clinical-patient), both served and
    both with ``identifier``: the chain tries each (each under the caller's access rules)."""
    [criterion] = parse(parser, "CarePlan", ("patient.identifier", f"{PNR}|191212121212"), strict=True).criteria
    assert sorted(t for t, _ in criterion.chain) == ["Group", "Patient"]


def test_chain_with_type_modifier_and_inner_modifier(parser: SearchParser) -> None:
    [criterion] = parse(parser, "CarePlan", ("subject:Patient.name:exact", "Öberg")).criteria
    [(target, inner)] = criterion.chain
    assert target == "Patient" and inner.modifier == "exact" and inner.param.code == "name"


def test_chain_only_through_served_targets_that_have_the_parameter(parser: SearchParser) -> None:
    [criterion] = parse(parser, "CarePlan", ("subject.name", "berg")).criteria
    assert [t for t, _ in criterion.chain] == ["Patient"]  # Group has no name parameter here
    [criterion] = parse(parser, "CareTeam", ("participant.name", "berg")).criteria
    assert sorted(t for t, _ in criterion.chain) == ["Organization", "Patient", "Practitioner"]
    [criterion] = parse(parser, "CareTeam", ("participant.identifier", "x")).criteria
    assert sorted(t for t, _ in criterion.chain) == [
        "CareTeam", "Organization", "Patient", "Practitioner", "PractitionerRole"]


@pytest.mark.parametrize("name", [
    "status.code",  # a token cannot be chained
    "date.value",
    "patient.identifier.value",  # two levels
    "patient.organization.name",
    "patient.nonsense",
    "subject:Practitioner.name",  # not a target of subject
    "subject:Observation.code",  # not served
    "subject:Nonsense.name",
    "subject:missing.name",
    "patient.name:below",
    "care-team.participant:Nonsense",
])
def test_invalid_chain(parser: SearchParser, name: str) -> None:
    refused(parser, "CarePlan", (name, "x"))


def test_chain_with_unknown_head_follows_handling(parser: SearchParser) -> None:
    assert parse(parser, "CarePlan", ("nonsense.name", "x")).ignored == ["nonsense.name"]
    refused(parser, "CarePlan", ("nonsense.name", "x"), strict=True)


# -- result parameters -----------------------------------------------------------------------


def test_defaults(parser: SearchParser) -> None:
    query = parse(parser, "Patient")
    assert (query.count, query.offset, query.sort, query.includes) == (20, 0, [], [])
    assert (query.total, query.summary, query.elements) == (None, None, ())


@pytest.mark.parametrize(("raw", "count"), [("5", 5), ("0", 0), ("1000", 1000), ("1001", 1000), ("99999", 1000)])
def test_count(parser: SearchParser, raw: str, count: int) -> None:
    assert parse(parser, "Patient", ("_count", raw)).count == count


@pytest.mark.parametrize(("name", "raw"), [
    ("_count", "-1"), ("_count", "ten"), ("_count", "2.5"), ("_offset", "-1"), ("_offset", "x"),
    ("_total", "exact"), ("_total", "Accurate"), ("_summary", "yes"), ("_summary", "True"),
    ("_count:exact", "5"), ("_sort:desc", "name"),
])
def test_invalid_result_parameter(parser: SearchParser, name: str, raw: str) -> None:
    error = refused(parser, "Patient", (name, raw))
    assert error.expression == (name,)


def test_offset_total_summary_elements(parser: SearchParser) -> None:
    query = parse(parser, "Patient", ("_offset", "40"), ("_total", "accurate"), ("_summary", "true"),
                  ("_elements", " name , birthDate,,"), strict=True)
    assert query.offset == 40 and query.total == "accurate" and query.summary == "true"
    assert query.elements == ("name", "birthDate")
    for total in ("none", "estimate", "accurate"):
        assert parse(parser, "Patient", ("_total", total)).total == total
    for summary in ("true", "false", "count", "data", "text"):
        assert parse(parser, "Patient", ("_summary", summary)).summary == summary


def test_sort(parser: SearchParser) -> None:
    query = parse(parser, "Patient", ("_sort", "-birthdate,name"), ("_sort", "_id,-_lastUpdated"), strict=True)
    assert query.sort == [("birthdate", True), ("name", False), ("_id", False), ("_lastUpdated", True)]


@pytest.mark.parametrize("raw", ["nonsense", "-", "name,,birthdate", "lifecycle-status", "name:exact"])
def test_invalid_sort(parser: SearchParser, raw: str) -> None:
    error = refused(parser, "Patient", ("_sort", raw))
    assert error.expression == ("_sort",)


def test_format_and_pretty_are_accepted_and_not_repeated_in_links(parser: SearchParser) -> None:
    query = parse(parser, "Patient", ("_format", "json"), ("_pretty", "true"), ("name", "x"), strict=True)
    assert query.used == [("name", "x")] and query.ignored == []


def test_used_keeps_order_for_the_self_link(parser: SearchParser) -> None:
    query = parse(parser, "CarePlan", ("status", "active"), ("_count", "5"), ("_include", "CarePlan:care-team"),
                  ("unknown", "1"), ("_sort", "-date"))
    assert query.used == [("status", "active"), ("_count", "5"), ("_include", "CarePlan:care-team"),
                          ("_sort", "-date")]


# -- _include and _revinclude ----------------------------------------------------------------


@pytest.mark.parametrize(("type_", "name", "raw", "include"), [
    ("CarePlan", "_include", "CarePlan:care-team",
     Include("CarePlan", "care-team", None, False, "CarePlan:care-team", False)),
    ("CarePlan", "_include", "CarePlan:subject:Patient",
     Include("CarePlan", "subject", "Patient", False, "CarePlan:subject:Patient", False)),
    ("CarePlan", "_include", "*", Include("CarePlan", None, None, False, "*", False)),
    ("CarePlan", "_include:iterate", "CareTeam:participant",
     Include("CareTeam", "participant", None, True, "CareTeam:participant", False)),
    ("CarePlan", "_include:recurse", "CareTeam:participant:Practitioner",
     Include("CareTeam", "participant", "Practitioner", True, "CareTeam:participant:Practitioner", False)),
    ("CarePlan", "_revinclude", "Provenance:target",
     Include("Provenance", "target", None, False, "Provenance:target", True)),
    ("CareTeam", "_revinclude", "CarePlan:care-team",
     Include("CarePlan", "care-team", None, False, "CarePlan:care-team", True)),
    ("CareTeam", "_revinclude:iterate", "Provenance:target",
     Include("Provenance", "target", None, True, "Provenance:target", True)),
])
def test_include(parser: SearchParser, type_: str, name: str, raw: str, include: Include) -> None:
    query = parse(parser, type_, (name, raw), strict=True)
    assert query.includes == [include]
    assert query.used == [(name, raw)]


@pytest.mark.parametrize(("name", "raw"), [
    ("_include", "CareTeam:participant"),  # does not start from CarePlan and is not :iterate
    ("_include", "CarePlan:status"),  # a token
    ("_include", "CarePlan:nonsense"),
    ("_include", "Observation:subject"),  # not served
    ("_include", "CarePlan"),
    ("_include", "CarePlan:subject:Patient:extra"),
    ("_include", "CarePlan:subject:Nonsense"),
    ("_include:reverse", "CarePlan:subject"),
    ("_includes", "CarePlan:subject"),
    ("_revinclude", "Provenance:recorded"),
    ("_revinclude", "Provenance"),
])
def test_invalid_include(parser: SearchParser, name: str, raw: str) -> None:
    error = refused(parser, "CarePlan", (name, raw))
    assert error.expression == (name,)
