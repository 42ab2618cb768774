"""Samtycke and spärr on the staff pages, and what staff are told is not shown to them.

A patient's samtycke (consent to read other care providers' data, lag 2022:913 om sammanhållen
vård- och omsorgsdokumentation 3 kap. 1 §) and spärr (2 kap. 3 §; inre spärr PDL 4 kap. 4 §)
are FHIR Consents (profiles pk-samtycke and pk-sparr, ``domain/sharing.py``), recorded and
revoked here through the FHIR core with the staff member's access, like every other write of
the pages. The core decides what the unit may record (a samtycke for the unit itself, a spärr
of its own provider's data) and sets the recording unit; the page offers only what it allows.

Where the unit's part in the patient's care reaches information it is not shown, the pages
say *that* it exists (``Access.blocked``, the texts of ``sharing.BLOCKED_NOTICES``), never what
or where, and how to go on: record the patient's samtycke or, when the patient cannot consent
and the care cannot wait, emergency access (``emergency.py``).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages import forms
from api.pages.common import Bilingual, Page, bilingual, body, signed_in
from api.pages.labels import N_
from api.pages.lifecycle import core_message
from api.pages.session import STAFF
from api.pages.views import name_of, person_number
from patientkontrakt.domain import sharing
from patientkontrakt.domain.codes import CANONICAL, CARE_UNIT_TYPE, CAREPLAN_CATEGORY, PATIENTKONTRAKT
from patientkontrakt.fhir.errors import FhirError, NotFound, PreconditionFailed
from patientkontrakt.fhir.requests import Preferences
from patientkontrakt.security.identity import SOCIAL_CARE

router = APIRouter(include_in_schema=False)  # included by personal.py, under /personal
_PREFER = Preferences()
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
KIND_LABELS = {sharing.SAMTYCKE: N_("Samtycke"), sharing.INRE_SPARR: N_("Inre spärr"),
               sharing.YTTRE_SPARR: N_("Yttre spärr")}
KIND_MEANING = {
    sharing.SAMTYCKE: N_("The unit may read what other care providers have documented about the patient."),
    sharing.INRE_SPARR: N_("The unit's information is hidden from every other care unit."),
    sharing.YTTRE_SPARR: N_("The unit's information is hidden from other care providers."),
}
_BACK = re.compile(r"/personal/(avtal|sip)/[A-Za-z0-9\-.]{1,64}")


@dataclass
class ConsentView:
    id: str
    version: str
    kind: str
    status: str
    start: str
    end: str
    recorded_by: str
    recorded_by_id: str
    actors: list[str]
    revocable: bool = False  # recorded by the staff member's own provider (another's may not be changed)

    @property
    def in_force(self) -> bool:
        if self.status != "active":
            return False
        return not self.end or self.end >= datetime.date.today().isoformat()


@dataclass
class Sharing:
    """What the section "Samtycke och spärr" shows for one patient at the signed-in unit."""

    patient_id: str
    patient_name: str
    personnummer: str
    notices: list[dict[str, Any]]
    consents: list[ConsentView]
    units: list[dict[str, str]]  # the care units of the staff member's own provider
    own_unit: str
    own_unit_name: str
    back: str
    emergency_allowed: bool
    errors: dict[str, Any] = field(default_factory=dict)
    general: list[Any] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)
    kind_labels: ClassVar[dict[str, str]] = KIND_LABELS
    kind_meaning: ClassVar[dict[str, str]] = KIND_MEANING

    @property
    def blocked(self) -> set[str]:
        return {n["kind"] for n in self.notices}

    @property
    def in_force(self) -> list[ConsentView]:
        return [c for c in self.consents if c.in_force]

    @property
    def ended(self) -> list[ConsentView]:
        return [c for c in self.consents if not c.in_force]


async def blocked_notices(page: Page, patient_id: str) -> list[dict[str, Any]]:
    """What the unit is told it is not shown of the patient: ``{"kind", "text"}`` for a spärr
    and for a missing samtycke (``Access.blocked``), never what or where."""
    async with page.request.app.state.service.store.reading(page.access) as unit:
        kinds = await page.access.blocked(unit, patient_id)
    return [{"kind": kind, "text": bilingual(sharing.BLOCKED_NOTICES[kind][1], sharing.BLOCKED_NOTICES[kind][0])}
            for kind in ("sparr", "samtycke") if kind in kinds]


async def _organizations(page: Page) -> dict[str, dict[str, Any]]:
    result = body(await page.request.app.state.service.search(
        page.access, "Organization", [("_count", "500"), ("_sort", "name")], _PREFER))
    return {e["resource"]["id"]: e["resource"] for e in result.get("entry", [])}


def _provider_of(orgs: dict[str, dict[str, Any]], org_id: str) -> str:
    """The top of ``org_id``'s ``partOf`` chain: its care provider's Organization id."""
    current, seen = org_id, set()
    while current in orgs and current not in seen:
        seen.add(current)
        parent = sharing.ref_id(orgs[current].get("partOf"), "Organization")
        if parent is None:
            return current
        current = parent
    return current


def _consent_view(consent: dict[str, Any], orgs: dict[str, dict[str, Any]]) -> ConsentView:
    kind = sharing.consent_kind(consent) or ""
    role = sharing.RECIPIENT if kind == sharing.SAMTYCKE else sharing.CUSTODIAN
    provision = consent.get("provision") or {}
    period = provision.get("period") or {}
    recorder = (consent.get("organization") or [{}])[0]
    recorder_id = sharing.ref_id(recorder, "Organization") or ""
    return ConsentView(
        id=consent["id"], version=str((consent.get("meta") or {}).get("versionId", "")), kind=kind,
        status=str(consent.get("status", "")), start=str(period.get("start", ""))[:10],
        end=str(period.get("end", ""))[:10],
        recorded_by=name_of(orgs.get(recorder_id)) or str(recorder.get("display", "")), recorded_by_id=recorder_id,
        actors=[name_of(orgs.get(org)) or org for org in sharing.actors(consent, role)])


async def blocked_of(page: Page, patient_ids: set[str]) -> dict[str, frozenset[str]]:
    """``Access.blocked`` for each of a list's patients, in one unit of work."""
    found: dict[str, frozenset[str]] = {}
    async with page.request.app.state.service.store.reading(page.access) as unit:
        for patient_id in sorted(p for p in patient_ids if p):
            found[patient_id] = await page.access.blocked(unit, patient_id)
    return found


