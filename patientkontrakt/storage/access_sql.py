"""The SQL of the access rules (``security/rules.py``): what a care unit or a patient may see,
as conditions on the ``resource`` row, and the look-ups the rules make.

The rules decide who is who and what each may do; the conditions they put in every statement
are built here, so that SQL is written only in storage. ``AccessSql`` builds each rule's
condition once per type, as a ``SharedCondition`` (``storage/conditions.py``) whose constants
are SQL literals (``_inline_constants``): the planner sees them in a generic plan too, and
SQLAlchemy does not walk the condition again for every statement it is in. The care unit's and
the patient's ids, the unit's care provider and the patient of an emergency access are the only
bind parameters (``ORG``, ``PATIENT``, ``PROVIDER``, ``EMERGENCY``): the executor passes them with
each statement (``Restriction.values``, ``Unit.parameters``).

Across units and providers (``_shared_condition``), a row is judged by its owner
(``resource.owner_unit``/``owner_provider``) and the patient's Consents in force, which are
probed in ``consent_rule`` (one index probe per rule kind, only for rows another unit owns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import util as sql_util
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.functions import FunctionElement

from patientkontrakt.storage.conditions import SharedCondition
from patientkontrakt.storage.tables import CONSENT_RULE, INDEX_TABLES, RESOURCE

R = RESOURCE.c
REF = INDEX_TABLES["reference"]
ORG = "acc_org"  # the care unit's Organization id
PROVIDER = "acc_provider"  # the care unit's care provider (HSA-id)
EMERGENCY = "acc_emergency"  # the patient of an emergency access (nödåtkomst), else NULL
PATIENT = "acc_patient"  # the patient's Patient id
# The care unit's Organization id is written into the SQL text (``literal_execute``), so that
# PostgreSQL plans each statement for the unit it is run for: one Organization can be named by
# most agreements of a region and another by a handful, and a plan made without knowing which
# (a generic plan) once scanned every reference to the unit on each read (docs/performance.md).
_ORG = sa.bindparam(ORG, type_=sa.String(), literal_execute=True)
_PATIENT = sa.bindparam(PATIENT, type_=sa.String())
_PROVIDER = sa.bindparam(PROVIDER, type_=sa.String())
_EMERGENCY = sa.bindparam(EMERGENCY, type_=sa.String())
_NAMED = (ORG, PATIENT, PROVIDER, EMERGENCY)
CR = CONSENT_RULE.c

Condition = sa.ColumnElement[bool]


@dataclass(frozen=True)
class Restriction:
    """An extra condition on ``resource`` rows: what the caller may see (access rules).

    ``condition`` is built over the ``resource`` table with named bind parameters whose values
    are in ``values``; ``key`` names its shape (e.g. ``"care-unit:CarePlan"``) so that a statement
    using it is compiled once per shape, not per request.
    """

    key: str
    condition: sa.ColumnElement[bool]
    values: dict[str, Any]


def both(first: Restriction | None, second: Restriction | None) -> Restriction | None:
    """What both restrictions admit (None: no restriction)."""
    if first is None or second is None:
        return first or second
    return Restriction(f"{first.key}+{second.key}", sa.and_(first.condition, second.condition),
                       {**first.values, **second.values})


def nothing(key: str) -> Restriction:
    """A restriction that admits no resource."""
    return Restriction(key, sa.false(), {})


class AccessSql:
    """The conditions of the rules, each built once per type and kept for the process.

    ``directory``: the types every care unit sees whole (no condition); ``patient_data``: the
    types a patient sees by their compartment (``resource.patient_id``); ``unit_own``: the types
    only the care unit that created a resource sees (``resource.owner_unit``).
    """

    def __init__(self, *, directory: frozenset[str], patient_data: frozenset[str],
                 shared: frozenset[str] = frozenset(), unit_own: frozenset[str] = frozenset()) -> None:
        self._directory = directory
        self._unit_own = unit_own
        self._patient_data = patient_data
        self._shared_types = shared
        self._care_unit: dict[str, Condition | None] = {}
        self._care_unit_reach: Condition | None = None
        self._patient: dict[str, Condition] = {}
        self._shared_blocked: dict[str, Condition] = {}

    def care_unit(self, type_: str) -> Condition | None:
        """What a care unit (``ORG`` of the care provider ``PROVIDER``) sees of ``type_``; None:
        all of it. Of the ``shared`` types, what the unit's part in the patient's care reaches
        and, of that, what Patientdatalagen lets it see across units and providers
        (``_shared_condition``)."""
        if type_ not in self._care_unit:
            condition = _care_unit_condition(type_, self._directory, self._unit_own)
            if condition is not None and type_ in self._shared_types:
                condition = sa.and_(condition, _shared_condition())
            self._care_unit[type_] = None if condition is None else SharedCondition(_inline_constants(condition))
        return self._care_unit[type_]

    def blocked(self, kind: str) -> Condition:
        """Rows of the patient ``PATIENT`` that a care unit does not see because of a spärr
        (``kind`` ``"sparr"``) or a missing samtycke (``"samtycke"``), among those its part in
        the patient's care reaches (``_blocked_condition``)."""
        key = f"blocked:{kind}"
        if key not in self._shared_blocked:
            conditions = {type_: _care_unit_condition(type_, self._directory, self._unit_own)
                          for type_ in sorted(self._shared_types)}
            reached = sa.or_(*(sa.and_(R.res_type == type_, condition) for type_, condition in conditions.items()
                               if condition is not None))
            self._shared_blocked[key] = SharedCondition(_inline_constants(_blocked_condition(kind, reached)))
        return self._shared_blocked[key]

    def care_unit_reach(self) -> Condition:
        """The care unit's agreements found from the unit outward (``plans_reached``): holds for
        every CarePlan ``care_unit`` admits, so a search of them can start from it."""
        if self._care_unit_reach is None:
            self._care_unit_reach = SharedCondition(_inline_constants(R.pk.in_(plans_reached())))
        return self._care_unit_reach

    def patient(self, type_: str) -> Condition:
        """What the patient (``PATIENT``) sees of ``type_``."""
        if type_ not in self._patient:
            self._patient[type_] = SharedCondition(_inline_constants(_patient_condition(type_, self._patient_data)))
        return self._patient[type_]


