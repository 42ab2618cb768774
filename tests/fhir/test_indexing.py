"""Search index rows extracted from the SearchParameter definitions (R4 search.html)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.fhir.dates import MAX, MIN
from patientkontrakt.fhir.definitions import load_definitions
from patientkontrakt.fhir.indexing import (
    _EXTRACTORS,
    COLUMN_PARAMS,
    MAX_INDEX_LENGTH,
    Indexer,
    ParsedReference,
    normalize_string,
    parse_reference,
    reference_elements,
)
from patientkontrakt.fhir.service import RESOURCE_TYPES

BASE = "http://testserver/fhir"
DATA = Path(__file__).resolve().parents[1] / "data"
DEFS = load_definitions(PROJECT_ROOT / "fhir_profiles")
INDEXER = Indexer(DEFS, RESOURCE_TYPES)
END_OF_DAY = (23, 59, 59, 999999)


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((DATA / f"{name}.json").read_bytes())
    return data


def rows(resource: dict[str, Any], table: str, param: str) -> list[dict[str, Any]]:
    found = dict(INDEXER.extract(resource, BASE).tables())[table]
    return [{k: v for k, v in r.items() if k != "param"} for r in found if r["param"] == param]


def extract(table: str, value: Any, type_: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _EXTRACTORS[table](value, type_, BASE)
    return found


def test_the_extractors_cover_the_parameter_types_of_the_design() -> None:
    assert set(_EXTRACTORS) == {"token", "string", "date", "reference", "uri"}


# -- token -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_", "expected"),
    [
        ({"coding": [{"system": "http://loinc.org", "code": "1"}, {"code": "2"}, {"system": "s"}], "text": "t"},
         "CodeableConcept", [("http://loinc.org", "1"), (None, "2")]),
        ({"text": "bara text"}, "CodeableConcept", []),
        ({"system": "urn:x", "code": "c", "display": "d"}, "Coding", [("urn:x", "c")]),
        ({"system": "urn:oid:1.2.752.29.4.19", "value": "SE2321000016-1001"}, "Identifier",
         [("urn:oid:1.2.752.29.4.19", "SE2321000016-1001")]),
        ({"system": "urn:x"}, "Identifier", []),
        ({"system": "phone", "value": "+46701234567", "use": "mobile"}, "ContactPoint", [("phone", "+46701234567")]),
        (True, "boolean", [(None, "true")]),
        (False, "boolean", [(None, "false")]),
        ("active", "code", [(None, "active")]),
        ("a1b2", "id", [(None, "a1b2")]),
        ("plain", "string", [(None, "plain")]),
        ({"code": 5}, "Coding", []),
        (5, "code", []),
    ],
)
def test_token_rows(value: Any, type_: str, expected: list[tuple[str | None, str]]) -> None:
    assert [(r["system"], r["code"]) for r in extract("token", value, type_)] == expected


def test_token_rows_from_a_resource() -> None:
    patient = example("patient-tolvan")
    assert rows(patient, "token", "identifier") == [
        {"system": "http://electronichealth.se/identifier/personnummer", "code": "191212121212"},
        {"system": "urn:oid:1.2.752.129.2.1.3.3", "code": "SE-REG-0042"},
    ]
    assert rows(patient, "token", "gender") == [{"system": None, "code": "male"}]
    assert rows(patient, "token", "active") == [{"system": None, "code": "true"}]
    assert rows(patient, "token", "_tag") == [
        {"system": "https://patientkontrakt.se/fhir/CodeSystem/tag", "code": "demo"},
        {"system": "http://terminology.hl7.org/CodeSystem/common-tags", "code": "actionable"},
    ]
    assert rows(patient, "token", "_security") == [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"},
    ]
    assert rows(example("practitionerrole-inactive"), "token", "active") == [{"system": None, "code": "false"}]
    assert rows(example("careteam-other"), "token", "_tag")[-1] == {"system": None, "code": "utan-system"}


def test_codeable_concepts_index_every_coding() -> None:
    assert rows(example("careplan-agreement"), "token", "category") == [
        {"system": "http://snomed.info/sct", "code": "734163000"},
        {"system": "https://patientkontrakt.se/fhir/CodeSystem/category", "code": "patientkontrakt"},
        {"system": "http://loinc.org", "code": "18776-5"},
    ]
    assert rows(example("organization-vc-norr"), "token", "type") == [
        {"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"},
        {"system": "urn:oid:1.2.752.129.2.2.1.2", "code": "vardenhet"},
    ]


def test_id_and_last_updated_are_columns_not_index_rows() -> None:
    assert COLUMN_PARAMS == {"_id", "_lastUpdated"}
    extracted = INDEXER.extract(example("patient-tolvan"), BASE)
    assert not {r["param"] for _, table in extracted.tables() for r in table} & COLUMN_PARAMS


def test_duplicate_values_of_one_parameter_make_one_row() -> None:
    patient = example("patient-tolvan")
    patient["identifier"].append(dict(patient["identifier"][0]))
    assert len(rows(patient, "token", "identifier")) == 2


def test_long_values_are_cut() -> None:
    long = "x" * (MAX_INDEX_LENGTH + 100)
    [row] = extract("token", {"system": "urn:x", "value": long}, "Identifier")
    assert row["code"] == long[:MAX_INDEX_LENGTH]
    [row] = extract("string", long, "string")
    assert row["value"] == row["exact"] == long[:MAX_INDEX_LENGTH]


# -- string ----------------------------------------------------------------------------------


def test_human_name_rows_cover_every_part() -> None:
    name = {"use": "official", "text": "Dr. Nina Ström", "family": "Ström", "given": ["Nina", "Elisabet"],
            "prefix": ["Dr."], "suffix": ["d.ä."], "period": {"start": "2000"}}
    assert [(r["value"], r["exact"]) for r in extract("string", name, "HumanName")] == [
        ("strom", "Ström"),
        ("nina", "Nina"),
        ("elisabet", "Elisabet"),
        ("dr.", "Dr."),
        ("d.a.", "d.ä."),
        ("dr. nina strom", "Dr. Nina Ström"),
    ]


def test_address_rows_cover_every_part() -> None:
    address = example("patient-tolvan")["address"][0]
    assert [r["exact"] for r in extract("string", address, "Address")] == [
        "Storgatan 1", "lgh 1102", "Göteborg", "Västra Götaland", "411 01", "SE",
    ]


def test_string_rows_from_a_resource() -> None:
    patient = example("patient-deceased")
    assert [r["exact"] for r in rows(patient, "string", "family")] == ["Ström-Öberg"]
    assert [r["value"] for r in rows(patient, "string", "given")] == ["ninni", "nina", "elisabet"]
    organization = example("organization-region")
    # name | alias: the alias equal to the name is one row.
    assert [r["exact"] for r in rows(organization, "string", "name")] == ["Region Norrbotten", "RNB"]


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("Tolvansson", "tolvansson"),
        ("TOLVANSSON", "tolvansson"),
        ("Åsa Öberg-Ärlig", "asa oberg-arlig"),
        ("åäö ÅÄÖ", "aao aao"),
        ("Émile Zoë Noël", "emile zoe noel"),
        ("Ångström", "angstrom"),
        ("Straße", "strasse"),
        ("FInn", "finn"),
        ("  Tolvan \t Åke\n ", "tolvan ake"),
        ("Åke", "ake"),
        ("A\u030ake", "ake"),  # the same name written with a combining ring
        ("", ""),
    ],
)
def test_normalize_string_ignores_case_and_accents(text: str, normal: str) -> None:
    assert normalize_string(text) == normal


@given(st.text(max_size=600))
def test_normalize_string_is_idempotent_and_bounded(text: str) -> None:
    normal = normalize_string(text)
    assert normalize_string(normal) == normal
    assert len(normal) <= MAX_INDEX_LENGTH
    assert normal == normal.strip()


# -- date ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_", "expected"),
    [
        ("2024", "date", [(datetime(2024, 1, 1), datetime(2024, 12, 31, *END_OF_DAY))]),
        ("2024-03-05T10:00:00+01:00", "dateTime", [(datetime(2024, 3, 5, 9), datetime(2024, 3, 5, 9, 0, 0, 999999))]),
        ("2024-03-05T10:00:00.123Z", "instant",
         [(datetime(2024, 3, 5, 10, 0, 0, 123000), datetime(2024, 3, 5, 10, 0, 0, 123999))]),
        ("not a date", "date", []),
        (20240305, "date", []),
        ({"start": "2024-03-01", "end": "2024-03-31"}, "Period",
         [(datetime(2024, 3, 1), datetime(2024, 3, 31, *END_OF_DAY))]),
        ({"start": "2024-03-01"}, "Period", [(datetime(2024, 3, 1), MAX)]),
        ({"end": "2024-03"}, "Period", [(MIN, datetime(2024, 3, 31, *END_OF_DAY))]),
        ({"start": "garbage", "end": "2024"}, "Period", [(MIN, datetime(2024, 12, 31, *END_OF_DAY))]),
        ({}, "Period", []),
        ({"event": ["2024-04-01", "2024-05-01T09:00:00Z"]}, "Timing",
         [(datetime(2024, 4, 1), datetime(2024, 4, 1, *END_OF_DAY)),
          (datetime(2024, 5, 1, 9), datetime(2024, 5, 1, 9, 0, 0, 999999))]),
        ({"repeat": {"boundsPeriod": {"start": "2024-04-01"}}}, "Timing", [(datetime(2024, 4, 1), MAX)]),
        ({"repeat": {"boundsDuration": {"value": 6, "unit": "wk"}}}, "Timing", []),
        ("När patienten känner sig redo", "string", []),
    ],
)
def test_date_rows(value: Any, type_: str, expected: list[tuple[datetime, datetime]]) -> None:
    assert [(r["low"], r["high"]) for r in extract("date", value, type_)] == expected


def test_date_rows_from_resources() -> None:
    assert rows(example("patient-deceased"), "date", "birthdate") == [
        {"low": datetime(1950, 1, 1), "high": datetime(1950, 12, 31, *END_OF_DAY)},
    ]
    plan = example("careplan-agreement")
    assert rows(plan, "date", "date") == [
        {"low": datetime(2024, 3, 1), "high": datetime(2025, 2, 28, 22, 59, 59, 999999)},
    ]
    assert rows(plan, "date", "activity-date") == [
        {"low": datetime(2024, 4, 1, 7), "high": datetime(2024, 4, 1, 7, 0, 0, 999999)},
        {"low": datetime(2024, 5, 1, 7), "high": datetime(2024, 5, 1, 7, 0, 0, 999999)},
        {"low": datetime(2024, 4, 1), "high": datetime(2024, 12, 31, *END_OF_DAY)},
        {"low": datetime(2024, 3, 15, 7), "high": MAX},
    ]
    assert rows(example("goal-walk"), "date", "target-date") == [
        {"low": datetime(2024, 9, 1), "high": datetime(2024, 9, 1, *END_OF_DAY)},
        {"low": datetime(2025, 6, 1), "high": datetime(2025, 6, 1, *END_OF_DAY)},
    ]
    assert rows(example("goal-group"), "date", "target-date") == []
    assert rows(example("appointment-besok"), "date", "date") == [
        {"low": datetime(2024, 4, 1, 7), "high": datetime(2024, 4, 1, 7, 0, 0, 999999)},
    ]
    assert rows(example("provenance-minimal"), "date", "recorded") == [
        {"low": datetime(2024, 1, 10, 12), "high": datetime(2024, 1, 10, 12, 0, 0, 999999)},
    ]


# -- reference -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_", "expected"),
    [
        ({"reference": "Patient/tolvan"}, "Reference", [("Patient", "tolvan", None)]),
        ({"reference": "Patient/tolvan/_history/3"}, "Reference", [("Patient", "tolvan", None)]),
        ({"reference": f"{BASE}/Patient/tolvan"}, "Reference", [("Patient", "tolvan", None)]),
        ({"reference": "https://fhir.example.org/r4/Practitioner/ext-7"}, "Reference",
         [("Practitioner", None, "https://fhir.example.org/r4/Practitioner/ext-7")]),
        ({"reference": "#hemtjanst"}, "Reference", []),
        ({"identifier": {"system": "urn:x", "value": "1"}}, "Reference", []),
        ({"display": "Okänd"}, "Reference", []),
        ("https://patientkontrakt.se/fhir/PlanDefinition/pk|1.0", "canonical",
         [(None, None, "https://patientkontrakt.se/fhir/PlanDefinition/pk")]),
        ("http://example.org/x", "uri", [(None, None, "http://example.org/x")]),
        ("http://example.org/x", "url", [(None, None, "http://example.org/x")]),
        ("Patient/1", "string", []),
    ],
)
def test_reference_rows(value: Any, type_: str, expected: list[tuple[str | None, str | None, str | None]]) -> None:
    assert [(r["target_type"], r["target_id"], r["url"]) for r in extract("reference", value, type_)] == expected


def test_reference_rows_from_resources() -> None:
    plan = example("careplan-agreement")
    assert rows(plan, "reference", "care-team") == [
        {"target_type": "CareTeam", "target_id": "team-tolvan", "url": None},
        {"target_type": "CareTeam", "target_id": "team-hemsjukvard", "url": None},
    ]
    assert rows(plan, "reference", "goal") == [{"target_type": "Goal", "target_id": "g-walk", "url": None}]
    assert rows(plan, "reference", "patient") == [{"target_type": "Patient", "target_id": "tolvan", "url": None}]
    group_plan = example("careplan-group")
    assert rows(group_plan, "reference", "patient") == []
    assert rows(group_plan, "reference", "subject") == [
        {"target_type": "Group", "target_id": "hjartsviktsskola", "url": None},
    ]
    assert rows(group_plan, "reference", "author") == [
        {"target_type": "Organization", "target_id": None, "url": "https://fhir.example.org/r4/Organization/extern"},
    ]
    appointment = example("appointment-besok")
    assert [(r["target_type"], r["target_id"]) for r in rows(appointment, "reference", "patient")] == [
        ("Patient", "tolvan"), ("Patient", "anhorig"),
    ]
    assert [(r["target_type"], r["target_id"]) for r in rows(appointment, "reference", "actor")] == [
        ("Patient", "tolvan"), ("PractitionerRole", "lisa-vc-norr"), ("Patient", "anhorig"),
        ("Location", "mottagning-1"),
    ]
    # Four targets, one of them versioned: the CarePlan appears without its version.
    assert [(r["target_type"], r["target_id"]) for r in rows(example("provenance-signed"), "reference", "target")] == [
        ("CarePlan", "pk-tolvan"), ("Patient", "tolvan"), ("Patient", "ninni"), ("Goal", "g-walk"),
    ]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/123", ParsedReference("Patient", "123", None)),
        ("Patient/123/_history/2", ParsedReference("Patient", "123", None)),
        (f"{BASE}/Patient/123", ParsedReference("Patient", "123", None)),
        (f"{BASE}/Patient/123/_history/2", ParsedReference("Patient", "123", None)),
        ("http://other.example/fhir/Patient/123", ParsedReference("Patient", None, "http://other.example/fhir/Patient/123")),
        (f"{BASE}x/Patient/123", ParsedReference("Patient", None, f"{BASE}x/Patient/123")),
        ("urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7", ParsedReference(None, None,
                                                                         "urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7")),
        ("urn:oid:1.2.752.29.4.19", ParsedReference(None, None, "urn:oid:1.2.752.29.4.19")),
        ("#contained", ParsedReference(None, None, "#contained")),
        ("Patient", ParsedReference(None, None, "Patient")),
        ("patient/123", ParsedReference(None, None, "patient/123")),
        ("Patient/", ParsedReference("Patient", None, "Patient/")),
        ("Patient/a b", ParsedReference("Patient", None, "Patient/a b")),
        ("Patient/" + "a" * 65, ParsedReference("Patient", None, "Patient/" + "a" * 65)),
        ("http://other.example/" + "A" * 70 + "/1",
         ParsedReference(None, None, "http://other.example/" + "A" * 70 + "/1")),
    ],
)
def test_parse_reference_forms(reference: str, expected: ParsedReference) -> None:
    assert parse_reference(reference, BASE) == expected


def test_parse_reference_accepts_a_base_with_a_trailing_slash() -> None:
    assert parse_reference(f"{BASE}/Goal/g-1", BASE + "/") == ParsedReference("Goal", "g-1", None)


@given(st.from_regex(r"[A-Z][A-Za-z]{0,20}", fullmatch=True), st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True),
       st.sampled_from(["", f"{BASE}/"]), st.sampled_from(["", "/_history/1", "/_history/22"]))
def test_local_references_always_parse_to_type_and_id(type_: str, id_: str, prefix: str, version: str) -> None:
    assert parse_reference(f"{prefix}{type_}/{id_}{version}", BASE) == ParsedReference(type_, id_, None)


def test_reference_elements_finds_every_literal_reference_including_contained() -> None:
    patient = example("patient-deceased")
    patient["contained"][0]["partOf"] = {"reference": "Organization/vc-norr"}
    assert [(where, ref["reference"]) for where, ref in reference_elements(patient)] == [
        ("Patient.contained[0].partOf", "Organization/vc-norr"),
        ("Patient.generalPractitioner[0]", "#hemtjanst"),
        ("Patient.generalPractitioner[1]", "https://fhir.example.org/r4/Practitioner/ext-7"),
    ]


# -- uri -------------------------------------------------------------------------------------


def test_uri_rows() -> None:
    assert extract("uri", "https://patientkontrakt.se/fhir/StructureDefinition/pk-patient", "canonical") == [
        {"uri": "https://patientkontrakt.se/fhir/StructureDefinition/pk-patient"},
    ]
    assert extract("uri", {"not": "a uri"}, "uri") == []
    assert rows(example("patient-tolvan"), "uri", "_profile") == [
        {"uri": "https://patientkontrakt.se/fhir/StructureDefinition/pk-patient"},
        {"uri": "http://hl7.se/fhir/ig/base/StructureDefinition/SEBasePatient"},
    ]


# -- the whole extraction --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA.glob("*.json")))
def test_every_row_names_a_registered_parameter_of_its_table_type(name: str) -> None:
    resource = example(name)
    params = DEFS.params_for(resource["resourceType"])
    extracted = INDEXER.extract(resource, BASE)
    total = 0
    for table, table_rows in extracted.tables():
        for row in table_rows:
            assert params[row["param"]].type == table
            total += 1
    assert total > 0


def test_a_type_the_indexer_does_not_know_has_no_rows() -> None:
    extracted = INDEXER.extract({"resourceType": "Observation", "status": "final"}, BASE)
    assert all(not table_rows for _, table_rows in extracted.tables())
