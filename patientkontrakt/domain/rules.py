"""The Patientkontrakt rules, plugged into the write pipeline as ``WriteHooks``.

* Swedish identifiers are normalised (personnummer/samordningsnummer to 12 digits under the HL7
  Sweden systems, OID forms mapped) and invalid ones refused, naming the field.
* Every write of a type we profile is validated against our profile and stamped with it; where a
  type has several (CarePlan, Consent), its category chooses (``ProfileValidator.select``).
* A Patientkontrakt (CarePlan) that is active or on hold has a CareTeam for the same patient with
  exactly one fast vårdkontakt whose period is current; when the responsible unit (``author``)
  is a vårdcentral, also a current fast läkarkontakt who is a physician (PractitionerRole coded
  ``doctor``).
* At most one active Patientkontrakt per patient per responsible care unit.
* A change of fast vårdkontakt closes the previous contact's period instead of dropping it, and
  is recorded in a Provenance (who, when, why), so the patient's history of contacts stays.
* Patient-stated goals (``Goal.expressedBy`` = the patient) belong to the goal's own patient
  and stay patient-stated; professionals' goals stay professional.
* The agreement's lifecycle (``patientkontrakt.domain.lifecycle``): the status changes a
  Patientkontrakt may make (reopening and correction only with a reason in a Provenance; 409
  otherwise), periods that do not end before they start and goal dates not before the goal's
  start (422), activities never removed (422), and warnings for new activities or goal dates
  already past.
* A Group is a list of patients (``patientkontrakt.domain.groups``).
"""

from __future__ import annotations

import datetime
from typing import Any

import orjson

from patientkontrakt.domain import codes, lifecycle, sharing
from patientkontrakt.domain.groups import group_issues
from patientkontrakt.domain.identifiers import (
    HSA_ID,
    PERSONNUMMER,
    SAMORDNINGSNUMMER,
    SYSTEM_ALIASES,
    IdentifierError,
    parse_person_number,
    validate_hsa_id,
)
from patientkontrakt.domain.lifecycle import ref_key
from patientkontrakt.domain.profiles import ProfileValidator
from patientkontrakt.fhir.dates import DateFormatError, format_instant, now_utc, parse_range
from patientkontrakt.fhir.definitions import Definitions
from patientkontrakt.fhir.errors import Conflict, Issue, Unprocessable
from patientkontrakt.fhir.hooks import NO_CONTEXT, WriteContext
from patientkontrakt.fhir.writes import Writer
from patientkontrakt.storage.repository import StoredResource, Unit

_PERSON_SYSTEMS = {PERSONNUMMER, SAMORDNINGSNUMMER, *SYSTEM_ALIASES}
_OPEN_STATES = ("active", "on-hold")
_MAX_PLANS_PER_PATIENT = 10_000  # CarePlans of one patient read by the one-active rule


def _has_code(concepts: Any, system: str, code: str) -> bool:
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        if isinstance(concept, dict):
            for coding in concept.get("coding", []) or []:
                if isinstance(coding, dict) and coding.get("system") == system and coding.get("code") == code:
                    return True
    return False


def _is_agreement(plan: dict[str, Any] | None) -> bool:
    return plan is not None and _has_code(plan.get("category"), codes.CAREPLAN_CATEGORY, codes.PATIENTKONTRAKT)


def is_current(period: Any, now: datetime.datetime) -> bool:
    """A role's period is current when it has started (today or earlier) and has not ended. A date-only
    ``end`` is the last day the role is held; an ``end`` with a time is the instant the role passed to
    someone else (what ``_keep_closed_contacts`` writes), so the successor alone is current from then."""
    if not isinstance(period, dict):
        return False
    try:
        if "start" in period and parse_range(period["start"])[0].date() > now.date():
            return False
        if "end" not in period:
            return True
        low, high = parse_range(period["end"])
        return low > now if "T" in period["end"] else high.date() >= now.date()
    except DateFormatError:
        return False


def current_members(team: dict[str, Any], role: str, now: datetime.datetime) -> list[dict[str, Any]]:
    return [
        p for p in team.get("participant", [])
        if _has_code(p.get("role"), codes.CARETEAM_ROLE, role) and is_current(p.get("period"), now)
    ]


def _issue(code: str, expression: str, english: str, swedish: str) -> Issue:
    return Issue(code=code, diagnostics=f"{expression}: {english}", expression=(expression,), details_sv=swedish)