# -- the look-ups (``Unit.count_reached``, ``Unit.has_care_plan``) -----------------------------


def reached_count(limit: int) -> sa.Select[Any]:
    """How many CarePlans ``plans_reached`` finds, counted up to ``limit``."""
    return sa.select(sa.func.count()).select_from(plans_reached().limit(limit).subquery())


def care_plan_of(patient_id: str) -> sa.Select[Any]:
    """Whether the patient has a current CarePlan."""
    plan = RESOURCE.alias("acc_own_plan")
    return sa.select(sa.exists().where(
        plan.c.res_type == "CarePlan", plan.c.patient_id == patient_id, plan.c.deleted.is_(False)))


# -- care units ------------------------------------------------------------------------------


def _ref(name: str) -> Any:
    return REF.alias(name)


# A *path* is the conditions of one way a resource is linked to the care unit: joined tables
# in a single EXISTS. A rule is the OR of its paths, each an EXISTS one level deep, rather than
# EXISTS nested in EXISTS: SQLite's parser refuses deep nesting (its stack holds about ten
# levels), and on PostgreSQL every path is a chain of index probes, tried until one matches.
Path = list[Condition]


def _any(paths: list[Path]) -> Condition:
    return sa.or_(*(sa.exists().where(*path) for path in paths))


def _to_unit(source_pk: Any, param: str, name: str) -> Path:
    """``source_pk`` references the unit's Organization through ``param``: an equality probe
    of ``ix_reference_source`` (one path per parameter; an OR inside one probe made the
    planner scan every reference of the parameter instead)."""
    ref = _ref(name)
    return [ref.c.resource_pk == source_pk, ref.c.param == param,
            ref.c.target_type == "Organization", not_probed(ref.c.target_id) == _ORG]


