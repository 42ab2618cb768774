"""A small, realistic and plainly fictional Swedish region, for demos and the benchmark.

``Region Exempel`` has three vårdcentraler and a hospital clinic; two kommuner run home care;
and *Ängens vårdcentral* belongs to a private vårdgivare of its own, *Läkarhuset Ängen AB*. Each
vårdgivare (and kommun) is an Organization without ``partOf``; its units point to it with
``partOf``, and their HSA-ids are of its organisationsnummer.
Staff have HSA-ids and commissions (PractitionerRole) at their units; patients have
personnummer that are valid in form (correct check digit, real dates) and are marked as test
data: every resource carries the HL7 ``HTEST`` tag and the names are invented. Skatteverket's
list of official test personnummer is not available through the package registries this
project may use, so the numbers are generated.

Agreements come in every state (draft, active, on hold, completed, revoked), with a CareTeam
(fast vårdkontakt, fast läkarkontakt at the vårdcentral, a kommun contact), goals (one stated by
the patient), and planned activities across region, hospital and kommun, past and upcoming.
Some agreements have changed fast vårdkontakt, so the history of contacts shows.

Sharing across care providers (issue 14; ``DemoGenerator.sharing``). Every third agreement that
is active has a SIP (``demo-sip-<key>``, category ``sip``, ``partOf`` the agreement) written by
the kommun's hemsjukvård (Exempelstad) or hemtjänst (Sjövik), with the patient's samtycke
recorded by that unit (``demo-consent-<key>-1``: IRCP the kommun unit, CST the region's
vårdgivare) in its ``supportingInfo``. Spärrar are recorded at the vårdcentral and block its part
(CST the vårdcentral unit). Which numbers have what is the same for
every seed (but an inre spärr only where the vårdcentral is the region's, beside its hospital
clinic); the units below are those of seed 1 (the tests, ``make run``). Patients are
``demo-pat-<key>``, agreements ``demo-plan-<key>``, ``<key>`` the number in six digits:

=====  ==================  =======================================================================
 no.   vårdcentral         sharing
=====  ==================  =======================================================================
  0    Ekdalen             SIP by Hemsjukvården Exempelstad (overall: kommun), samtycke active
  1    Ängen (private)     none
  3    Björkbacken         SIP by Hemtjänsten Sjövik (overall: region), samtycke active, and a
                           yttre spärr on Björkbacken's part (``demo-consent-000003-2``)
  9    Strandvägen         SIP *draft* by Hemsjukvården Exempelstad, samtycke only *proposed*
                           (asked for, not given): the kommun does not yet see the region's part
 11    Ekdalen             inre spärr on Ekdalen's part (``demo-consent-000011-1``): hidden from
                           the hospital clinic, of the same vårdgivare
=====  ==================  =======================================================================

and past the first 16: SIPs with an active samtycke 18, 24, 27, 42, 48 (27 also a yttre spärr),
draft with a proposed samtycke 33, inre spärr 35; at Ängens vårdcentral 17, 21, 25, 41, 45.

Everything is deterministic for a seed and ``today``; ids are stable, so loading twice
changes nothing.

Its length (over 400 lines) is the demo region's data (units, staff, agreement templates, the
sharing between providers) beside the generator that uses it; nothing in the service imports it
but the loader.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from stdnum import luhn

from patientkontrakt.domain import codes
from patientkontrakt.domain.contact_paths import (
    DAYS,
    Hours,
    Phone,
    PostalAddress,
    available_time,
    with_contact_details,
)
from patientkontrakt.domain.identifiers import HSA_ID, PERSONNUMMER
from patientkontrakt.fhir.access import INTERNAL
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.requests import Preferences

FIRST_NAMES_F = ("Anna", "Maria", "Karin", "Kerstin", "Ingrid", "Margareta", "Birgitta", "Elsa", "Astrid", "Sigrid",
                 "Gunilla", "Eva", "Britt", "Ulla", "Agneta", "Marianne", "Lena", "Inger", "Solveig", "Märta")
FIRST_NAMES_M = ("Lars", "Karl", "Erik", "Anders", "Johan", "Per", "Nils", "Gunnar", "Sven", "Bengt",
                 "Åke", "Göran", "Olof", "Stig", "Rolf", "Lennart", "Bertil", "Håkan", "Ingvar", "Torsten")
FAMILY_NAMES = ("Testsson", "Exempelsson", "Provberg", "Demodotter", "Fiktivsson", "Påhittad", "Testlund",
                "Låtsasberg", "Prövström", "Exempeldahl")

GOALS_PATIENT = (
    "Kunna gå till affären själv",
    "Sova bättre på nätterna",
    "Träffa barnbarnen varje vecka",
    "Klara trapporna hemma",
    "Veta vem jag ska ringa när jag blir sämre",
    "Slippa åka till akuten",
)
GOALS_CARE = (
    ("Stabilt blodsocker, HbA1c under 60", "Medicinsk uppföljning"),
    ("Färre sjukhusinläggningar för hjärtsvikt", "Hjärtsviktsuppföljning"),
    ("Säker läkemedelsanvändning", "Läkemedelsgenomgång"),
    ("Bibehållen rörlighet i hemmet", "Rehabilitering"),
)
ACTIVITIES = (
    ("besok", "Besök hos fast läkarkontakt", "vardcentral"),
    ("telefonkontakt", "Telefonuppföljning med fast vårdkontakt", "vardcentral"),
    ("provtagning", "Provtagning inför uppföljning", "vardcentral"),
    ("behandling", "Återbesök på medicinmottagningen", "sjukhusklinik"),
    ("hembesok", "Hembesök av distriktssköterska", "hemsjukvard"),
    ("hemtjanstinsats", "Hemtjänst: hjälp med inköp och städning", "hemtjanst"),
    ("rehabilitering", "Fysioterapi i hemmet", "hemsjukvard"),
    ("sip-mote", "SIP-möte med region och kommun", "vardcentral"),
    ("uppfoljning", "Uppföljning av patientkontraktet", "vardcentral"),
)
# Where each unit is, and when its phone answers and its doors are open, by kind of unit.
ADDRESSES = {
    "vc-bjorkbacken": ("Björkbacksvägen 4", "123 40", "Exempelstad"),
    "vc-strandvagen": ("Strandvägen 21", "123 52", "Exempelstad"),
    "vc-ekdalen": ("Ekdalsgatan 9", "124 31", "Sjövik"),
    "med-lanssjukhuset": ("Länssjukhuset, ingång 3, plan 2, Sjukhusvägen 1", "123 81", "Exempelstad"),
    "hemsjukvard-exempelstad": ("Kommunhuset, Storgatan 10", "123 30", "Exempelstad"),
    "hemtjanst-exempelstad": ("Kommunhuset, Storgatan 10", "123 30", "Exempelstad"),
    "hemtjanst-sjovik": ("Torget 2", "124 30", "Sjövik"),
    "vc-angen": ("Ängsvägen 3", "124 33", "Sjövik"),
}
WEEKDAYS = DAYS[:5]
TELEPHONE_HOURS = {
    "vardcentral": (Hours(WEEKDAYS, "08:00", "10:00"), Hours(WEEKDAYS, "13:00", "14:30")),
    "sjukhusklinik": (Hours(WEEKDAYS, "08:30", "11:30"),),
    "hemsjukvard": (Hours(DAYS, "07:00", "21:30"),),
    "hemtjanst": (Hours(WEEKDAYS, "08:00", "16:00"),),
}
OPENING_HOURS = {
    "vardcentral": (Hours(DAYS[:4], "08:00", "17:00"), Hours(("fri",), "08:00", "15:00")),
    "sjukhusklinik": (Hours(WEEKDAYS, "07:30", "16:00"),),
    "hemsjukvard": (Hours(WEEKDAYS, "08:00", "16:30"),),
    "hemtjanst": (Hours(WEEKDAYS, "08:00", "16:00"),),
}
# A nurse with a direct line answers it at these times (the unit's number the rest of the day).
DIRECT_LINE_HOURS = (Hours(DAYS[:4], "08:00", "09:00"),)
STAFF_PLAN = {
    "vardcentral": (("sjukskoterska", 3), ("lakare", 2)),
    "sjukhusklinik": (("sjukskoterska", 1), ("lakare", 2)),
    "hemsjukvard": (("sjukskoterska", 2), ("fysioterapeut", 1)),
    "hemtjanst": (("bistandshandlaggare", 1), ("underskoterska", 1)),
}
TITLES = {
    "sjukskoterska": ("Sjuksköterska", "nurse"), "lakare": ("Läkare", "doctor"),
    "fysioterapeut": ("Fysioterapeut", "ict"), "bistandshandlaggare": ("Biståndshandläggare", "ict"),
    "underskoterska": ("Undersköterska", "nurse"),
}
PLAN_STATES = ("active", "active", "active", "active", "draft", "on-hold", "completed", "revoked")
# Sharing across care providers (issue 14): the SIP, samtycke and spärr.
HUVUDMAN_DISPLAY = {"region": "Region", "kommun": "Kommun", "annan": "Annan"}
# A private vårdcentral works under the region's vårdval: the region is its huvudman.
HUVUDMAN_OF_KIND = {"region": "region", "kommun": "kommun", "privat-vardgivare": "region"}
IRCP = {"coding": [{"system": codes.PARTICIPATION_TYPE, "code": codes.INFORMATION_RECIPIENT,
                    "display": "information recipient"}]}
CST = {"coding": [{"system": codes.PARTICIPATION_TYPE, "code": codes.CUSTODIAN, "display": "custodian"}]}
_SVOD = "Lag (2022:913) om sammanhållen vård- och omsorgsdokumentation"
CONSENT_KINDS = {  # category: (display, policyRule (code, display), the law it rests on, profile)
    codes.SAMTYCKE: ("Samtycke till sammanhållen journalföring", (codes.OPT_IN, "opt-in"),
                     f"{_SVOD} 3 kap. 1–2 §§", codes.SAMTYCKE_PROFILE),
    codes.INRE_SPARR: ("Inre spärr", (codes.OPT_OUT, "opt-out"), "Patientdatalagen (2008:355) 4 kap. 4 §",
                       codes.SPARR_PROFILE),
    codes.YTTRE_SPARR: ("Yttre spärr", (codes.OPT_OUT, "opt-out"), f"{_SVOD} 2 kap. 3 §", codes.SPARR_PROFILE),
}
# Which agreements have what, by their number modulo 24 (three sets of the eight states).
_PENDING_SAMTYCKE_AT = 9  # 9, 33, 57, …: the SIP is a draft, its samtycke only proposed
_INRE_SPARR_AT = 11  # 11, 35, 59, …: an inre spärr on the vårdcentral's part
_YTTRE_SPARR_AT = 3  # 3, 27, 51, …: a yttre spärr on the vårdcentral's part
ANGEN = "demo-org-vc-angen"  # the private vårdcentral, of its own vårdgivare Läkarhuset Ängen AB
KIND_DISPLAY = {"region": "Region", "kommun": "Kommun", "privat-vardgivare": "Privat vårdgivare"}


def _orgnr(prefix: str) -> str:
    return prefix + luhn.calc_check_digit(prefix)


def _tagged(resource: dict[str, Any]) -> dict[str, Any]:
    resource["meta"] = {"tag": [dict(codes.TEST_DATA_TAG)]}
    return resource


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def _ref(resource: dict[str, Any], display: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"reference": f"{resource['resourceType']}/{resource['id']}"}
    if display:
        ref["display"] = display
    return ref


@dataclass
class Unit:
    organization: dict[str, Any]
    unit_type: str
    staff: list[tuple[dict[str, Any], dict[str, Any], str]] = field(default_factory=list)  # practitioner, role, kind


@dataclass
class _Directory:
    """The region's directory while it is being built."""

    organizations: list[dict[str, Any]]
    practitioners: list[dict[str, Any]] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)
    units: dict[str, list[Unit]] = field(default_factory=dict)
    people: int = 0


