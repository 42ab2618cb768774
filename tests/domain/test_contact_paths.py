"""Contact paths read from and written to FHIR: hours as the pk-available-time extension and as
PractitionerRole.availableTime, a unit's phone and address, and what counts as a direct number."""

from __future__ import annotations

import copy
import json
from typing import Any

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.domain.contact_paths import (
    AVAILABLE_TIME,
    DAYS,
    Hours,
    Phone,
    PostalAddress,
    available_time,
    available_times,
    role_contact,
    unit_contact,
    with_contact_details,
)
from patientkontrakt.domain.demo import DemoGenerator

PROFILES = PROJECT_ROOT / "fhir_profiles" / "profiles"


def _example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PROFILES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def test_the_examples_read_as_contact_paths() -> None:
    org = _example("Organization-pk-example-org-vc-norr")
    unit = unit_contact(org)
    assert unit.name == "Vårdcentralen Norr"
    assert unit.phone == Phone("+46 10 123 45 00", (Hours(DAYS[:5], "08:00", "10:00"),))
    assert unit.address == PostalAddress("Norra vägen 12", "123 45", "Exempelstad")
    assert unit.opening == (Hours(DAYS[:5], "08:00", "17:00"),)
    anna = role_contact(_example("PractitionerRole-pk-example-role-anna-vc-norr"), org)
    assert anna.direct == Phone("+46 10 123 45 21", (Hours(DAYS[:4], "08:00", "09:00"),))
    assert anna.unit == unit
    assert role_contact(_example("PractitionerRole-pk-example-role-bengt-vc-norr"), org).direct is None


def test_a_role_repeating_the_units_number_has_no_direct_line() -> None:
    org = _example("Organization-pk-example-org-vc-norr")
    role = {"resourceType": "PractitionerRole", "telecom": [{"system": "phone", "value": "+4610 1234500"}]}
    assert role_contact(role, org).direct is None


def test_writing_and_reading_back_gives_the_same_hours() -> None:
    org = _example("Organization-pk-example-org-vc-norr")
    hours = (Hours(("mon", "wed", "fri"), "07:30", "09:00"), Hours(("sat", "sun"), all_day=True))
    written = with_contact_details(org, Phone("0123-45 67 89", hours), PostalAddress("Ny gatan 2", "111 22", "Stad"),
                                   hours[:1])
    unit = unit_contact(written)
    assert unit.phone == Phone("0123-45 67 89", hours)
    assert unit.address.text == "Ny gatan 2, 111 22 Stad"
    assert unit.opening == hours[:1]
    assert written["address"][0]["country"] == "SE"  # what the form does not show stays
    assert written["meta"] == {"profile": org["meta"]["profile"]}  # no versionId or lastUpdated
    parts = written["telecom"][0]["extension"][1]["extension"]
    assert [p["url"] for p in parts] == ["daysOfWeek", "daysOfWeek", "allDay"]
    assert available_times(available_time(hours)) == hours


def test_other_telecoms_and_extensions_are_kept_and_empty_details_removed() -> None:
    org = _example("Organization-pk-example-org-vc-norr")
    org["telecom"].insert(0, {"system": "email", "value": "vc-norr@example.invalid"})
    other = {"url": "http://example.invalid/other", "valueString": "kept"}
    org["telecom"][1]["extension"].append(other)
    written = with_contact_details(org, Phone("+46 10 123 45 00"), PostalAddress(), ())
    assert written["telecom"][0] == {"system": "email", "value": "vc-norr@example.invalid"}
    assert written["telecom"][1]["extension"] == [other]
    assert "address" not in written
    removed = with_contact_details(copy.deepcopy(written), None, PostalAddress(), ())
    assert removed["telecom"] == [{"system": "email", "value": "vc-norr@example.invalid"}]


def test_days_are_shown_as_runs() -> None:
    assert Hours(("mon", "tue", "wed", "fri", "sun")).ranges() == [("mon", "wed"), ("fri", "fri"), ("sun", "sun")]


def test_unknown_days_and_bad_times_are_ignored_when_reading() -> None:
    element = {"extension": [{"url": AVAILABLE_TIME, "extension": [
        {"url": "daysOfWeek", "valueCode": "someday"}, {"url": "availableStartTime", "valueTime": "8"}]}]}
    assert unit_contact({"telecom": [{"system": "phone", "value": "1", **element}]}).phone == Phone("1")


def test_every_demo_unit_has_phone_hours_address_and_opening_hours() -> None:
    region = DemoGenerator(seed=1).region
    units = [u.organization for kind in region.units.values() for u in kind]
    for org in units:
        unit = unit_contact(org)
        assert unit.phone and unit.phone.hours and unit.address and unit.opening, org["id"]
    by_id = {o["id"]: o for o in region.organizations}
    direct = [r for r in region.roles if role_contact(r, by_id[r["organization"]["reference"].split("/")[1]]).direct]
    assert direct and len(direct) < len([r for r in region.roles if r["code"][0]["coding"][0]["code"] == "nurse"])
    assert all(r["availableTime"] for r in direct)
