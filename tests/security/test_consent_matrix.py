"""Sharing across care providers, both ways: who sees what of one agreement under each state of
the patient's samtycke and spärr, through every door that reaches the data (docs/security.md,
*The consent matrix*).

The demo region's agreement ``TARGET`` is written by Vårdcentralen Björkbacken (Region Exempel);
the medicine clinic of the hospital (same provider) and Hemsjukvården Exempelstad (Exempelstads
kommun, another provider) take part in it. Callers: a nurse of the vårdcentral (the owning
unit), a nurse of the clinic (another unit of the same provider), a nurse of the hemsjukvård
(another provider), and that nurse under emergency access (nödåtkomst) to the patient. States:
the Consents in force, recorded through the API by the units the patient asked. Each probe
answers whether a resource is *shown*; a refused path must look exactly like an absent one
(404, not in a search, its ``_total``, a count, an include, a history, a batch entry, the
operations ``$patientkontrakt`` and ``$everything``, and a conditional create that does not find it).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.domain.demo import DemoGenerator, has_sip
from patientkontrakt.domain.sharing import CONSENT_CATEGORY, PARTICIPATION
from patientkontrakt.security.oauth import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import BASE_URL, demo_database, make_settings
from tests.security.conftest import World, _agreements
from tests.security.test_sessions import pages_sign_in, register_pages_clients

VC = "demo-org-vc-bjorkbacken"  # owns the agreement (Region Exempel)
CLINIC = "demo-org-med-lanssjukhuset"  # another unit of Region Exempel
HOMECARE = "demo-org-hemsjukvard-exempelstad"  # Exempelstads kommun: another provider
HOMESERVICE = "demo-org-hemtjanst-exempelstad"  # the kommun's hemtjänst: social care
REGION = "demo-org-region"  # the provider Region Exempel
TARGET = 2
REASON = "Medvetslös vid ankomst, anhöriga nås inte"

CALLERS = ("same-unit", "same-provider", "other-provider", "other-provider-emergency")
# state -> the Consents in force: (recording unit, kind, actor role, actor Organization, period end)
STATES: dict[str, list[tuple[str, str, str, str, str | None]]] = {
    "none": [],
    "samtycke": [(HOMECARE, "samtycke", "IRCP", HOMECARE, None)],
    "samtycke-expired": [(HOMECARE, "samtycke", "IRCP", HOMECARE, "2023-12-31")],
    "inre-sparr": [(HOMECARE, "samtycke", "IRCP", HOMECARE, None), (VC, "inre-sparr", "CST", VC, None)],
    "yttre-sparr": [(HOMECARE, "samtycke", "IRCP", HOMECARE, None), (VC, "yttre-sparr", "CST", VC, None)],
    "yttre-sparr-provider": [(HOMECARE, "samtycke", "IRCP", HOMECARE, None),
                             (CLINIC, "yttre-sparr", "CST", REGION, None)],
}
Y, N = "shown", "hidden"
# What the vårdcentral owns (the agreement, its team, a goal its nurse set): state -> per caller.
OWNED_BY_VC: dict[str, tuple[str, ...]] = {
    "none": (Y, Y, N, Y),
    "samtycke": (Y, Y, Y, Y),
    "samtycke-expired": (Y, Y, N, Y),
    "inre-sparr": (Y, N, N, N),
    "yttre-sparr": (Y, Y, N, N),
    "yttre-sparr-provider": (Y, Y, N, N),
}
# A goal the hemsjukvård wrote: only it sees it (no samtycke lets the region read the kommun's).
OWNED_BY_HOMECARE = (N, N, Y, Y)
# The patient's own goal and the Patient: no provider's record.
UNOWNED = (Y, Y, Y, Y)
# What ``$patientkontrakt`` does not return as part of the agreement (it gives the agreement,
# and the patient's own goals with it: they follow the agreement's cell).
OUTSIDE_THE_AGREEMENT = frozenset({"kommun goal", "Patient"})


@pytest.fixture(scope="module")
def module_db() -> Iterator[str]:
    with demo_database(f"pk_consent_{os.getpid()}", 8) as url:
        yield url


@pytest.fixture(scope="module")
def world(module_db: str) -> World:
    generator = DemoGenerator(seed=1)
    settings = make_settings(module_db)

    register_pages_clients(settings.database_url)  # the staff pages' client exchanges tokens for nödåtkomst
    _SETTINGS[:] = [settings]
    return World(settings, generator, _agreements(generator)[:8])


@pytest.fixture(scope="module")
def app(module_db: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(module_db, test_idp=True)), base_url=BASE_URL) as client:
        client.headers.update({"content-type": "application/fhir+json"})
        yield client


def consent(patient: str, kind: str, role: str, actor: str, end: str | None = None) -> dict[str, Any]:
    permit = kind == "samtycke"
    profile = "pk-samtycke" if permit else "pk-sparr"
    period: dict[str, str] = {"start": "2023-01-01"}
    if end:
        period["end"] = end
    return {
        "resourceType": "Consent",
        "meta": {"profile": [f"https://patientkontrakt.se/fhir/StructureDefinition/{profile}"]},
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": CONSENT_CATEGORY, "code": kind}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": "2024-01-01T10:00:00+01:00",
        "performer": [{"reference": f"Patient/{patient}"}],
        "organization": [{"reference": f"Organization/{VC}"}],  # the server records the unit that records it
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "OPTIN" if permit else "OPTOUT"}]},
        "provision": {
            "type": "permit" if permit else "deny",
            "period": period,
            "actor": [{"role": {"coding": [{"system": PARTICIPATION, "code": role}]},
                       "reference": {"reference": f"Organization/{actor}"}}],
        },
    }


@dataclass
class Scene:
    world: World
    app: TestClient
    kommun_goal: str
    sip: str

    @property
    def target(self) -> Any:
        return self.world.agreements[TARGET]

    def headers(self, caller: str) -> dict[str, str]:
        w = self.world
        if caller == "same-unit":
            return w.staff(w.role_at(VC, "nurse"))
        if caller == "same-provider":
            return w.staff(w.role_at(CLINIC, "nurse"))
        staff = w.staff(w.role_at(HOMECARE, "nurse"))
        if caller == "other-provider":
            return staff
        assert caller == "other-provider-emergency"
        return {"authorization": f"Bearer {self.emergency(staff, self.target.patient)['access_token']}"}

    def emergency(self, staff: dict[str, str], patient: str, reason: str = REASON) -> dict[str, Any]:
        response = self.app.post("/oauth/token", data={
            "grant_type": TOKEN_EXCHANGE, "client_id": "pk-personal", "subject_token_type": ACCESS_TOKEN_TYPE,
            "subject_token": staff["authorization"].split(" ", 1)[1], "purpose_of_use": "ETREAT",
            "patient": patient, "reason": reason}, headers={"content-type": "application/x-www-form-urlencoded"})
        return {"status": response.status_code, **response.json()}

    def record(self, unit: str, resource: dict[str, Any]) -> str:
        w = self.world
        response = self.app.post(f"/fhir/{resource['resourceType']}", json=resource,
                                 headers=w.staff(w.role_at(unit, "nurse")))
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def revoke(self, unit: str, consent_id: str) -> None:
        w = self.world
        headers = w.staff(w.role_at(unit, "nurse"))
        current = self.app.get(f"/fhir/Consent/{consent_id}", headers=headers)
        assert current.status_code == 200, current.text
        response = self.app.put(f"/fhir/Consent/{consent_id}", json={**current.json(), "status": "inactive"},
                                headers=headers)
        assert response.status_code == 200, response.text

    def resources(self) -> dict[str, tuple[str, str, tuple[str, ...] | None]]:
        """name -> (type, id, expected per caller; None: by the state, ``OWNED_BY_VC``)."""
        t = self.target
        return {"CarePlan": ("CarePlan", t.plan, None), "CareTeam": ("CareTeam", t.team, None),
                "care goal": ("Goal", t.goals[1], None),
                "kommun goal": ("Goal", self.kommun_goal, OWNED_BY_HOMECARE),
                "own goal": ("Goal", t.patient_goal, UNOWNED), "Patient": ("Patient", t.patient, UNOWNED)}


def sip(patient: str, plan: str, consent_id: str) -> dict[str, Any]:
    """The hemsjukvård's SIP, part of the agreement (profile pk-sip)."""
    def huvudman(code: str) -> dict[str, Any]:
        return {"coding": [{"system": "https://patientkontrakt.se/fhir/CodeSystem/pk-huvudman", "code": code}]}
    return {
        "resourceType": "CarePlan", "status": "active", "intent": "plan", "title": "SIP",
        "category": [{"coding": [{"system": "https://patientkontrakt.se/fhir/CodeSystem/pk-careplan-category",
                                  "code": "sip"}]}],
        "extension": [{"url": "https://patientkontrakt.se/fhir/StructureDefinition/pk-sip-overgripande-ansvar",
                       "valueCodeableConcept": huvudman("kommun")}],
        "partOf": [{"reference": f"CarePlan/{plan}"}], "subject": {"reference": f"Patient/{patient}"},
        "author": {"reference": f"Organization/{HOMECARE}"},
        "supportingInfo": [{"reference": f"Consent/{consent_id}"}],
        "activity": [{"extension": [{"url": "https://patientkontrakt.se/fhir/StructureDefinition/pk-sip-huvudman",
                                     "valueCodeableConcept": huvudman("kommun")}],
                      "detail": {"status": "in-progress", "description": "Såromläggning varannan dag",
                                 "performer": [{"reference": f"Organization/{HOMECARE}"}]}}],
    }