@dataclass
class Region:
    """Organisations and staff shared by every agreement."""

    organizations: list[dict[str, Any]]
    practitioners: list[dict[str, Any]]
    roles: list[dict[str, Any]]
    units: dict[str, list[Unit]]

    def resources(self) -> list[dict[str, Any]]:
        return [*self.organizations, *self.practitioners, *self.roles]

    def unit(self, reference: dict[str, Any]) -> Unit:
        """The care unit a Reference(Organization) points to."""
        return next(u for units in self.units.values() for u in units
                    if reference["reference"] == f"Organization/{u.organization['id']}")

    def provider(self, org: dict[str, Any]) -> dict[str, Any]:
        """The top of ``org``'s ``partOf`` chain: its vårdgivare, or its kommun."""
        by_id = {f"Organization/{o['id']}": o for o in self.organizations}
        while "partOf" in org:
            org = by_id[org["partOf"]["reference"]]
        return org


class DemoGenerator:
    """Generates the demo region and agreements; ``today`` anchors past and upcoming times."""

    def __init__(self, seed: int = 1, today: datetime.date | None = None) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        self.today = today or datetime.date.today()
        self._serial = 0
        self._org_keys: list[str] = []
        self.region = self._region()

    # -- identifiers -----------------------------------------------------------------------

    def personnummer(self, birth: datetime.date, female: bool) -> str:
        self._serial += 1
        serial = self._serial % 500
        digits = (serial * 2 + (0 if female else 1)) % 1000  # the last serial digit is odd for men
        body = f"{birth:%Y%m%d}{digits:03d}"
        return body + luhn.calc_check_digit(body[2:])

    # -- the region ------------------------------------------------------------------------

    def _organization(self, key: str, orgnr: str, name: str, kind: str, unit_type: str | None,
                      part_of: dict[str, Any] | None, phone: str) -> dict[str, Any]:
        self._org_keys.append(key)
        org: dict[str, Any] = _tagged({
            "resourceType": "Organization",
            "id": f"demo-org-{key}",
            "identifier": [{"system": HSA_ID, "value": f"SE{orgnr}-E{len(self._org_keys):03d}"}],
            "active": True,
            "type": [_coding(codes.ORGANIZATION_KIND, kind, KIND_DISPLAY[kind])],
            "name": name,
            "telecom": [{"system": "phone", "value": phone, "use": "work"}],
        })
        if unit_type:
            org["type"].append(_coding(codes.CARE_UNIT_TYPE, unit_type, unit_type.capitalize()))
        if part_of:
            org["partOf"] = _ref(part_of, part_of["name"])
        return org

    def _region(self) -> Region:
        region_nr = _orgnr("232199000")
        kommun_a, kommun_b = _orgnr("212199000"), _orgnr("212199100")
        region = self._organization("region", region_nr, "Region Exempel", "region", None, None, "010-100 00 00")
        kommun1 = self._organization("kommun-exempelstad", kommun_a, "Exempelstads kommun", "kommun", None, None,
                                     "0123-100 00")
        kommun2 = self._organization("kommun-sjovik", kommun_b, "Sjöviks kommun", "kommun", None, None, "0124-200 00")
        unit_specs = (
            ("vc-bjorkbacken", "Vårdcentralen Björkbacken", region, region_nr, "vardcentral", "0123-101 10"),
            ("vc-strandvagen", "Vårdcentralen Strandvägen", region, region_nr, "vardcentral", "0123-101 20"),
            ("vc-ekdalen", "Vårdcentralen Ekdalen", region, region_nr, "vardcentral", "0124-101 30"),
            ("med-lanssjukhuset", "Medicinkliniken, Länssjukhuset Exempelstad", region, region_nr, "sjukhusklinik",
             "0123-102 00"),
            ("hemsjukvard-exempelstad", "Hemsjukvården Exempelstad", kommun1, kommun_a, "hemsjukvard", "0123-103 00"),
            ("hemtjanst-exempelstad", "Hemtjänsten Exempelstad", kommun1, kommun_a, "hemtjanst", "0123-104 00"),
            ("hemtjanst-sjovik", "Hemtjänsten Sjövik", kommun2, kommun_b, "hemtjanst", "0124-104 00"),
        )
        built = _Directory(organizations=[region, kommun1, kommun2])
        for key, name, parent, orgnr, unit_type, phone in unit_specs:
            self._unit(built, key, name, parent, orgnr, unit_type, phone, self.random)
        # The private vårdcentral and its own vårdgivare come last, and their staff are drawn
        # from a random stream of their own: the region's ids and every agreement's draws stay
        # as they were before it existed.
        private_nr = _orgnr("556199000")
        private = self._organization("lakarhuset-angen", private_nr, "Läkarhuset Ängen AB", "privat-vardgivare", None,
                                     None, "0124-105 00")
        built.organizations.append(private)
        self._unit(built, "vc-angen", "Ängens vårdcentral", private, private_nr, "vardcentral", "0124-105 10",
                   random.Random(f"{self.seed}:angen"))
        for practitioner, role, unit in _log_reviewers(built.units):
            built.practitioners.append(practitioner)
            built.roles.append(role)
            unit.staff.append((practitioner, role, "logggranskare"))
        return Region(built.organizations, built.practitioners, built.roles, built.units)

    def _unit(self, built: _Directory, key: str, name: str, parent: dict[str, Any], orgnr: str, unit_type: str,
              phone: str, rnd: random.Random) -> None:
        """Add the care unit ``key`` (partOf its vårdgivare or kommun ``parent``) and its staff."""
        kind = parent["type"][0]["coding"][0]["code"]
        org = self._organization(key, orgnr, name, kind, unit_type, parent, phone)
        org = with_contact_details(org, Phone(phone, TELEPHONE_HOURS[unit_type]),
                                   PostalAddress(*ADDRESSES[key]), OPENING_HOURS[unit_type])
        built.organizations.append(org)
        unit = Unit(org, unit_type)
        for staff_kind, count in STAFF_PLAN[unit_type]:
            for _ in range(count):
                built.people += 1
                person = built.people
                female = rnd.random() < 0.6
                given = rnd.choice(FIRST_NAMES_F if female else FIRST_NAMES_M)
                family = rnd.choice(FAMILY_NAMES)
                practitioner = _tagged({
                    "resourceType": "Practitioner",
                    "id": f"demo-prac-{person:04d}",
                    "identifier": [{"system": HSA_ID, "value": f"SE{orgnr}-P{person:04d}"}],
                    "active": True,
                    "name": [{"family": family, "given": [given]}],
                    "gender": "female" if female else "male",
                })
                title, code = TITLES[staff_kind]
                role = _tagged({
                    "resourceType": "PractitionerRole",
                    "id": f"demo-role-{person:04d}",
                    "identifier": [{"system": HSA_ID, "value": f"SE{orgnr}-U{person:04d}"}],
                    "active": True,
                    "practitioner": _ref(practitioner, f"{given} {family}"),
                    "organization": _ref(org, name),
                    "code": [{"coding": [{"system": codes.PRACTITIONER_ROLE, "code": code}], "text": title}],
                })
                if staff_kind == "sjukskoterska" and person % 2 == 1:
                    # Every other nurse has a direct line; the others are reached through the unit.
                    role["telecom"] = [{"system": "phone", "value": f"{phone[:-2]}{50 + person:02d}", "use": "work"}]
                    role["availableTime"] = available_time(DIRECT_LINE_HOURS)
                built.practitioners.append(practitioner)
                built.roles.append(role)
                unit.staff.append((practitioner, role, staff_kind))
        built.units.setdefault(unit_type, []).append(unit)

    # -- agreements ------------------------------------------------------------------------

    def agreements(self, count: int, start: int = 0) -> Iterator[list[dict[str, Any]]]:
        """``count`` agreements, each as the list of resources it adds (Patient first)."""
        for number in range(start, start + count):
            yield self.agreement(number)

    def agreement(self, number: int) -> list[dict[str, Any]]:
        rnd = self.random
        female = rnd.random() < 0.55
        age = rnd.randint(45, 96)
        birth = self.today.replace(year=self.today.year - age, day=1) + datetime.timedelta(days=rnd.randint(0, 360))
        birth = min(birth, self.today - datetime.timedelta(days=365 * 18))
        given = rnd.choice(FIRST_NAMES_F if female else FIRST_NAMES_M)
        family = rnd.choice(FAMILY_NAMES)
        key = f"{number:06d}"
        patient = _tagged({
            "resourceType": "Patient",
            "id": f"demo-pat-{key}",
            "identifier": [{"system": PERSONNUMMER, "value": self.personnummer(birth, female)}],
            "active": True,
            "name": [{"family": family, "given": [given]}],
            "gender": "female" if female else "male",
            "birthDate": birth.isoformat(),
            "telecom": [{"system": "phone", "value": f"070-{rnd.randint(1000000, 9999999)}", "use": "mobile"}],
        })
        vc = self._listed_at(number, rnd.choice(self.region.units["vardcentral"][:3]))
        hospital = rnd.choice(self.region.units["sjukhusklinik"])
        homecare = rnd.choice(self.region.units["hemsjukvard"])
        kommun = rnd.choice(self.region.units["hemtjanst"])
        nurses = [s for s in vc.staff if s[2] == "sjukskoterska"]
        doctors = [s for s in vc.staff if s[2] == "lakare"]
        status = PLAN_STATES[number % len(PLAN_STATES)]
        started = self.today - datetime.timedelta(days=rnd.randint(30, 700))
        ended = self.today - datetime.timedelta(days=rnd.randint(1, 25)) if status in ("completed", "revoked") else None
        nurse = rnd.choice(nurses)
        participants = []
        if rnd.random() < 0.3 and len(nurses) > 1:
            previous = next(n for n in nurses if n is not nurse)
            changed = started + ((ended or self.today) - started) / 2  # while the agreement was open
            participants.append(self._participant(codes.FAST_VARDKONTAKT, "Fast vårdkontakt", previous[1], vc,
                                                  started, changed))
            participants.append(self._participant(codes.FAST_VARDKONTAKT, "Fast vårdkontakt", nurse[1], vc,
                                                  changed, ended))
        else:
            participants.append(self._participant(codes.FAST_VARDKONTAKT, "Fast vårdkontakt", nurse[1], vc,
                                                  started, ended))
        participants.append(self._participant(codes.FAST_LAKARKONTAKT, "Fast läkarkontakt", rnd.choice(doctors)[1], vc,
                                              started, ended))
        kommun_contact = next(s for s in kommun.staff if s[2] == "bistandshandlaggare")
        participants.append(self._participant("kontaktperson-kommun", "Kontaktperson i kommunen", kommun_contact[1],
                                              kommun, started, ended))
        participants.append({
            "role": [_coding(codes.CARETEAM_ROLE, "patient", "Patient")],
            "member": _ref(patient, f"{given} {family}"),
            "period": {"start": started.isoformat()},
        })
        team = _tagged({
            "resourceType": "CareTeam",
            "id": f"demo-team-{key}",
            "status": {"active": "active", "draft": "proposed", "on-hold": "suspended"}.get(status, "inactive"),
            "name": f"Vårdteam för {given} {family}",
            "subject": _ref(patient),
            "participant": participants,
            "managingOrganization": [_ref(vc.organization, vc.organization["name"])],
        })
        goals = [self._goal(key, 0, patient, rnd.choice(GOALS_PATIENT), expressed_by=_ref(patient), status=status)]
        for index, (text, _category) in enumerate(rnd.sample(GOALS_CARE, 2), start=1):
            goals.append(self._goal(key, index, patient, text, expressed_by=_ref(nurse[1]), status=status))
        activities = self._activities(vc, hospital, homecare, kommun, started, status)
        plan = _tagged({
            "resourceType": "CarePlan",
            "id": f"demo-plan-{key}",
            "status": status,
            "intent": "plan",
            "category": [_coding(codes.CAREPLAN_CATEGORY, codes.PATIENTKONTRAKT, "Patientkontrakt")],
            "title": f"Patientkontrakt för {given} {family}",
            "description": (
                "Överenskommelse mellan dig och vården om vad som ska hända, när, och vem du vänder dig till. "
                f"Din fasta vårdkontakt finns på {vc.organization['name']}."
            ),
            "subject": _ref(patient, f"{given} {family}"),
            "period": {"start": started.isoformat(), **({"end": ended.isoformat()} if ended else {})},
            "created": started.isoformat(),
            "author": _ref(vc.organization, vc.organization["name"]),
            "contributor": [_ref(u.organization, u.organization["name"]) for u in (hospital, homecare, kommun)],
            "careTeam": [_ref(team)],
            "goal": [_ref(g) for g in goals],
            "activity": activities,
        })
        return [patient, team, *goals, plan]

    def _listed_at(self, number: int, drawn: Unit) -> Unit:
        """The vårdcentral the patient is listed at. Ängens vårdcentral is in Sjövik beside Ekdalen:
        of the patients drawn to Ekdalen, those of agreements 1, 5, 9, … (``number % 4 == 1``) chose
        Ängen. Decided without the random stream, so every agreement draws what it drew before the
        private vårdcentral existed and the other agreements are unchanged."""
        if drawn.organization["id"] == "demo-org-vc-ekdalen" and number % 4 == 1:
            return next(u for u in self.region.units["vardcentral"] if u.organization["id"] == ANGEN)
        return drawn

    def _participant(self, code: str, display: str, role: dict[str, Any], unit: Unit,
                     start: datetime.date | datetime.datetime, end: datetime.date | None) -> dict[str, Any]:
        period: dict[str, str] = {"start": _day(start)}
        if end is not None:
            period["end"] = _day(end)
        return {
            "role": [_coding(codes.CARETEAM_ROLE, code, display)],
            "member": _ref(role, f"{role['practitioner']['display']}, {unit.organization['name']}"),
            "period": period,
        }

    def _goal(self, key: str, index: int, patient: dict[str, Any], text: str, expressed_by: dict[str, Any],
              status: str) -> dict[str, Any]:
        due = self.today + datetime.timedelta(days=self.random.randint(30, 300))
        return _tagged({
            "resourceType": "Goal",
            "id": f"demo-goal-{key}-{index}",
            "lifecycleStatus": {"completed": "completed", "revoked": "cancelled", "draft": "proposed"}.get(
                status, "active"),
            "description": {"text": text},
            "subject": _ref(patient),
            "startDate": (self.today - datetime.timedelta(days=60)).isoformat(),
            "target": [{"dueDate": due.isoformat()}],
            "expressedBy": expressed_by,
        })

    def _activities(self, vc: Unit, hospital: Unit, homecare: Unit, kommun: Unit, started: datetime.date,
                    status: str) -> list[dict[str, Any]]:
        by_type = {"vardcentral": vc, "sjukhusklinik": hospital, "hemsjukvard": homecare, "hemtjanst": kommun}
        chosen = self.random.sample(ACTIVITIES, 4)
        out = []
        for offset, (kind, text, unit_type) in zip((-45, -10, 7, 30), chosen, strict=True):
            when = datetime.datetime.combine(self.today + datetime.timedelta(days=offset + self.random.randint(0, 5)),
                                             datetime.time(hour=self.random.choice((8, 9, 10, 13, 14, 15))))
            unit = by_type[unit_type]
            done = offset < 0 or status in ("completed", "revoked")
            out.append({
                "detail": {
                    "kind": "Appointment",
                    "code": _coding(codes.ACTIVITY_KIND, kind, text.split(":")[0]),
                    "status": "completed" if done and status != "revoked" else (
                        "cancelled" if status == "revoked" else "scheduled"),
                    "scheduledPeriod": {
                        "start": when.strftime("%Y-%m-%dT%H:%M:00+01:00"),
                        "end": (when + datetime.timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%M:00+01:00"),
                    },
                    "performer": [_ref(unit.organization, unit.organization["name"])],
                    "description": text,
                }
            })
        return out


    # -- sharing across care providers: SIP, samtycke, spärr --------------------------------

    def sharing(self, agreement: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The Consents and the SIP of ``agreement`` (as ``agreement()`` returned it), Consents first;
        empty for most. Derived from the agreement alone, without the random stream, so calling it
        or not changes no other agreement. Which agreements have what: the module docstring."""
        patient, plan = agreement[0], agreement[-1]
        number = int(plan["id"].removeprefix("demo-plan-"))
        key = f"{number:06d}"
        vc = self.region.unit(plan["author"])
        hospital, homecare, hemtjanst = (self.region.unit(c) for c in plan["contributor"])
        started = datetime.date.fromisoformat(plan["period"]["start"])
        consents: list[dict[str, Any]] = []
        sip: dict[str, Any] | None = None
        if has_sip(number):
            kommun = homecare if self._same_provider(homecare, hemtjanst) else hemtjanst
            agreed = min(started + datetime.timedelta(days=20), self.today)
            given = number % 24 != _PENDING_SAMTYCKE_AT
            region_side = [vc.organization, hospital.organization]
            custodians = list({p["id"]: p for p in map(self.region.provider, region_side)}.values())
            consents.append(self._consent(
                key, len(consents) + 1, patient, codes.SAMTYCKE, kommun.organization, agreed,
                [(IRCP, kommun.organization), *((CST, p) for p in custodians)],
                status="active" if given else "proposed"))
            sip = self._sip(key, number, patient, plan, consents[-1], kommun, vc, hospital, homecare, hemtjanst,
                            agreed, given)
        blocked = min(started + datetime.timedelta(days=40), self.today)
        sparr = sparr_on_vardcentral(number)
        if sparr == codes.INRE_SPARR and not self._same_provider(vc, hospital):
            sparr = None  # a private vårdcentral has no other unit to block its part from
        if sparr is not None:
            consents.append(self._consent(key, len(consents) + 1, patient, sparr, vc.organization, blocked,
                                          [(CST, vc.organization)]))
        return [*consents, *([sip] if sip else [])]

    def _same_provider(self, one: Unit, other: Unit) -> bool:
        return bool(self.region.provider(one.organization)["id"] == self.region.provider(other.organization)["id"])

    def _consent(self, key: str, index: int, patient: dict[str, Any], category: str, recorded_at: dict[str, Any],
                 day: datetime.date, actors: list[tuple[dict[str, Any], dict[str, Any]]],
                 status: str = "active") -> dict[str, Any]:
        """A ``pk-samtycke`` (permit) or ``pk-sparr`` (deny) in the R4 privacy-consent pattern."""
        display, rule, law, profile = CONSENT_KINDS[category]
        consent = _tagged({
            "resourceType": "Consent",
            "id": f"demo-consent-{key}-{index}",
            "status": status,
            "scope": _coding(codes.CONSENT_SCOPE, codes.PATIENT_PRIVACY, "Privacy Consent"),
            "category": [_coding(codes.CONSENT_CATEGORY, category, display)],
            "patient": _ref(patient),
            "dateTime": f"{day.isoformat()}T10:00:00+01:00",
            "performer": [_ref(patient)],
            "organization": [_ref(recorded_at, recorded_at["name"])],
            "policyRule": {**_coding(codes.ACT_CODE, *rule), "text": law},
            "provision": {
                "type": "permit" if category == codes.SAMTYCKE else "deny",
                "period": {"start": day.isoformat()},
                "actor": [{"role": role, "reference": _ref(org, org["name"])} for role, org in actors],
            },
        })
        consent["meta"]["profile"] = [profile]
        return consent

    def _sip(self, key: str, number: int, patient: dict[str, Any], plan: dict[str, Any], consent: dict[str, Any],
             kommun: Unit, vc: Unit, hospital: Unit, homecare: Unit, hemtjanst: Unit, agreed: datetime.date,
             given: bool) -> dict[str, Any]:
        """The kommun's SIP (HSL 16 kap. 4 §) beside the agreement: one intervention of the region's,
        one or two of the kommun's, and who holds the overall responsibility."""
        region_part = (("uppfoljning", "Uppföljning", "Läkemedelsgenomgång och uppföljning hos fast läkarkontakt", vc)
                       if number % 2 == 0 else
                       ("behandling", "Behandling", "Återbesök på medicinmottagningen var tredje månad", hospital))
        parts = [region_part, ("hemtjanstinsats", "Hemtjänstinsats", "Hjälp med inköp, städning och dusch", hemtjanst)]
        if kommun is homecare:
            parts.append(("hembesok", "Hembesök", "Distriktssköterskan följer upp läkemedel och sår", homecare))
        activities = []
        for code, display, text, unit in parts:
            huvudman = HUVUDMAN_OF_KIND[self.region.provider(unit.organization)["type"][0]["coding"][0]["code"]]
            activities.append({
                "extension": [{"url": codes.SIP_HUVUDMAN, "valueCodeableConcept": _huvudman(huvudman)}],
                "detail": {
                    "code": _coding(codes.ACTIVITY_KIND, code, display),
                    "status": "in-progress" if given else "not-started",
                    "performer": [_ref(unit.organization, unit.organization["name"])],
                    "description": text,
                },
            })
        name = plan["subject"]["display"]
        sip = _tagged({
            "resourceType": "CarePlan",
            "id": f"demo-sip-{key}",
            "extension": [{"url": codes.SIP_OVERGRIPANDE_ANSVAR,
                           "valueCodeableConcept": _huvudman("kommun" if number % 2 == 0 else "region")}],
            "status": "active" if given else "draft",
            "intent": "plan",
            "category": [_coding(codes.CAREPLAN_CATEGORY, codes.SIP, "Samordnad individuell plan (SIP)")],
            "title": f"SIP för {name}",
            "description": "Samordnad individuell plan: vad regionen och kommunen gör, och vem som håller ihop planen.",
            "subject": _ref(patient, name),
            "partOf": [_ref(plan)],
            "period": {"start": agreed.isoformat()},
            "created": agreed.isoformat(),
            "author": _ref(kommun.organization, kommun.organization["name"]),
            "supportingInfo": [_ref(consent)],
            "activity": activities,
        })
        sip["meta"]["profile"] = [codes.SIP_PROFILE]
        return sip


def has_sip(number: int) -> bool:
    """Agreement ``number`` has a SIP: every third, when it is active."""
    return number % 3 == 0 and PLAN_STATES[number % len(PLAN_STATES)] == "active"


def has_consents(number: int) -> bool:
    """The demo may record Consents for agreement ``number``: a samtycke with its SIP, or a spärr
    (not the inre spärr of an agreement at the private vårdcentral, which is left out)."""
    return has_sip(number) or sparr_on_vardcentral(number) is not None


def sparr_on_vardcentral(number: int) -> str | None:
    """The spärr agreement ``number`` has on its vårdcentral's part: an inre spärr (11, 35, …; only
    at a region vårdcentral), a yttre spärr (3, 27, …), or none."""
    return {_INRE_SPARR_AT: codes.INRE_SPARR, _YTTRE_SPARR_AT: codes.YTTRE_SPARR}.get(number % 24)


def _huvudman(code: str) -> dict[str, Any]:
    return _coding(codes.HUVUDMAN, code, HUVUDMAN_DISPLAY[code])
# The providers' log reviewers (pk-staff-role#logggranskare): (unit type, given name, family name).
LOG_REVIEWERS = (("sjukhusklinik", "Lena", "Granqvist"), ("hemsjukvard", "Tomas", "Loggren"))


def _log_reviewers(units: dict[str, list[Unit]]) -> Iterator[tuple[dict[str, Any], dict[str, Any], Unit]]:
    """One log reviewer at the first unit of each type in ``LOG_REVIEWERS`` (the region's hospital
    clinic, the kommun's hemsjukvård), numbered apart from the other staff so that adding them
    changes no one else's id."""
    for number, (unit_type, given, family) in enumerate(LOG_REVIEWERS, start=1):
        unit = units[unit_type][0]
        org = unit.organization
        prefix = org["identifier"][0]["value"].split("-")[0]
        practitioner = _tagged({
            "resourceType": "Practitioner", "id": f"demo-prac-logg-{number}",
            "identifier": [{"system": HSA_ID, "value": f"{prefix}-P9{number:03d}"}], "active": True,
            "name": [{"family": family, "given": [given]}], "gender": "female" if number % 2 else "male",
        })
        role = _tagged({
            "resourceType": "PractitionerRole", "id": f"demo-role-logg-{number}",
            "identifier": [{"system": HSA_ID, "value": f"{prefix}-U9{number:03d}"}], "active": True,
            "practitioner": _ref(practitioner, f"{given} {family}"), "organization": _ref(org, org["name"]),
            "code": [{"coding": [{"system": codes.STAFF_ROLE, "code": codes.LOG_REVIEWER,
                                  "display": "Logggranskare"}], "text": "Logggranskare"}],
        })
        yield practitioner, role, unit


def _day(value: datetime.date | datetime.datetime) -> str:
    return value.date().isoformat() if isinstance(value, datetime.datetime) else value.isoformat()


def transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle that PUTs ``resources`` (each with its id)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }


Progress = Callable[[int, int], None]
"""Told (agreements loaded, agreements in all): with 0 once the directory is in, then after each."""


async def load_demo(bundles: BundleProcessor, agreements: int = 50, seed: int = 1,
                    progress: Progress | None = None) -> int:
    """Load the region and ``agreements`` agreements through the full write path (validation and
    rules), one transaction each, with PUT and stable ids: loading twice adds no versions.

    An agreement's SIP and Consents (``DemoGenerator.sharing``) follow it in a transaction of their
    own: the Consents' rules are derived as they are stored, and the agreement is there to point at."""
    generator = DemoGenerator(seed=seed)
    minimal = Preferences(return_="minimal")
    await bundles.process(INTERNAL, transaction(generator.region.resources()), minimal)
    count = len(generator.region.resources())
    if progress is not None:
        progress(0, agreements)
    for done, resources in enumerate(generator.agreements(agreements), start=1):
        await bundles.process(INTERNAL, transaction(resources), minimal)
        count += len(resources)
        if shared := generator.sharing(resources):
            await bundles.process(INTERNAL, transaction(shared), minimal)
            count += len(shared)
        if progress is not None:
            progress(done, agreements)
    return count
