"""The snapshot-driven profile validator, on a profile built here from the core CareTeam snapshot.

Building the profile in the test keeps these tests independent of our published profiles; the
published ones are exercised through the API tests.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from patientkontrakt.domain.profiles import ProfileValidator
from patientkontrakt.fhir.definitions import Definitions, load_definitions

CORE = Path(__file__).resolve().parents[2] / "fhir_profiles" / "core"
ROLE_SYSTEM = "https://patientkontrakt.se/fhir/CodeSystem/pk-careteam-role"
PROFILE_URL = "https://example.test/StructureDefinition/TestTeam"


def _element(snapshot: list[dict[str, Any]], element_id: str) -> dict[str, Any]:
    return next(e for e in snapshot if e["id"] == element_id)


def _test_profile() -> dict[str, Any]:
    core = json.loads((CORE / "StructureDefinition-CareTeam.json").read_text())
    snapshot: list[dict[str, Any]] = copy.deepcopy(core["snapshot"]["element"])
    subject = _element(snapshot, "CareTeam.subject")
    subject["min"] = 1
    subject["type"] = [{"code": "Reference", "targetProfile": ["http://hl7.org/fhir/StructureDefinition/Patient"]}]
    status = _element(snapshot, "CareTeam.status")
    status["fixedCode"] = "active"
    participant = _element(snapshot, "CareTeam.participant")
    participant["min"] = 1
    participant["slicing"] = {"discriminator": [{"type": "pattern", "path": "role"}], "rules": "open"}
    participant.setdefault("constraint", []).append({
        "key": "tt-1", "severity": "error", "human": "A participant needs a member",
        "expression": "member.exists()",
    })
    children = [e for e in snapshot if e["id"].startswith("CareTeam.participant.")]
    position = snapshot.index(children[-1]) + 1
    contact = copy.deepcopy(participant)
    contact.pop("slicing")
    contact.update(id="CareTeam.participant:contact", sliceName="contact", min=1, max="1", constraint=[])
    slice_children = []
    for child in children:
        clone = copy.deepcopy(child)
        clone["id"] = clone["id"].replace("CareTeam.participant.", "CareTeam.participant:contact.")
        if clone["path"] == "CareTeam.participant.role":
            clone["patternCodeableConcept"] = {"coding": [{"system": ROLE_SYSTEM, "code": "fast-vardkontakt"}]}
            clone["min"] = 1
        if clone["path"] == "CareTeam.participant.period":
            clone["min"] = 1
        slice_children.append(clone)
    snapshot[position:position] = [contact, *slice_children]
    root = _element(snapshot, "CareTeam")
    root["constraint"] = [*root.get("constraint", []), {
        "key": "tt-2", "severity": "error", "human": "Exactly one current contact",
        "expression": (
            f"participant.where(role.coding.where(system='{ROLE_SYSTEM}' and code='fast-vardkontakt').exists()"
            " and (period.end.empty() or period.end > now())).count() = 1"
        ),
    }]
    return {
        "resourceType": "StructureDefinition", "url": PROFILE_URL, "name": "TestTeam", "type": "CareTeam",
        "kind": "resource", "abstract": False, "derivation": "constraint", "status": "draft",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/CareTeam",
        "snapshot": {"element": snapshot},
    }


@pytest.fixture(scope="module")
def validator() -> ProfileValidator:
    defs: Definitions = copy.copy(load_definitions(CORE.parent))
    defs.profiles = {PROFILE_URL: _test_profile()}
    return ProfileValidator(defs)


def _team(**changes: Any) -> dict[str, Any]:
    team: dict[str, Any] = {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": {"reference": "Patient/p1"},
        "participant": [{
            "role": [{"coding": [{"system": ROLE_SYSTEM, "code": "fast-vardkontakt"}]}],
            "member": {"reference": "PractitionerRole/r1"},
            "period": {"start": "2024-01-01"},
        }],
    }
    team.update(changes)
    return team


def _issues(validator: ProfileValidator, resource: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    profile = validator.profiles[PROFILE_URL]
    return [(i.code, i.expression) for i in validator.validate(resource, profile)]


def test_a_conforming_resource_has_no_issues(validator: ProfileValidator) -> None:
    assert _issues(validator, _team()) == []


def test_missing_mandatory_element(validator: ProfileValidator) -> None:
    team = _team()
    del team["subject"]
    assert ("required", ("CareTeam.subject",)) in _issues(validator, team)


def test_fixed_value(validator: ProfileValidator) -> None:
    assert ("value", ("CareTeam.status",)) in _issues(validator, _team(status="proposed"))


def test_reference_target_type(validator: ProfileValidator) -> None:
    issues = _issues(validator, _team(subject={"reference": "Group/g1"}))
    assert ("invalid", ("CareTeam.subject.reference",)) in issues
    assert _issues(validator, _team(subject={"reference": "Patient/p1/_history/2"})) == []


def test_slice_cardinality_and_slice_children(validator: ProfileValidator) -> None:
    other = {"role": [{"text": "Kurator"}], "member": {"reference": "PractitionerRole/r2"}}
    issues = _issues(validator, _team(participant=[other]))
    assert ("required", ("CareTeam.participant",)) in issues  # the contact slice is missing
    two_contacts = _team()
    two_contacts["participant"] = two_contacts["participant"] * 2
    codes = [code for code, _ in _issues(validator, two_contacts)]
    assert "structure" in codes  # the slice allows one
    no_period = _team()
    del no_period["participant"][0]["period"]
    assert ("required", ("CareTeam.participant[0].period",)) in _issues(validator, no_period)


def test_element_invariant(validator: ProfileValidator) -> None:
    team = _team()
    team["participant"].append({"role": [{"text": "Övrig"}]})
    assert ("invariant", ("CareTeam.participant[1]",)) in _issues(validator, team)


def test_resource_invariant_with_periods(validator: ProfileValidator) -> None:
    closed = _team()
    closed["participant"][0]["period"] = {"start": "2020-01-01", "end": "2021-01-01"}
    assert ("invariant", ("CareTeam",)) in _issues(validator, closed)
    history = _team()
    history["participant"].append({**history["participant"][0], "period": {"start": "2019-01-01", "end": "2020-01-01"}})
    codes = _issues(validator, history)
    assert ("invariant", ("CareTeam",)) not in codes


def test_every_issue_is_reported(validator: ProfileValidator) -> None:
    team = _team(status="proposed", subject={"reference": "Group/g"})
    assert len(_issues(validator, team)) >= 2
