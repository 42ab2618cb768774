"""Synthetic Patientkontrakt agreements: deterministic, valid against our profiles, plainly test data.

Agreement ``i`` is eleven resources: the Patient; the Organization (a vårdcentral, the
responsible care unit); two Practitioners with their PractitionerRoles (medarbetaruppdrag: a
nurse who is the fast vårdkontakt, a physician who is the fast läkarkontakt; the profiles make
CareTeam members PractitionerRoles); the CareTeam; the CarePlan (category patientkontrakt,
period, three activities with scheduled periods and the unit as performer, careTeam, goal and
author references; the regional clinic and the kommun's hemsjukvård as contributors); and
three Goals (one stated by the patient, two by the nurse). Everything is a pure function of
``i``, so the loader, the request files and a reused database agree.

Besides the agreements there are shared Organizations (``shared()``): two care providers
(*vårdgivare*: an Organization without ``partOf``, with an HSA-id) — the test region and the
test kommun — and three care units: the regional clinic and a mottagning of the region, and the
kommun's hemsjukvård. Every vårdcentral and the clinic are ``partOf`` the region, so what an
agreement's unit writes is owned by the region (``resource.owner_provider``). The clinic and
the hemsjukvård take part in every agreement: the benchmark's token acts for the clinic (the
same provider as the owners: no samtycke needed) or, in the consent scenarios, for the
hemsjukvård (another provider: it reads only under the patient's samtycke). ``samtycke(i)`` and
``sparr(i)`` are the Consents of those scenarios (docs/performance.md).

Ids are UUID-shaped like the server's own (``uuid4``) but computable: the first group names the
resource kind, the last the agreement (``00000006-0000-4000-8000-000000000042`` is the CarePlan
of agreement 42). Personnummer are a birth date, a serial number in 900–999 and a correct Luhn
check digit; HSA-ids use the fictional organisationsnummer of the demo region. Names
(``Testperson``, ``Testvårdare``) and the HL7 ``HTEST`` tag on every resource mark the data as
test data (docs/performance.md).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from patientkontrakt.domain import codes, sharing
from patientkontrakt.domain.identifiers import HSA_ID, PERSONNUMMER
from patientkontrakt.security.tokens import Grant

ORGNR = "2321990000"  # the demo region's fictional organisationsnummer (valid check digit)
KOMMUN_ORGNR = "2121990002"  # a fictional kommun's (valid check digit)

# Resource kinds of an agreement; the position (1-based) is the first group of the id.
KINDS = ("Patient", "Organization", "Practitioner", "Practitioner", "CareTeam", "CarePlan",
         "Goal", "Goal", "Goal", "PractitionerRole", "PractitionerRole")
RESOURCES_PER_AGREEMENT = len(KINDS)

_FIRST_BIRTH = date(1930, 1, 1)
_BIRTH_DAYS = (date(2005, 12, 31) - _FIRST_BIRTH).days + 1
_GIVEN = ("Anna", "Bo", "Cecilia", "David", "Eva", "Filip", "Greta", "Hugo", "Ingrid", "Johan")
_PATIENT_GOAL = "Kunna gå till affären själv"
_CARE_GOALS = ("Stabilt blodsocker, HbA1c under 60", "Bibehållen rörlighet i hemmet")
_ACTIVITIES = (
    ("besok", "Besök hos fast läkarkontakt"),
    ("telefonkontakt", "Telefonuppföljning med fast vårdkontakt"),
    ("uppfoljning", "Uppföljning av patientkontraktet"),
)


def resource_id(kind: int, agreement: int) -> str:
    """The id of kind ``kind`` (1-based position in ``KINDS``) of agreement ``agreement``."""
    return f"{kind:08d}-0000-4000-8000-{agreement:012d}"


CLINIC_ID = resource_id(99, 0)
CLINIC_HSA_ID = f"SE{ORGNR}-BKLINIK"
REGION_ID = resource_id(98, 0)  # the care provider of every vårdcentral and the clinic
REGION_HSA_ID = f"SE{ORGNR}-0001"
KOMMUN_ID = resource_id(97, 0)  # another care provider
KOMMUN_HSA_ID = f"SE{KOMMUN_ORGNR}-0001"
HOMECARE_ID = resource_id(96, 0)  # the kommun's hemsjukvård, in every agreement
HOMECARE_HSA_ID = f"SE{KOMMUN_ORGNR}-BHEMSJUKVARD"
MOTTAGNING_ID = resource_id(95, 0)  # a unit of the region in no agreement: the spärr's custodian
MOTTAGNING_HSA_ID = f"SE{ORGNR}-BMOTTAGNING"
BENCH_SCOPE = "system/*.cruds"
# The Consents of the consent scenarios (kinds after the transaction's Appointments, 12 to 15).
SAMTYCKE_KIND, SPARR_KIND = 16, 17


def bench_grant() -> Grant:
    """Who the benchmark's token is: a system acting for the regional clinic that takes part in
    every synthetic agreement (``shared``), of the same care provider as the agreements' units,
    so every read and search passes the access rules without a samtycke."""
    return Grant(kind="system", sub="bench", name="Benchmark", care_unit=CLINIC_HSA_ID,
                 care_unit_name="Regionkliniken (test)", care_unit_org=CLINIC_ID, care_provider=REGION_HSA_ID)


def kommun_grant() -> Grant:
    """The token of the samtycke scenarios: a system acting for the kommun's hemsjukvård, which
    takes part in every agreement but is another care provider than the one that owns them."""
    return Grant(kind="system", sub="bench", name="Benchmark", care_unit=HOMECARE_HSA_ID,
                 care_unit_name="Hemsjukvården (test)", care_unit_org=HOMECARE_ID, care_provider=KOMMUN_HSA_ID)


GRANTS = {"clinic": bench_grant, "kommun": kommun_grant}


def _organization(id_: str, hsa: str, kind: tuple[str, str], name: str, unit_type: tuple[str, str] | None = None,
                  part_of: str | None = None) -> dict[str, Any]:
    types = [_coding(codes.ORGANIZATION_KIND, *kind)]
    if unit_type:
        types.append(_coding(codes.CARE_UNIT_TYPE, *unit_type))
    org = _directory_entry("Organization", id_, hsa, type=types, name=name,
                           telecom=[{"system": "phone", "value": "010-100 00 01", "use": "work"}])
    if part_of:
        org["partOf"] = {"reference": f"Organization/{part_of}"}
    return org


def shared() -> list[dict[str, Any]]:
    """The Organizations every agreement shares: the providers first (units name them)."""
    region, kommun = ("region", "Region"), ("kommun", "Kommun")
    return [
        _organization(REGION_ID, REGION_HSA_ID, region, "Region Test"),
        _organization(KOMMUN_ID, KOMMUN_HSA_ID, kommun, "Testkommunen"),
        _organization(CLINIC_ID, CLINIC_HSA_ID, region, "Regionkliniken (test)",
                      ("sjukhusklinik", "Sjukhusklinik"), REGION_ID),
        _organization(HOMECARE_ID, HOMECARE_HSA_ID, kommun, "Hemsjukvården (test)",
                      ("hemsjukvard", "Hemsjukvård"), KOMMUN_ID),
        _organization(MOTTAGNING_ID, MOTTAGNING_HSA_ID, region, "Testmottagningen",
                      ("annan", "Annan"), REGION_ID),
    ]


def patient_id(i: int) -> str:
    return resource_id(1, i)


def organization_id(i: int) -> str:
    return resource_id(2, i)


def careplan_id(i: int) -> str:
    return resource_id(6, i)


def luhn_digit(digits: str) -> int:
    """The check digit that makes ``digits`` + digit pass the Luhn test (as on a personnummer)."""
    total = 0
    for position, char in enumerate(digits):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return (10 - total % 10) % 10


def personnummer(i: int) -> str:
    """Twelve digits ``YYYYMMDDNNNC``: birth date, serial 900–999, Luhn check over the last ten."""
    born = _FIRST_BIRTH + timedelta(days=i % _BIRTH_DAYS)
    serial = 900 + (i // _BIRTH_DAYS) % 100
    ten = f"{born:%y%m%d}{serial:03d}"
    return f"{born:%Y%m%d}{serial:03d}{luhn_digit(ten)}"


def luhn_ok(pnr: str) -> bool:
    ten = pnr[-10:]
    return ten.isdigit() and luhn_digit(ten[:9]) == int(ten[9])


def hsa_id(kind: str, i: int) -> str:
    return f"SE{ORGNR}-B{kind}{i:010d}"


def _ref(kind: int, i: int, type_: str, display: str | None = None) -> dict[str, str]:
    ref = {"reference": f"{type_}/{resource_id(kind, i)}"}
    if display:
        ref["display"] = display
    return ref


def _tag() -> dict[str, Any]:
    return {"tag": [dict(codes.TEST_DATA_TAG)]}


def _directory_entry(type_: str, id_: str, hsa: str, **content: Any) -> dict[str, Any]:
    """A unit or staff resource of the synthetic region: its HSA-id, active, then ``content``."""
    return {"resourceType": type_, "id": id_, "meta": _tag(), "identifier": [{"system": HSA_ID, "value": hsa}],
            "active": True, **content}


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def _start(i: int) -> date:
    """When agreement ``i`` begins."""
    return date(2024 + i % 2, 1 + i % 12, 1 + i % 28)


def agreement(i: int, organization: int | None = None) -> list[dict[str, Any]]:
    """The eleven resources of agreement ``i``, with ids, without version ``meta``.

    ``organization`` makes the agreement use agreement ``organization``'s unit instead of its
    own (the Organization is then still in the list, but nothing refers to it).
    """
    unit = i if organization is None else organization
    pnr = personnummer(i)
    male = int(pnr[10]) % 2 == 1
    given = _GIVEN[i % len(_GIVEN)]
    start = _start(i)
    end = start + timedelta(days=730)
    org = _ref(2, unit, "Organization", f"Testvårdcentralen {unit}")
    nurse_role, doctor_role = _ref(10, i, "PractitionerRole"), _ref(11, i, "PractitionerRole")
    patient = {
        "resourceType": "Patient",
        "id": resource_id(1, i),
        "meta": _tag(),
        "identifier": [{"system": PERSONNUMMER, "value": pnr}],
        "active": True,
        "name": [{"use": "official", "family": "Testperson", "given": [given, f"Nr{i}"]}],
        "gender": "male" if male else "female",
        "birthDate": f"{pnr[:4]}-{pnr[4:6]}-{pnr[6:8]}",
        "address": [{"use": "home", "city": "Testby", "postalCode": f"{10000 + i % 90000}", "country": "SE"}],
    }
    organization_resource = _directory_entry(
        "Organization", resource_id(2, i), hsa_id("E", i),
        type=[_coding(codes.ORGANIZATION_KIND, "region", "Region"),
              _coding(codes.CARE_UNIT_TYPE, "vardcentral", "Vårdcentral")],
        name=f"Testvårdcentralen {i}",
        telecom=[{"system": "phone", "value": "010-100 00 00", "use": "work"}],
        partOf={"reference": f"Organization/{REGION_ID}"},
    )
    staff = (("Sara", "nurse", "Sjuksköterska"), ("Lars", "doctor", "Läkare"))
    practitioners = [
        _directory_entry("Practitioner", resource_id(3 + n, i), hsa_id("P", i * 2 + n),
                         name=[{"family": "Testvårdare", "given": [name, f"Nr{i}"]}])
        for n, (name, _code, _title) in enumerate(staff)
    ]
    roles = [
        _directory_entry("PractitionerRole", resource_id(10 + n, i), hsa_id("U", i * 2 + n),
                         practitioner=_ref(3 + n, i, "Practitioner", f"{name} Testvårdare"), organization=org,
                         code=[{"coding": [{"system": codes.PRACTITIONER_ROLE, "code": code}], "text": title}])
        for n, (name, code, title) in enumerate(staff)
    ]
    care_team = {
        "resourceType": "CareTeam",
        "id": resource_id(5, i),
        "meta": _tag(),
        "status": "active",
        "name": f"Vårdteam för {given} Testperson",
        "subject": _ref(1, i, "Patient"),
        "participant": [
            {"role": [_coding(codes.CARETEAM_ROLE, codes.FAST_VARDKONTAKT, "Fast vårdkontakt")],
             "member": nurse_role, "period": {"start": start.isoformat()}},
            {"role": [_coding(codes.CARETEAM_ROLE, codes.FAST_LAKARKONTAKT, "Fast läkarkontakt")],
             "member": doctor_role, "period": {"start": start.isoformat()}},
            {"role": [_coding(codes.CARETEAM_ROLE, "patient", "Patient")],
             "member": _ref(1, i, "Patient"), "period": {"start": start.isoformat()}},
        ],
        "managingOrganization": [org],
    }
    goals = [
        {
            "resourceType": "Goal",
            "id": resource_id(7 + n, i),
            "meta": _tag(),
            "lifecycleStatus": "active",
            "description": {"text": text},
            "subject": _ref(1, i, "Patient"),
            "startDate": start.isoformat(),
            "target": [{"dueDate": (start + timedelta(days=120 * (n + 1))).isoformat()}],
            "expressedBy": _ref(1, i, "Patient") if n == 0 else nurse_role,
        }
        for n, text in enumerate((_PATIENT_GOAL, *_CARE_GOALS))
    ]
    activities = []
    for n, (code, text) in enumerate(_ACTIVITIES):
        day = (start + timedelta(days=14 * (n + 1))).isoformat()
        activities.append({"detail": {
            "kind": "Appointment",
            "code": _coding(codes.ACTIVITY_KIND, code, text),
            "status": "scheduled",
            "scheduledPeriod": {"start": f"{day}T09:00:00+01:00", "end": f"{day}T09:45:00+01:00"},
            "performer": [org],
            "description": text,
        }})
    care_plan = {
        "resourceType": "CarePlan",
        "id": careplan_id(i),
        "meta": _tag(),
        "status": "active",
        "intent": "plan",
        "category": [_coding(codes.CAREPLAN_CATEGORY, codes.PATIENTKONTRAKT, "Patientkontrakt")],
        "title": f"Patientkontrakt för {given} Testperson",
        "description": "Överenskommelse om vad som ska hända, när och vem du vänder dig till (testdata).",
        "subject": _ref(1, i, "Patient", f"{given} Testperson"),
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "author": org,
        "contributor": [{"reference": f"Organization/{CLINIC_ID}", "display": "Regionkliniken (test)"},
                        {"reference": f"Organization/{HOMECARE_ID}", "display": "Hemsjukvården (test)"}],
        "careTeam": [_ref(5, i, "CareTeam")],
        "goal": [_ref(7 + n, i, "Goal") for n in range(3)],
        "activity": activities,
    }
    return [patient, organization_resource, *practitioners, care_team, care_plan, *goals, *roles]


def care_plan(i: int) -> dict[str, Any]:
    """Agreement ``i``'s CarePlan as loaded."""
    return agreement(i)[5]


