"""A unit's staff keep their own unit's contact details (phone, telephone hours, address, opening
hours: ``Organization.telecom`` and ``.address``) and nothing else of the directory; patients see
the change in ``$patientkontrakt``. Over the FHIR API with real tokens, as deployed."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from patientkontrakt.domain.contact_paths import DAYS, Hours, Phone, PostalAddress, unit_contact, with_contact_details
from tests.security.conftest import World

AUTHOR = "demo-org-vc-bjorkbacken"
OTHER_UNIT = "demo-org-vc-strandvagen"
TARGET = 2  # an agreement of Björkbacken
NEW_HOURS = (Hours(DAYS[:5], "07:30", "09:15"),)


def _org(app: TestClient, world: World, org: str = AUTHOR) -> dict[str, Any]:
    response = app.get(f"/fhir/Organization/{org}", headers=world.system(AUTHOR))
    assert response.status_code == 200, response.text
    return dict(response.json())


def _new_hours(org: dict[str, Any]) -> dict[str, Any]:
    unit = unit_contact(org)
    assert unit.phone is not None
    return {**with_contact_details(org, Phone(unit.phone.number, NEW_HOURS), unit.address, unit.opening),
            "id": org["id"]}


def _put(app: TestClient, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return app.put(f"/fhir/Organization/{body['id']}", json=body, headers=headers)


def test_staff_change_their_own_units_telephone_hours_and_the_patient_sees_them(world: World,
                                                                                 app: TestClient) -> None:
    org = _org(app, world)
    response = _put(app, _new_hours(org), world.staff(world.role_at(AUTHOR, "nurse")))
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["versionId"] == str(int(org["meta"]["versionId"]) + 1)

    patient = world.agreements[TARGET].patient
    bundle = app.get(f"/fhir/Patient/{patient}/$patientkontrakt", headers=world.patient(patient)).json()
    (seen,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Organization"
               and e["resource"]["id"] == AUTHOR]
    phone = unit_contact(seen).phone
    assert phone is not None and phone.hours == NEW_HOURS
    assert unit_contact(seen).address == unit_contact(org).address
    assert seen["meta"]["tag"] == org["meta"]["tag"]  # the test-data tag stays


def test_staff_change_address_and_opening_hours(world: World, app: TestClient) -> None:
    org = _org(app, world)
    unit = unit_contact(org)
    body = {**with_contact_details(org, unit.phone, PostalAddress("Nya vägen 1", "123 99", "Exempelstad"),
                                   (Hours(("sat",), all_day=True),)), "id": AUTHOR}
    response = _put(app, body, world.staff(world.role_at(AUTHOR, "doctor")))
    assert response.status_code == 200, response.text
    stored = unit_contact(_org(app, world))
    assert stored.address.text == "Nya vägen 1, 123 99 Exempelstad"
    assert stored.opening == (Hours(("sat",), all_day=True),)


def test_staff_may_not_change_anything_else_of_their_unit(world: World, app: TestClient) -> None:
    org = _org(app, world)
    renamed = {**_new_hours(org), "name": "Vårdcentralen Omdöpt"}
    response = _put(app, renamed, world.staff(world.role_at(AUTHOR, "nurse")))
    assert response.status_code == 403, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Organization.name"]
    assert "kontaktuppgifter" in issue["details"]["text"]
    for key, value in (("identifier", [{"system": "urn:oid:1.2.752.29.4.19", "value": "SE2321990000-X1"}]),
                       ("partOf", {"reference": f"Organization/{OTHER_UNIT}"}), ("active", False),
                       ("text", {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Stängt</div>'}),
                       ("meta", {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                               "code": "NOPATIENT"}]})):
        changed = {**_new_hours(org), key: value}
        assert _put(app, changed, world.staff(world.role_at(AUTHOR, "nurse"))).status_code == 403, key
    assert _org(app, world)["meta"]["versionId"] == org["meta"]["versionId"]  # nothing stored


def test_tags_the_update_leaves_out_are_kept(world: World, app: TestClient) -> None:
    org = _org(app, world)
    body = {k: v for k, v in _new_hours(org).items() if k != "meta"}
    response = _put(app, body, world.staff(world.role_at(AUTHOR, "nurse")))
    assert response.status_code == 200, response.text
    assert _org(app, world)["meta"]["tag"] == org["meta"]["tag"]


def test_staff_of_another_unit_may_not_change_it(world: World, app: TestClient) -> None:
    org = _org(app, world)
    response = _put(app, _new_hours(org), world.staff(world.role_at(OTHER_UNIT, "nurse")))
    assert response.status_code == 403, response.text
    assert _org(app, world)["meta"]["versionId"] == org["meta"]["versionId"]


def test_systems_patients_creates_and_deletes_get_no_exception(world: World, app: TestClient) -> None:
    org = _org(app, world)
    nurse = world.staff(world.role_at(AUTHOR, "nurse"))
    patient = world.agreements[TARGET].patient
    assert _put(app, _new_hours(org), world.system(AUTHOR)).status_code == 403
    assert _put(app, _new_hours(org), world.patient(patient)).status_code == 403
    assert app.delete(f"/fhir/Organization/{AUTHOR}", headers=nurse).status_code == 403
    new = {**{k: v for k, v in _new_hours(org).items() if k != "id"},
           "identifier": [{"system": "urn:oid:1.2.752.29.4.19", "value": "SE2321990000-NY1"}]}
    assert app.post("/fhir/Organization", json=new, headers=nurse).status_code == 403
    assert _org(app, world)["meta"]["versionId"] == org["meta"]["versionId"]


def test_the_exception_holds_inside_a_transaction(world: World, app: TestClient) -> None:
    org = _org(app, world)
    nurse = world.staff(world.role_at(AUTHOR, "nurse"))

    def bundle(resource: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": resource, "request": {"method": "PUT", "url": f"Organization/{resource['id']}"}}]}

    other = _org(app, world, OTHER_UNIT)
    assert app.post("/fhir", json=bundle(_new_hours(other)), headers=nurse).status_code == 403
    assert app.post("/fhir", json=bundle(_new_hours(org)), headers=nurse).status_code == 200
