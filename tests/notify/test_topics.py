"""The topics are discoverable as the Backport IG says for R4: named in the CapabilityStatement
on Subscription (``capabilitystatement-subscriptiontopic-canonical``), each readable and
searchable by its canonical URL as a ``Basic`` (public, like the other definitions), and the
served file is what ``topics.topic_definition`` says."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from patientkontrakt.notify.topics import PATIENTKONTRAKT, TOPIC_CANONICAL, TOPICS, topic_definition

CORE = Path(__file__).resolve().parents[2] / "fhir_profiles" / "core"
NO_TOKEN = {"authorization": ""}


def test_the_served_topic_is_the_code_s() -> None:
    for topic in TOPICS.values():
        served = json.loads((CORE / f"Basic-{topic.id}.json").read_text(encoding="utf-8"))
        assert served == topic_definition(topic)


def test_the_topics_are_named_in_the_capability_statement_and_readable(client: TestClient) -> None:
    statement = client.get("/fhir/metadata", headers=NO_TOKEN).json()
    [subscription] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    assert {"url": TOPIC_CANONICAL, "valueCanonical": PATIENTKONTRAKT.url} in subscription["extension"]
    assert any(o["name"] == "status" for o in subscription["operation"])
    found = client.get("/fhir/Basic", params={"url": PATIENTKONTRAKT.url}, headers=NO_TOKEN).json()
    assert found["total"] == 1
    read = client.get(f"/fhir/Basic/{PATIENTKONTRAKT.id}", headers=NO_TOKEN)
    assert read.status_code == 200 and read.json() == topic_definition(PATIENTKONTRAKT)
    assert client.post("/fhir/Basic", json={"resourceType": "Basic", "code": {"text": "x"}}).status_code == 405
