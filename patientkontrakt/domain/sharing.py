"""Sharing across care providers (Patientdatalagen 4 kap 4 §, 6 kap 2–4 §§): who owns a stored
resource, which provider an Organization belongs to, and what a Consent says.

* **Providers.** A care provider (*vårdgivare*) is an Organization without ``partOf``; a care
  unit points at its provider through the ``partOf`` chain. The provider's HSA-id is its HSA
  identifier (the same rule as the tokens' ``care_provider``: ``security/identity.py``).
* **Owners.** Storage records the care unit and provider that created a resource
  (``Access.owner``). What the service itself writes (the demo loader, imports) names no unit,
  so its owner is derived from the content here: the agreement's author, the team's managing
  organisation, the unit of the PractitionerRole that stated a goal, and so on.
* **Consents.** A Consent of profile pk-samtycke or pk-sparr becomes ``consent_rule`` rows
  (``tables.ConsentRule``) while it is active; the access rules (``storage/access_sql.py``)
  probe those rows, never the Consent's JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from patientkontrakt.domain.codes import CANONICAL
from patientkontrakt.domain.identifiers import HSA_ID
from patientkontrakt.fhir.dates import DateFormatError, parse_range
from patientkontrakt.storage.repository import Unit

CONSENT_CATEGORY = f"{CANONICAL}/CodeSystem/pk-consent-category"
SAMTYCKE, INRE_SPARR, YTTRE_SPARR = "samtycke", "inre-sparr", "yttre-sparr"
KINDS = (SAMTYCKE, INRE_SPARR, YTTRE_SPARR)
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RECIPIENT, CUSTODIAN = "IRCP", "CST"
_PARTOF_DEPTH = 8
# What no care provider owns: the directory (HSA) is the region's, not any provider's record.
UNOWNED = frozenset({"Organization", "Practitioner", "PractitionerRole"})

Owner = tuple[str, str]  # (care unit Organization id, provider HSA-id)

# What staff are told when their part in the patient's care reaches information they are not
# shown (``Access.blocked``): that it exists and how to proceed, never what it is or where
# (lag 2022:913 om sammanhållen vård- och omsorgsdokumentation 2 kap. 4-5 §§).
BLOCKED_NOTICES: dict[str, tuple[str, str]] = {
    "sparr": (
        "Some of the patient's information is not shown because the patient has blocked it (spärr). "
        "A spärr is lifted only at the patient's request, by the care unit that holds the information; "
        "not even emergency access passes it.",
        "Det finns uppgifter om patienten som inte visas eftersom patienten har spärrat dem. En spärr hävs "
        "bara på patientens begäran, av den vårdenhet som har uppgifterna. Inte heller nödåtkomst går förbi "
        "en spärr.",
    ),
    "samtycke": (
        "The patient has information at other care providers that is not shown: reading it needs the "
        "patient's consent (samtycke). Ask the patient and record the samtycke; if the patient cannot "
        "consent and the care cannot wait, use emergency access (nödåtkomst).",
        "Det finns uppgifter om patienten hos andra vårdgivare som inte visas. För att ta del av dem behövs "
        "patientens samtycke: fråga patienten och registrera samtycket. Om patienten inte kan samtycka och "
        "vården inte kan vänta kan du använda nödåtkomst.",
    ),
}


def ref_id(value: Any, type_: str) -> str | None:
    """The id of a literal reference ``type_/id`` (also ``…/_history/n``), else None."""
    if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
        return None
    parts = value["reference"].split("/")
    for i in range(len(parts) - 1):
        if parts[i] == type_ and parts[i + 1]:
            return str(parts[i + 1])
    return None


def _hsa(org: dict[str, Any]) -> str | None:
    for identifier in org.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == HSA_ID and identifier.get("value"):
            return str(identifier["value"])
    return None


async def _organization(unit: Unit, org_id: str | None) -> dict[str, Any] | None:
    if org_id is None:
        return None
    stored = await unit.get("Organization", org_id)
    return None if stored is None or stored.deleted else orjson.loads(stored.body)


async def place_of(unit: Unit, org_id: str | None) -> tuple[bool, str] | None:
    """(whether ``Organization/org_id`` is itself a care provider, its provider's HSA-id), or
    None when it is unknown or its provider has no HSA-id."""
    org = await _organization(unit, org_id)
    if org is None:
        return None
    top, is_provider = org, "partOf" not in org
    for _ in range(_PARTOF_DEPTH):
        parent = await _organization(unit, ref_id(top.get("partOf"), "Organization"))
        if parent is None:
            break
        top = parent
    provider = _hsa(top)
    return None if provider is None else (is_provider, provider)


async def owner_of_unit(unit: Unit, org_id: str | None) -> Owner | None:
    """The owner a resource written for the care unit ``Organization/org_id`` gets."""
    place = await place_of(unit, org_id)
    return None if place is None or org_id is None else (org_id, place[1])


async def derived_owner(unit: Unit, resource: dict[str, Any]) -> Owner | None:
    """Who owns ``resource`` by its content, for what the service itself writes (no caller
    unit to record); None for what belongs to no provider (a goal the patient stated)."""
    type_ = resource.get("resourceType")
    org: str | None = None
    if type_ == "CarePlan":
        org = ref_id(resource.get("author"), "Organization")
    elif type_ == "CareTeam":
        org = ref_id((resource.get("managingOrganization") or [None])[0], "Organization")
    elif type_ == "Consent":
        org = ref_id((resource.get("organization") or [None])[0], "Organization")
    elif type_ == "Patient":
        org = ref_id(resource.get("managingOrganization"), "Organization")
    elif type_ == "Goal":
        org = await _role_unit(unit, resource.get("expressedBy"))
    elif type_ == "Appointment":
        for participant in resource.get("participant") or []:
            actor = participant.get("actor") if isinstance(participant, dict) else None
            org = ref_id(actor, "Organization") or await _role_unit(unit, actor)
            if org:
                break
    elif type_ == "Provenance":
        for agent in resource.get("agent") or []:
            if isinstance(agent, dict):
                org = ref_id(agent.get("onBehalfOf"), "Organization") or ref_id(agent.get("who"), "Organization") \
                    or await _role_unit(unit, agent.get("who"))
                if org:
                    break
    return await owner_of_unit(unit, org)


async def _role_unit(unit: Unit, reference: Any) -> str | None:
    role_id = ref_id(reference, "PractitionerRole")
    if role_id is None:
        return None
    stored = await unit.get("PractitionerRole", role_id)
    if stored is None or stored.deleted:
        return None
    return ref_id(orjson.loads(stored.body).get("organization"), "Organization")


def consent_kind(consent: dict[str, Any]) -> str | None:
    """samtycke | inre-sparr | yttre-sparr, from ``Consent.category``; None for another Consent."""
    for concept in consent.get("category") or []:
        for coding in (concept.get("coding") or []) if isinstance(concept, dict) else []:
            if isinstance(coding, dict) and coding.get("system") == CONSENT_CATEGORY and coding.get("code") in KINDS:
                return str(coding["code"])
    return None


def actors(consent: dict[str, Any], role: str) -> list[str]:
    """The Organization ids of ``provision.actor`` with ``role`` (IRCP or CST)."""
    found: list[str] = []
    provision: dict[str, Any] = consent["provision"] if isinstance(consent.get("provision"), dict) else {}
    for actor in provision.get("actor") or []:
        if not isinstance(actor, dict):
            continue
        codes = [c.get("code") for c in (actor.get("role") or {}).get("coding") or [] if isinstance(c, dict)
                 and c.get("system") == PARTICIPATION]
        org = ref_id(actor.get("reference"), "Organization")
        if role in codes and org:
            found.append(org)
    return found


def _bound(period: Any, key: str) -> datetime | None:
    """The start of ``period.start``'s range, the end of ``period.end``'s (UTC); None if absent."""
    value = period.get(key) if isinstance(period, dict) else None
    if not isinstance(value, str):
        return None
    try:
        low, high = parse_range(value)
    except DateFormatError:
        return None
    return high if key == "end" else low


async def consent_rules(unit: Unit, consent: dict[str, Any], patient_id: str | None) -> list[dict[str, Any]]:
    """The ``consent_rule`` rows of a Consent: none unless it is an active samtycke or spärr of
    a known patient whose actors are known Organizations."""
    kind = consent_kind(consent)
    if kind is None or consent.get("status") != "active" or patient_id is None:
        return []
    provision: dict[str, Any] = consent["provision"] if isinstance(consent.get("provision"), dict) else {}
    starts, ends = _bound(provision.get("period"), "start"), _bound(provision.get("period"), "end")

    async def places(role: str) -> list[tuple[str | None, str | None]]:
        out: list[tuple[str | None, str | None]] = []
        for org in actors(consent, role):
            place = await place_of(unit, org)
            if place is not None:
                out.append((None, place[1]) if place[0] else (org, None))
        return out

    custodians = await places(CUSTODIAN)
    base = {"patient_id": patient_id, "kind": kind, "starts": starts, "ends": ends}
    if kind != SAMTYCKE:
        return [{**base, "recipient_unit": None, "recipient_provider": None,
                 "custodian_unit": u, "custodian_provider": p} for u, p in custodians]
    return [{**base, "recipient_unit": ru, "recipient_provider": rp, "custodian_unit": cu, "custodian_provider": cp}
            for ru, rp in await places(RECIPIENT) for cu, cp in (custodians or [(None, None)])]
