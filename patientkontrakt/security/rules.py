"""The access rules of the service (design §5), in one place. Deny by default.

Four kinds of caller, each an ``Access`` (``patientkontrakt.fhir.access``) built from a
verified token:

* ``ScopedAccess``: the SMART scopes alone (v2 ``cruds`` or v1 ``read/write``, with ``?param=``
  narrowing). The base of the others, and the whole of the rules for the bare FHIR engine,
  which knows no care units.
* ``CareUnitAccess`` — staff (``user/`` scopes) and backend systems (``system/`` scopes) acting
  for a care unit. They see the agreements (CarePlans) their unit takes part in — as author,
  contributor, the CareTeam's managing organisation, or through a team member whose
  PractitionerRole is at the unit — and what those reach: the CareTeams, the goals and
  Appointments the agreements name (and those of the agreements' patients that no agreement
  names, such as the goals patients state themselves), the patients, the Provenance of the
  teams and agreements; plus patients the unit registered (``Patient.managingOrganization``).
  The directory (Organization, Practitioner, PractitionerRole) is not patient data: every
  care unit may read it; none may write it, with one exception: a unit's staff may change their
  own unit's contact details (``Organization.telecom`` and ``.address``: phone, telephone hours,
  address, opening hours) and nothing else of it. A new agreement gets the caller's unit as
  author, a new patient the unit as managing organisation, and whatever is written must stay
  within what the unit sees.

  Across care units and providers (Patientdatalagen 4 kap. 4 §, lag (2022:913) om sammanhållen
  vård- och omsorgsdokumentation): of the patient data a provider owns (``SHARED_RECORDS``, the
  owner recorded by storage when the resource is created), a unit sees another provider's part
  only with the patient's samtycke (or under emergency access, ETREAT) and never past a spärr,
  and another unit's of its own provider unless an inre spärr blocks it; it may change only its
  own provider's records, and records a samtycke or spärr only as its own provider may
  (``_admit_consent``). The conditions are ``AccessSql``'s; docs/security.md has the matrix.
* ``DirectoryAccess`` — the region's directory client, the only one that writes the directory.
* ``PatientAccess`` — the patient (``patient/`` scopes): their own compartment (their Patient
  record and the agreements, teams, goals, activities and Provenance about them) and the
  practitioners, roles and organisations those name. They may add and change only goals they
  state themselves (``Goal.expressedBy`` = them) for themselves, and only when they have an
  agreement.

What a caller may see is a SQL condition on the ``resource`` row (``Restriction``), so searches
filter before paging and a read of something outside answers 404, like something absent. The
conditions are built in storage (``storage/access_sql.py``); this module decides which applies.
"""

from __future__ import annotations

from typing import Any

import orjson

from patientkontrakt.domain import sharing
from patientkontrakt.fhir.access import PERMISSIONS, Principal, bound
from patientkontrakt.fhir.errors import Forbidden, Issue, NotFound
from patientkontrakt.fhir.search.params import SearchParser
from patientkontrakt.security.scopes import ResourceScope, Scopes
from patientkontrakt.storage.access_sql import (
    EMERGENCY,
    ORG,
    PATIENT,
    PROVIDER,
    AccessSql,
    Restriction,
    both,
    nothing,
)
from patientkontrakt.storage.repository import StoredResource, Unit
from patientkontrakt.storage.search_sql import QueryBuilder

DIRECTORY = frozenset({"Organization", "Practitioner", "PractitionerRole"})
PATIENT_DATA = frozenset({"Patient", "CarePlan", "CareTeam", "Goal", "Appointment", "Provenance", "Consent"})
# Patient data a care provider owns, shown across providers only as Patientdatalagen allows
# (``AccessSql.care_unit``); the Patient resource is who the patient is, not a provider's record.
SHARED_RECORDS = PATIENT_DATA - {"Patient"}
# What a care unit keeps for itself, not patient data: its Subscriptions (endpoints, headers) and
# Groups (its lists of patients, for Group-level $export). Only the unit that created one sees it.
UNIT_OWN = frozenset({"Subscription", "Group"})
_CONTEXTS = {"staff": frozenset({"user"}), "system": frozenset({"system"}), "patient": frozenset({"patient"})}
_SQL = AccessSql(directory=DIRECTORY, patient_data=PATIENT_DATA, shared=SHARED_RECORDS, unit_own=UNIT_OWN)


