"""The forms' shared checks (api/pages/forms.py): the personnummer's messages, the summary's
order, and the core's issues put on the field they are about, each once."""

from __future__ import annotations

import datetime

import pytest
from stdnum import luhn

from api.pages import forms
from patientkontrakt.domain import codes
from patientkontrakt.domain.identifiers import IdentifierError, parse_person_number
from patientkontrakt.fhir.bundle_entries import entry_error
from patientkontrakt.fhir.errors import Issue, Unprocessable

_TOMORROW = datetime.date.today() + datetime.timedelta(days=1)


def _message(text: str) -> str:
    try:
        parse_person_number(text)
    except IdentifierError as exc:
        return forms.person_number_message(text, exc)
    raise AssertionError(f"{text!r} is valid")


@pytest.mark.parametrize(("text", "message"), [
    ("", forms.EMPTY_PERSON_NUMBER), ("   ", forms.EMPTY_PERSON_NUMBER),
    ("12345", forms.PERSON_NUMBER["format"]), ("19121212-12", forms.PERSON_NUMBER["format"]),
    ("abc", forms.PERSON_NUMBER["format"]),
    ("19121212-1213", forms.PERSON_NUMBER["check-digit"]),
    (f"19121312-121{luhn.calc_check_digit('121312121')}", forms.PERSON_NUMBER["date"]),
    (f"{_TOMORROW:%Y%m%d}-123{luhn.calc_check_digit(f'{_TOMORROW:%y%m%d}123')}", forms.PERSON_NUMBER["future"]),
])
def test_each_kind_of_wrong_personnummer_has_its_message(text: str, message: str) -> None:
    assert _message(text) == message
    assert "''" not in message


def test_other_century_reads_a_hyphen_as_a_plus_and_the_other_way_round() -> None:
    young = parse_person_number("121212-1212")
    assert young.value == "201212121212"
    other = forms.other_century("121212-1212", young)
    assert other is not None and other.value == "191212121212"
    assert forms.short_form(other) == "121212+1212" and forms.short_form(young) == "121212-1212"
    old = parse_person_number("121212+1212")
    assert old.value == "191212121212"
    assert forms.other_century("121212+1212", old).value == "201212121212"  # type: ignore[union-attr]
    assert forms.other_century("19121212-1212", old) is None  # 12 digits say the century


def test_errors_follow_the_form() -> None:
    ordered = forms.in_form_order({"b": 1, "x": 9, "a": 2}, ["a", "b"])
    assert list(ordered) == ["a", "b", "x"]


def _bundle() -> dict[str, object]:
    team = {"resourceType": "CareTeam", "participant": [
        {"role": [{"coding": [{"system": codes.CARETEAM_ROLE, "code": codes.FAST_VARDKONTAKT}]}]},
        {"role": [{"coding": [{"system": codes.CARETEAM_ROLE, "code": codes.FAST_LAKARKONTAKT}]}]},
        {"role": [{"coding": [{"system": codes.CARETEAM_ROLE, "code": "ovrig"}]}]}]}
    goal = {"resourceType": "Goal", "expressedBy": {"reference": "urn:uuid:patient"}}
    plan = {"resourceType": "CarePlan", "activity": [{"detail": {}}, {"detail": {}}, {"detail": {}}]}
    return {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient"}}, {"resource": team},
                                                 {"resource": goal}, {"resource": plan}]}


def _issue(expression: str, swedish: str, english: str = "") -> Issue:
    return Issue("invalid", english or f"{expression}: wrong", expression=(expression,), details_sv=swedish)


def _in_entry(index: int, issue: Issue) -> Issue:
    return entry_error(index, Unprocessable(issue.diagnostics, issues=[issue])).issues[0]


def test_a_transactions_issues_go_to_their_fields_once() -> None:
    new_rows = [{"row": 0}, {"row": 2}]  # the plan's last two activities are the form's rows 0 and 2
    issues = [
        _in_entry(0, _issue("Patient.identifier[0].value", "Fel personnummer.")),
        _in_entry(1, _issue("CareTeam.participant[2].member", "Fel deltagare.")),
        _in_entry(2, _issue("Goal.description", "Fel mål.")),
        _in_entry(3, _issue("CarePlan.careTeam[0]", "Läkare saknas.",
                            "In primary care the CareTeam needs a current fast läkarkontakt who is a physician")),
        _in_entry(3, _issue("CarePlan.activity[2].detail.scheduledPeriod", "Fel tid.")),
        _in_entry(3, _issue("CarePlan.activity[1].detail.description", "Fel text.")),
        _in_entry(3, _issue("CarePlan.goal", "Tom.")),
        _in_entry(3, _issue("CarePlan.goal", "Tom.")),
    ]
    errors: dict[str, object] = {"personnummer": "the page's own"}
    fields = ("personnummer", "given", "family", "vardkontakt", "lakarkontakt", "participants", "own_goals")
    general = forms.issue_fields(issues, errors, _bundle(), new_rows, fields)
    said = {k: getattr(v, "sv", v) for k, v in errors.items()}
    assert said == {"personnummer": "the page's own", "participants": "Fel deltagare.", "own_goals": "Fel mål.",
                    "lakarkontakt": "Läkare saknas.", "activity-2-date": "Fel tid.",
                    "activity-0-description": "Fel text."}
    assert [g.sv for g in general] == ["Tom."]  # not linked to a field, and only once


def test_without_the_bundle_the_diagnostics_name_the_element() -> None:
    issue = _in_entry(1, Issue("invalid", "CarePlan.description: too long", expression=("CarePlan.description",),
                               details_sv="För lång."))
    errors: dict[str, object] = {}
    assert forms.issue_fields([issue], errors, None, [], ("description",)) == []
    assert getattr(errors["description"], "sv", None) == "För lång."