@pytest.fixture(scope="module")
def scene(world: World, app: TestClient) -> Scene:
    """The agreement, plus what the hemsjukvård writes about the patient: a goal of its own, and
    a SIP that is part of the agreement (written while a samtycke let it see the agreement; the
    samtycke is revoked again, the SIP stays the kommun's)."""
    patient, plan = world.agreements[TARGET].patient, world.agreements[TARGET].plan
    goal = {"resourceType": "Goal", "lifecycleStatus": "active",
            "description": {"text": "Klara förflyttning säng–rullstol själv"},
            "subject": {"reference": f"Patient/{patient}"},
            "expressedBy": {"reference": f"PractitionerRole/{world.role_at(HOMECARE, 'nurse')}"}}
    first = Scene(world, app, "", "")
    goal_id = first.record(HOMECARE, goal)
    consent_id = first.record(HOMECARE, consent(patient, "samtycke", "IRCP", HOMECARE))
    sip_id = first.record(HOMECARE, sip(patient, plan, consent_id))
    first.revoke(HOMECARE, consent_id)
    _SIP[:] = [sip_id]
    return Scene(world, app, goal_id, sip_id)


# -- the probes: each says whether the caller is shown (type, id) ---------------------------


def _ids(bundle: dict[str, Any], type_: str) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])
            if e.get("resource", {}).get("resourceType") == type_ and "id" in e["resource"]}