class ScopedAccess:
    """What the token's SMART scopes allow; no rule beyond them."""

    logged = True

    def __init__(self, principal: Principal, scopes: Scopes, parser: SearchParser, builder: QueryBuilder) -> None:
        self.principal = principal
        self.scopes = scopes
        self.contexts = _CONTEXTS.get(principal.kind, frozenset())
        self._parser = parser
        self._builder = builder
        self._narrowing: dict[str, Restriction | None] = {}
        self.parameters: dict[str, Any] = {}

    # -- scopes ----------------------------------------------------------------------------

    def _granting(self, type_: str, permission: str) -> list[ResourceScope]:
        return self.scopes.granting(self.contexts, type_, permission)

    def require(self, type_: str, interaction: str) -> None:
        permission = PERMISSIONS[interaction]
        if not self._granting(type_, permission):
            contexts = "/".join(sorted(self.contexts)) or "(none)"
            raise Forbidden(
                f"The access token does not grant {interaction} on {type_}: it needs a scope such as "
                f"{next(iter(sorted(self.contexts)), 'user')}/{type_}.{permission} (the token's contexts: {contexts})",
                details_sv="Du har inte behörighet till detta.",
            )

    def _scope_restriction(self, type_: str) -> Restriction | None:
        """``?param=`` narrowing of the read scopes: the resources matching any of the granted
        scopes' queries (a scope without a query grants them all)."""
        if type_ in self._narrowing:
            return self._narrowing[type_]
        scopes = self._granting(type_, "r") or self._granting(type_, "s")
        restriction: Restriction | None = None
        if scopes and all(s.query for s in scopes):
            condition = self._builder.narrowing(self._parser.parse(type_, list(s.query), strict=True) for s in scopes)
            key = "scope:" + type_ + ":" + "|".join(sorted("&".join(f"{k}={v}" for k, v in s.query) for s in scopes))
            restriction = Restriction(key, condition, {})
        self._narrowing[type_] = restriction
        return restriction

    # -- Access ----------------------------------------------------------------------------

    def restriction(self, type_: str) -> Restriction | None:
        return both(self._rule(type_), self._scope_restriction(type_))

    def _rule(self, type_: str) -> Restriction | None:
        return None

    def past_versions(self, type_: str) -> bool:
        """A scope narrowed by a query (``CarePlan.rs?status=active``) admits a resource by its
        current content; an older version (a draft, say) is not shown."""
        return self._scope_restriction(type_) is None

    def reach(self, type_: str) -> Restriction | None:
        return None

    async def reach_size(self, unit: Unit, type_: str, limit: int) -> int | None:
        return None

    async def admit(self, unit: Unit, resource: dict[str, Any], existing: StoredResource | None) -> dict[str, Any]:
        return resource

    async def admit_delete(self, unit: Unit, existing: StoredResource) -> None:
        return None

    def owner(self, type_: str) -> tuple[str, str] | None:
        return None

    async def blocked(self, unit: Unit, patient_id: str) -> frozenset[str]:
        return frozenset()

    async def notices(self, unit: Unit, patient_id: str) -> list[Issue]:
        kinds = await self.blocked(unit, patient_id)
        return [Issue(code="suppressed", severity="warning", diagnostics=sharing.BLOCKED_NOTICES[kind][0],
                      details_sv=sharing.BLOCKED_NOTICES[kind][1]) for kind in ("sparr", "samtycke") if kind in kinds]

    async def confirm(self, unit: Unit, written: list[StoredResource]) -> None:
        """Whatever was written must be visible to its writer (scope narrowing, care unit, own
        compartment); otherwise the whole unit of work is refused and rolled back."""
        by_type: dict[str, list[StoredResource]] = {}
        for stored in written:
            by_type.setdefault(stored.type, []).append(stored)
        for type_, group in by_type.items():  # one query per type, not per resource
            restriction = self.restriction(type_)
            if restriction is None:
                continue
            seen = await unit.visible_pks([stored.pk for stored in group], bound(restriction))
            outside = next((stored for stored in group if stored.pk not in seen), None)
            if outside is not None:
                raise Forbidden(
                    f"{outside.type}/{outside.id} would be outside what you may see; the write is refused",
                    details_sv="Ändringen skulle hamna utanför det du har behörighet till och avvisades.",
                )