def transaction_bundle(i: int, organization: int) -> dict[str, Any]:
    """New agreement ``i`` at the existing unit of agreement ``organization``, with that unit's
    staff, as the 10-entry transaction an EHR sends: Patient, CareTeam, CarePlan, three Goals and
    four booked visits (Appointment), with ``urn:uuid`` full URLs and references between the
    entries (R4 http.html#trules). The directory (Organization, Practitioner, PractitionerRole)
    is not the EHR's to write: the team's PractitionerRoles are those already at the unit."""
    resources = transaction_resources(i, organization)
    urns = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}" for r in resources}
    entries = []
    for resource in resources:
        entries.append({
            "fullUrl": urns[f"{resource['resourceType']}/{resource['id']}"],
            "resource": _rewrite_references({k: v for k, v in resource.items() if k != "id"}, urns),
            "request": {"method": "POST", "url": resource["resourceType"]},
        })
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def transaction_resources(i: int, organization: int) -> list[dict[str, Any]]:
    """The resources of ``transaction_bundle`` as stored once it has run: with their ids and
    plain references (what the loader checks through the server's validation)."""
    staff = {f"PractitionerRole/{resource_id(kind, i)}": f"PractitionerRole/{resource_id(kind, organization)}"
             for kind in (10, 11)}
    resources = [r for r in agreement(i, organization) if r["resourceType"] not in _DIRECTORY]
    return [_rewrite_references(r, staff) for r in resources + appointments(i)]