async def load_sharing(page: Page, patient: dict[str, Any], back: str) -> Sharing:
    """The section for ``patient`` (a Patient, or ``{"id", "name", "personnummer"}`` of one
    already shown): the notices, the Consents the unit sees, the forms' choices; ``back``: the
    page the forms return to (an agreement or a SIP; else the patient's own page of them)."""
    orgs = await _organizations(page)
    own = getattr(page.access, "care_unit_org", "")
    provider = _provider_of(orgs, own)
    units = [{"id": o["id"], "name": name_of(o)} for o in orgs.values()
             if o["id"] != provider and _provider_of(orgs, o["id"]) == provider]
    found = body(await page.request.app.state.service.search(
        page.access, "Consent", [("patient", f"Patient/{patient['id']}"), ("_count", "100")], _PREFER))
    consents = [_consent_view(e["resource"], orgs) for e in found.get("entry", [])
                if e["resource"].get("resourceType") == "Consent" and sharing.consent_kind(e["resource"])]
    for consent in consents:
        consent.revocable = consent.recorded_by_id == provider or consent.recorded_by_id in {u["id"] for u in units}
    consents.sort(key=lambda c: (not c.in_force, c.start))
    unit_types = {c.get("code") for t in orgs.get(own, {}).get("type", []) for c in t.get("coding", [])
                  if c.get("system") == CARE_UNIT_TYPE}
    return Sharing(
        patient_id=patient["id"], patient_name=name_of(patient),
        personnummer=str(patient.get("personnummer") or person_number(patient)),
        notices=await blocked_notices(page, patient["id"]), consents=consents,
        units=sorted(units, key=lambda u: u["name"]), own_unit=own, own_unit_name=name_of(orgs.get(own)),
        back=back if _BACK.fullmatch(back) else f"/personal/patient/{patient['id']}/samtycke",
        emergency_allowed=not unit_types & SOCIAL_CARE)


async def _patient(page: Page, patient_id: str) -> dict[str, Any]:
    """The Patient, read with the unit's access: an error page (404) when it may not see them."""
    return body(await page.request.app.state.service.read(page.access, "Patient", patient_id))


def consent_resource(patient_id: str, kind: str, actor: str, end: str, today: datetime.date) -> dict[str, Any]:
    """A pk-samtycke (``actor``: the recipient, IRCP) or pk-sparr (``actor``: the unit whose
    information is blocked, CST) that the patient gives now; the server records the unit that
    records it (``Consent.organization``)."""
    permit = kind == sharing.SAMTYCKE
    period = {"start": today.isoformat(), **({"end": end} if end else {})}
    role = sharing.RECIPIENT if permit else sharing.CUSTODIAN
    return {
        "resourceType": "Consent",
        "meta": {"profile": [f"{CANONICAL}/StructureDefinition/{'pk-samtycke' if permit else 'pk-sparr'}"]},
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": sharing.CONSENT_CATEGORY, "code": kind}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "performer": [{"reference": f"Patient/{patient_id}"}],
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN" if permit else "OPTOUT"}]},
        "provision": {"type": "permit" if permit else "deny", "period": period,
                      "actor": [{"role": {"coding": [{"system": sharing.PARTICIPATION, "code": role}]},
                                 "reference": {"reference": f"Organization/{actor}"}}]},
    }