# -- care units ------------------------------------------------------------------------------


class CareUnitAccess(ScopedAccess):
    """Staff and systems acting for a care unit (``care_unit_org``: the unit's Organization id)."""

    def __init__(self, principal: Principal, scopes: Scopes, parser: SearchParser, builder: QueryBuilder,
                 care_unit_org: str, emergency_patient: str | None = None) -> None:
        super().__init__(principal, scopes, parser, builder)
        self.care_unit_org = care_unit_org
        self.emergency_patient = emergency_patient
        self.parameters = {ORG: care_unit_org, PROVIDER: principal.care_provider, EMERGENCY: emergency_patient}
        self._reach_sizes: dict[str, int] = {}

    def _rule(self, type_: str) -> Restriction | None:
        condition = _SQL.care_unit(type_)
        if condition is None:
            return None
        return Restriction(f"care-unit:{type_}", condition, self.parameters)

    async def blocked(self, unit: Unit, patient_id: str) -> frozenset[str]:
        found = set()
        for kind in ("sparr", "samtycke"):
            if await unit.any_row(_SQL.blocked(kind), {**self.parameters, PATIENT: patient_id}):
                found.add(kind)
        return frozenset(found)

    def owner(self, type_: str) -> tuple[str, str] | None:
        """What the unit creates is the unit's, and its provider's, record; a Subscription or a
        Group is the unit's whatever its provider (only its owner unit sees it)."""
        provider = self.principal.care_provider
        if type_ in UNIT_OWN:
            return self.care_unit_org, provider or ""
        return (self.care_unit_org, provider) if provider and type_ not in DIRECTORY else None

    def reach(self, type_: str) -> Restriction | None:
        """The unit's agreements found from the unit (``AccessSql.care_unit_reach``), so that a
        search of them need not test every agreement of the region; other types: None."""
        if type_ != "CarePlan":
            return None
        return Restriction(f"care-unit-reach:{type_}", _SQL.care_unit_reach(), {ORG: self.care_unit_org})

    async def reach_size(self, unit: Unit, type_: str, limit: int) -> int | None:
        """How many resources ``reach(type_)`` finds, counted up to ``limit``: once per token
        (an ``Access`` lives as long as its token), since it only guides where searches start."""
        if type_ != "CarePlan":
            return None
        if type_ not in self._reach_sizes:
            self._reach_sizes[type_] = await unit.count_reached(limit)
        return self._reach_sizes[type_]

    def _directory_guard(self, type_: str) -> None:
        """The directory decides who acts for which unit (a PractitionerRole's organization makes
        its holder staff of that unit), so no unit's staff or systems may change it."""
        if type_ in DIRECTORY:
            raise Forbidden(f"{type_} resources are the directory (HSA), kept by the region's directory "
                            "client; a care unit's staff and systems may read them but not change them",
                            details_sv="Katalogen (HSA) kan inte ändras härifrån.")

    def _responsible(self, existing: StoredResource, what: str, what_sv: str) -> None:
        """Only the agreement's author, the unit responsible for it, may do ``what`` to it."""
        author = _reference(orjson.loads(existing.body).get("author"))
        if author != f"Organization/{self.care_unit_org}":
            raise Forbidden(f"Only the unit responsible for the agreement ({author}) may {what}",
                            details_sv=f"Bara den enhet som ansvarar för patientkontraktet kan {what_sv}.")

    def _own_contact_details(self, resource: dict[str, Any],
                             existing: StoredResource | None) -> dict[str, Any] | None:
        """``resource`` if it is a staff member changing only their own unit's contact details
        (``CONTACT_ELEMENTS``), else None: the unit keeps what patients need to reach it, while
        its identity (HSA-id, name, type, place in the region, tags, security labels) stays the
        directory's. Tags and security labels the update leaves out are kept, not dropped.
        Systems acting for the unit get no such exception."""
        if existing is None or existing.type != "Organization" or existing.id != self.care_unit_org \
                or self.principal.kind != "staff":
            return None
        stored = orjson.loads(existing.body)
        meta = dict(resource["meta"]) if isinstance(resource.get("meta"), dict) else {}
        for key in ("tag", "security"):
            if key not in meta and (stored.get("meta") or {}).get(key):
                meta[key] = stored["meta"][key]
        if meta:
            resource = {**resource, "meta": meta}
        before, after = _without_contact_details(stored), _without_contact_details(resource)
        if before != after:
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            raise Forbidden(f"Of your own unit's Organization you may change only {', '.join(CONTACT_ELEMENTS)} "
                            f"(contact details); this update also changes {', '.join(changed)}, which the "
                            "directory (HSA) keeps",
                            expression=tuple(f"Organization.{k}" for k in changed),
                            details_sv="Du kan bara ändra enhetens kontaktuppgifter (telefon, telefontider, "
                                       "adress, öppettider); resten av enhetens uppgifter kommer från katalogen (HSA).")
        return resource

    def _own_record(self, existing: StoredResource, what: str, what_sv: str) -> None:
        """A record belongs to the care provider that created it (Patientdatalagen: each
        provider keeps its own records): another provider's unit may read it, when the rules
        allow, but not change it."""
        if existing.owner_provider is not None and existing.owner_unit != self.care_unit_org \
                and existing.owner_provider != self.principal.care_provider:
            raise Forbidden(f"{existing.type}/{existing.id} is another care provider's record; you may not {what}",
                            details_sv=f"Uppgiften tillhör en annan vårdgivare; du kan inte {what_sv}.")

    async def admit_delete(self, unit: Unit, existing: StoredResource) -> None:
        self._directory_guard(existing.type)
        self._own_record(existing, "delete it", "ta bort den")
        if existing.type == "Consent":
            raise Forbidden("A samtycke or spärr is not deleted: revoke it (status inactive), so its history stays",
                            details_sv="Ett samtycke eller en spärr tas inte bort: återkalla det i stället.")
        if existing.type == "CarePlan":
            self._responsible(existing, "delete it", "ta bort det")

    async def admit(self, unit: Unit, resource: dict[str, Any], existing: StoredResource | None) -> dict[str, Any]:
        type_ = resource["resourceType"]
        if existing is not None:
            self._own_record(existing, "change it", "ändra den")
        if type_ == "Consent":
            return await self._admit_consent(unit, resource)
        contact_details = self._own_contact_details(resource, existing)
        if contact_details is None:
            self._directory_guard(type_)
        else:
            resource = contact_details
        if existing is not None and type_ == "CarePlan" \
                and _reference(resource.get("author")) != _reference(orjson.loads(existing.body).get("author")):
            self._responsible(existing, "hand it over", "lämna över det")
        unit_ref = {"reference": f"Organization/{self.care_unit_org}"}
        if self.principal.care_unit_name:
            unit_ref["display"] = self.principal.care_unit_name
        if existing is None and type_ == "CarePlan":
            # "Creating an agreement makes the caller's care unit its author."
            resource = {**resource, "author": unit_ref}
        if existing is None and type_ == "Patient" and "managingOrganization" not in resource:
            resource = {**resource, "managingOrganization": unit_ref}
        return resource

    async def _admit_consent(self, unit: Unit, consent: dict[str, Any]) -> dict[str, Any]:
        """A samtycke or spärr the patient asked this unit to record (``domain/sharing.py``):
        the unit's own provider records it (``Consent.organization`` is set to the unit); a
        samtycke lets the unit or its own provider read (its IRCP actors); a spärr blocks data
        of the unit's own provider (its CST actors), the only data a provider can block."""
        kind = sharing.consent_kind(consent)
        if kind is None:
            raise Forbidden("A Consent recorded here is a samtycke or a spärr: category "
                            f"{sharing.CONSENT_CATEGORY}#samtycke, #inre-sparr or #yttre-sparr",
                            expression=("Consent.category",),
                            details_sv="Ange om det är ett samtycke eller en spärr.")
        provider = self.principal.care_provider
        role = sharing.RECIPIENT if kind == sharing.SAMTYCKE else sharing.CUSTODIAN
        for org in sharing.actors(consent, role):
            place = await sharing.place_of(unit, org)
            if place is None or place[1] != provider or (role == sharing.RECIPIENT and not place[0]
                                                         and org != self.care_unit_org):
                what = "your own unit or care provider" if role == sharing.RECIPIENT else \
                    "units of your own care provider (or the provider itself)"
                raise Forbidden(f"Organization/{org} cannot be a {role} actor of a {kind} recorded here: "
                                f"only {what}", expression=("Consent.provision.actor",),
                                details_sv="Ett samtycke gäller den egna enheten eller vårdgivaren; en spärr "
                                           "gäller den egna vårdgivarens enheter.")
        unit_ref = {"reference": f"Organization/{self.care_unit_org}"}
        if self.principal.care_unit_name:
            unit_ref["display"] = self.principal.care_unit_name
        return {**consent, "organization": [unit_ref]}


