"""The agreement's lifecycle (patientkontrakt/domain/lifecycle.py): status changes, dates,
activities kept, and warnings — first the rules on their own, then through the FHIR API (PUT,
POST, conditional update), transactions and batches on PostgreSQL.

Every refusal is checked for its status, issue code, expression, Swedish ``details.text`` and
English ``diagnostics``, and for storing nothing (the server's version count is unchanged).
Agreements come from ``DemoGenerator``: agreement ``n`` has the status ``PLAN_STATES[n % 8]``.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from patientkontrakt.domain import codes, lifecycle
from patientkontrakt.domain.demo import PLAN_STATES
from patientkontrakt.fhir.errors import Conflict, Unprocessable
from patientkontrakt.fhir.hooks import NO_CONTEXT, WriteContext
from tests.domain.support import (
    TODAY,
    assert_issue,
    deep,
    generator,
    issues,
    members,
    put,
    read,
    refused,
    search,
    store_agreement,
    versions_stored,
)

STATES = ("draft", "active", "on-hold", "completed", "revoked", "entered-in-error")
NUMBER = {status: PLAN_STATES.index(status) for status in ("active", "draft", "on-hold", "completed", "revoked")}
NOW = datetime.datetime(2026, 3, 1, 12, 0)
REASON = {"reason": [{"text": "Patienten behöver stödet igen"}]}
LAST_WEEK = (TODAY - datetime.timedelta(days=7)).isoformat()
NEXT_WEEK = (TODAY + datetime.timedelta(days=7)).isoformat()


def _kind(before: str, after: str) -> str:
    """What the lifecycle says of before → after: free, reason (allowed with one) or refused."""
    if before == after or (before, after) in lifecycle.FREE:
        return "free"
    if (before, after) in lifecycle.REOPENING | lifecycle.CORRECTION:
        return "reason"
    return "refused"


# -- the rules on their own -----------------------------------------------------------------------


def test_the_transition_table_is_the_documented_one() -> None:
    free = {(b, a) for b in STATES for a in STATES if b != a and _kind(b, a) == "free"}
    assert free == {("draft", "active"), ("draft", "revoked"), ("draft", "entered-in-error"),
                    ("active", "on-hold"), ("active", "completed"), ("active", "revoked"),
                    ("on-hold", "active"), ("on-hold", "completed"), ("on-hold", "revoked")}
    assert {(b, a) for b in STATES for a in STATES if _kind(b, a) == "reason"} == {
        ("completed", "active"), ("revoked", "active"), ("active", "entered-in-error"),
        ("on-hold", "entered-in-error"), ("completed", "entered-in-error"), ("revoked", "entered-in-error")}


@pytest.mark.parametrize(("before", "after"), [(b, a) for b in STATES for a in (*STATES, "unknown")],
                         ids=lambda value: str(value))
def test_every_transition(before: str, after: str) -> None:
    kind = "refused" if after == "unknown" else _kind(before, after)
    with_reason = WriteContext(provenance={"resourceType": "Provenance", **REASON})
    if kind == "free":
        lifecycle.check_transition(before, after, "p", NO_CONTEXT)
        return
    with pytest.raises(Conflict) as refusal:
        lifecycle.check_transition(before, after, "p", NO_CONTEXT)
    [issue] = refusal.value.issues
    assert refusal.value.status == 409 and issue.code == "business-rule"
    assert issue.expression == ("CarePlan.status",)
    assert f"({before}) kan inte ändras till" in (issue.details_sv or "") and f"({after})" in (issue.details_sv or "")
    assert f"({before}) cannot become {after}" in issue.diagnostics
    if kind == "reason":
        assert "kräver ett skäl" in (issue.details_sv or "") and "X-Provenance" in issue.diagnostics
        lifecycle.check_transition(before, after, "p", with_reason)
    else:
        with pytest.raises(Conflict):
            lifecycle.check_transition(before, after, "p", with_reason)


def test_the_example_message_reads_as_the_issue_asks() -> None:
    with pytest.raises(Conflict) as refusal:
        lifecycle.check_transition("completed", "draft", "p", NO_CONTEXT)
    assert (refusal.value.issues[0].details_sv or "").startswith(
        "Ett avslutat patientkontrakt (completed) kan inte ändras till utkast (draft).")


@pytest.mark.parametrize("status", ["draft", "active", "on-hold", "completed", "revoked"])
def test_a_new_agreement_may_start_in_any_state_but_error_and_unknown(status: str) -> None:
    lifecycle.check_transition(None, status, "p", NO_CONTEXT)


@pytest.mark.parametrize("status", ["draft", "active", "on-hold", "completed", "revoked"])
def test_an_agreement_of_unknown_status_may_become_known(status: str) -> None:
    lifecycle.check_transition("unknown", status, "p", NO_CONTEXT)
    with pytest.raises(Conflict):
        lifecycle.check_transition("unknown", "entered-in-error", "p", NO_CONTEXT)
    lifecycle.check_transition("unknown", "entered-in-error", "p",
                               WriteContext(provenance={"resourceType": "Provenance", **REASON}))


@pytest.mark.parametrize("status", ["entered-in-error", "unknown"])
def test_a_new_agreement_cannot_be_entered_in_error_or_unknown(status: str) -> None:
    with pytest.raises(Unprocessable) as refusal:
        lifecycle.check_transition(None, status, "p", NO_CONTEXT)
    assert refusal.value.issues[0].expression == ("CarePlan.status",)
    assert "Ett nytt patientkontrakt kan inte skapas som" in (refusal.value.issues[0].details_sv or "")


@pytest.mark.parametrize("provenance", [
    {"resourceType": "Provenance"},
    {"resourceType": "Provenance", "reason": [{"text": "  "}]},
    {"resourceType": "Provenance", "reason": [{}]},
], ids=["no-reason", "blank-text", "empty-concept"])
def test_a_provenance_without_a_real_reason_does_not_reopen(provenance: dict[str, Any]) -> None:
    with pytest.raises(Conflict):
        lifecycle.check_transition("completed", "active", "p", WriteContext(provenance=provenance))


def test_a_coded_reason_reopens() -> None:
    coded = {"resourceType": "Provenance", "reason": [{"coding": [{"system": "http://terminology.hl7.org/"
                                                                   "CodeSystem/v3-ActReason", "code": "PATADMIN"}]}]}
    lifecycle.check_transition("completed", "active", "p", WriteContext(provenance=coded))


@pytest.mark.parametrize("target", ["CarePlan/p", "CarePlan/p/_history/3", "http://testserver/fhir/CarePlan/p"])
def test_a_provenance_entry_of_the_transaction_targeting_the_plan_reopens(target: str) -> None:
    entry = {"resourceType": "Provenance", "target": [{"reference": target}], **REASON}
    lifecycle.check_transition("revoked", "active", "p", WriteContext(transaction=(entry,)))


def test_a_provenance_entry_about_another_resource_does_not_reopen() -> None:
    entry = {"resourceType": "Provenance", "target": [{"reference": "CarePlan/other"}], **REASON}
    with pytest.raises(Conflict):
        lifecycle.check_transition("revoked", "active", "p", WriteContext(transaction=(entry,)))


@pytest.mark.parametrize(("end", "start", "before"), [
    ("2024-03-04", "2024-03-05", True),
    ("2024-03-05", "2024-03-05", False),
    ("2024-03", "2024-03-15", False),
    ("2024-02-28", "2024-03", True),
    ("2023", "2024-01-01", True),
    ("2024-03-05", "2024-03-05T10:00:00+01:00", False),
    ("2024-03-04T23:30:00+01:00", "2024-03-05", True),
    ("2024-03-05T10:00:00+01:00", "2024-03-05T09:30:00Z", True),
    ("2024-03-05T10:00:00+01:00", "2024-03-05T09:00:00Z", False),
    ("not a date", "2024-03-05", None),
])
def test_ends_before(end: str, start: str, before: bool | None) -> None:
    assert lifecycle.ends_before(end, start) is before


def test_date_issues_name_every_period_and_goal_target() -> None:
    plan = {"resourceType": "CarePlan", "period": {"start": "2024-02-01", "end": "2024-01-01"},
            "activity": [{"detail": {"scheduledPeriod": {"start": "2024-02-01T10:00:00Z",
                                                         "end": "2024-02-01T09:00:00Z"}}},
                         {"detail": {"scheduledTiming": {"repeat": {"boundsPeriod": {"start": "2024-02-02",
                                                                                     "end": "2024-02-01"}}}}}]}
    found = {i.expression[0]: i for i in lifecycle.date_issues(plan)}
    assert set(found) == {"CarePlan.period.end", "CarePlan.activity[0].detail.scheduledPeriod.end",
                          "CarePlan.activity[1].detail.scheduledTiming.repeat.boundsPeriod.end"}
    assert found["CarePlan.period.end"].code == "invariant"
    assert "per-1" in found["CarePlan.period.end"].diagnostics
    assert (found["CarePlan.period.end"].details_sv or "").startswith("Patientkontraktets giltighetstid slutar")
    assert "Aktivitetens planerade tid" in (found["CarePlan.activity[0].detail.scheduledPeriod.end"].details_sv or "")
    team = {"resourceType": "CareTeam", "participant": [{"period": {"start": "2024-01-01"}},
                                                        {"period": {"start": "2024-05-01", "end": "2024-04-30"}}]}
    [issue] = lifecycle.date_issues(team)
    assert issue.expression == ("CareTeam.participant[1].period.end",)
    assert "Deltagarens period i vårdteamet" in (issue.details_sv or "")
    goal = {"resourceType": "Goal", "startDate": "2024-05-01", "target": [{"dueDate": "2024-06-01"},
                                                                        {"dueDate": "2024-04-01"}]}
    [issue] = lifecycle.date_issues(goal)
    assert issue.expression == ("Goal.target[1].dueDate",) and issue.code == "business-rule"
    assert "ligger före datumet då arbetet med målet börjar" in (issue.details_sv or "")
    assert lifecycle.date_issues({"resourceType": "Goal", "target": [{"dueDate": "2000-01-01"}]}) == []


def test_activities_may_change_but_not_go() -> None:
    before = {"activity": [{"detail": {"status": "scheduled"}}, {"id": "a2", "detail": {"status": "scheduled"}}]}
    lifecycle.check_activities_kept(before, {"activity": [{"detail": {"status": "cancelled"}},
                                                          {"id": "a2", "detail": {"status": "completed"}},
                                                          {"detail": {"status": "scheduled"}}]})
    with pytest.raises(Unprocessable) as shorter:
        lifecycle.check_activities_kept(before, {"activity": [{"id": "a2", "detail": {"status": "scheduled"}}]})
    assert shorter.value.issues[0].expression == ("CarePlan.activity",)
    assert "1 of its activities" in shorter.value.diagnostics
    with pytest.raises(Unprocessable) as lost:
        lifecycle.check_activities_kept(before, {"activity": [{"detail": {}}, {"detail": {}}]})
    assert "'a2'" in lost.value.diagnostics
    assert "inställd (cancelled)" in (lost.value.issues[0].details_sv or "")


def _activity(status: str, start: str, end: str | None = None) -> dict[str, Any]:
    period = {"start": start, **({"end": end} if end else {})}
    return {"detail": {"status": status, "description": f"{status} {start}", "scheduledPeriod": period}}


def test_warnings_for_new_activities_already_past() -> None:
    old = _activity("scheduled", "2026-02-01T10:00:00Z")
    previous = {"activity": [old]}
    plan = {"activity": [{**old, "detail": {**old["detail"], "status": "completed"}},
                         {**old, "detail": {**old["detail"], "status": "scheduled", "statusReason": {"text": "x"}}},
                         _activity("scheduled", "2026-02-20T10:00:00Z", "2026-02-20T11:00:00Z"),
                         _activity("not-started", "2026-02-27"),
                         _activity("completed", "2026-02-20"),
                         _activity("scheduled", "2026-03-01"),
                         _activity("scheduled", "2026-02-28T10:00:00Z", "2026-03-02T10:00:00Z"),
                         {"detail": {"status": "scheduled",
                                     "scheduledTiming": {"event": ["2026-01-01", "2026-02-01"]}}},
                         {"detail": {"status": "scheduled", "scheduledTiming": {
                             "event": ["2026-01-01"], "repeat": {"boundsPeriod": {"start": "2026-01-01"}}}}},
                         {"detail": {"status": "scheduled", "scheduledString": "Varje morgon"}}]}
    found = lifecycle.plan_warnings(plan, previous, NOW)
    assert [i.expression[0] for i in found] == ["CarePlan.activity[2].detail", "CarePlan.activity[3].detail",
                                                "CarePlan.activity[7].detail"]
    assert all(i.severity == "warning" and i.code == "business-rule" for i in found)
    assert "som redan har passerat" in (found[0].details_sv or "")
    assert "2026-02-20T11:00:00Z" in found[0].diagnostics
    assert lifecycle.plan_warnings(plan, plan, NOW) == []


def test_warnings_for_new_goal_dates_already_past() -> None:
    goal = {"lifecycleStatus": "active", "target": [{"dueDate": "2026-02-01"}, {"dueDate": "2026-04-01"}]}
    [issue] = lifecycle.goal_warnings(goal, None, NOW)
    assert issue.expression == ("Goal.target[0].dueDate",) and issue.severity == "warning"
    assert lifecycle.goal_warnings(goal, goal, NOW) == []
    assert lifecycle.goal_warnings({**goal, "lifecycleStatus": "completed"}, None, NOW) == []


# -- over HTTP: status changes ----------------------------------------------------------------------


def _stored(client: TestClient, status: str) -> list[dict[str, Any]]:
    """Store the demo agreement that has ``status``: [Patient, CareTeam, Goal×3, CarePlan]."""
    return store_agreement(client, generator(), NUMBER[status])


def _plan(resources: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    return {**deep(resources[-1]), **changes}


def _reopened_team(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The agreement's team with the roles that ended with the agreement open again."""
    team = deep(resources[1])
    end = resources[-1]["period"]["end"]
    for participant in team["participant"]:
        if participant.get("period", {}).get("end") == end:
            del participant["period"]["end"]
    team["status"] = "active"
    return team