def _render(page: Page, view: Sharing, status: int = 200, plans: list[dict[str, str]] | None = None) -> Response:
    return page.render("personal/consents.html", {"s": view, "plans": plans or []}, status_code=status)


async def _plans(page: Page, patient_id: str) -> list[dict[str, str]]:
    """The patient's agreements and SIPs that the unit sees, newest first."""
    found = body(await page.request.app.state.service.search(page.access, "CarePlan", [
        ("subject", f"Patient/{patient_id}"), ("_sort", "-_lastUpdated"), ("_count", "20")], _PREFER))
    plans = []
    for entry in found.get("entry", []):
        plan = entry["resource"]
        kinds = {c.get("code") for concept in plan.get("category") or [] for c in concept.get("coding") or []
                 if c.get("system") == CAREPLAN_CATEGORY}
        if kinds & {PATIENTKONTRAKT, "sip"}:
            place = "sip" if "sip" in kinds else "avtal"
            plans.append({"href": f"/personal/{place}/{plan['id']}", "title": str(plan.get("title", "")),
                          "status": str(plan.get("status", ""))})
    return plans


def _back(view: Sharing) -> str:
    return f"{view.back}?sparat=1"


# -- the patient's samtycke and spärr ---------------------------------------------------------------


@router.get("/patient/{patient_id}/samtycke")
async def consents_page(request: Request, patient_id: str) -> Response:
    async def run(page: Page) -> Response:
        view = await load_sharing(page, await _patient(page, patient_id), request.query_params.get("tillbaka", ""))
        return _render(page, view, plans=await _plans(page, patient_id))
    return await signed_in(request, STAFF, run)


@router.post("/patient/{patient_id}/samtycke")
async def record(request: Request, patient_id: str) -> Response:
    """Record a samtycke (for the unit itself) or a spärr (of a unit of the own provider)."""
    async def run(page: Page) -> Response:
        data = await page.form()
        view = await load_sharing(page, await _patient(page, patient_id), forms.text(data, "tillbaka"))
        form = {"kind": forms.text(data, "kind"), "custodian": forms.text(data, "custodian"),
                "end": forms.text(data, "end")}
        view.form = form
        errors: dict[str, Any] = {}
        if form["kind"] not in sharing.KINDS:
            errors["kind"] = N_("Choose samtycke, inre spärr or yttre spärr.")
        elif form["kind"] != sharing.SAMTYCKE and form["custodian"] not in {u["id"] for u in view.units}:
            errors["custodian"] = N_("Choose the care unit of your own care provider whose information is blocked.")
        forms.check_date(form, "end", errors, N_("Write the end date as YYYY-MM-DD, or leave it empty."))
        if "end" not in errors and form["end"] and form["end"] < datetime.date.today().isoformat():
            errors["end"] = N_("The end date has passed.")
        if errors:
            view.errors = errors
            return _render(page, view, 422)
        actor = view.own_unit if form["kind"] == sharing.SAMTYCKE else form["custodian"]
        resource = consent_resource(patient_id, form["kind"], actor, form["end"], datetime.date.today())
        try:
            await page.request.app.state.service.create(page.access, "Consent", resource, if_none_exist=None,
                                                        prefer=_PREFER)
        except FhirError as error:
            view.general = _refusal(error)
            return _render(page, view, 403 if error.status == 403 else 422)
        return page.redirect(_back(view))
    return await signed_in(request, STAFF, run)


@router.post("/patient/{patient_id}/samtycke/{consent_id}/aterkalla")
async def revoke(request: Request, patient_id: str, consent_id: str) -> Response:
    """Revoke (status ``inactive``: a Consent is never deleted, so its history stays), with the
    version the page showed in ``If-Match``: a samtycke or spärr changed meanwhile is not
    overwritten."""
    async def run(page: Page) -> Response:
        data = await page.form()
        view = await load_sharing(page, await _patient(page, patient_id), forms.text(data, "tillbaka"))
        service = page.request.app.state.service
        current = body(await service.read(page.access, "Consent", consent_id))
        if sharing.ref_id(current.get("patient"), "Patient") != patient_id:
            raise NotFound(f"Consent/{consent_id} is not known")
        version = forms.text(data, "version") or str((current.get("meta") or {}).get("versionId", ""))
        try:
            await service.update(page.access, "Consent", consent_id, {**current, "status": "inactive"},
                                 if_match=f'W/"{version}"', prefer=_PREFER)
        except PreconditionFailed:
            view.general = [N_("Someone else changed this samtycke or spärr since you opened the page. "
                               "Check it below and try again.")]
            return _render(page, view, 409)
        except FhirError as error:
            view.general = _refusal(error)
            return _render(page, view, 403 if error.status == 403 else 422)
        return page.redirect(_back(view))
    return await signed_in(request, STAFF, run)


def _refusal(error: FhirError) -> list[Bilingual | str]:
    if error.status == 403:
        return [bilingual(error.details_sv or "Du har inte behörighet till detta.", error.diagnostics)]
    return list(core_message(error))