class PatientkontraktRules:
    """``WriteHooks`` for the Patientkontrakt service."""

    def __init__(self, defs: Definitions) -> None:
        self.profiles = ProfileValidator(defs)

    # -- prepare: normalise and validate against the profile -------------------------------

    def prepare(self, resource: dict[str, Any]) -> dict[str, Any]:
        issues: list[Issue] = []
        self._normalise_identifiers(resource, resource.get("resourceType", ""), issues)
        if issues:
            raise Unprocessable(issues[0].diagnostics, issues=issues)
        profiles, issues = self.profiles.select(resource)
        if issues:
            raise Unprocessable(issues[0].diagnostics, issues=issues)
        if profiles:
            meta = dict(resource.get("meta") or {})
            claimed = [url for url in [p.url for p in profiles] if url not in meta.get("profile", [])]
            if claimed:
                meta["profile"] = [*meta.get("profile", []), *claimed]
                resource = {**resource, "meta": meta}
            issues = [i for p in profiles for i in self.profiles.validate(resource, p) if i.severity == "error"]
            if issues:
                raise Unprocessable(issues[0].diagnostics, issues=issues)
        issues = lifecycle.date_issues(resource)
        if resource.get("resourceType") == "Group":
            issues += group_issues(resource)
        if issues:
            raise Unprocessable(issues[0].diagnostics, issues=issues)
        return resource

    def profile_issues(self, resource: dict[str, Any], profile_url: str) -> list[Issue] | None:
        profile = self.profiles.profiles.get(profile_url.split("|", 1)[0])
        if profile is None:
            return None
        if profile.type != resource.get("resourceType"):
            return [_issue("invalid", str(resource.get("resourceType")),
                           f"the profile {profile_url} is for {profile.type}",
                           f"Profilen gäller {profile.type}.")]
        return self.profiles.validate(resource, profile)

    def _normalise_identifiers(self, node: Any, where: str, issues: list[Issue]) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                self._normalise_identifiers(item, f"{where}[{i}]", issues)
            return
        if not isinstance(node, dict):
            return
        system, value = node.get("system"), node.get("value")
        if isinstance(system, str) and isinstance(value, str):
            if system in _PERSON_SYSTEMS:
                try:
                    identity = parse_person_number(value)
                except IdentifierError as exc:
                    issues.append(_issue("value", f"{where}.value", exc.english, exc.swedish))
                else:
                    node["system"], node["value"] = identity.system, identity.value
            elif system == HSA_ID:
                try:
                    validate_hsa_id(value)
                except IdentifierError as exc:
                    issues.append(_issue("value", f"{where}.value", exc.english, exc.swedish))
        for key, child in node.items():
            if isinstance(child, dict | list):
                self._normalise_identifiers(child, f"{where}.{key}", issues)

    # -- before_store: the lifecycle, and the history of fast vårdkontakt -------------------

    async def before_store(self, unit: Unit, resource: dict[str, Any], existing: StoredResource | None,
                           context: WriteContext) -> dict[str, Any]:
        # A deleted resource keeps its last content: written anew, it continues from there.
        previous = orjson.loads(existing.body) if existing is not None else None
        if resource["resourceType"] == "CarePlan" and (_is_agreement(resource) or _is_agreement(previous)):
            lifecycle.check_transition(previous.get("status") if previous else None, str(resource.get("status")),
                                       resource["id"], context)
            if previous is not None and existing is not None and not existing.deleted:
                lifecycle.check_activities_kept(previous, resource)
                lifecycle.check_closed_unchanged(previous, resource)
        if existing is None or existing.deleted or previous is None:
            return resource
        if resource["resourceType"] == "CareTeam":
            return self._keep_closed_contacts(previous, resource)
        if resource["resourceType"] == "Goal":
            self._goal_kind_unchanged(previous, resource)
        return resource

    def _keep_closed_contacts(self, previous: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
        now = now_utc()
        kept = {(ref_key(p.get("member")), p.get("period", {}).get("start"))
                for p in resource.get("participant", [])}
        closing = []
        for participant in current_members(previous, codes.FAST_VARDKONTAKT, now):
            key = (ref_key(participant.get("member")), participant.get("period", {}).get("start"))
            if key not in kept:
                closed = dict(participant)
                closed["period"] = {**participant.get("period", {}), "end": format_instant(now)}
                closing.append(closed)
        if not closing:
            return resource
        return {**resource, "participant": [*resource.get("participant", []), *closing]}

    def _goal_kind_unchanged(self, previous: dict[str, Any], resource: dict[str, Any]) -> None:
        def kind(goal: dict[str, Any]) -> str | None:
            key = ref_key(goal.get("expressedBy"))
            return None if key is None else ("patient" if key[0] == "Patient" else "professional")

        before, after = kind(previous), kind(resource)
        if before is not None and after != before:
            raise Unprocessable(
                "Goal.expressedBy: a patient-stated goal cannot become a professional goal or the other way round",
                expression=("Goal.expressedBy",),
                details_sv="Ett mål som patienten har satt kan inte bli vårdens mål, eller tvärtom. "
                           "Skapa ett nytt mål.",
            )

    # -- verify: rules across resources ----------------------------------------------------

    async def verify(self, unit: Unit, resource: dict[str, Any], writer: Writer) -> None:
        kind = resource["resourceType"]
        if kind == "CarePlan":
            await self._verify_plan(unit, resource, writer)
        elif kind == "CareTeam":
            await self._verify_team(unit, resource, writer)
        elif kind == "Goal":
            self._verify_goal(resource)

    async def _verify_plan(self, unit: Unit, plan: dict[str, Any], writer: Writer,
                           team: dict[str, Any] | None = None) -> None:
        """The agreement's rules; ``team`` is given when the write is the CareTeam's, and the issues
        then point at the CareTeam's elements."""
        if not _has_code(plan.get("category"), codes.CAREPLAN_CATEGORY, codes.PATIENTKONTRAKT):
            return
        team_write = team is not None
        where = "CareTeam.participant" if team_write else "CarePlan.careTeam[0]"
        subject = ref_key(plan.get("subject"))
        team_key = ref_key((plan.get("careTeam") or [None])[0])
        if team is None and team_key is not None:
            found = await unit.get_many([team_key])
            team = orjson.loads(found[0].body) if found else None
        if team is not None and ref_key(team.get("subject")) != subject:
            raise Unprocessable(
                f"CareTeam.subject: the CareTeam is for another patient than CarePlan/{plan.get('id')}'s subject"
                if team_write else "CarePlan.careTeam: the CareTeam is for another patient than the CarePlan's subject",
                expression=("CareTeam.subject" if team_write else "CarePlan.careTeam[0]",),
                details_sv="Vårdteamet gäller en annan patient än patientkontraktet.",
            )
        if plan.get("status") not in _OPEN_STATES:
            return
        contacts = current_members(team or {}, codes.FAST_VARDKONTAKT, now_utc())
        if len(contacts) != 1:
            raise Unprocessable(
                f"An active Patientkontrakt needs exactly one current fast vårdkontakt in its CareTeam; "
                f"found {len(contacts)}",
                expression=(where,),
                details_sv="Ett gällande patientkontrakt ska ha precis en fast vårdkontakt med giltig period.",
            )
        await self._require_physician_at_vardcentral(unit, plan, team or {}, where)
        if plan.get("status") == "active" and subject is not None:
            await self._one_active_per_unit(unit, plan)

    async def _require_physician_at_vardcentral(self, unit: Unit, plan: dict[str, Any], team: dict[str, Any],
                                                where: str) -> None:
        """An agreement whose author is a vårdcentral needs a current fast läkarkontakt who is a
        physician. The author and the team's läkarkontakter are read together (one statement)."""
        author = ref_key(plan.get("author"))
        if author is None or author[0] != "Organization":
            return
        doctors = current_members(team, codes.FAST_LAKARKONTAKT, now_utc())
        keys = [k for k in (ref_key(p.get("member")) for p in doctors) if k and k[0] == "PractitionerRole"]
        found = {(r.type, r.id): orjson.loads(r.body) for r in await unit.get_many([author, *keys])}
        if not _has_code((found.get(author) or {}).get("type"), codes.CARE_UNIT_TYPE, "vardcentral"):
            return
        roles = [found[k] for k in keys if k in found]
        if not any(_has_code(r.get("code"), codes.PRACTITIONER_ROLE, "doctor") and r.get("practitioner")
                   for r in roles):
            raise Unprocessable(
                "In primary care the CareTeam needs a current fast läkarkontakt who is a physician "
                "(a PractitionerRole coded doctor with a Practitioner)",
                expression=(where,),
                details_sv="På vårdcentralen ska vårdteamet ha en fast läkarkontakt som är läkare.",
            )

    async def _one_active_per_unit(self, unit: Unit, plan: dict[str, Any]) -> None:
        """The patient's other CarePlans, found through the subject (a few per patient), are read
        and checked here. A search on subject, author, status and category together was planned
        generically (the values unknown) and ran from the category, that is from every
        agreement of the region: a second per CarePlan write at 10,000 agreements."""
        subject, author = plan["subject"]["reference"], (plan.get("author") or {}).get("reference", "")
        await unit.lock_key(f"patientkontrakt:{subject}:{author}")
        patient, unit_key = ref_key(plan.get("subject")), ref_key(plan.get("author"))
        if patient is None or unit_key is None:
            return
        for other in await unit.referencing_rows("CarePlan", "subject", [patient], _MAX_PLANS_PER_PATIENT):
            if other.deleted or other.id == plan.get("id"):
                continue
            body = orjson.loads(other.body)
            if body.get("status") == "active" and ref_key(body.get("author")) == unit_key \
                    and _has_code(body.get("category"), codes.CAREPLAN_CATEGORY, codes.PATIENTKONTRAKT):
                raise Conflict(
                    f"{subject} already has an active Patientkontrakt with {author}: CarePlan/{other.id}",
                    expression=("CarePlan.status",),
                    details_sv="Patienten har redan ett gällande patientkontrakt med den här vårdenheten.",
                )

    async def _verify_team(self, unit: Unit, team: dict[str, Any], writer: Writer) -> None:
        if "id" not in team:
            return
        for stored in await unit.referencing_rows("CarePlan", "care-team", [("CareTeam", team["id"])], 50):
            if not stored.deleted:
                await self._verify_plan(unit, orjson.loads(stored.body), writer, team=team)

    def _verify_goal(self, goal: dict[str, Any]) -> None:
        expressed = ref_key(goal.get("expressedBy"))
        if expressed is not None and expressed[0] == "Patient" and expressed != ref_key(goal.get("subject")):
            raise Unprocessable(
                "Goal.expressedBy: a patient-stated goal must be stated by the goal's own patient",
                expression=("Goal.expressedBy",),
                details_sv="Ett eget mål kan bara sättas av patienten själv.",
            )

    # -- warnings -----------------------------------------------------------------------------

    def warnings(self, resource: dict[str, Any], existing: StoredResource | None) -> list[Issue]:
        previous = orjson.loads(existing.body) if existing is not None and not existing.deleted else None
        if resource["resourceType"] == "CarePlan":
            return lifecycle.plan_warnings(resource, previous, now_utc())
        if resource["resourceType"] == "Goal":
            return lifecycle.goal_warnings(resource, previous, now_utc())
        return []

    # -- after_store: owner and consent rules, then a change of fast vårdkontakt ------------

    async def reindexed(self, unit: Unit, stored: StoredResource) -> None:
        await self._sharing(unit, stored)

    @staticmethod
    async def _sharing(unit: Unit, stored: StoredResource) -> None:
        """What the access rules across providers need of a write: an owner for a resource that
        got none from its writer (the service's own writes, rows stored before owners were
        recorded), and what a Consent now says (``domain/sharing.py``)."""
        if stored.owner_provider is None and stored.type not in sharing.UNOWNED:
            owner = await sharing.derived_owner(unit, orjson.loads(stored.body))
            if owner is not None:
                await unit.set_owner(stored.pk, owner)
        if stored.type == "Consent":
            rules = await sharing.consent_rules(unit, orjson.loads(stored.body), stored.patient_id)
            await unit.replace_consent_rules(stored.pk, rules)

    async def after_store(self, unit: Unit, stored: StoredResource, existing: StoredResource | None,
                          context: WriteContext, writer: Writer) -> None:
        await self._sharing(unit, stored)
        if stored.type != "CareTeam" or existing is None or existing.deleted \
                or lifecycle.justification(context, "CareTeam", stored.id) is not None:
            return
        now = now_utc()
        before = {ref_key(p.get("member")) for p in current_members(orjson.loads(existing.body),
                                                                      codes.FAST_VARDKONTAKT, now)}
        team = orjson.loads(stored.body)
        after = {ref_key(p.get("member")) for p in current_members(team, codes.FAST_VARDKONTAKT, now)}
        if before == after:
            return
        agent = (team.get("managingOrganization") or [None])[0]
        provenance: dict[str, Any] = {
            "resourceType": "Provenance",
            "target": [{"reference": f"CareTeam/{stored.id}/_history/{stored.version_id}"}],
            "recorded": format_instant(now_utc()),
            "activity": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE",
            }]},
            "reason": [{"text": "Byte av fast vårdkontakt"}],
            "agent": [{"who": agent}] if agent else [{"who": {"display": "Patientkontrakt"}}],
        }
        await writer.create(unit, provenance, context=NO_CONTEXT)
