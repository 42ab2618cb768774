"""Our conformance resources in ``fhir_profiles/profiles/`` (generated from ``fhir_profiles/fsh/``).

Checks that every file is valid FHIR R4 JSON of its type with our canonical metadata, that every
StructureDefinition carries a snapshot that agrees with its differential, that the examples
reference only each other and satisfy our invariants (evaluated with fhirpathpy and the R4
model, the way ``patientkontrakt.domain.profiles`` evaluates them), that the invariants catch
what they are written for, and that the committed JSON is what ``make profiles`` builds from
the FSH today.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fhirpathpy
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhirpathpy.models import models

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "fhir_profiles" / "profiles"
README = ROOT / "fhir_profiles" / "README.md"
BASE = "https://patientkontrakt.se/fhir"
VERSION = "0.1.0"
CONFORMANCE_TYPES = {"StructureDefinition", "CodeSystem", "ValueSet", "OperationDefinition"}
R4 = models["r4"]


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


FILES = sorted(PROFILES.glob("*.json"))
RESOURCES = {path.name: _load(path) for path in FILES}
STRUCTURES = {r["url"]: r for r in RESOURCES.values() if r["resourceType"] == "StructureDefinition"}
EXAMPLES = {
    f"{r['resourceType']}/{r['id']}": r for r in RESOURCES.values() if r["resourceType"] not in CONFORMANCE_TYPES
}


def _by_id(resource_type: str, id_: str) -> dict[str, Any]:
    return copy.deepcopy(RESOURCES[f"{resource_type}-{id_}.json"])


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield value["reference"]
        for child in value.values():
            yield from _references(child)
    elif isinstance(value, list):
        for child in value:
            yield from _references(child)


def test_the_folder_holds_every_kind_of_resource() -> None:
    kinds = {r["resourceType"] for r in RESOURCES.values()}
    assert {"StructureDefinition", "CodeSystem", "ValueSet", "OperationDefinition"} <= kinds
    assert len(STRUCTURES) == 14  # eleven profiles and three extensions
    assert len(EXAMPLES) >= len(STRUCTURES)


@pytest.mark.parametrize("name", RESOURCES)
def test_file_is_named_after_its_resource(name: str) -> None:
    resource = RESOURCES[name]
    assert name == f"{resource['resourceType']}-{resource['id']}.json"


@pytest.mark.parametrize("name", RESOURCES)
def test_file_is_valid_fhir_json_of_its_type(name: str) -> None:
    resource = RESOURCES[name]
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.mark.parametrize("name", [n for n, r in RESOURCES.items() if r["resourceType"] in CONFORMANCE_TYPES])
def test_conformance_resource_has_our_canonical_metadata(name: str) -> None:
    resource = RESOURCES[name]
    assert resource["url"] == f"{BASE}/{resource['resourceType']}/{resource['id']}"
    assert resource["version"] == VERSION
    assert resource["status"] in ("draft", "active")
    assert resource["publisher"] == "Patientkontrakt"
    for key in ("name", "title", "description"):
        assert resource.get(key), f"{name} has no {key}"


@pytest.mark.parametrize("url", STRUCTURES)
def test_profile_is_a_constraint_with_snapshot_and_differential(url: str) -> None:
    sd = STRUCTURES[url]
    assert sd["derivation"] == "constraint"
    assert sd["fhirVersion"] == "4.0.1"
    assert sd["baseDefinition"] == f"http://hl7.org/fhir/StructureDefinition/{sd['type']}"
    assert sd["snapshot"]["element"][0]["id"] == sd["type"]
    assert sd["differential"]["element"]


@pytest.mark.parametrize("url", STRUCTURES)
def test_snapshot_carries_every_rule_of_the_differential(url: str) -> None:
    sd = STRUCTURES[url]
    snapshot = {e["id"]: e for e in sd["snapshot"]["element"]}
    for diff in sd["differential"]["element"]:
        snap = snapshot.get(diff["id"])
        assert snap is not None, f"{diff['id']} is in the differential but not in the snapshot"
        for key, value in diff.items():
            if key == "constraint":
                for constraint in value:
                    assert any(
                        all(other.get(k) == v for k, v in constraint.items()) for other in snap.get("constraint", [])
                    ), f"{diff['id']}: constraint {constraint['key']} is missing from the snapshot"
            else:
                assert snap.get(key) == value, f"{diff['id']}.{key} differs between differential and snapshot"


@pytest.mark.parametrize("url", STRUCTURES)
def test_profile_refers_only_to_resources_that_exist(url: str) -> None:
    """Bindings and target profiles of ours point at resources in the folder."""
    ours = {r["url"] for r in RESOURCES.values() if "url" in r}
    for element in STRUCTURES[url]["snapshot"]["element"]:
        targets = [p for t in element.get("type", []) for p in t.get("targetProfile", [])]
        value_set = element.get("binding", {}).get("valueSet", "")
        for canonical in [*targets, value_set.split("|")[0]]:
            if canonical.startswith(BASE):
                assert canonical in ours, f"{element['id']} refers to {canonical}, which is not in {PROFILES}"


@pytest.mark.parametrize("url", STRUCTURES)
def test_every_profile_has_an_example(url: str) -> None:
    """A profile is claimed by an example; an extension is used in one."""
    if STRUCTURES[url]["type"] == "Extension":
        assert any(url in json.dumps(r) for r in EXAMPLES.values())
    else:
        assert any(url in r.get("meta", {}).get("profile", []) for r in EXAMPLES.values())


@pytest.mark.parametrize("key", EXAMPLES)
def test_example_claims_one_of_our_profiles_of_its_type(key: str) -> None:
    example = EXAMPLES[key]
    profiles = example.get("meta", {}).get("profile", [])
    assert profiles, f"{key} claims no profile"
    for url in profiles:
        assert url in STRUCTURES, f"{key} claims {url}, which is not in {PROFILES}"
        assert STRUCTURES[url]["type"] == example["resourceType"]


@pytest.mark.parametrize("key", EXAMPLES)
def test_example_references_resolve_among_the_examples(key: str) -> None:
    for reference in _references(EXAMPLES[key]):
        assert reference in EXAMPLES, f"{key} refers to {reference}, which is not one of the examples"


def test_every_example_is_connected_to_the_agreement() -> None:
    """The examples form one agreement: everything hangs off the Patientkontrakt, or (the SIP,
    the samtycke and the spärrar) refers to it or to what it names."""
    (agreement_key,) = [k for k, r in EXAMPLES.items()
                        if f"{BASE}/StructureDefinition/pk-patientkontrakt" in r["meta"]["profile"]]
    neighbours: dict[str, set[str]] = {key: set() for key in EXAMPLES}
    for key, example in EXAMPLES.items():
        for reference in _references(example):
            neighbours[key].add(reference)
            neighbours[reference].add(key)
    seen: set[str] = set()
    todo = [agreement_key]
    while todo:
        key = todo.pop()
        if key not in seen:
            seen.add(key)
            todo.extend(neighbours[key])
    assert seen == set(EXAMPLES)


@pytest.mark.parametrize("name", [n for n, r in RESOURCES.items() if r["resourceType"] == "CodeSystem"])
def test_code_system_has_swedish_displays_english_designations_and_a_value_set(name: str) -> None:
    code_system = RESOURCES[name]
    assert code_system["language"] == "sv"
    assert code_system["content"] == "complete"
    assert code_system["count"] == len(code_system["concept"])
    for concept in code_system["concept"]:
        assert concept["display"] and concept["definition"]
        assert [d["language"] for d in concept.get("designation", [])] == ["en"], concept["code"]
    value_set = RESOURCES[f"ValueSet-{code_system['id']}.json"]
    assert value_set["compose"]["include"] == [{"system": code_system["url"]}]


def test_operation_patientkontrakt() -> None:
    operation = RESOURCES["OperationDefinition-patientkontrakt.json"]
    assert operation["code"] == "patientkontrakt"
    assert operation["kind"] == "operation"
    assert operation["resource"] == ["Patient", "CarePlan"]
    assert (operation["system"], operation["type"], operation["instance"]) == (False, False, True)
    assert operation["affectsState"] is False
    assert operation["parameter"] == [{
        "name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle",
        "documentation": operation["parameter"][0]["documentation"],
    }]


def test_readme_indexes_every_resource() -> None:
    readme = README.read_text(encoding="utf-8")
    for resource in RESOURCES.values():
        url = resource.get("url") or f"{BASE}/{resource['resourceType']}/{resource['id']}"
        assert f"`{url}`" in readme, f"{url} is missing from {README.name}"


# -- invariants ---------------------------------------------------------------------------------


def _invariants() -> list[tuple[str, str, str, str]]:
    """(profile url, element path, key, expression) of every invariant of ours."""
    found = []
    for url, sd in STRUCTURES.items():
        for element in sd["snapshot"]["element"]:
            assert ":" not in element["id"] or not any(
                c["key"].startswith("pk-") for c in element.get("constraint", [])
            ), f"{element['id']}: an invariant on a slice needs slice-aware evaluation in this test"
            for constraint in element.get("constraint", []):
                if constraint["key"].startswith("pk-"):
                    found.append((url, element["path"], constraint["key"], constraint["expression"]))
    return found


INVARIANTS = _invariants()


def _holds(resource: dict[str, Any], path: str, key: str) -> bool:
    """Evaluate invariant ``key`` at ``path`` twice: on the typed resource (``path.all(expr)``) and
    on each element alone, as ``patientkontrakt.domain.profiles`` does; both must agree."""
    (expression,) = {e for _, p, k, e in INVARIANTS if k == key and p == path}
    env = {"resource": resource, "rootResource": resource}
    relative = path.partition(".")[2]
    typed = fhirpathpy.evaluate(resource, f"{relative}.all({expression})" if relative else expression, env, R4)
    nodes = fhirpathpy.evaluate(resource, relative, env, R4) if relative else [resource]
    each = [fhirpathpy.evaluate(node, expression, env, R4) for node in nodes]
    alone = all(result in ([True], []) for result in each)
    assert typed in ([True], [False]), f"{key} gave {typed}"
    assert typed == [alone], f"{key}: typed evaluation {typed} and element-wise {each} disagree"
    return alone


def test_the_invariants_are_in_place() -> None:
    keys = {k for _, _, k, _ in INVARIANTS}
    assert {"pk-patient-1", "pk-hsaid-1", "pk-patientkontrakt-1", "pk-patientkontrakt-2",
            "pk-patientkontrakt-3", "pk-vardteam-2", "pk-aktivitet-1", "pk-samtycke-1", "pk-sparr-1",
            "pk-sip-1", "pk-sip-2", "pk-sip-3"} <= keys


@pytest.mark.parametrize(
    ("url", "path", "key", "expression"), INVARIANTS, ids=[f"{u.rsplit('/', 1)[1]}:{k}" for u, _, k, _ in INVARIANTS]
)
def test_examples_satisfy_invariant(url: str, path: str, key: str, expression: str) -> None:
    examples = [r for r in EXAMPLES.values() if url in r["meta"]["profile"]]
    assert examples
    for example in examples:
        assert _holds(example, path, key), f"{example['resourceType']}/{example['id']} breaks {key}: {expression}"


def test_vardteam_members_are_roles_so_on_behalf_of_stays_empty() -> None:
    """R4 ctm-1: onBehalfOf only with a Practitioner member; our members are PractitionerRoles."""
    team = _by_id("CareTeam", "pk-example-vardteam-tolvan")
    assert all("onBehalfOf" not in p for p in team["participant"])
    profile = next(r for r in RESOURCES.values() if r.get("id") == "pk-vardteam")
    staff_slices = ("fastVardkontakt", "fastLakarkontakt", "kontaktpersonKommun")
    on_behalf = {e["id"].split(":")[1].split(".")[0]: e["max"] for e in profile["snapshot"]["element"]
                 if e["path"] == "CareTeam.participant.onBehalfOf" and ":" in e["id"]}
    assert {name: on_behalf.get(name) for name in staff_slices} == dict.fromkeys(staff_slices, "0")


def test_vardteam_roles_from_our_code_system_must_exist() -> None:
    team = _by_id("CareTeam", "pk-example-vardteam-tolvan")
    team["participant"][3]["role"][0]["coding"][0]["code"] = "granne"
    assert not _holds(team, "CareTeam", "pk-vardteam-2")
    team["participant"][3]["role"][0]["coding"][0]["system"] = "http://snomed.info/sct"
    assert _holds(team, "CareTeam", "pk-vardteam-2")


def test_patientkontrakt_activities_name_an_organisation_and_a_time() -> None:
    agreement = _by_id("CarePlan", "pk-example-patientkontrakt-tolvan")
    detail = "CarePlan.activity.detail"
    only_role = copy.deepcopy(agreement)
    only_role["activity"][4]["detail"]["performer"] = [{"reference": "PractitionerRole/pk-example-role-anna-vc-norr"}]
    assert not _holds(only_role, detail, "pk-patientkontrakt-1")
    typed_reference = copy.deepcopy(agreement)
    typed_reference["activity"][4]["detail"]["performer"] = [{"reference": "urn:uuid:5d0c3bd4", "type": "Organization"}]
    assert _holds(typed_reference, detail, "pk-patientkontrakt-1")
    no_time = copy.deepcopy(agreement)
    del no_time["activity"][2]["detail"]["scheduledPeriod"]
    assert not _holds(no_time, "CarePlan", "pk-patientkontrakt-2")
    no_time["activity"][2]["detail"]["status"] = "in-progress"
    assert _holds(no_time, "CarePlan", "pk-patientkontrakt-2")
    empty_activity = copy.deepcopy(agreement)
    empty_activity["activity"].append({"progress": [{"text": "Inget planerat"}]})
    assert not _holds(empty_activity, "CarePlan.activity", "pk-patientkontrakt-3")


def test_identifier_formats() -> None:
    patient = _by_id("Patient", "pk-example-patient-tolvan")
    patient["identifier"][0]["value"] = "19121212-1212"
    assert not _holds(patient, "Patient", "pk-patient-1")
    practitioner = _by_id("Practitioner", "pk-example-practitioner-anna")
    for bad in ("SE232100001-2001", "SE2321000016-20å1", "SE2321000016-" + "1" * 19, "2321000016-2001"):
        practitioner["identifier"][0]["value"] = bad
        assert not _holds(practitioner, "Practitioner", "pk-hsaid-1"), bad
    practitioner["identifier"][0]["value"] = "SE2321000016-15TN"
    assert _holds(practitioner, "Practitioner", "pk-hsaid-1")


def test_aktivitet_does_not_end_before_it_starts() -> None:
    appointment = _by_id("Appointment", "pk-example-aktivitet-besok")
    appointment["end"] = "2026-12-08T08:30:00+01:00"
    assert not _holds(appointment, "Appointment", "pk-aktivitet-1")


def test_samtycke_has_exactly_one_recipient() -> None:
    samtycke = _by_id("Consent", "pk-example-samtycke-tolvan")
    assert _holds(samtycke, "Consent", "pk-samtycke-1")
    no_recipient = copy.deepcopy(samtycke)
    no_recipient["provision"]["actor"] = no_recipient["provision"]["actor"][1:]  # only the custodian
    assert not _holds(no_recipient, "Consent", "pk-samtycke-1")
    two = copy.deepcopy(samtycke)
    two["provision"]["actor"].append(copy.deepcopy(samtycke["provision"]["actor"][0]))
    assert not _holds(two, "Consent", "pk-samtycke-1")


def test_sparr_actors_are_all_custodians() -> None:
    for id_ in ("pk-example-inre-sparr-tolvan", "pk-example-yttre-sparr-tolvan"):
        sparr = _by_id("Consent", id_)
        assert _holds(sparr, "Consent", "pk-sparr-1")
        sparr["provision"]["actor"].append({
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "code": "IRCP"}]},
            "reference": {"reference": "Organization/pk-example-org-exempels-kommun"},
        })
        assert not _holds(sparr, "Consent", "pk-sparr-1")


def test_consent_profiles_fix_scope_category_and_provision_type() -> None:
    fixed = {}
    for name in ("pk-samtycke", "pk-sparr"):
        elements = {e["id"]: e for e in STRUCTURES[f"{BASE}/StructureDefinition/{name}"]["snapshot"]["element"]}
        fixed[name] = elements["Consent.provision.type"]["fixedCode"]
        assert elements["Consent.scope"]["patternCodeableConcept"]["coding"] == [
            {"code": "patient-privacy", "system": "http://terminology.hl7.org/CodeSystem/consentscope"}]
        assert elements["Consent.provision.actor.role"]["binding"] == {
            "strength": "required", "valueSet": f"{BASE}/ValueSet/pk-consent-actor-role"}
    assert fixed == {"pk-samtycke": "permit", "pk-sparr": "deny"}
    sparr = {e["id"]: e for e in STRUCTURES[f"{BASE}/StructureDefinition/pk-sparr"]["snapshot"]["element"]}
    assert sparr["Consent.category:sparr"]["binding"]["valueSet"] == f"{BASE}/ValueSet/pk-sparr-category"
    codes = {c["code"] for c in RESOURCES["ValueSet-pk-sparr-category.json"]["compose"]["include"][0]["concept"]}
    assert codes == {"inre-sparr", "yttre-sparr"}


def test_sip_is_not_itself_an_agreement_and_names_who_does_what() -> None:
    sip = _by_id("CarePlan", "pk-example-sip-tolvan")
    detail = "CarePlan.activity.detail"
    both = copy.deepcopy(sip)
    both["category"].append({"coding": [{"system": f"{BASE}/CodeSystem/pk-careplan-category",
                                         "code": "patientkontrakt"}]})
    assert not _holds(both, "CarePlan", "pk-sip-1")
    only_role = copy.deepcopy(sip)
    karin = "PractitionerRole/pk-example-role-karin-hemtjansten"
    only_role["activity"][0]["detail"]["performer"] = [{"reference": karin}]
    assert not _holds(only_role, detail, "pk-sip-2")
    nothing = copy.deepcopy(sip)
    del nothing["activity"][1]["detail"]["code"], nothing["activity"][1]["detail"]["description"]
    assert not _holds(nothing, detail, "pk-sip-3")
    ansvar = RESOURCES["ValueSet-pk-overgripande-ansvar.json"]["compose"]["include"][0]["concept"]
    assert {c["code"] for c in ansvar} == {"region", "kommun"}


# -- the JSON is what the FSH compiles to -------------------------------------------------------


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run ``make profiles`` into a temporary folder (it installs node_modules when missing)."""
    out = tmp_path_factory.mktemp("profiles")
    for tool in ("make", "npm", "node"):
        assert shutil.which(tool), f"`make profiles` needs {tool} on PATH"
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "profiles", f"PROFILES_OUT={out}"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, f"make profiles failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return out


def test_committed_json_is_what_the_fsh_compiles_to(rebuilt: Path) -> None:
    generated = {path.name: _load(path) for path in sorted(rebuilt.glob("*.json"))}
    hint = "the FSH and fhir_profiles/profiles/ disagree: run `make profiles` and commit the result"
    assert sorted(generated) == sorted(RESOURCES), hint
    differing = [name for name in generated if generated[name] != RESOURCES[name]]
    assert not differing, f"{hint}; differing: {', '.join(differing)}"
    for name in generated:
        assert (rebuilt / name).read_bytes() == (PROFILES / name).read_bytes(), f"{hint}; formatting of {name}"