def appointments(i: int) -> list[dict[str, Any]]:
    """The four visits booked for agreement ``i``'s patient with its fast vårdkontakt (ids of
    kinds 12 to 15, after ``KINDS``): two weeks apart, the agreement's activity kinds in turn."""
    start = _start(i)
    booked = []
    for n in range(4):
        code, text = _ACTIVITIES[n % len(_ACTIVITIES)]
        day = (start + timedelta(days=14 * (n + 1))).isoformat()
        booked.append({
            "resourceType": "Appointment",
            "id": resource_id(len(KINDS) + 1 + n, i),
            "meta": _tag(),
            "status": "booked",
            "serviceType": [_coding(codes.ACTIVITY_KIND, code, text)],
            "description": text,
            "start": f"{day}T10:00:00+01:00",
            "end": f"{day}T10:30:00+01:00",
            "participant": [
                {"actor": _ref(1, i, "Patient"), "status": "accepted"},
                {"actor": _ref(10, i, "PractitionerRole"), "status": "accepted"},
            ],
        })
    return booked


def _consent(i: int, kind: int, category: tuple[str, str], recorder: str,
             actors: list[tuple[str, str]]) -> dict[str, Any]:
    """A Consent of agreement ``i``'s patient (the R4 privacy-consent pattern, design of issue
    14): in force from 2024 without end, recorded by the unit ``recorder``."""
    permit = category[0] == sharing.SAMTYCKE
    patient = _ref(1, i, "Patient")
    return {
        "resourceType": "Consent",
        "id": resource_id(kind, i),
        "meta": _tag(),
        "status": "active",
        "scope": _coding("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent"),
        "category": [_coding(sharing.CONSENT_CATEGORY, *category)],
        "patient": patient,
        "dateTime": f"{_start(i).isoformat()}T10:00:00+01:00",
        "performer": [patient],
        "organization": [{"reference": f"Organization/{recorder}"}],
        "policyRule": _coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", *(
            ("OPTIN", "opt-in") if permit else ("OPTOUT", "opt-out"))),
        "provision": {
            "type": "permit" if permit else "deny",
            "period": {"start": _start(i).isoformat()},
            "actor": [{"role": _coding(sharing.PARTICIPATION, role, display),
                       "reference": {"reference": f"Organization/{org}"}}
                      for role, display, org in ((r, _ROLE_DISPLAY[r], o) for r, o in actors)],
        },
    }