CONTACT_ELEMENTS = ("telecom", "address")
_NOT_COMPARED = frozenset({"meta", *CONTACT_ELEMENTS})


def _without_contact_details(resource: dict[str, Any]) -> dict[str, Any]:
    """What must not change: everything but the contact details and the server's version
    metadata (the narrative is the directory's too; tags and security labels must stay)."""
    meta: dict[str, Any] = resource["meta"] if isinstance(resource.get("meta"), dict) else {}
    kept = {k: v for k, v in resource.items() if k not in _NOT_COMPARED}
    return {**kept, "meta.tag": meta.get("tag") or [], "meta.security": meta.get("security") or []}


# -- the directory ---------------------------------------------------------------------------


class DirectoryAccess(ScopedAccess):
    """The region's directory client (an HSA synchronisation, registered as kind ``directory``):
    it keeps Organization, Practitioner and PractitionerRole, acts for no care unit and sees no
    patient data."""

    def require(self, type_: str, interaction: str) -> None:
        if type_ not in DIRECTORY:
            raise Forbidden(f"A directory client reads and writes only the directory (Organization, Practitioner, "
                            f"PractitionerRole), not {type_}", details_sv="Du har inte behörighet till detta.")
        super().require(type_, interaction)

    def _rule(self, type_: str) -> Restriction | None:
        return None if type_ in DIRECTORY else nothing("directory:none")


