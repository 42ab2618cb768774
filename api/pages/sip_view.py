"""What the patient is shown of a SIP (samordnad individuell plan, profile pk-sip): the plan the
region and the kommun made with the patient, part of their Patientkontrakt (``CarePlan.partOf``).

Its interventions are read like the agreement's activities (``views.agreement_view``), each
with the organisations that do it (``detail.performer``) and the huvudman behind it (extension pk-sip-huvudman:
region, kommun or another), and which of region or kommun holds the overall responsibility
(extension pk-sip-overgripande-ansvar).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.pages.labels import N_
from api.pages.views import ActivityView, agreement_view
from patientkontrakt.domain import sharing
from patientkontrakt.domain.codes import CANONICAL, CAREPLAN_CATEGORY

SIP = "sip"
HUVUDMAN = f"{CANONICAL}/CodeSystem/pk-huvudman"
HUVUDMAN_EXTENSION = f"{CANONICAL}/StructureDefinition/pk-sip-huvudman"
RESPONSIBILITY_EXTENSION = f"{CANONICAL}/StructureDefinition/pk-sip-overgripande-ansvar"
OPEN_STATES = ("active", "on-hold")
# Who does an intervention, as the patient reads it (pk-huvudman codes).
HUVUDMAN_LABEL = {"region": N_("The region"), "kommun": N_("The kommun"), "annan": N_("Other")}
# An intervention's detail.status, for one planned without a time.
STATE = {"not-started": N_("Planned"), "scheduled": N_("Planned"), "in-progress": N_("Ongoing"),
         "on-hold": N_("On hold"), "completed": N_("Completed")}
RESPONSIBILITY = {
    "region": N_("The region has the overall responsibility for your SIP."),
    "kommun": N_("The kommun has the overall responsibility for your SIP."),
}


@dataclass
class Intervention:
    activity: ActivityView
    huvudman: str  # a pk-huvudman code, or ""

    @property
    def label(self) -> str:
        """The huvudman in words (a message id), or ""."""
        return HUVUDMAN_LABEL.get(self.huvudman, "")

    @property
    def state(self) -> str:
        """Where the intervention stands (a message id): planned, ongoing, on hold or done."""
        return STATE.get(self.activity.status, N_("Time not set"))


@dataclass
class SipView:
    id: str
    part_of: list[str]  # ids of the agreements it belongs to
    title: str
    description: str
    author: str
    responsible: str  # region | kommun | ""
    interventions: list[Intervention]

    @property
    def responsibility(self) -> str:
        """Who holds the overall responsibility, in a sentence (a message id), or ""."""
        return RESPONSIBILITY.get(self.responsible, "")


def is_sip(plan: dict[str, Any]) -> bool:
    return any(c.get("system") == CAREPLAN_CATEGORY and c.get("code") == SIP
               for concept in plan.get("category") or [] if isinstance(concept, dict)
               for c in concept.get("coding") or [] if isinstance(c, dict))


def organizations_named(plans: list[dict[str, Any]]) -> set[str]:
    """The Organization ids the SIPs name: their authors and each intervention's performers."""
    ids = {i for plan in plans if (i := sharing.ref_id(plan.get("author"), "Organization"))}
    for plan in plans:
        for activity in plan.get("activity") or []:
            for performer in (activity.get("detail") or {}).get("performer") or []:
                if org := sharing.ref_id(performer, "Organization"):
                    ids.add(org)
    return ids


def sip_view(plan: dict[str, Any], organizations: list[dict[str, Any]]) -> SipView | None:
    """The SIP ``plan`` as the page shows it; ``organizations``: those it names that the patient may read."""
    bundle = {"entry": [{"resource": r} for r in (plan, *organizations)]}
    view = agreement_view(bundle, plan.get("id"))
    if view is None:
        return None
    activities = plan.get("activity") or []
    interventions = []
    for activity in view.activities:
        if activity.cancelled:
            continue
        source = activities[activity.index] if 0 <= activity.index < len(activities) else {}
        interventions.append(Intervention(activity=activity, huvudman=_code(source, HUVUDMAN_EXTENSION)))
    return SipView(
        id=str(plan.get("id", "")), title=str(plan.get("title", "")), description=str(plan.get("description", "")),
        part_of=[i for p in plan.get("partOf") or [] if (i := sharing.ref_id(p, "CarePlan"))],
        author=view.author, responsible=_code(plan, RESPONSIBILITY_EXTENSION), interventions=interventions,
    )


def _code(element: dict[str, Any], url: str) -> str:
    """The pk-huvudman code of ``element``'s extension ``url``."""
    for extension in element.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == url:
            for coding in (extension.get("valueCodeableConcept") or {}).get("coding") or []:
                if coding.get("system") == HUVUDMAN and coding.get("code"):
                    return str(coding["code"])
    return ""