_PAGED: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (authorization, url) -> the pages, per state


def _pages(app: TestClient, url: str, headers: dict[str, str], limit: int = 40) -> list[dict[str, Any]]:
    """Every page of a history, read once per reader and state (``_PAGED`` is emptied when the
    state changes): the history holds every resource probed, so reading it once per resource
    would only repeat the same requests."""
    key = (headers["authorization"], url)
    if key not in _PAGED:
        _PAGED[key] = _all_pages(app, url, headers, limit)
    return _PAGED[key]


def _all_pages(app: TestClient, url: str, headers: dict[str, str], limit: int) -> list[dict[str, Any]]:
    bundles = []
    while url and len(bundles) < limit:
        response = app.get(url, headers=headers)
        assert response.status_code == 200, response.text
        bundles.append(response.json())
        url = next((urlsplit(link["url"])._replace(scheme="", netloc="").geturl() for link in bundles[-1]["link"]
                    if link["relation"] == "next"), "")
    return bundles


def probe_read(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    status = app.get(f"/fhir/{t}/{i}", headers=h).status_code
    assert status in (200, 404), status
    return status == 200


def probe_vread(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    status = app.get(f"/fhir/{t}/{i}/_history/1", headers=h).status_code
    assert status in (200, 404), status
    return status == 200


def probe_search_total(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    bundle = app.get(f"/fhir/{t}?_id={i}&_total=accurate", headers=h).json()
    assert bundle["total"] == len(_ids(bundle, t)), bundle
    return i in _ids(bundle, t)


def probe_count(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    total = app.get(f"/fhir/{t}?_id={i}&_summary=count", headers=h).json()["total"]
    assert total in (0, 1)
    return total == 1


def probe_patient_search(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    """Everything of the type about the patient, counted before paging."""
    param = "_id" if t == "Patient" else "subject"
    bundle = app.get(f"/fhir/{t}?{param}={p}&_total=accurate&_count=100", headers=h).json()
    assert bundle["total"] == len(_ids(bundle, t))
    return i in _ids(bundle, t)


def probe_revinclude(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    if t == "Patient":
        return probe_read(app, h, t, i, p)
    bundle = app.get(f"/fhir/Patient?_id={p}&_revinclude={t}:subject", headers=h).json()
    return i in _ids(bundle, t)


def probe_history_instance(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    response = app.get(f"/fhir/{t}/{i}/_history", headers=h)
    assert response.status_code in (200, 404), response.status_code
    return response.status_code == 200 and bool(response.json().get("entry"))


def probe_history_type(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    return any(i in _ids(b, t) for b in _pages(app, f"/fhir/{t}/_history?_count=100", h))


def probe_history_system(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    return any(i in _ids(b, t) for b in _pages(app, "/fhir/_history?_count=200", h))


def probe_batch(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "GET", "url": f"{t}/{i}"}}]}
    response = app.post("/fhir", json=bundle, headers=h)
    assert response.status_code == 200, response.text
    status = response.json()["entry"][0]["response"]["status"]
    assert status.split()[0] in ("200", "404"), status
    return status.startswith("200")


def probe_conditional_create(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    """A conditional create (``If-None-Exist``) of a copy of the resource: 200 when it finds the
    resource, otherwise it would create the copy (deleted again) or refuse it — never 200 for
    what the caller may not see."""
    body = {k: v for k, v in _stored(t, i).items() if k not in ("id", "meta")}
    response = app.post(f"/fhir/{t}", json=body, headers={**h, "if-none-exist": f"_id={i}"})
    if response.status_code == 201:
        assert app.delete(f"/fhir/{t}/{response.json()['id']}", headers=h).status_code in (200, 204)
    assert response.status_code in (200, 201, 403, 409, 422), response.text
    return response.status_code == 200


_SETTINGS: list[Any] = []


def _stored(type_: str, id_: str) -> dict[str, Any]:
    """The resource as stored, read by the service itself (no rules)."""
    async def get() -> dict[str, Any]:
        store = Store(create_engine(_SETTINGS[0].database_url, pool_size=1))
        try:
            async with store.reading() as unit:
                stored = await unit.get(type_, id_)
                assert stored is not None
                return dict(orjson.loads(stored.body))
        finally:
            await store.dispose()
    return asyncio.run(get())


def probe_operation(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    response = app.get(f"/fhir/Patient/{p}/$patientkontrakt", headers=h)
    if response.status_code == 404:
        return False
    assert response.status_code == 200, response.text
    return i in _ids(response.json(), t)


def probe_everything(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    """The patient's ``$everything`` paged to the end: on no page unless shown, and every page's
    total counts exactly what the pages show."""
    pages = _pages(app, f"/fhir/Patient/{p}/$everything?_count=4", h)
    shown = [e["resource"]["id"] for b in pages for e in b.get("entry", []) if e["search"]["mode"] == "match"]
    assert all(b["total"] == len(shown) for b in pages), [b["total"] for b in pages]
    return any(i in _ids(b, t) for b in pages)


def probe_include(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    """The hemsjukvård's SIP with ``_include`` of the agreement it is part of."""
    bundle = app.get(f"/fhir/CarePlan?_id={_SIP[0]}&_include=CarePlan:part-of", headers=h).json()
    return i in _ids(bundle, "CarePlan")


def probe_chain(app: TestClient, h: dict[str, str], t: str, i: str, p: str) -> bool:
    """The SIP found through a chain on the agreement it is part of: only if the agreement is seen."""
    bundle = app.get(f"/fhir/CarePlan?_id={_SIP[0]}&part-of._id={i}&_total=accurate", headers=h).json()
    assert bundle["total"] == len(_ids(bundle, "CarePlan"))
    return _SIP[0] in _ids(bundle, "CarePlan")


_SIP: list[str] = []
# Through the kommun's SIP: only for the agreement, and only for readers that see the SIP.
THROUGH_THE_SIP = {"include": probe_include, "chain": probe_chain}

PROBES: dict[str, Callable[[TestClient, dict[str, str], str, str, str], bool]] = {
    "read": probe_read, "vread": probe_vread, "search-total": probe_search_total, "count": probe_count,
    "patient-search": probe_patient_search, "revinclude": probe_revinclude,
    "history-instance": probe_history_instance, "history-type": probe_history_type,
    "history-system": probe_history_system, "batch": probe_batch,
    "conditional-create": probe_conditional_create, "$patientkontrakt": probe_operation,
    "$everything": probe_everything,
}


@pytest.mark.parametrize("state", list(STATES))
def test_consent_matrix(scene: Scene, state: str) -> None:
    recorded: list[tuple[str, str]] = []
    _PAGED.clear()
    try:
        for unit, kind, role, actor, end in STATES[state]:
            recorded.append((unit, scene.record(unit, consent(scene.target.patient, kind, role, actor, end))))
        seen: dict[tuple[str, str, str], str] = {}
        wrong: list[str] = []
        for index, caller in enumerate(CALLERS):
            headers = scene.headers(caller)
            for name, (type_, id_, expected) in scene.resources().items():
                for probe, check in PROBES.items():
                    if probe == "$patientkontrakt":
                        if name in OUTSIDE_THE_AGREEMENT:
                            continue
                        # the operation gives the agreement: the patient's own goal with it
                        want = OWNED_BY_VC[state][index]
                    elif probe == "conditional-create" and type_ == "Patient":
                        continue  # a copy of a Patient is refused as a duplicate personnummer either way
                    else:
                        want = (expected or OWNED_BY_VC[state])[index]
                    got = Y if check(scene.app, headers, type_, id_, scene.target.patient) else N
                    seen[(caller, name, probe)] = got
                    if got != want:
                        wrong.append(f"{caller} {name} via {probe}: {got}, expected {want}")
            if caller.startswith("other-provider"):  # the readers that see the kommun's SIP
                for probe, check in THROUGH_THE_SIP.items():
                    want = OWNED_BY_VC[state][index]
                    got = Y if check(scene.app, headers, "CarePlan", scene.target.plan, scene.target.patient) else N
                    if got != want:
                        wrong.append(f"{caller} CarePlan via {probe} from the SIP: {got}, expected {want}")
            else:  # the region sees no SIP of the kommun's, so nothing through it
                assert not probe_read(scene.app, headers, "CarePlan", scene.sip, "")
        assert not wrong, "\n".join(wrong)
    finally:
        for unit, consent_id in recorded:
            scene.revoke(unit, consent_id)


@pytest.mark.parametrize("state", ["none", "samtycke", "inre-sparr"])
def test_the_staff_pages_follow_the_same_rules(scene: Scene, state: str) -> None:
    """The agreement's page at /personal, for each reader signed in to the pages: shown exactly
    when the API shows the agreement, and otherwise the same page as for an agreement that does
    not exist."""
    roles = {"same-unit": (VC, "nurse"), "same-provider": (CLINIC, "nurse"), "other-provider": (HOMECARE, "nurse")}
    recorded: list[tuple[str, str]] = []
    try:
        for unit, kind, role, actor, end in STATES[state]:
            recorded.append((unit, scene.record(unit, consent(scene.target.patient, kind, role, actor, end))))
        for index, caller in enumerate(CALLERS[:3]):
            with TestClient(scene.app.app, base_url=BASE_URL) as browser:
                pages_sign_in(browser, "/personal", f"role:{scene.world.role_at(*roles[caller])}")
                page = browser.get(f"/personal/avtal/{scene.target.plan}")
                absent = browser.get("/personal/avtal/no-such-agreement")
            assert page.status_code in (200, 404), page.status_code
            assert absent.status_code == 404
            got = Y if page.status_code == 200 else N
            assert got == OWNED_BY_VC[state][index], f"{caller} in {state}: {got}"
            if got == N:
                assert page.text.replace(scene.target.plan, "no-such-agreement") == absent.text
    finally:
        for unit, consent_id in recorded:
            scene.revoke(unit, consent_id)


def test_a_revoked_samtycke_no_longer_opens_anything(scene: Scene) -> None:
    headers = scene.headers("other-provider")
    plan = scene.target.plan
    consent_id = scene.record(HOMECARE, consent(scene.target.patient, "samtycke", "IRCP", HOMECARE))
    assert probe_read(scene.app, headers, "CarePlan", plan, "")
    scene.revoke(HOMECARE, consent_id)
    assert not probe_read(scene.app, headers, "CarePlan", plan, "")
    assert not probe_count(scene.app, headers, "CarePlan", plan, "")


def _notices(app: TestClient, headers: dict[str, str], patient: str) -> list[str]:
    bundle = app.get(f"/fhir/Patient/{patient}/$patientkontrakt", headers=headers).json()
    return [issue["details"]["text"] for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] == "OperationOutcome"
            for issue in e["resource"]["issue"] if issue["code"] == "suppressed"]


def test_staff_are_told_that_blocked_information_exists_never_what(scene: Scene) -> None:
    patient = scene.target.patient
    homecare, clinic, vc = (scene.headers(c) for c in ("other-provider", "same-provider", "same-unit"))

    def told(headers: dict[str, str], word: str) -> list[str]:
        return [text for text in _notices(scene.app, headers, patient) if word in text]

    # the hemsjukvård is not shown the region's part: it needs the patient's samtycke
    assert len(told(homecare, "samtycke")) == 1
    # $everything says the same on its first page
    everything = scene.app.get(f"/fhir/Patient/{patient}/$everything", headers=homecare).json()
    assert [i["code"] for e in everything["entry"] if e["search"]["mode"] == "outcome"
            for i in e["resource"]["issue"]] == ["suppressed"]
    # the region's units are not shown the hemsjukvård's goal (the kommun's part) either
    assert len(told(clinic, "samtycke")) == 1 and len(told(vc, "samtycke")) == 1
    assert told(clinic, "spärrat") == []
    sparr = scene.record(VC, consent(patient, "inre-sparr", "CST", VC))
    try:
        notice = told(clinic, "spärrat")
        assert len(notice) == 1
        assert "Björkbacken" not in notice[0] and VC not in notice[0]  # never where, never what
        assert told(vc, "spärrat") == []  # the unit sees its own
    finally:
        scene.revoke(VC, sparr)
    assert told(clinic, "spärrat") == []
    with_consent = scene.record(HOMECARE, consent(patient, "samtycke", "IRCP", HOMECARE))
    try:
        assert told(homecare, "samtycke") == []
    finally:
        scene.revoke(HOMECARE, with_consent)


# -- recording samtycke and spärr: only what the unit may record -----------------------------


def test_a_unit_records_samtycke_only_for_itself_and_spärr_only_on_its_own_provider(scene: Scene) -> None:
    w, app, patient = scene.world, scene.app, scene.target.patient
    homecare = w.staff(w.role_at(HOMECARE, "nurse"))
    # a samtycke that would let another unit read
    response = app.post("/fhir/Consent", json=consent(patient, "samtycke", "IRCP", CLINIC), headers=homecare)
    assert response.status_code == 403, response.text
    # a spärr on another provider's data
    response = app.post("/fhir/Consent", json=consent(patient, "yttre-sparr", "CST", VC), headers=homecare)
    assert response.status_code == 403, response.text
    # the organisation recording it is the unit, whatever the body says
    body = {**consent(patient, "samtycke", "IRCP", HOMECARE), "organization": [{"reference": f"Organization/{VC}"}]}
    response = app.post("/fhir/Consent", json=body, headers=homecare)
    assert response.status_code == 201, response.text
    assert response.json()["organization"][0]["reference"] == f"Organization/{HOMECARE}"
    consent_id = response.json()["id"]
    try:
        # another provider may neither change nor delete it, nor see it
        vc = w.staff(w.role_at(VC, "nurse"))
        assert app.get(f"/fhir/Consent/{consent_id}", headers=vc).status_code == 404
        assert app.delete(f"/fhir/Consent/{consent_id}", headers=homecare).status_code == 403
        # the patient sees it
        own = w.patient(patient)
        assert app.get(f"/fhir/Consent/{consent_id}", headers=own).status_code == 200
    finally:
        scene.revoke(HOMECARE, consent_id)


def test_another_providers_record_cannot_be_changed_even_when_shown(scene: Scene) -> None:
    w, app = scene.world, scene.app
    homecare = w.staff(w.role_at(HOMECARE, "nurse"))
    consent_id = scene.record(HOMECARE, consent(scene.target.patient, "samtycke", "IRCP", HOMECARE))
    try:
        plan = app.get(f"/fhir/CarePlan/{scene.target.plan}", headers=homecare)
        assert plan.status_code == 200
        changed = {**plan.json(), "description": "Ändrad av kommunen"}
        response = app.put(f"/fhir/CarePlan/{scene.target.plan}", json=changed, headers=homecare)
        assert response.status_code == 403, response.text
        patch = [{"op": "add", "path": "/description", "value": "Ändrad av kommunen"}]
        response = app.patch(f"/fhir/CarePlan/{scene.target.plan}", json=patch,
                             headers={**homecare, "content-type": "application/json-patch+json"})
        assert response.status_code == 403, response.text
        assert app.get(f"/fhir/CarePlan/{scene.target.plan}", headers=homecare).json() == plan.json()
    finally:
        scene.revoke(HOMECARE, consent_id)


# -- emergency access --------------------------------------------------------------------------


def test_emergency_access_needs_a_reason_and_a_patient(scene: Scene) -> None:
    w = scene.world
    staff = w.staff(w.role_at(HOMECARE, "nurse"))
    assert scene.emergency(staff, scene.target.patient, reason="")["status"] == 400
    assert scene.emergency(staff, scene.target.patient, reason="akut")["status"] == 400
    assert scene.emergency(staff, "")["status"] == 400
    granted = scene.emergency(staff, scene.target.patient)
    assert granted["status"] == 200 and granted["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert granted["expires_in"] <= w.settings.emergency_access_lifetime
    # not renewed: a new reason is needed
    again = scene.emergency({"authorization": f"Bearer {granted['access_token']}"}, scene.target.patient)
    assert again["status"] == 400 and again["error"] == "invalid_grant"


def test_emergency_access_is_for_staff_of_health_care_only(scene: Scene) -> None:
    w = scene.world
    home_service = w.staff(w.role_at(HOMESERVICE))
    assert scene.emergency(home_service, scene.target.patient)["status"] == 400
    patient = w.patient(scene.target.patient)
    assert scene.emergency(patient, scene.target.patient)["status"] == 400


def test_emergency_access_opens_one_patient_only(scene: Scene) -> None:
    w = scene.world
    staff = w.staff(w.role_at(HOMECARE, "nurse"))
    # another patient in the hemsjukvård's care who has given it no samtycke (those with a SIP have)
    other = next(a for a in w.agreements if a.number != TARGET and HOMECARE in a.contributors and not has_sip(a.number))
    token = scene.emergency(staff, scene.target.patient)["access_token"]
    headers = {"authorization": f"Bearer {token}"}
    assert probe_read(scene.app, headers, "CarePlan", scene.target.plan, "")
    assert not probe_read(scene.app, headers, "CarePlan", other.plan, "")


def test_emergency_access_ends_with_its_time(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from patientkontrakt.security import authenticate, tokens

    w = scene.world
    granted = scene.emergency(w.staff(w.role_at(HOMECARE, "nurse")), scene.target.patient)
    headers = {"authorization": f"Bearer {granted['access_token']}"}
    assert probe_read(scene.app, headers, "CarePlan", scene.target.plan, "")
    later = time.time() + granted["expires_in"] + tokens.LEEWAY + 1
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    monkeypatch.setattr(authenticate.time, "time", lambda: later)
    assert scene.app.get(f"/fhir/CarePlan/{scene.target.plan}", headers=headers).status_code == 401


def test_emergency_access_is_logged_with_its_reason(scene: Scene) -> None:
    w = scene.world
    reason = f"Akut försämring, patienten kan inte svara ({uuid.uuid4().hex[:6]})"
    granted = scene.emergency(w.staff(w.role_at(HOMECARE, "nurse")), scene.target.patient, reason)
    headers = {"authorization": f"Bearer {granted['access_token']}"}
    assert probe_read(scene.app, headers, "CarePlan", scene.target.plan, "")
    events = scene.app.get("/fhir/AuditEvent?_count=200", headers=headers).json()
    emergency = [e["resource"] for e in events.get("entry", [])
                 if e["resource"]["purposeOfEvent"][0].get("text") == reason]
    assert emergency, events
    assert all(e["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT" for e in emergency)
    assert any(f"CarePlan/{scene.target.plan}" in [x.get("what", {}).get("reference") for x in e["entity"]]
               for e in emergency)