def _reopened_plan(resources: list[dict[str, Any]]) -> dict[str, Any]:
    plan = _plan(resources, status="active")
    del plan["period"]["end"]
    return plan


def _x_provenance(resources: list[dict[str, Any]], reason: str | None = "Patienten behöver stödet igen"
                  ) -> dict[str, str]:
    given: dict[str, Any] = {"resourceType": "Provenance", "agent": [{"who": resources[-1]["author"]}]}
    if reason is not None:
        given["reason"] = [{"text": reason}]
    return {"X-Provenance": json.dumps(given)}


def _provenance_entry(resources: list[dict[str, Any]], target: str, reason: str | None = "Återöppnat"
                      ) -> dict[str, Any]:
    provenance: dict[str, Any] = {"resourceType": "Provenance", "target": [{"reference": target}],
                                  "recorded": f"{TODAY.isoformat()}T08:00:00Z",
                                  "agent": [{"who": resources[-1]["author"]}]}
    if reason is not None:
        provenance["reason"] = [{"text": reason}]
    return {"resource": provenance, "request": {"method": "POST", "url": "Provenance"}}


def _entry(resource: dict[str, Any], **request: str) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}",
                                              **request}}


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


FREE_OVER_HTTP = [("draft", "active"), ("draft", "revoked"), ("draft", "entered-in-error"), ("active", "on-hold"),
                  ("active", "completed"), ("active", "revoked"), ("on-hold", "active"), ("on-hold", "completed"),
                  ("on-hold", "revoked")]
