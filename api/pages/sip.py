"""A SIP (samordnad individuell plan, HSL 2017:30 16 kap. 4 §, SoL 2001:453 2 kap. 7 §) on the
staff pages: the region's and the kommun's plan for one person, a CarePlan of profile pk-sip
that belongs to a Patientkontrakt (``partOf``).

The page shows the SIP's interventions with who does each (``activity.detail.performer``) and
for which huvudman (extension pk-sip-huvudman), who holds the overall responsibility (extension
pk-sip-overgripande-ansvar), and the Patientkontrakt it belongs to — or, when the unit may not
see that agreement (another provider's, without the patient's samtycke, or behind a spärr), that
blocked information exists and how to go on (``sharing.py``), never what it is. (What the
patient is shown of a SIP: ``sip_view.py``, whose codes this page shares.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages.common import Page, body, signed_in
from api.pages.labels import N_
from api.pages.session import STAFF
from api.pages.sharing import Sharing, load_sharing
from api.pages.sip_view import HUVUDMAN, HUVUDMAN_EXTENSION, RESPONSIBILITY_EXTENSION, SIP, is_sip
from api.pages.views import name_of
from patientkontrakt.domain import codes
from patientkontrakt.domain.sharing import ref_id
from patientkontrakt.fhir.errors import FhirError, NotFound
from patientkontrakt.fhir.requests import Preferences

router = APIRouter(include_in_schema=False)  # included by personal.py, under /personal
_PREFER = Preferences()
HUVUDMAN_LABELS = {"region": N_("Region"), "kommun": N_("Kommun"), "annan": N_("Other")}


@dataclass
class Intervention:
    kind_code: str
    kind: str
    description: str
    status: str
    huvudman: str
    performers: list[str]


@dataclass
class SipView:
    id: str
    title: str
    description: str
    status: str
    start: str
    author: str
    overall: str
    patient_id: str
    agreement_id: str
    agreement_title: str  # empty: the unit does not see the agreement
    interventions: list[Intervention] = field(default_factory=list)


def sip_search() -> list[tuple[str, str]]:
    """The search of the SIPs the unit sees, newest first, with their patients."""
    return [("category", f"{codes.CAREPLAN_CATEGORY}|{SIP}"), ("_include", "CarePlan:subject"),
            ("_sort", "-_lastUpdated"), ("_count", "50")]


def _code(concept: Any, system: str) -> str:
    for coding in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
        if coding.get("system") == system:
            return str(coding.get("code", ""))
    return ""


def _display(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    return next((str(c["display"]) for c in concept.get("coding") or [] if c.get("display")),
                str(concept.get("text", "")))


def _extension(element: dict[str, Any], url: str) -> str:
    return next((_code(e.get("valueCodeableConcept"), HUVUDMAN) for e in element.get("extension") or []
                 if e.get("url") == url), "")


async def _names(page: Page, plan: dict[str, Any]) -> dict[str, str]:
    """The names of the Organizations and PractitionerRoles the SIP names (the directory)."""
    service = page.request.app.state.service
    refs = [str(p.get("reference", "")) for a in plan.get("activity") or []
            for p in (a.get("detail") or {}).get("performer") or []]
    refs.append(str((plan.get("author") or {}).get("reference", "")))
    names: dict[str, str] = {}
    orgs = sorted({r.split("/")[1] for r in refs if r.startswith("Organization/")})
    roles = sorted({r.split("/")[1] for r in refs if r.startswith("PractitionerRole/")})
    if orgs:
        found = body(await service.search(page.access, "Organization", [("_id", ",".join(orgs))], _PREFER))
        names |= {f"Organization/{e['resource']['id']}": name_of(e["resource"]) for e in found.get("entry", [])}
    if roles:
        found = body(await service.search(page.access, "PractitionerRole", [
            ("_id", ",".join(roles)), ("_include", "PractitionerRole:practitioner")], _PREFER))
        people = {f"Practitioner/{e['resource']['id']}": name_of(e["resource"]) for e in found.get("entry", [])
                  if e["resource"]["resourceType"] == "Practitioner"}
        for entry in found.get("entry", []):
            role = entry["resource"]
            if role["resourceType"] == "PractitionerRole":
                who = people.get(str((role.get("practitioner") or {}).get("reference")), "")
                title = str(((role.get("code") or [{}])[0]).get("text", ""))
                names[f"PractitionerRole/{role['id']}"] = ", ".join(p for p in (who, title) if p)
    return names


def staff_view(plan: dict[str, Any], names: dict[str, str], agreement: dict[str, Any] | None) -> SipView:
    interventions = []
    for activity in plan.get("activity") or []:
        detail = activity.get("detail") or {}
        interventions.append(Intervention(
            kind_code=_code(detail.get("code"), codes.ACTIVITY_KIND), kind=_display(detail.get("code")),
            description=str(detail.get("description", "")), status=str(detail.get("status", "")),
            huvudman=_extension(activity, HUVUDMAN_EXTENSION),
            performers=[names.get(str(p.get("reference")), str(p.get("display", "")))
                        for p in detail.get("performer") or []]))
    part_of = (plan.get("partOf") or [{}])[0]
    author = str((plan.get("author") or {}).get("reference", ""))
    return SipView(
        id=plan["id"], title=str(plan.get("title", "")), description=str(plan.get("description", "")),
        status=str(plan.get("status", "")), start=str((plan.get("period") or {}).get("start", ""))[:10],
        author=names.get(author, str((plan.get("author") or {}).get("display", ""))),
        overall=_extension(plan, RESPONSIBILITY_EXTENSION), patient_id=ref_id(plan.get("subject"), "Patient") or "",
        agreement_id=ref_id(part_of, "CarePlan") or "",
        agreement_title=str((agreement or {}).get("title", "")) if agreement else "",
        interventions=interventions)


@router.get("/sip/{plan_id}")
async def sip_page(request: Request, plan_id: str) -> Response:
    async def run(page: Page) -> Response:
        service = page.request.app.state.service
        plan = body(await service.read(page.access, "CarePlan", plan_id))
        if not is_sip(plan):
            return page.redirect(f"/personal/avtal/{plan_id}")
        patient_id = ref_id(plan.get("subject"), "Patient")
        if patient_id is None:
            raise NotFound(f"CarePlan/{plan_id} names no patient")
        agreement_id = ref_id((plan.get("partOf") or [{}])[0], "CarePlan")
        agreement: dict[str, Any] | None = None
        if agreement_id:
            try:
                agreement = body(await service.read(page.access, "CarePlan", agreement_id))
            except FhirError:
                agreement = None  # not shown to the unit: the notices below say so
        patient = body(await service.read(page.access, "Patient", patient_id))
        sharing: Sharing = await load_sharing(page, patient, f"/personal/sip/{plan_id}")
        view = staff_view(plan, await _names(page, plan), agreement)
        return page.render("personal/sip.html", {"p": view, "s": sharing, "huvudman": HUVUDMAN_LABELS,
                                                 "saved": page.request.query_params.get("sparat")})
    return await signed_in(request, STAFF, run)
