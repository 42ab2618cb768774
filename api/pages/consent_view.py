"""What the patient is shown of their samtycken and spärrar (``/mitt/sparrar``), read from their
Consents (profiles pk-samtycke and pk-sparr, ``patientkontrakt/domain/sharing.py``).

Plain values for the template: each Consent's kind, the care units or providers it is about
(their names), its period, and who recorded it and when; those in force apart from those that
were revoked (``inactive``) or whose period has ended ("Tidigare"). A Consent still a draft or a
proposal, one refused (``rejected``) or entered in error was never in force and is not shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from patientkontrakt.domain import sharing
from patientkontrakt.fhir.dates import DateFormatError, now_utc, parse_range

SHOWN_STATES = ("active", "inactive")


@dataclass
class ConsentView:
    id: str
    kind: str  # samtycke | inre-sparr | yttre-sparr
    status: str  # active | inactive (revoked)
    about: list[str]  # a samtycke's recipients (IRCP), a spärr's blocked units or providers (CST)
    covers: list[str] = field(default_factory=list)  # a samtycke's custodians (CST): whose data; none = all
    start: str = ""
    end: str = ""
    recorded_by: str = ""  # the unit that recorded it (Consent.organization)
    recorded: str = ""  # Consent.dateTime
    ended: bool = False  # its period is over

    @property
    def in_force(self) -> bool:
        return self.status == "active" and not self.ended

    @property
    def samtycke(self) -> bool:
        return self.kind == sharing.SAMTYCKE


@dataclass
class Consents:
    samtycken: list[ConsentView]
    sparrar: list[ConsentView]
    earlier: list[ConsentView]

    @property
    def empty(self) -> bool:
        return not (self.samtycken or self.sparrar or self.earlier)


def organizations_named(consents: list[dict[str, Any]]) -> set[str]:
    """The Organization ids the Consents name: their actors and the units that recorded them."""
    ids: set[str] = set()
    for consent in consents:
        ids.update(sharing.actors(consent, sharing.RECIPIENT))
        ids.update(sharing.actors(consent, sharing.CUSTODIAN))
        ids.update(i for o in consent.get("organization") or [] if (i := sharing.ref_id(o, "Organization")))
    return ids


def consent_views(consents: list[dict[str, Any]], names: dict[str, str]) -> Consents:
    """The patient's Consents as the page shows them; ``names``: Organization id -> name."""
    views = [view for consent in consents if (view := _view(consent, names)) is not None]
    views.sort(key=lambda v: (v.recorded, v.start), reverse=True)
    current = [v for v in views if v.in_force]
    return Consents(samtycken=[v for v in current if v.samtycke],
                    sparrar=[v for v in current if not v.samtycke],
                    earlier=[v for v in views if not v.in_force])


def _view(consent: dict[str, Any], names: dict[str, str]) -> ConsentView | None:
    kind = sharing.consent_kind(consent)
    if kind is None or consent.get("status") not in SHOWN_STATES:
        return None
    provision = consent.get("provision") if isinstance(consent.get("provision"), dict) else {}
    period = (provision or {}).get("period") or {}
    role = sharing.RECIPIENT if kind == sharing.SAMTYCKE else sharing.CUSTODIAN
    references = [a.get("reference") for a in (provision or {}).get("actor") or [] if isinstance(a, dict)]
    references += list(consent.get("organization") or [])
    # what the references say of the name, where the Organization itself is not to be read
    known = {i: str(r["display"]) for r in references
             if (i := sharing.ref_id(r, "Organization")) and isinstance(r, dict) and r.get("display")}
    known.update(names)
    recorder = sharing.ref_id(next(iter(consent.get("organization") or []), None), "Organization")
    return ConsentView(
        id=str(consent.get("id", "")), kind=kind, status=str(consent["status"]),
        about=_names(sharing.actors(consent, role), known),
        covers=_names(sharing.actors(consent, sharing.CUSTODIAN), known) if kind == sharing.SAMTYCKE else [],
        start=_day(period.get("start")), end=_day(period.get("end")),
        recorded_by=known.get(recorder or "", ""),
        recorded=str(consent.get("dateTime", "")), ended=_over(period.get("end")),
    )


def _names(org_ids: list[str], known: dict[str, str]) -> list[str]:
    return [known[o] for o in org_ids if known.get(o)]


def _day(value: Any) -> str:
    return value[:10] if isinstance(value, str) else ""


def _over(end: Any) -> bool:
    """Whether a period's end has passed (the end of its last day, for a date)."""
    if not isinstance(end, str):
        return False
    try:
        return parse_range(end)[1] < now_utc()
    except DateFormatError:
        return False
