"""What the staff forms choose from: the unit's staff, the region's other staff and care units,
and the kinds of activity, read through the FHIR core with the signed-in staff member's access."""

from __future__ import annotations

from typing import Any

from api.pages.common import Page, body
from api.pages.views import name_of
from api.templating import language_of
from patientkontrakt.domain import codes
from patientkontrakt.fhir.requests import Preferences

_PREFER = Preferences()


async def staff_directory(page: Page) -> dict[str, Any]:
    """``own_staff`` (the unit's PractitionerRoles, by name) and ``other_staff`` (by unit, then
    name), each ``{id, name, title, unit, doctor, org}``; ``units`` (the region's care units),
    ``care_unit_org`` (the signed-in unit) and ``primary_care`` (the unit is a vårdcentral)."""
    service = page.request.app.state.service
    care_unit_org = getattr(page.access, "care_unit_org", "")
    roles = body(await service.search(page.access, "PractitionerRole", [
        ("active", "true"), ("_include", "PractitionerRole:practitioner"),
        ("_include", "PractitionerRole:organization"), ("_count", "500")], _PREFER))
    resources = {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
                 for e in roles.get("entry", [])}
    own, others = [], []
    for role in (r for r in resources.values() if r["resourceType"] == "PractitionerRole"):
        practitioner = resources.get(str((role.get("practitioner") or {}).get("reference")), {})
        org_ref = str((role.get("organization") or {}).get("reference"))
        org = resources.get(org_ref, {})
        concept = (role.get("code") or [{}])[0]
        code = (concept.get("coding") or [{}])[0].get("code", "")
        entry = {"id": role["id"], "name": name_of(practitioner), "title": concept.get("text", ""),
                 "unit": name_of(org), "doctor": code == "doctor", "org": org_ref.split("/")[-1]}
        (own if org_ref == f"Organization/{care_unit_org}" else others).append(entry)
    orgs = body(await service.search(page.access, "Organization", [("_count", "500"), ("_sort", "name")], _PREFER))
    units = [{"id": e["resource"]["id"], "name": name_of(e["resource"])} for e in orgs.get("entry", [])
             if any(c.get("system") == codes.CARE_UNIT_TYPE for t in e["resource"].get("type", [])
                    for c in t.get("coding", []))]
    unit = next((e["resource"] for e in orgs.get("entry", []) if e["resource"]["id"] == care_unit_org), {})
    primary_care = any(c.get("code") == "vardcentral" for t in unit.get("type", []) for c in t.get("coding", []))
    key = lambda r: (r["name"], r["unit"])  # noqa: E731
    return {"own_staff": sorted(own, key=key), "other_staff": sorted(others, key=lambda r: (r["unit"], r["name"])),
            "units": units, "care_unit_org": care_unit_org, "primary_care": primary_care}


def activity_kinds(page: Page) -> list[tuple[str, str]]:
    """The kinds of activity (code, label in the page's language), by label."""
    labels = page.request.app.state.service.defs.code_displays(codes.ACTIVITY_KIND, language_of(page.request))
    return sorted(labels.items(), key=lambda kc: kc[1])