class not_probed(FunctionElement[Any]):  # noqa: N801 - an SQL expression, named like one
    """A column that SQLite must not look rows up by (``+column``, SQLite's way to keep a term
    out of index selection); elsewhere the column itself. The unit's id is referenced by every
    agreement the unit takes part in: SQLite's planner, without the value's frequency, started
    the unit paths from ``ix_reference_target`` and walked all of them (about 100 ms for a
    create's reference checks at 2,000 agreements), where the probe by ``resource_pk`` finds a
    handful of rows. PostgreSQL's statistics know the value's frequency."""

    inherit_cache = True

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(not_probed)
def _not_probed(element: Any, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses.clauses
    return str(compiler.process(column, **kw))


@compiles(not_probed, "sqlite")
def _not_probed_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses.clauses
    return "+" + str(compiler.process(column, **kw))


def _via_role(source_pk: Any, param: str, prefix: str) -> Path:
    """``source_pk`` references, through ``param``, a PractitionerRole at the unit."""
    link, role = _ref(f"{prefix}_role_link"), RESOURCE.alias(f"{prefix}_role")
    return [link.c.resource_pk == source_pk, link.c.param == param, link.c.target_type == "PractitionerRole",
            role.c.res_type == "PractitionerRole", role.c.res_id == link.c.target_id,
            *_to_unit(role.c.pk, "organization", f"{prefix}_role_org")]


def _team_paths(team_pk: Any) -> list[Path]:
    """The CareTeam row ``team_pk`` is managed by the unit or has a member from it."""
    return [_to_unit(team_pk, "managing-organization", "acc_team_org"),
            _to_unit(team_pk, "participant", "acc_team_org"),
            _via_role(team_pk, "participant", "acc_team")]


def _plan_paths(plan_pk: Any) -> list[Path]:
    """The CarePlan row ``plan_pk`` is an agreement the unit takes part in: as author or
    contributor, or through its (current) CareTeam."""
    link, team = _ref("acc_plan_team"), RESOURCE.alias("acc_plan_team_row")
    via_team = [link.c.resource_pk == plan_pk, link.c.param == "care-team", link.c.target_type == "CareTeam",
                team.c.res_type == "CareTeam", team.c.res_id == link.c.target_id, team.c.deleted.is_(False)]
    return [_to_unit(plan_pk, "author", "acc_plan_org"), _to_unit(plan_pk, "contributor", "acc_plan_org"),
            *(via_team + path for path in _team_paths(team.c.pk))]


def _named_by_visible_plan(param: str, target_type: str, target_id: Any) -> list[Path]:
    """A visible agreement names ``target_type/target_id`` through ``param``."""
    ref = _ref("acc_named")
    named = [ref.c.res_type == "CarePlan", ref.c.param == param,
             ref.c.target_type == target_type, ref.c.target_id == target_id]
    return [named + path for path in _plan_paths(ref.c.resource_pk)]


def _named_by_any_plan(param: str, target_type: str, target_id: Any) -> Condition:
    ref = _ref("acc_any_plan")
    return sa.exists().where(
        ref.c.res_type == "CarePlan", ref.c.param == param,
        ref.c.target_type == target_type, ref.c.target_id == target_id,
    )


def _patient_paths(patient_id: Any) -> list[Path]:
    """The unit has an agreement or a team with the patient, or registered them."""
    plan = RESOURCE.alias("acc_pat_plan")
    team = RESOURCE.alias("acc_pat_team")
    patient = RESOURCE.alias("acc_pat")
    of_plan = [plan.c.patient_id == patient_id, plan.c.res_type == "CarePlan", plan.c.deleted.is_(False)]
    of_team = [team.c.patient_id == patient_id, team.c.res_type == "CareTeam", team.c.deleted.is_(False)]
    return [
        *(of_plan + path for path in _plan_paths(plan.c.pk)),
        *(of_team + path for path in _team_paths(team.c.pk)),
        [patient.c.res_type == "Patient", patient.c.res_id == patient_id,
         *_to_unit(patient.c.pk, "organization", "acc_pat_org")],
    ]


def _team_visible_paths(team_pk: Any, team_id: Any) -> list[Path]:
    return [*_team_paths(team_pk), *_named_by_visible_plan("care-team", "CareTeam", team_id)]


def _part_of_agreement(type_: str, param: str) -> Condition:
    """A goal or Appointment: named by a visible agreement, or named by none and about a patient
    the unit may see (the patient's own goals, activities not yet planned in)."""
    return sa.or_(
        _any(_named_by_visible_plan(param, type_, R.res_id)),
        sa.and_(sa.not_(_named_by_any_plan(param, type_, R.res_id)), _any(_patient_paths(R.patient_id))),
    )


def _provenance_paths() -> list[Path]:
    """A Provenance of a visible agreement, team or goal (a goal as ``_part_of_agreement``
    sees it: named by a visible agreement, or the patient's own and named by none)."""
    ref = _ref("acc_prov_target")
    plan = RESOURCE.alias("acc_prov_plan")
    team = RESOURCE.alias("acc_prov_team")
    goal = RESOURCE.alias("acc_prov_goal")

    def target(type_: str, row: Any) -> Path:
        return [ref.c.resource_pk == R.pk, ref.c.param == "target", ref.c.target_type == type_,
                row.c.res_type == type_, row.c.res_id == ref.c.target_id]

    unnamed_goal = [*target("Goal", goal), goal.c.deleted.is_(False),
                    sa.not_(_named_by_any_plan("goal", "Goal", goal.c.res_id))]
    return [*(target("CarePlan", plan) + path for path in _plan_paths(plan.c.pk)),
            *(target("CareTeam", team) + path for path in _team_visible_paths(team.c.pk, team.c.res_id)),
            *(target("Goal", goal) + path for path in _named_by_visible_plan("goal", "Goal", goal.c.res_id)),
            *(unnamed_goal + path for path in _patient_paths(goal.c.patient_id))]


def _naming_unit(type_: str, param: str, name: str) -> sa.Select[Any]:
    """The pks of the ``type_`` resources that reference the unit's Organization through
    ``param``: one range of ``ix_reference_lookup``."""
    ref = _ref(name)
    return sa.select(ref.c.resource_pk).where(ref.c.res_type == type_, ref.c.param == param,
                                              ref.c.target_id == _ORG, ref.c.target_type == "Organization")


def plans_reached() -> sa.CompoundSelect[int]:
    """The pks of the CarePlans found from the unit outward: one that names the unit as author
    or contributor, or names a CareTeam that names the unit (managing organisation, participant,
    or a participant PractitionerRole at the unit). Every agreement ``_plan_paths`` admits is
    among them, found through the index entries that name the unit rather than by testing every
    agreement of the region (``AccessSql.care_unit_reach``). UNION ALL: the IN removes duplicates,
    and counting it (``reach_size``) stops at the limit instead of building the whole set."""
    role_link, role = _ref("reach_team_role_link"), RESOURCE.alias("reach_team_role")
    teams_via_role = sa.select(role_link.c.resource_pk).where(
        role_link.c.res_type == "CareTeam", role_link.c.param == "participant",
        role_link.c.target_id == role.c.res_id, role_link.c.target_type == "PractitionerRole",
        role.c.res_type == "PractitionerRole",
        role.c.pk.in_(_naming_unit("PractitionerRole", "organization", "reach_role_org")))
    teams = sa.union_all(_naming_unit("CareTeam", "managing-organization", "reach_team_org"),
                         _naming_unit("CareTeam", "participant", "reach_team_member"), teams_via_role)
    team_link, team = _ref("reach_plan_team"), RESOURCE.alias("reach_plan_team_row")
    plans_via_team = sa.select(team_link.c.resource_pk).where(
        team_link.c.res_type == "CarePlan", team_link.c.param == "care-team",
        team_link.c.target_id == team.c.res_id, team_link.c.target_type == "CareTeam",
        team.c.res_type == "CareTeam", team.c.pk.in_(teams))
    return sa.union_all(_naming_unit("CarePlan", "author", "reach_plan_author"),
                        _naming_unit("CarePlan", "contributor", "reach_plan_contributor"), plans_via_team)


def _care_unit_condition(type_: str, directory: frozenset[str], unit_own: frozenset[str]) -> Condition | None:
    if type_ in directory:
        return None
    if type_ in unit_own:
        # not patient data (a Subscription's endpoint and headers, a Group's list of patients):
        # the unit's own, so only the unit that created it sees it (and so reads, changes,
        # deletes it)
        return R.owner_unit == _ORG
    if type_ == "CarePlan":
        return _any(_plan_paths(R.pk))
    if type_ == "CareTeam":
        return _any(_team_visible_paths(R.pk, R.res_id))
    if type_ == "Patient":
        return _any(_patient_paths(R.res_id))
    if type_ == "Goal":
        return _part_of_agreement("Goal", "goal")
    if type_ == "Appointment":
        acts = _any([_to_unit(R.pk, "actor", "acc_actor_org"), _via_role(R.pk, "actor", "acc_actor")])
        return sa.or_(acts, _part_of_agreement("Appointment", "activity-reference"))
    if type_ == "Provenance":
        return _any(_provenance_paths())
    if type_ == "Consent":
        return sa.and_(_any(_patient_paths(R.patient_id)), _consent_paths())
    return sa.false()  # a type these rules do not know: nothing


# -- across care providers: ownership, samtycke, spärr, emergency access --------------------


class utc_now(FunctionElement[Any]):  # noqa: N801 - an SQL function, named like one
    """The current time as naive UTC, as ``DateTime`` columns hold it."""

    type = sa.DateTime()
    inherit_cache = True


@compiles(utc_now)
def _utc_now_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


@compiles(utc_now, "postgresql")
def _utc_now_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    return "(now() AT TIME ZONE 'UTC')"


def _in_force(kind: str, *conditions: Condition) -> Condition:
    """An active Consent of ``kind`` about the row's patient, in its period now, holding
    ``conditions`` (on ``consent_rule``): one probe of ``ix_consent_rule_patient``."""
    rule = CONSENT_RULE.alias("acc_rule")
    consent = RESOURCE.alias("acc_rule_consent")
    now = utc_now()
    adapt = sql_util.ClauseAdapter(rule).traverse
    return sa.exists().where(
        rule.c.patient_id == R.patient_id, rule.c.kind == kind,
        sa.or_(rule.c.starts.is_(None), rule.c.starts <= now), sa.or_(rule.c.ends.is_(None), rule.c.ends > now),
        consent.c.pk == rule.c.consent_pk, consent.c.deleted.is_(False),
        *(adapt(c) for c in conditions))


def _blocked_by_sparr() -> tuple[Condition, Condition]:
    """(an inre spärr blocks the row's owning unit, a yttre spärr blocks its unit or provider)."""
    inre = _in_force("inre-sparr", CR.custodian_unit == R.owner_unit)
    yttre = _in_force("yttre-sparr", sa.or_(CR.custodian_unit == R.owner_unit,
                                            CR.custodian_provider == R.owner_provider))
    return inre, yttre


def _shared_condition() -> Condition:
    """Patientdatalagen on a row owned by a care provider (``owner_provider``):

    * the owning unit always sees it, and a row no provider owns is not restricted here;
    * another unit of the same provider sees it unless an *inre spärr* (4 kap 4 §) blocks the
      owning unit;
    * a unit of another provider sees it only without a spärr on the owning unit (an inre spärr
      covers what the unit holds from every other unit, so from other providers too) or a
      *yttre spärr* on the unit or its provider (6 kap 2 §), and with the patient's *samtycke*
      (6 kap 3 §) to the unit or its provider covering the owner — or, instead of the samtycke,
      under an emergency access to this patient (6 kap 4 §), which never passes a spärr.
    """
    # Never NULL, so that ``not_`` of it (``_blocked_condition``) means what it says: a unit
    # with no known provider is no provider's, and no emergency access is ``NULL``.
    provider = sa.func.coalesce(_PROVIDER, "")
    emergency = sa.and_(_EMERGENCY.is_not(None), R.patient_id == _EMERGENCY)
    inre, yttre = _blocked_by_sparr()
    same_provider = sa.and_(R.owner_provider == provider, sa.not_(inre))
    consent = _in_force(
        "samtycke",
        sa.or_(CR.recipient_unit == _ORG, CR.recipient_provider == provider),
        sa.or_(sa.and_(CR.custodian_unit.is_(None), CR.custodian_provider.is_(None)),
               CR.custodian_unit == R.owner_unit, CR.custodian_provider == R.owner_provider))
    other_provider = sa.and_(R.owner_provider != provider, sa.not_(inre), sa.not_(yttre),
                             sa.or_(emergency, consent))
    return sa.or_(R.owner_provider.is_(None), R.owner_unit == _ORG, same_provider, other_provider)


def _blocked_condition(kind: str, reached: Condition) -> Condition:
    """Rows of the patient ``PATIENT`` that the care unit's part in the patient's care
    (``reached``) would show it but that it does not see because of a spärr (``kind``
    ``"sparr"``) or for want of a samtycke (``"samtycke"``): what staff are told exists, never
    what it is."""
    inre, yttre = _blocked_by_sparr()
    base = sa.and_(R.patient_id == _PATIENT, R.deleted.is_(False), R.owner_provider.is_not(None),
                   R.owner_unit != _ORG, reached, sa.not_(_shared_condition()))
    sparr = sa.or_(inre, sa.and_(R.owner_provider != sa.func.coalesce(_PROVIDER, ""), yttre))
    return sa.and_(base, sparr if kind == "sparr" else sa.not_(sparr))


def _consent_paths() -> Condition:
    """A Consent a care unit sees, besides taking part in the patient's care: one its own
    provider recorded, or a samtycke that names the unit or its provider as recipient."""
    rule = CONSENT_RULE.alias("acc_consent_for")
    return sa.or_(R.owner_provider == _PROVIDER, sa.exists().where(
        rule.c.consent_pk == R.pk, sa.or_(rule.c.recipient_unit == _ORG, rule.c.recipient_provider == _PROVIDER)))


def _inline_constants(condition: Condition) -> Condition:
    """``condition`` with the constants of these rules (types, parameter names) as SQL
    literals rather than bind parameters, so the planner sees them in a generic plan too."""

    def literal(element: Any, **kw: Any) -> Any:
        if isinstance(element, BindParameter) and element.key not in _NAMED and isinstance(element.value, str):
            return sa.literal_column("'" + element.value.replace("'", "''") + "'", element.type)
        return None

    inlined: Condition = visitors.replacement_traverse(condition, {}, literal)
    return inlined


# -- the patient -----------------------------------------------------------------------------


def _named_by_compartment(target_type: str, target_id: Any) -> Condition:
    """A resource in the patient's compartment names ``target_type/target_id``."""
    ref = _ref("acc_comp_ref")
    source = RESOURCE.alias("acc_comp_src")
    return sa.exists().where(
        ref.c.target_type == target_type, ref.c.target_id == target_id,
        source.c.pk == ref.c.resource_pk, source.c.patient_id == _PATIENT, source.c.deleted.is_(False),
    )


def _role_named_by_compartment_with(param: str, target_type: str, target_id: Any) -> Condition:
    """A PractitionerRole the compartment names points at ``target`` through ``param``."""
    ref = _ref("acc_role_ref")
    role = RESOURCE.alias("acc_comp_role")
    return sa.exists().where(
        ref.c.res_type == "PractitionerRole", ref.c.param == param,
        ref.c.target_type == target_type, ref.c.target_id == target_id,
        role.c.pk == ref.c.resource_pk, _named_by_compartment("PractitionerRole", role.c.res_id),
    )


def _patient_condition(type_: str, patient_data: frozenset[str]) -> Condition:
    if type_ == "Patient":
        return R.res_id == _PATIENT
    if type_ in patient_data:
        return R.patient_id == _PATIENT
    if type_ == "PractitionerRole":
        return _named_by_compartment("PractitionerRole", R.res_id)
    if type_ == "Practitioner":
        return sa.or_(_named_by_compartment("Practitioner", R.res_id),
                      _role_named_by_compartment_with("practitioner", "Practitioner", R.res_id))
    if type_ == "Organization":
        return sa.or_(_named_by_compartment("Organization", R.res_id),
                      _role_named_by_compartment_with("organization", "Organization", R.res_id))
    return sa.false()