_ROLE_DISPLAY = {sharing.RECIPIENT: "information recipient", sharing.CUSTODIAN: "custodian"}


def samtycke(i: int) -> dict[str, Any]:
    """Agreement ``i``'s patient's samtycke, recorded at the kommun's hemsjukvård: the
    hemsjukvård (IRCP) may read what the region (CST) holds about the patient."""
    return _consent(i, SAMTYCKE_KIND, (sharing.SAMTYCKE, "Samtycke till sammanhållen journalföring"), HOMECARE_ID,
                    [(sharing.RECIPIENT, HOMECARE_ID), (sharing.CUSTODIAN, REGION_ID)])


def sparr(i: int) -> dict[str, Any]:
    """Agreement ``i``'s patient's inre spärr on the region's mottagning (CST), recorded there:
    it hides the mottagning's part from every other unit and none of the agreement, so every
    read of the agreement probes it and still finds its data."""
    return _consent(i, SPARR_KIND, (sharing.INRE_SPARR, "Inre spärr"), MOTTAGNING_ID,
                    [(sharing.CUSTODIAN, MOTTAGNING_ID)])


CONSENTS = {"samtycke": samtycke, "sparr": sparr}


_DIRECTORY = ("Organization", "Practitioner", "PractitionerRole")
TRANSACTION_ENTRIES = 10


def _rewrite_references(node: Any, urns: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite_references(v, urns) for k, v in node.items()}
        if isinstance(out.get("reference"), str) and out["reference"] in urns:
            out["reference"] = urns[out["reference"]]
        return out
    if isinstance(node, list):
        return [_rewrite_references(v, urns) for v in node]
    return node