REFUSED_OVER_HTTP = [
    ("active", "draft", "Ett gällande patientkontrakt (active) kan inte ändras till utkast (draft)"),
    ("on-hold", "draft", "Ett pausat patientkontrakt (on-hold) kan inte ändras till utkast (draft)"),
    ("draft", "on-hold", "Ett utkast till patientkontrakt (draft) kan inte ändras till pausat (on-hold)"),
    ("draft", "completed", "Ett utkast till patientkontrakt (draft) kan inte ändras till avslutat (completed)"),
    ("completed", "draft", "Ett avslutat patientkontrakt (completed) kan inte ändras till utkast (draft)"),
    ("completed", "on-hold", "Ett avslutat patientkontrakt (completed) kan inte ändras till pausat (on-hold)"),
    ("completed", "revoked", "Ett avslutat patientkontrakt (completed) kan inte ändras till avbrutet (revoked)"),
    ("revoked", "completed", "Ett avbrutet patientkontrakt (revoked) kan inte ändras till avslutat (completed)"),
    ("active", "unknown", "kan inte ändras till okänd status (unknown)"),
]


@pytest.mark.parametrize(("before", "after"), FREE_OVER_HTTP, ids=lambda value: str(value))
def test_allowed_change_by_put(pk_client: TestClient, before: str, after: str) -> None:
    resources = _stored(pk_client, before)
    response = put(pk_client, _plan(resources, status=after))
    assert response.status_code == 200, response.text
    assert read(pk_client, "CarePlan", resources[-1]["id"])["status"] == after
    assert search(pk_client, "Provenance") == []


