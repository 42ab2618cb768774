"""Who may see and change a Subscription, with the service's real rules (care units, patients,
the directory client) and real tokens: only the care unit that created it (its endpoint and
headers are the unit's), through every door — read, vread, search, history, update, delete,
batch entries, ``$status``; a client subscribes only to types its scopes let it read; a
patient's token may not use Subscriptions at all."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.notify.test_subscription_resource import ENDPOINT, backport, r4
from tests.security.conftest import AUTHOR, OTHER_UNIT, TARGET, World


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e.get("resource", {}).get("id") or e.get("fullUrl", "") for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") != "outcome"]


def test_a_subscription_is_its_care_units_alone(app: TestClient, world: World) -> None:
    owner = world.system(AUTHOR)
    colleague = world.staff(world.role_at(AUTHOR))
    other = world.system(OTHER_UNIT)
    created = app.post("/fhir/Subscription", json=r4(), headers=owner)
    assert created.status_code == 201, created.text
    sub = created.json()
    id_ = sub["id"]
    unknown = "no-such-subscription"

    # the owner unit (its system, and its staff) sees it
    for headers in (owner, colleague):
        assert app.get(f"/fhir/Subscription/{id_}", headers=headers).status_code == 200
        assert _ids(app.get("/fhir/Subscription", headers=headers).json()) == [id_]
    status = app.get(f"/fhir/Subscription/{id_}/$status", headers=owner)
    assert status.status_code == 200, status.text
    parameters = {p["name"]: p for p in status.json()["entry"][0]["resource"]["parameter"]}
    assert parameters["status"]["valueCode"] == "requested"
    assert parameters["type"]["valueCode"] == "query-status"
    assert parameters["subscription"]["valueReference"]["reference"].endswith(f"/Subscription/{id_}")
    assert "topic" not in parameters
    posted = app.post(f"/fhir/Subscription/{id_}/$status", headers=owner,
                      json={"resourceType": "Parameters"})
    assert posted.status_code == 200 and posted.json()["entry"][0]["resource"] == \
        status.json()["entry"][0]["resource"]

    # another unit: exactly as for an id nobody uses, through every door
    for path in ("Subscription/{}", "Subscription/{}/_history", "Subscription/{}/_history/1",
                 "Subscription/{}/$status"):
        hidden = app.get("/fhir/" + path.format(id_), headers=other)
        absent = app.get("/fhir/" + path.format(unknown), headers=other)
        assert hidden.status_code == absent.status_code == 404, (path, hidden.text)
    assert app.post(f"/fhir/Subscription/{id_}/$status", headers=other, json={"resourceType": "Parameters"}
                    ).status_code == 404
    for search in ("/fhir/Subscription", f"/fhir/Subscription?_id={id_}", f"/fhir/Subscription?url={ENDPOINT}",
                   "/fhir/Subscription/_history", "/fhir/_history"):
        entries = app.get(search, headers=other).json().get("entry", [])
        assert id_ not in str(entries) and ENDPOINT not in str(entries), search
    assert app.post("/fhir/Subscription/_search", data={"_id": id_}, headers={
        **other, "content-type": "application/x-www-form-urlencoded"}).json().get("total") == 0
    changed = {**sub, "channel": {**sub["channel"], "endpoint": "https://attacker.example.net/hook"}}
    assert app.put(f"/fhir/Subscription/{id_}", json=changed, headers=other).status_code == 404
    assert app.delete(f"/fhir/Subscription/{id_}", headers=other).status_code == 404
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Subscription/{id_}"}},
        {"request": {"method": "GET", "url": f"Subscription?_id={id_}"}},
        {"resource": changed, "request": {"method": "PUT", "url": f"Subscription/{id_}"}},
        {"request": {"method": "DELETE", "url": f"Subscription/{id_}"}}]}
    answers = app.post("/fhir", json=batch, headers=other).json()["entry"]
    assert [a["response"]["status"][:3] for a in answers] == ["404", "200", "404", "404"]
    assert answers[1]["resource"].get("total") == 0 and "entry" not in answers[1]["resource"]
    assert ENDPOINT not in str(answers)

    # nothing of it changed, and the owner may still change and delete it
    kept = app.get(f"/fhir/Subscription/{id_}", headers=owner).json()
    assert kept["meta"]["versionId"] == "1" and kept["channel"]["endpoint"] == ENDPOINT
    assert app.put(f"/fhir/Subscription/{id_}", json={**kept, "status": "off"}, headers=owner).status_code == 200
    assert app.delete(f"/fhir/Subscription/{id_}", headers=owner).status_code == 204
    assert app.get(f"/fhir/Subscription/{id_}/$status", headers=owner).status_code == 404


def test_one_subscribes_only_to_what_one_may_read(app: TestClient, world: World) -> None:
    target = world.agreements[TARGET]
    patient = world.patient(target.patient)
    refused = app.post("/fhir/Subscription", json=r4(), headers=patient)
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    assert app.get("/fhir/Subscription", headers=patient).status_code == 403
    assert app.post("/fhir/Subscription", json=r4(), headers=world.directory()).status_code == 403
    narrow = world.system(AUTHOR, "system/Subscription.cruds system/CarePlan.rs")
    assert app.post("/fhir/Subscription", json=r4("CarePlan?status=active"), headers=narrow).status_code == 201
    for resource in (r4("Goal?patient=Patient/x"), backport([f"CarePlan?patient=Patient/{target.patient}"])):
        response = app.post("/fhir/Subscription", json=resource, headers=narrow)
        assert response.status_code == 403, response.text
        assert response.json()["issue"][0]["code"] == "forbidden"
    no_subscriptions = world.system(AUTHOR, "system/CarePlan.rs")
    assert app.post("/fhir/Subscription", json=r4(), headers=no_subscriptions).status_code == 403
    full = world.system(AUTHOR)
    topic = app.post("/fhir/Subscription", json=backport([f"CarePlan?patient=Patient/{target.patient}"]),
                     headers=full)
    assert topic.status_code == 201, topic.text
    status = app.get(f"/fhir/Subscription/{topic.json()['id']}/$status", headers=full).json()
    parameters = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert parameters["topic"]["valueCanonical"] == "https://patientkontrakt.se/fhir/SubscriptionTopic/patientkontrakt"
    assert parameters["events-since-subscription-start"]["valueString"] == "0"
