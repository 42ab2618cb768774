"""Validation on write: FHIR JSON rules, required bindings, the R4B model, contained resources."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.fhir.definitions import load_definitions
from patientkontrakt.fhir.errors import InvalidResource, Issue
from patientkontrakt.fhir.validation import Validator

DATA = Path(__file__).resolve().parents[1] / "data"
DEFS = load_definitions(PROJECT_ROOT / "fhir_profiles")
VALIDATOR = Validator(DEFS)


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((DATA / f"{name}.json").read_bytes())
    return data


def issues_of(resource: dict[str, Any]) -> list[Issue]:
    with pytest.raises(InvalidResource) as caught:
        VALIDATOR.validate(resource)
    error = caught.value
    assert error.status == 400
    assert error.issues, "an InvalidResource lists its issues"
    assert error.diagnostics == error.issues[0].diagnostics
    for issue in error.issues:
        assert issue.severity == "error"
        assert issue.details_sv, "every issue has a Swedish text"
        assert len(issue.expression) == 1
        assert issue.diagnostics.startswith(issue.expression[0])
    return error.issues


def only_issue(resource: dict[str, Any]) -> Issue:
    found = issues_of(resource)
    assert len(found) == 1, [i.diagnostics for i in found]
    return found[0]


def where(found: list[Issue]) -> dict[str, str]:
    return {i.expression[0]: i.code for i in found}


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA.glob("*.json")))
def test_the_example_resources_are_valid(name: str) -> None:
    VALIDATOR.validate(example(name))


# -- required bindings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path", "bad", "value_set", "good"),
    [
        ("careplan-agreement", ("status",), "bogus", "request-status", "revoked"),
        ("careplan-agreement", ("intent",), "wish", "care-plan-intent", "option"),
        ("careplan-agreement", ("activity", 1, "detail", "status"), "done", "care-plan-activity-status", "stopped"),
        ("careplan-agreement", ("activity", 1, "detail", "kind"), "Visit", "care-plan-activity-kind", "Task"),
        ("careplan-agreement", ("identifier", 0, "use"), "primary", "identifier-use", "temp"),
        ("careplan-agreement", ("activity", 1, "detail", "scheduledTiming", "repeat", "periodUnit"), "month",
         "units-of-time", "wk"),
        ("careplan-agreement", ("activity", 1, "detail", "scheduledTiming", "repeat", "dayOfWeek", 0), "monday",
         "days-of-week", "sun"),
        ("patient-tolvan", ("gender",), "man", "administrative-gender", "unknown"),
        ("patient-tolvan", ("identifier", 1, "use"), "main", "identifier-use", "old"),
        ("patient-tolvan", ("name", 0, "use"), "legal", "name-use", "anonymous"),
        ("patient-tolvan", ("telecom", 0, "system"), "mobile", "contact-point-system", "sms"),
        ("patient-tolvan", ("address", 0, "type"), "street", "address-type", "both"),
        ("patient-tolvan", ("contact", 0, "gender"), "f", "administrative-gender", "other"),
        ("patient-tolvan", ("link", 0, "type"), "same", "link-type", "seealso"),
        ("careteam-tolvan", ("status",), "done", "care-team-status", "inactive"),
        ("goal-walk", ("lifecycleStatus",), "ongoing", "goal-status", "accepted"),
        ("appointment-besok", ("status",), "confirmed", "appointmentstatus", "checked-in"),
        ("appointment-besok", ("participant", 0, "required"), "yes", "participantrequired", "required"),
        ("appointment-besok", ("participant", 1, "status"), "ok", "participationstatus", "declined"),
        ("provenance-signed", ("entity", 0, "role"), "copy", "provenance-entity-role", "source"),
    ],
)
def test_required_bindings_are_enforced_with_the_official_value_sets(
    name: str, path: tuple[str | int, ...], bad: str, value_set: str, good: str
) -> None:
    resource = example(name)
    parent: Any = resource
    for step in path[:-1]:
        parent = parent[step]

    parent[path[-1]] = good
    VALIDATOR.validate(resource)

    parent[path[-1]] = bad
    issue = only_issue(resource)
    expected_at = resource["resourceType"] + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in path)
    assert issue.code == "code-invalid"
    assert issue.expression == (expected_at,)
    assert f"http://hl7.org/fhir/ValueSet/{value_set}" in issue.diagnostics
    assert good in issue.diagnostics, "the message lists the allowed codes"
    assert repr(bad) in issue.details_sv  # type: ignore[operator]


def test_the_allowed_codes_are_exactly_those_of_the_value_set() -> None:
    codes = DEFS.value_set_codes("http://hl7.org/fhir/ValueSet/request-status")
    assert codes is not None
    assert {c for _, c in codes} == {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error",
                                     "unknown"}
    gender = DEFS.value_set_codes("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1")
    assert gender == {("http://hl7.org/fhir/administrative-gender", c) for c in ("male", "female", "other", "unknown")}


def test_codes_are_case_sensitive() -> None:
    issue = only_issue({**example("patient-tolvan"), "gender": "Male"})
    assert issue.expression == ("Patient.gender",)


def test_value_sets_that_cannot_be_enumerated_are_not_enforced() -> None:
    # Patient.communication.language is bound (preferred/extensible, max: all-languages) to BCP-47.
    resource = example("patient-tolvan")
    resource["communication"][0]["language"] = {"coding": [{"system": "urn:ietf:bcp:47", "code": "xx-nonsense"}]}
    VALIDATOR.validate(resource)
    assert DEFS.value_set_codes("http://hl7.org/fhir/ValueSet/no-such-value-set") is None


# -- FHIR JSON rules (R4 json.html) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "at", "code"),
    [
        ({"active": None}, "Patient.active", "structure"),
        ({"name": []}, "Patient.name", "structure"),
        ({"maritalStatus": {}}, "Patient.maritalStatus", "structure"),
        ({"birthDate": ""}, "Patient.birthDate", "value"),
        ({"gender": "   "}, "Patient.gender", "value"),
        ({"name": {"family": "Tolvansson"}}, "Patient.name", "structure"),
        ({"gender": ["male"]}, "Patient.gender", "structure"),
        ({"maritalStatus": [{"text": "Änkling"}]}, "Patient.maritalStatus", "structure"),
        ({"maritalStatus": "W"}, "Patient.maritalStatus", "structure"),
        ({"active": "yes"}, "Patient.active", "value"),
        ({"active": "true"}, "Patient.active", "value"),
        ({"active": 1}, "Patient.active", "value"),
        ({"multipleBirthInteger": "2"}, "Patient.multipleBirthInteger", "value"),
        ({"multipleBirthInteger": 2.5}, "Patient.multipleBirthInteger", "value"),
        ({"multipleBirthInteger": True}, "Patient.multipleBirthInteger", "value"),
        ({"birthDate": 19121212}, "Patient.birthDate", "value"),
        ({"gender": 1}, "Patient.gender", "value"),
        ({"_gender": None}, "Patient._gender", "structure"),
        ({"_gender": {}}, "Patient._gender", "structure"),
    ],
)
def test_fhir_json_rules(change: dict[str, Any], at: str, code: str) -> None:
    issue = only_issue({**example("patient-tolvan"), **change})
    assert issue.expression == (at,)
    assert issue.code == code


@pytest.mark.parametrize(
    ("mutate", "at"),
    [
        (lambda r: r["name"][0]["given"].append(None), "Patient.name[0].given[2]"),
        (lambda r: r["name"][0]["given"].append(""), "Patient.name[0].given[2]"),
        (lambda r: r["name"][0].update(family=123), "Patient.name[0].family"),
        (lambda r: r["telecom"][0].update(rank="1"), "Patient.telecom[0].rank"),
        (lambda r: r["identifier"][0].update(type={}), "Patient.identifier[0].type"),
        (lambda r: r["meta"].update(tag=[]), "Patient.meta.tag"),
        (lambda r: r["communication"][0].update(preferred="true"), "Patient.communication[0].preferred"),
        (lambda r: r["contact"][0]["name"].update(given="Elva"), "Patient.contact[0].name.given"),
    ],
)
def test_fhir_json_rules_apply_at_any_depth(mutate: Any, at: str) -> None:
    resource = example("patient-tolvan")
    mutate(resource)
    assert only_issue(resource).expression == (at,)


def test_decimals_accept_json_integers_and_fractions_but_not_strings() -> None:
    plan = example("careplan-agreement")
    amount = plan["activity"][3]["detail"]["dailyAmount"]
    for good in (2, 2.5, 0):
        amount["value"] = good
        VALIDATOR.validate(plan)
    for bad in ("2.5", True):
        amount["value"] = bad
        assert only_issue(plan).expression == ("CarePlan.activity[3].detail.dailyAmount.value",)


def test_a_null_item_with_an_extension_in_the_shadow_array_is_allowed() -> None:
    resource = example("patient-tolvan")
    resource["name"][0]["given"] = [None, "Åke"]
    resource["name"][0]["_given"] = [
        {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier", "valueCode": "CL"}]},
        None,
    ]
    VALIDATOR.validate(resource)


# -- the R4B model pass ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "at", "code"),
    [
        (lambda r: r.update(nickname="Tolle"), "Patient.nickname", "structure"),
        (lambda r: r["name"][1].update(nickname="Tolle"), "Patient.name[1].nickname", "structure"),
        (lambda r: r["link"][0].pop("type"), "Patient.link[0].type", "required"),
        (lambda r: r["link"][0].pop("other"), "Patient.link[0].other", "required"),
        (lambda r: r.update(birthDate="1912-13-12"), "Patient.birthDate", "value"),
        (lambda r: r.update(birthDate="12/12/1912"), "Patient.birthDate", "value"),
        (lambda r: r["address"][0]["period"].update(start="2001-13"), "Patient.address[0].period.start", "value"),
        (lambda r: r["meta"].update(lastUpdated="2024-03-05"), "Patient.meta.lastUpdated", "value"),
        (lambda r: r.update(id="a b"), "Patient.id", "value"),
        (lambda r: r["telecom"][0].update(rank=0), "Patient.telecom[0].rank", "value"),
        (lambda r: r.update(multipleBirthInteger=2**31), "Patient.multipleBirthInteger", "value"),
        (lambda r: r["_birthDate"]["extension"][0].update(valueDateTime="igår"),
         "Patient._birthDate.extension[0].valueDateTime", "value"),
        (lambda r: r.update(deceasedDateTime="2020"), "Patient", "value"),
    ],
)
def test_model_errors_become_issues_with_fhirpath_expressions(mutate: Any, at: str, code: str) -> None:
    resource = example("patient-tolvan")
    mutate(resource)
    issue = only_issue(resource)
    assert issue.expression == (at,)
    assert issue.code == code
    assert "function-" not in issue.diagnostics and "[x]" not in at


def test_unknown_element_message_names_the_element() -> None:
    issue = only_issue({**example("goal-walk"), "dueDate": "2025-01-01"})
    assert issue.diagnostics == "Goal.dueDate: unknown element 'dueDate'"


def test_an_unknown_resource_type_is_refused_before_anything_else() -> None:
    for type_name in ("Observation", "patient", None, 7):
        issue = only_issue({**example("patient-tolvan"), "resourceType": type_name})
        assert issue.expression == ("resourceType",)
        assert issue.code == "invalid"


# -- contained resources ---------------------------------------------------------------------


def test_contained_resources_are_validated_with_their_own_definitions() -> None:
    resource = example("patient-deceased")
    resource["contained"][0].update(name="", active="ja", type=[{"coding": [{"code": "prov"}]}], partOf=[{}])
    assert where(issues_of(resource)) == {
        "Patient.contained[0].name": "value",
        "Patient.contained[0].active": "value",
        "Patient.contained[0].partOf": "structure",
    }


def test_contained_resources_check_required_bindings() -> None:
    plan = example("careplan-agreement")
    plan["contained"][0]["lifecycleStatus"] = "someday"
    issue = only_issue(plan)
    assert issue.expression == ("CarePlan.contained[0].lifecycleStatus",)
    assert issue.code == "code-invalid"


def test_contained_resources_of_types_we_do_not_serve_go_through_the_model() -> None:
    resource = example("patient-deceased")
    resource["contained"].append({"resourceType": "Observation", "id": "obs", "status": "final",
                                  "code": {"text": "Vikt"}})
    VALIDATOR.validate(resource)
    del resource["contained"][1]["code"]
    resource["contained"][1]["weight"] = 80
    assert where(issues_of(resource)) == {
        "Patient.contained[1].code": "required",
        "Patient.contained[1].weight": "structure",
    }


@pytest.mark.parametrize(
    ("contained", "at"),
    [
        ([{"resourceType": "NoSuchType", "id": "x"}], "Patient.contained[0].resourceType"),
        ([{"id": "x"}], "Patient.contained[0].resourceType"),
        (["Organization/x"], "Patient.contained[0]"),
        ([None], "Patient.contained[0]"),
        ([], "Patient.contained"),
        ({"resourceType": "Organization", "id": "x"}, "Patient.contained"),
        ([{"resourceType": "Organization", "id": "o", "contained": [{"resourceType": "Organization", "id": "p"}]}],
         "Patient.contained[0].contained"),
    ],
)
def test_malformed_contained_resources(contained: Any, at: str) -> None:
    resource = {**example("patient-deceased"), "contained": contained}
    found = issues_of(resource)
    assert found[0].expression == (at,)
    assert all(i.expression[0].startswith("Patient.contained") for i in found)


# -- several problems at once ----------------------------------------------------------------


def test_every_issue_is_listed() -> None:
    resource = example("patient-tolvan")
    resource.update(gender="man", active="yes", name=[], birthDate="")
    resource["identifier"][0]["use"] = "x"
    resource["telecom"][1]["value"] = None
    resource["contact"][0]["gender"] = "kvinna"
    assert where(issues_of(resource)) == {
        "Patient.identifier[0].use": "code-invalid",
        "Patient.active": "value",
        "Patient.name": "structure",
        "Patient.telecom[1].value": "structure",
        "Patient.gender": "code-invalid",
        "Patient.birthDate": "value",
        "Patient.contact[0].gender": "code-invalid",
    }


def test_model_issues_are_listed_with_json_issues() -> None:
    resource = {**example("careplan-agreement"), "status": "bogus", "authoredOn": "2024-01-01"}
    resource["activity"][1]["detail"]["scheduledTiming"]["repeat"]["periodUnit"] = "month"
    resource["period"]["start"] = "2024-3-1"
    assert where(issues_of(resource)) == {
        "CarePlan.status": "code-invalid",
        "CarePlan.activity[1].detail.scheduledTiming.repeat.periodUnit": "code-invalid",
        "CarePlan.authoredOn": "structure",
        "CarePlan.period.start": "value",
    }


def test_an_element_is_reported_once_even_if_both_passes_reject_it() -> None:
    resource = {**example("patient-tolvan"), "multipleBirthInteger": 2.5, "name": {"family": "x"}}
    assert [i.expression[0] for i in issues_of(resource)] == ["Patient.name", "Patient.multipleBirthInteger"]


def test_validation_does_not_change_the_resource() -> None:
    resource = example("careplan-agreement")
    before = copy.deepcopy(resource)
    VALIDATOR.validate(resource)
    assert resource == before


CONTROL_CHARACTERS = [chr(c) for c in range(0x20) if chr(c) not in "\t\r\n"]


@pytest.mark.parametrize("bad", ["a\u0000b", "a\u0007b", "\u001b[31m", "a\u000bb", "a\bb", "a\fb",
                                 *(f"x{c}" for c in CONTROL_CHARACTERS)])
def test_control_characters_are_refused_in_every_string(bad: str) -> None:
    resource = example("patient-tolvan")
    resource["name"][0]["family"] = bad
    resource["extension"][0]["valueString"] = bad
    resource["contained"] = [{"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": bad}}]
    assert where(issues_of(resource)) == {
        "Patient.name[0].family": "value",
        "Patient.extension[0].valueString": "value",
        "Patient.contained[0].code.text": "value",
    }


def test_tab_carriage_return_and_line_feed_are_allowed() -> None:
    resource = example("patient-tolvan")
    resource["name"][0]["text"] = "Tolvan\tÅke\r\nTolvansson"
    VALIDATOR.validate(resource)


@pytest.mark.parametrize("text", ["C:\\bin\\fil", "\\u0001 as text", "\\\\b", "\u007f\u0085\u2028"])
def test_text_that_only_looks_like_control_characters_in_json_is_allowed(text: str) -> None:
    # a backslash before b, f or u0001 is written as JSON the way a control character's escape is
    resource = example("patient-tolvan")
    resource["name"][0]["text"] = text
    VALIDATOR.validate(resource)


def test_a_control_character_in_a_resource_that_also_has_a_backslash_is_refused() -> None:
    resource = example("patient-tolvan")
    resource["name"][0]["text"] = "C:\\bin"
    resource["name"][0]["family"] = "a\u0001b"
    assert where(issues_of(resource)) == {"Patient.name[0].family": "value"}