@pytest.mark.parametrize(("before", "after", "swedish"), REFUSED_OVER_HTTP, ids=lambda value: str(value)[:20])
def test_refused_change_by_put_is_409_and_stores_nothing(pk_client: TestClient, before: str, after: str,
                                                         swedish: str) -> None:
    resources = _stored(pk_client, before)
    plan = _plan(resources, status=after)
    count = versions_stored(pk_client)
    refused(pk_client, put(pk_client, plan, headers=_x_provenance(resources)), count, status=409,
            code="business-rule", expression="CarePlan.status", swedish=swedish,
            english=f"({before}) cannot become {after}")
    assert read(pk_client, "CarePlan", plan["id"])["status"] == before


def test_refused_change_by_conditional_update(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "completed")
    plan = _plan(resources, status="draft")
    count = versions_stored(pk_client)
    response = pk_client.put("/fhir/CarePlan", params={"_id": plan["id"]}, json=plan)
    refused(pk_client, response, count, status=409, code="business-rule", expression="CarePlan.status",
            swedish="Ett avslutat patientkontrakt (completed) kan inte ändras till utkast (draft)",
            english="a completed Patientkontrakt (completed) cannot become draft")


def test_allowed_change_by_conditional_update(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    plan = _plan(resources, status="on-hold")
    response = pk_client.put("/fhir/CarePlan", params={"_id": plan["id"]}, json=plan)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "on-hold"


@pytest.mark.parametrize("status", ["completed", "revoked"])
def test_create_as_closed_passes_as_error_does_not(pk_client: TestClient, status: str) -> None:
    resources = store_agreement(pk_client, generator(), NUMBER["draft"])
    created = pk_client.post("/fhir/CarePlan", json={k: v for k, v in _plan(resources, status=status).items()
                                                     if k != "id"})
    assert created.status_code == 201, created.text
    count = versions_stored(pk_client)
    wrong = {k: v for k, v in _plan(resources, status="entered-in-error").items() if k != "id"}
    refused(pk_client, pk_client.post("/fhir/CarePlan", json=wrong), count, status=422, code="business-rule",
            expression="CarePlan.status", swedish="Ett nytt patientkontrakt kan inte skapas som felregistrerat",
            english="a new Patientkontrakt cannot be entered-in-error")
    refused(pk_client, put(pk_client, {**wrong, "id": "new-in-error"}), count, status=422, code="business-rule",
            expression="CarePlan.status", swedish="kan inte skapas som", english="cannot be entered-in-error")


def test_a_deleted_closed_agreement_cannot_come_back_as_draft(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "completed")
    plan = _plan(resources, status="draft")
    assert pk_client.delete(f"/fhir/CarePlan/{plan['id']}").status_code == 204
    count = versions_stored(pk_client)
    refused(pk_client, put(pk_client, plan), count, status=409, code="business-rule", expression="CarePlan.status",
            swedish="Ett avslutat patientkontrakt (completed) kan inte ändras till utkast",
            english="cannot become draft")
    assert put(pk_client, _plan(resources)).status_code == 201, "written anew as it was, it comes back"


# -- reopening and correction ----------------------------------------------------------------------


@pytest.mark.parametrize("before", ["completed", "revoked"])
def test_reopening_without_a_reason_is_409(pk_client: TestClient, before: str) -> None:
    resources = _stored(pk_client, before)
    assert put(pk_client, _reopened_team(resources)).status_code == 200
    count = versions_stored(pk_client)
    refused(pk_client, put(pk_client, _reopened_plan(resources)), count, status=409, code="business-rule",
            expression="CarePlan.status", swedish="kräver ett skäl", english="reopening needs a reason")
    refused(pk_client, put(pk_client, _reopened_plan(resources), headers=_x_provenance(resources, None)), count,
            status=409, code="business-rule", expression="CarePlan.status", swedish="X-Provenance",
            english="X-Provenance")


@pytest.mark.parametrize("before", ["completed", "revoked"])
def test_reopening_with_x_provenance_keeps_the_history(pk_client: TestClient, before: str) -> None:
    resources = _stored(pk_client, before)
    assert put(pk_client, _reopened_team(resources)).status_code == 200
    plan = _reopened_plan(resources)
    response = put(pk_client, plan, headers=_x_provenance(resources))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"
    [provenance] = search(pk_client, "Provenance", target=f"CarePlan/{plan['id']}")
    assert provenance["target"] == [{"reference": f"CarePlan/{plan['id']}/_history/2"}]
    assert provenance["reason"] == [{"text": "Patienten behöver stödet igen"}]
    assert provenance["agent"] == [{"who": resources[-1]["author"]}]
    history = pk_client.get(f"/fhir/CarePlan/{plan['id']}/_history").json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["active", before]


def test_reopening_in_a_transaction_with_a_provenance_entry(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "completed")
    plan = _reopened_plan(resources)
    response = pk_client.post("/fhir", json=_bundle(
        "transaction", _entry(_reopened_team(resources)), _entry(plan),
        _provenance_entry(resources, f"CarePlan/{plan['id']}")))
    assert response.status_code == 200, response.text
    assert read(pk_client, "CarePlan", plan["id"])["status"] == "active"
    [provenance] = search(pk_client, "Provenance", target=f"CarePlan/{plan['id']}")
    assert provenance["reason"] == [{"text": "Återöppnat"}]


@pytest.mark.parametrize("provenance", ["none", "no-reason", "other-target"])
def test_reopening_in_a_transaction_without_a_reason_leaves_nothing_stored(pk_client: TestClient,
                                                                           provenance: str) -> None:
    resources = _stored(pk_client, "revoked")
    plan = _reopened_plan(resources)
    entries = [_entry(_reopened_team(resources)), _entry(plan)]
    if provenance == "no-reason":
        entries.append(_provenance_entry(resources, f"CarePlan/{plan['id']}", reason=None))
    elif provenance == "other-target":
        entries.append(_provenance_entry(resources, f"CareTeam/{resources[1]['id']}"))
    count = versions_stored(pk_client)
    found = issues(pk_client.post("/fhir", json=_bundle("transaction", *entries)), 409)
    assert_issue(found, code="business-rule", expression="Bundle.entry[1].resource.status",
                 swedish="Ett avbrutet patientkontrakt (revoked) kan inte ändras till gällande (active)",
                 english="Bundle.entry[1]: CarePlan.status: a revoked Patientkontrakt (revoked) cannot become active")
    assert versions_stored(pk_client) == count
    assert read(pk_client, "CarePlan", plan["id"])["status"] == "revoked"


def test_reopening_in_a_batch_is_refused_for_that_entry_only(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "completed")
    goal = {**deep(resources[2]), "description": {"text": "Klara trapporna själv"}}
    response = pk_client.post("/fhir", json=_bundle("batch", _entry(_reopened_plan(resources)), _entry(goal)))
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"] == "409"
    assert_issue(first["response"]["outcome"]["issue"], code="business-rule", expression="CarePlan.status",
                 swedish="kräver ett skäl", english="reopening needs a reason")
    assert second["response"]["status"] == "200 OK"
    assert read(pk_client, "CarePlan", resources[-1]["id"])["status"] == "completed"


def test_a_refused_change_in_a_batch_entry_and_a_free_one(pk_client: TestClient) -> None:
    active = _stored(pk_client, "active")
    response = pk_client.post("/fhir", json=_bundle("batch", _entry(_plan(active, status="draft")),
                                                    _entry(_plan(active, status="on-hold"))))
    first, second = response.json()["entry"]
    assert first["response"]["status"] == "409"
    assert second["response"]["status"] == "200 OK"


@pytest.mark.parametrize("before", ["active", "on-hold", "completed", "revoked"])
def test_correction_to_entered_in_error_needs_a_reason_and_is_recorded(pk_client: TestClient, before: str) -> None:
    resources = _stored(pk_client, before)
    plan = _plan(resources, status="entered-in-error")
    count = versions_stored(pk_client)
    refused(pk_client, put(pk_client, plan), count, status=409, code="business-rule", expression="CarePlan.status",
            swedish="Att markera ett patientkontrakt som felregistrerat kräver ett skäl",
            english="marking it entered-in-error needs a reason")
    response = put(pk_client, plan, headers=_x_provenance(resources, "Registrerat på fel patient"))
    assert response.status_code == 200, response.text
    [provenance] = search(pk_client, "Provenance", target=f"CarePlan/{plan['id']}")
    assert provenance["reason"] == [{"text": "Registrerat på fel patient"}]


def test_a_draft_may_be_entered_in_error_and_nothing_leaves_that_state(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "draft")
    assert put(pk_client, _plan(resources, status="entered-in-error")).status_code == 200
    count = versions_stored(pk_client)
    refused(pk_client, put(pk_client, _plan(resources, status="active"), headers=_x_provenance(resources)), count,
            status=409, code="business-rule", expression="CarePlan.status",
            swedish="Ett felregistrerat patientkontrakt (entered-in-error) kan inte ändras till gällande (active)",
            english="create a new agreement")


# -- dates -------------------------------------------------------------------------------------------


def test_plan_period_ending_before_it_starts_is_refused(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    plan = _plan(resources)
    plan["period"] = {"start": plan["period"]["start"], "end": "2000-01-01"}
    count = versions_stored(pk_client)
    refused(pk_client, put(pk_client, plan), count, status=422, code="invariant", expression="CarePlan.period.end",
            swedish="Patientkontraktets giltighetstid slutar (2000-01-01) innan den börjar",
            english="per-1: the period ends (2000-01-01) before it starts")


def test_participant_period_ending_before_it_starts_is_refused(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    team = deep(resources[1])
    index = next(i for i, p in enumerate(team["participant"]) if p in members(team, "kontaktperson-kommun"))
    team["participant"][index]["period"]["end"] = "2000-01-01"
    count = versions_stored(pk_client)
    refused(pk_client, put(pk_client, team), count, status=422, code="invariant",
            expression=f"CareTeam.participant[{index}].period.end", swedish="Deltagarens period i vårdteamet slutar",
            english="before it starts")


def test_activity_time_ending_before_it_starts_is_refused(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    plan = _plan(resources)
    period = plan["activity"][3]["detail"]["scheduledPeriod"]
    period["start"], period["end"] = period["end"], period["start"]
    count = versions_stored(pk_client)
    refused(pk_client, put(pk_client, plan), count, status=422, code="invariant",
            expression="CarePlan.activity[3].detail.scheduledPeriod.end", swedish="Aktivitetens planerade tid slutar",
            english="before it starts")


def test_goal_target_before_its_start_is_refused(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    goal = deep(resources[2])
    goal["target"] = [{"dueDate": "2000-01-01"}]
    count = versions_stored(pk_client)
    refused(pk_client, put(pk_client, goal), count, status=422, code="business-rule",
            expression="Goal.target[0].dueDate", swedish="Målets datum (2000-01-01) ligger före",
            english="the target date 2000-01-01 is before the goal's startDate")


def test_date_rules_in_a_transaction_point_into_the_bundle(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    plan = _plan(resources)
    plan["period"]["end"] = "2000-01-01"
    goal = deep(resources[2])
    count = versions_stored(pk_client)
    found = issues(pk_client.post("/fhir", json=_bundle("transaction", _entry(goal), _entry(plan))), 422)
    assert_issue(found, code="invariant", expression="Bundle.entry[1].resource.period.end",
                 swedish="Patientkontraktets giltighetstid slutar", english="Bundle.entry[1]: CarePlan.period.end")
    assert versions_stored(pk_client) == count


def test_a_date_and_a_time_on_the_same_day_pass(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    plan = _plan(resources)
    plan["period"] = {"start": f"{TODAY.isoformat()}T15:00:00+01:00", "end": TODAY.isoformat()}
    assert put(pk_client, plan).status_code == 200


# -- activities are kept -----------------------------------------------------------------------------


def test_removing_an_activity_is_refused_cancelling_it_passes(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    plan = _plan(resources)
    removed = {**plan, "activity": plan["activity"][:-1]}
    count = versions_stored(pk_client)
    refused(pk_client, put(pk_client, removed), count, status=422, code="business-rule",
            expression="CarePlan.activity", swedish="En aktivitet kan inte tas bort",
            english="activities are never removed")
    found = issues(pk_client.post("/fhir", json=_bundle("transaction", _entry(removed))), 422)
    assert_issue(found, code="business-rule", expression="Bundle.entry[0].resource.activity",
                 swedish="kan inte tas bort", english="never removed")
    assert versions_stored(pk_client) == count
    plan["activity"][-1]["detail"]["status"] = "cancelled"
    response = put(pk_client, plan)
    assert response.status_code == 200, response.text
    assert len(response.json()["activity"]) == len(resources[-1]["activity"])


def test_closing_leaves_future_activities_to_the_client(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    plan = _plan(resources, status="completed")
    plan["period"]["end"] = TODAY.isoformat()
    assert plan["activity"][-1]["detail"]["status"] == "scheduled"
    response = put(pk_client, plan)
    assert response.status_code == 200, response.text


# -- warnings ---------------------------------------------------------------------------------------


def _new_activity(plan: dict[str, Any], day: str) -> dict[str, Any]:
    return {"detail": {"code": {"coding": [{"system": codes.ACTIVITY_KIND, "code": "besok"}]},
                       "status": "scheduled", "scheduledPeriod": {"start": f"{day}T10:00:00+01:00"},
                       "performer": [plan["author"]], "description": "Återbesök"}}


def test_a_new_activity_in_the_past_is_a_warning_in_the_operation_outcome(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    plan = _plan(resources)
    plan["activity"].append(_new_activity(plan, LAST_WEEK))
    response = put(pk_client, plan, headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 200, response.text
    found = response.json()["issue"]
    assert found[0]["severity"] == "information"
    assert_issue(found, code="business-rule", expression="CarePlan.activity[4].detail", severity="warning",
                 swedish="Den nya aktiviteten är planerad till", english="which has passed")
    assert len(read(pk_client, "CarePlan", plan["id"])["activity"]) == 5, "a warning does not stop the write"


def test_the_warning_is_in_the_entry_response_of_a_transaction(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    plan = _plan(resources)
    plan["activity"].append(_new_activity(plan, LAST_WEEK))
    response = pk_client.post("/fhir", json=_bundle("transaction", _entry(plan)))
    assert response.status_code == 200, response.text
    outcome = response.json()["entry"][0]["response"]["outcome"]
    assert_issue(outcome["issue"], code="business-rule", expression="CarePlan.activity[4].detail",
                 severity="warning", swedish="redan har passerat", english="has passed")


def test_no_warning_for_future_activities_or_status_changes(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    plan = _plan(resources)
    plan["activity"].append(_new_activity(plan, NEXT_WEEK))
    plan["activity"][1]["detail"]["status"] = "cancelled"
    response = put(pk_client, plan, headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 200, response.text
    assert [i["severity"] for i in response.json()["issue"]] == ["information"]
    batch = pk_client.post("/fhir", json=_bundle("batch", _entry({**plan, "title": "Nytt namn"})))
    assert "outcome" not in batch.json()["entry"][0]["response"]


def test_a_new_goal_with_a_date_already_past_is_a_warning(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    goal = {k: v for k, v in deep(resources[2]).items() if k != "id"}
    goal["target"] = [{"dueDate": LAST_WEEK}]
    response = pk_client.post("/fhir/Goal", json=goal, headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 201, response.text
    assert_issue(response.json()["issue"], code="business-rule", expression="Goal.target[0].dueDate",
                 severity="warning", swedish="har redan passerat", english="has already passed")


def test_validate_reports_the_warning_and_the_refused_change(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    plan = _plan(resources)
    plan["activity"].append(_new_activity(plan, LAST_WEEK))
    response = pk_client.post(f"/fhir/CarePlan/{plan['id']}/$validate", params={"mode": "update"}, json=plan)
    assert response.status_code == 200, response.text
    assert_issue(response.json()["issue"], code="business-rule", expression="CarePlan.activity[4].detail",
                 severity="warning", swedish="redan har passerat", english="has passed")
    response = pk_client.post(f"/fhir/CarePlan/{plan['id']}/$validate", params={"mode": "update"},
                              json=_plan(resources, status="draft"))
    assert_issue(response.json()["issue"], code="business-rule", expression="CarePlan.status",
                 swedish="kan inte ändras till utkast (draft)", english="cannot become draft")
    assert len(read(pk_client, "CarePlan", plan["id"])["activity"]) == 4, "$validate stores nothing"


def test_a_provenance_entry_for_a_change_of_contact_is_the_one_recorded(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "active")
    team = deep(resources[1])
    old = members(team, codes.FAST_VARDKONTAKT)[-1]["member"]["reference"]
    unit = resources[-1]["author"]["reference"]
    new = next(f"PractitionerRole/{r['id']}" for r in generator().region.roles
               if r["organization"]["reference"] == unit and r["code"][0]["coding"][0]["code"] == "nurse"
               and f"PractitionerRole/{r['id']}" != old)
    team["participant"] = [p for p in team["participant"] if p["member"]["reference"] != old]
    team["participant"].append({"role": [{"coding": [{"system": codes.CARETEAM_ROLE,
                                                      "code": codes.FAST_VARDKONTAKT}]}],
                                "member": {"reference": new}, "period": {"start": TODAY.isoformat()}})
    response = pk_client.post("/fhir", json=_bundle(
        "transaction", _entry(team), _provenance_entry(resources, f"CareTeam/{team['id']}", "Patienten bad om byte")))
    assert response.status_code == 200, response.text
    [provenance] = search(pk_client, "Provenance", target=f"CareTeam/{team['id']}")
    assert provenance["reason"] == [{"text": "Patienten bad om byte"}]


# -- a closed agreement stays as it was closed ------------------------------------------------------


def test_a_closed_agreement_changes_only_its_activities_progress() -> None:
    closed = {"resourceType": "CarePlan", "status": "completed", "title": "Stöd hemma", "meta": {"versionId": "3"},
              "activity": [{"id": "a1", "detail": {"status": "scheduled", "description": "Hembesök"}}]}
    done = deep(closed)
    done["meta"] = {"versionId": "4"}
    done["activity"][0]["detail"]["status"] = "completed"
    done["activity"][0]["outcomeCodeableConcept"] = [{"text": "Genomfört"}]
    lifecycle.check_closed_unchanged(closed, done)
    lifecycle.check_closed_unchanged(closed, {**deep(closed), "status": "active"})  # reopening: check_transition's
    for changed in ({**deep(closed), "title": "Nytt"},
                    {**deep(closed), "activity": [{"id": "a1", "detail": {"status": "scheduled",
                                                                          "description": "Telefon"}}]},
                    {**deep(closed), "activity": [*deep(closed)["activity"], {"detail": {"status": "scheduled"}}]}):
        with pytest.raises(Conflict) as refusal:
            lifecycle.check_closed_unchanged(closed, changed)
        [issue] = refusal.value.issues
        assert refusal.value.status == 409 and issue.code == "business-rule" and issue.expression == ("CarePlan",)
        assert "Ett avslutat patientkontrakt (completed) kan inte ändras utom aktiviteternas utfall" in (
            issue.details_sv or "")
        assert "reopen it" in issue.diagnostics
    in_error = {**deep(closed), "status": "entered-in-error"}
    lifecycle.check_closed_unchanged(in_error, deep(in_error))
    with pytest.raises(Conflict):
        lifecycle.check_closed_unchanged(in_error, {**deep(in_error), "activity": done["activity"]})


@pytest.mark.parametrize("status", ["completed", "revoked"])
def test_a_closed_agreement_is_not_edited_by_put_or_transaction(pk_client: TestClient, status: str) -> None:
    resources = _stored(pk_client, status)
    plan = _plan(resources, title="Ändrad rubrik efter avslut")
    count = versions_stored(pk_client)
    refused(pk_client, put(pk_client, plan), count, status=409, code="business-rule", expression="CarePlan",
            swedish="kan inte ändras utom aktiviteternas utfall", english="cannot be changed")
    found = issues(pk_client.post("/fhir", json=_bundle("transaction", _entry(plan))), 409)
    assert_issue(found, code="business-rule", expression="Bundle.entry[0].resource",
                 swedish="Öppna det igen (active) med ett angivet skäl", english="cannot be changed")
    assert versions_stored(pk_client) == count
    assert read(pk_client, "CarePlan", plan["id"])["title"] == resources[-1]["title"]
    # The same body again is no change, and reopening with a reason may change it.
    assert put(pk_client, _plan(resources)).status_code == 200
    response = pk_client.post("/fhir", json=_bundle(
        "transaction", _entry(_reopened_team(resources)), _entry({**_reopened_plan(resources), "title": "Ny rubrik"}),
        _provenance_entry(resources, f"CarePlan/{plan['id']}")))
    assert response.status_code == 200, response.text
    assert read(pk_client, "CarePlan", plan["id"])["title"] == "Ny rubrik"


def test_a_closed_agreements_kept_activity_may_be_done_afterwards(pk_client: TestClient) -> None:
    resources = _stored(pk_client, "completed")
    plan = _plan(resources)
    if not plan.get("activity"):
        pytest.fail("the demo's completed agreement has no activity to finish")
    plan["activity"][0].setdefault("detail", {})["status"] = "completed"
    assert put(pk_client, plan).status_code == 200
    assert read(pk_client, "CarePlan", plan["id"])["activity"][0]["detail"]["status"] == "completed"
