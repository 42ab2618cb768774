"""The subscription topics this server offers (Subscriptions R5 Backport IG 1.1, topic-based
subscriptions in R4).

A topic names a kind of change by a canonical URL; a backport Subscription gives that URL as its
``criteria`` and narrows it with filters (``backport-filter-criteria``). Here a topic is the
resource types it covers, each watched with a search query that the subscription's filters
complete: the same triggers (``subscription_trigger``) as an R4 ``criteria``, so matching and
delivery do not know which form a subscription has.

R4 has no SubscriptionTopic resource; as the IG says for R4, the topics are advertised in the
CapabilityStatement (extension ``capabilitystatement-subscriptiontopic-canonical`` on
``rest.resource`` Subscription), and each is readable as a ``Basic`` resource carrying the R5
SubscriptionTopic in cross-version extensions (``topic_definition``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
BACKPORT_PROFILE = f"{BACKPORT}/StructureDefinition/backport-subscription"
FILTER_CRITERIA = f"{BACKPORT}/StructureDefinition/backport-filter-criteria"
PAYLOAD_CONTENT = f"{BACKPORT}/StructureDefinition/backport-payload-content"
TOPIC_CANONICAL = f"{BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
# Channel extensions of the IG that this server accepts and does not act on (docs/api.md).
IGNORED_CHANNEL_EXTENSIONS = frozenset(f"{BACKPORT}/StructureDefinition/{name}" for name in (
    "backport-heartbeat-period", "backport-timeout", "backport-max-count"))
CONTENTS = ("empty", "id-only", "full-resource")
_R5 = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic"


@dataclass(frozen=True)
class Topic:
    """``resources``: each type the topic covers and the query every change of it must match
    (``''``: every change); ``filters``: the search parameters a subscription may filter by,
    which every one of ``resources`` has."""

    id: str
    url: str
    title: str
    description: str
    description_sv: str
    resources: tuple[tuple[str, str], ...]
    filters: tuple[str, ...]

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(type_ for type_, _ in self.resources)


PATIENTKONTRAKT = Topic(
    id="topic-patientkontrakt",
    url="https://patientkontrakt.se/fhir/SubscriptionTopic/patientkontrakt",
    title="A Patientkontrakt changed",
    description="A change (create, update, delete) of an agreement (CarePlan), its care team (CareTeam), "
                "its goals (Goal) or its activities (Appointment). Filter by patient "
                "(e.g. CarePlan?patient=Patient/123): the filter applies to every resource of the topic.",
    description_sv="Ett patientkontrakt har ändrats: överenskommelsen (CarePlan), teamet (CareTeam), målen (Goal) "
                   "eller aktiviteterna (Appointment).",
    resources=(("CarePlan", ""), ("CareTeam", ""), ("Goal", ""), ("Appointment", "")),
    filters=("patient",),
)

TOPICS: dict[str, Topic] = {PATIENTKONTRAKT.url: PATIENTKONTRAKT}


def topic_definition(topic: Topic) -> dict[str, Any]:
    """The topic as an R4 ``Basic`` resource with the R5 SubscriptionTopic's elements in
    cross-version extensions (FHIR R5 versions.html#extensions), as the IG suggests for R4."""
    def ext(name: str, **value: Any) -> dict[str, Any]:
        return {"url": f"{_R5}.{name}", **value}

    triggers = [{"url": f"{_R5}.resourceTrigger", "extension": [
        ext("resourceTrigger.description", valueMarkdown=f"A {type_} of an agreement is created, updated or deleted"),
        ext("resourceTrigger.resource", valueUri=f"http://hl7.org/fhir/StructureDefinition/{type_}"),
        *(ext("resourceTrigger.supportedInteraction", valueCode=code) for code in ("create", "update", "delete")),
    ]} for type_ in topic.types]
    filters = [{"url": f"{_R5}.canFilterBy", "extension": [
        ext("canFilterBy.description", valueMarkdown=f"The patient ({name}) of the changed resource"),
        ext("canFilterBy.resource", valueUri=f"http://hl7.org/fhir/StructureDefinition/{type_}"),
        ext("canFilterBy.filterParameter", valueString=name),
    ]} for name in topic.filters for type_ in topic.types]
    return {
        "resourceType": "Basic",
        "id": topic.id,
        "extension": [
            ext("url", valueUri=topic.url),
            ext("title", valueString=topic.title),
            ext("status", valueCode="active"),
            ext("description", valueMarkdown=topic.description),
            *triggers,
            *filters,
        ],
        "code": {"coding": [{"system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic"}]},
    }