# -- the patient -----------------------------------------------------------------------------


class PatientAccess(ScopedAccess):
    """The patient ``patient_id`` (a FHIR Patient id), signed in to the e-service or a SMART app."""

    def __init__(self, principal: Principal, scopes: Scopes, parser: SearchParser, builder: QueryBuilder,
                 patient_id: str) -> None:
        super().__init__(principal, scopes, parser, builder)
        self.patient_id = patient_id
        self.parameters = {PATIENT: patient_id}

    def require(self, type_: str, interaction: str) -> None:
        if type_ == "Subscription":
            raise Forbidden("Subscriptions are for the systems of care units, not for patients' tokens",
                            details_sv="Som patient kan du inte prenumerera på ändringar här.")
        if type_ == "Group":
            raise Forbidden("Groups are care units' lists of patients, not for patients' tokens",
                            details_sv="Som patient har du inte behörighet till detta.")
        if PERMISSIONS[interaction] in "cud" and type_ != "Goal" or interaction == "delete":
            raise Forbidden(f"A patient may not {interaction} {type_} resources; only add and change "
                            "their own goals", details_sv="Som patient kan du bara lägga till och ändra dina egna mål.")
        super().require(type_, interaction)

    def _rule(self, type_: str) -> Restriction | None:
        return Restriction(f"patient:{type_}", _SQL.patient(type_), {PATIENT: self.patient_id})

    async def admit(self, unit: Unit, resource: dict[str, Any], existing: StoredResource | None) -> dict[str, Any]:
        me = f"Patient/{self.patient_id}"
        if resource["resourceType"] == "Provenance" and existing is None:
            return self._own_goal_provenance(unit, resource, me)
        if resource["resourceType"] != "Goal":
            raise Forbidden("A patient may only write their own goals",
                            details_sv="Som patient kan du bara lägga till och ändra dina egna mål.")
        if _reference(resource.get("subject")) != me or _reference(resource.get("expressedBy")) != me:
            raise Forbidden(f"A goal you write must be about you and stated by you: subject and expressedBy {me}",
                            details_sv="Ett mål du skriver ska gälla dig och vara uttryckt av dig.")
        if existing is not None and _reference(orjson.loads(existing.body).get("expressedBy")) != me:
            raise Forbidden("Only goals you stated yourself can be changed by you",
                            details_sv="Du kan bara ändra mål som du själv har skrivit.")
        if not await unit.has_care_plan(self.patient_id):
            raise NotFound("You have no Patientkontrakt to add goals to",
                           details_sv="Du har inget patientkontrakt att lägga till mål i.")
        return resource

    @staticmethod
    def _own_goal_provenance(unit: Unit, resource: dict[str, Any], me: str) -> dict[str, Any]:
        """The ``X-Provenance`` of a goal the patient has just written in this unit of work
        (R4 http.html#provenance): it names that version of the goal as its only target and
        the patient as its only agent, acting for no one else. A Provenance cannot reach here
        any other way: ``require`` refuses a patient's create of one, alone or in a Bundle."""
        last = unit.written[-1] if unit.written else None
        targets = [_reference_text(t) for t in resource.get("target") or []]
        if last is None or last.type != "Goal" or targets != [f"Goal/{last.id}/_history/{last.version_id}"]:
            raise Forbidden("A patient may only record the provenance of a change to their own goal",
                            details_sv="Som patient kan du bara ange varför du ändrade ditt eget mål.")
        agents = resource.get("agent") or []
        if not agents or any(not isinstance(a, dict) or _reference(a.get("who")) != me or "onBehalfOf" in a
                             for a in agents):
            raise Forbidden(f"The agent of your change must be you ({me}), acting for yourself",
                            details_sv="Den som gjorde ändringen ska vara du själv.")
        unexpected = set(resource) - _PATIENT_PROVENANCE_ELEMENTS
        if unexpected:
            raise Forbidden(f"A patient's provenance may not contain {', '.join(sorted(unexpected))}",
                            details_sv="Uppgifterna om din ändring innehåller sådant du inte kan ange.")
        return resource


# What a patient's own Provenance may say: who, when, what in words and why.
_PATIENT_PROVENANCE_ELEMENTS = frozenset({"resourceType", "id", "target", "recorded", "occurredDateTime",
                                          "occurredPeriod", "activity", "reason", "agent"})


def _reference_text(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return str(value["reference"])
    return None


def _reference(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        ref: str = value["reference"]
        return ref.split("/_history", 1)[0]
    return None
