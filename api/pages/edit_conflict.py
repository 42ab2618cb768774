"""An edit that came too late: the agreement changed since the form was opened (its ``If-Match``
failed, 412), so nothing was saved. The edit page shows what the staff member typed again, with
who changed the agreement, when (from the unit's access log, when its scopes may read it), and
which fields differ between the version the form was opened at and the current one.
"""

from __future__ import annotations

from typing import Any

from api.pages.common import Page, body
from api.pages.views import AgreementView
from patientkontrakt.fhir.errors import FhirError

COMPARED = ("title", "description", "status")  # and the end date


def changed_fields(base: dict[str, Any], current: AgreementView) -> list[tuple[str, str, str]]:
    """(field, before, now) for each field of the edit form that differs from ``base``."""
    changed = []
    for key in COMPARED:
        before, after = str(base.get(key, "")), str(current.plan.get(key, ""))
        if before != after:
            changed.append((key, before, after))
    base_end = str((base.get("period") or {}).get("end", ""))
    if base_end != current.end:
        changed.append(("end", base_end, current.end))
    return changed


def last_writer(log: dict[str, Any]) -> dict[str, str] | None:
    """Who wrote last, for which unit and when: the newest successful update or transaction of
    an access log Bundle (newest first)."""
    for entry in log.get("entry", []):
        event = entry["resource"]
        subtypes = {c.get("code") for c in event.get("subtype", [])}
        if event.get("outcome") == "0" and subtypes & {"update", "transaction"}:
            agents = event.get("agent", [])
            return {"name": agents[0]["who"].get("display", agents[0]["who"]["identifier"]["value"]),
                    "role": (agents[0].get("role") or [{}])[0].get("text", ""),
                    "unit": next((a["who"].get("display", "") for a in agents[1:]
                                  if a.get("type", {}).get("text") == "vårdenhet"), ""),
                    "when": event.get("recorded", "")[:16].replace("T", " ")}
    return None


async def describe_conflict(page: Page, plan_id: str, base_version: str, current: AgreementView) -> dict[str, Any]:
    """Who changed the agreement since ``base_version``, when, and what (the fields that differ)."""
    service = page.request.app.state.service
    try:
        base = body(await service.vread(page.access, "CarePlan", plan_id, base_version))
    except FhirError:
        base = {}
    try:
        log = body(await page.request.app.state.audit_events.search(
            page.access, [("entity", f"CarePlan/{plan_id}"), ("_count", "20")]))
        who = last_writer(log)
    except FhirError:
        who = None  # the unit's log is not readable with these scopes: say only what changed
    return {"who": who, "changed": changed_fields(base, current), "version": current.version}
