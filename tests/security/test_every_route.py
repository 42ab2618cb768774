"""Every route of the app, and every interaction on patient data, through the access pipeline.

``ROUTES`` classifies every (method, path) the app serves (``create_app().routes``; a mount is one
GET): a route that carries patient data is ``PROBED`` and has probes in ``PROBES``; any other says
why it carries none. ``test_every_route_is_classified`` fails for a route the app serves that the
table does not name (a route added later must be classified, and probed) and for a route the
table names that the app no longer serves.

A probe is one FHIR interaction (read, vread, conditional read and vread, update, conditional
update, patch, conditional patch, delete, conditional delete, create, conditional create,
search by GET and by POST, ``_include``/``_revinclude``, history of an instance, a type and the
system, ``$patientkontrakt`` on Patient and CarePlan (GET and POST), ``$everything`` by GET and
by POST, ``$validate`` of a type and of an instance, AuditEvent read and search by GET and POST,
and each kind of entry in a batch and in a transaction) or one page of the staff pages
(``/personal``) and the e-service (``/mitt``). The server offers no search of the whole system
(``GET /fhir`` is not a route). Each probe meets the pipeline's three stages, each stage its own
test:

* ``scope``: a token without the permission the interaction needs (every other permission on
  every type kept) is refused with a 403 OperationOutcome; a page signed in without scopes for
  patient data shows none of the agreement (and a form signed in without write scopes saves
  nothing). Nothing at all is written.
* ``unit``: what lies outside the caller's care unit (agreement 2, Vårdcentralen Björkbacken's,
  tried by a nurse at Vårdcentralen Strandvägen, which takes no part in it; on ``/mitt``, another
  patient) is answered as if it did not exist: 404 where an id names it, and exactly the answer
  an id nobody uses gets; searches, includes and history leave it out and their totals do not
  count it. None of it is shown, and none of it is written.
* ``logged``: the allowed access leaves its entry in the access log (the ``audit_log`` table, its
  rows after a mark, as test_audit.py reads it) for the patient, with the interaction; the refused
  attempt on a hidden resource leaves its refused entry, with the patient, so that the patient's
  log extract shows it (docs/security.md, "The access log").

A stage that does not apply to a probe says why (``Probe.not_applicable``). A stage the code
fails is a hole: marked ``xfail(strict=True)`` with its reason (``Probe.holes``), so that the
fix turns the mark into a failure to remove.

The region is loaded once for the module into a database of its own (as in test_access_rules.py);
the tokens are the server's own (``World``), and the pages' sessions are sealed as the sign-in
seals them, around such tokens (the sign-in itself: test_sessions.py, test_sign_in_pages.py).
Probes that write change harmless fields, what they made themselves, or an agreement kept for
them (3 is closed, 10 reopened), so that they do not depend on each other's order.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import re
import time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.testclient import TestClient

from api.app import create_app
from api.pages import session as sessions
from patientkontrakt.domain import codes
from patientkontrakt.domain.demo import DemoGenerator
from patientkontrakt.domain.identifiers import PERSONNUMMER, format_person_number
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.access import INTERNAL
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.service import Preferences
from patientkontrakt.security.clients import Clients
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import BASE_URL, _dsn, demo_database, make_settings
from tests.security.conftest import AGREEMENTS, PATIENT_SCOPES, STAFF_SCOPES, Agreement, World, _agreements
from tests.security.test_consent_matrix import consent

Route = tuple[str, str]  # (method, path template)

AUTHOR = "demo-org-vc-bjorkbacken"  # responsible for agreements 2, 3, 7 and 10
OTHER_UNIT = "demo-org-vc-strandvagen"  # takes no part in them
TARGET = 2  # the agreement the probes act on: Björkbacken's, hidden from Strandvägen
SHARED = 3  # Björkbacken's; its patient also has a draft agreement at Strandvägen (set up below)
REOPEN = 10  # Björkbacken's, closed in the set-up so that the staff pages can reopen it
OTHER_PATIENT = 8  # Strandvägen's: its patient is the other patient at /mitt
CONSENTED = 7  # Björkbacken's: its patient's samtycke, recorded in the set-up, is shown at /mitt/sparrar
ABSENT = "no-such-id"  # an id nobody uses
CSRF = "csrf-of-the-probes-session"

# Page sessions: the pages' own scopes, none for patient data, or reading only.
STAFF_NO_PATIENT_DATA = "openid fhirUser user/Organization.rs user/Practitioner.rs user/PractitionerRole.rs"
STAFF_READ_ONLY = "openid fhirUser user/*.rs user/AuditEvent.rs"
PATIENT_NO_PATIENT_DATA = ("openid fhirUser launch/patient patient/Organization.rs patient/Practitioner.rs "
                           "patient/PractitionerRole.rs")
PATIENT_READ_ONLY = "openid fhirUser launch/patient patient/*.rs patient/AuditEvent.rs"


# -- the routes ------------------------------------------------------------------------------------

PROBED = "patient data: probed in PROBES"
_SIGN_IN = "(test_oauth.py, test_external_idp.py, test_sign_in_pages.py)"
_LOG_WRITE = ("always 405, the access log cannot be written through the API; no resource is read "
              "(test_audit.py::test_the_log_cannot_be_written_through_the_api)")
_TOKENS = "OAuth: tokens, not resources (test_oauth.py, test_sessions.py)"
_LOG_REVIEW = ("the care provider's log review: log reviewers only (403 for anyone else), read through the "
               "AuditEvent search, whose scope and logging are the API's (test_log_review.py)")

_CONFORMANCE = ("the definitions the CapabilityStatement names (StructureDefinition, SearchParameter, "
                "OperationDefinition, ValueSet, CodeSystem): public like it, from memory, no patient data "
                "(test_conformance_resources.py)")
_SUBSCRIPTION_STATUS = ("a Subscription's delivery state, not patient data: only the care unit that owns it gets "
                        "an answer, 404 for everyone else (tests/notify/test_ownership.py)")
_CONFORMANCE_WRITE = "always 405: the definitions are read-only; nothing is read (test_conformance_resources.py)"

_EXPORT_KICK_OFF = ("starts a Bulk Data export: backend systems only (403 for staff and patients), scopes checked; "
                    "nothing is read until the files are built (test_export.py)")
_GROUP_EXPORT_KICK_OFF = ("starts a Bulk Data export of a Group's members: backend systems only (403 for staff and "
                          "patients), scopes checked; the Group must be the caller's unit's own (404 as for an "
                          "unknown id); nothing of its patients is read until the files are built (test_export.py, "
                          "tests/security/test_groups.py)")

ROUTES: dict[Route, str] = {
    # -- FHIR (api/fhir.py) --------------------------------------------------------------------
    ("GET", "/fhir/{type_}/{id_}"): PROBED,
    ("GET", "/fhir/{type_}/{id_}/_history/{version}"): PROBED,
    ("GET", "/fhir/{type_}/{id_}/_history"): PROBED,
    ("GET", "/fhir/{type_}/_history"): PROBED,
    ("GET", "/fhir/_history"): PROBED,
    ("GET", "/fhir/{type_}"): PROBED,
    ("POST", "/fhir/{type_}/_search"): PROBED,
    ("POST", "/fhir/{type_}"): PROBED,
    ("PUT", "/fhir/{type_}"): PROBED,
    ("DELETE", "/fhir/{type_}"): PROBED,
    ("PUT", "/fhir/{type_}/{id_}"): PROBED,
    ("DELETE", "/fhir/{type_}/{id_}"): PROBED,
    ("POST", "/fhir"): PROBED,
    ("GET", "/fhir/Patient/{id_}/$patientkontrakt"): PROBED,
    ("GET", "/fhir/CarePlan/{id_}/$patientkontrakt"): PROBED,
    ("POST", "/fhir/{type_}/$validate"): PROBED,
    ("POST", "/fhir/{type_}/{id_}/$validate"): PROBED,
    ("GET", "/fhir/AuditEvent"): PROBED,
    ("POST", "/fhir/AuditEvent/_search"): PROBED,
    ("GET", "/fhir/AuditEvent/{id_}"): PROBED,
    ("POST", "/fhir/AuditEvent"): _LOG_WRITE,
    ("PUT", "/fhir/AuditEvent"): _LOG_WRITE,
    ("DELETE", "/fhir/AuditEvent"): _LOG_WRITE,
    ("PUT", "/fhir/AuditEvent/{id_}"): _LOG_WRITE,
    ("DELETE", "/fhir/AuditEvent/{id_}"): _LOG_WRITE,
    ("PATCH", "/fhir/AuditEvent/{id_}"): _LOG_WRITE,
    ("GET", "/fhir/metadata"): "the CapabilityStatement: public (api/auth.py PUBLIC), describes the server only",
    # -- OAuth and SMART (api/oauth.py) --------------------------------------------------------
    ("GET", "/fhir/.well-known/smart-configuration"): "SMART discovery: public, endpoints and capabilities only",
    ("GET", "/.well-known/openid-configuration"): "OpenID Connect discovery: public, endpoints only",
    ("GET", "/oauth/jwks"): "the public halves of the signing keys",
    ("GET", "/oauth/authorize"): "starts a sign-in: the client's name, then the identity provider. With the "
                                 "test IdP (PK_TEST_IDP: demo data only, never with real data) the page lists the "
                                 "demo's people to sign in as, by design " + _SIGN_IN,
    ("POST", "/oauth/test-idp"): "the test IdP's choice: issues a code " + _SIGN_IN,
    ("GET", "/oauth/callback"): "back from the external IdP: the person's own commissions to choose from, "
                                "directory data " + _SIGN_IN,
    ("POST", "/oauth/commission"): "the chosen commission: issues a code " + _SIGN_IN,
    ("POST", "/oauth/token"): _TOKENS,
    ("POST", "/oauth/introspect"): _TOKENS,
    ("POST", "/oauth/revoke"): _TOKENS,
    # -- the staff pages (api/pages/personal.py, plan_changes.py, unit.py) -----------------------
    ("GET", "/personal/logga-in"): "starts the pages' sign-in: a redirect to /oauth/authorize",
    ("GET", "/personal/callback"): "finishes the pages' sign-in: the code becomes the session (test_sessions.py)",
    ("POST", "/personal/logga-ut"): "signs out: ends the session on the server (test_sessions.py)",
    ("GET", "/personal"): PROBED,
    ("GET", "/personal/avtal/{plan_id}"): PROBED,
    ("GET", "/personal/nytt"): "the empty form for a new agreement with the directory's staff and units; "
                               "the patient comes with the form sent (POST, probed)",
    ("POST", "/personal/nytt"): PROBED,
    ("GET", "/personal/avtal/{plan_id}/redigera"): PROBED,
    ("POST", "/personal/avtal/{plan_id}/redigera"): PROBED,
    ("GET", "/personal/avtal/{plan_id}/vardkontakt"): PROBED,
    ("POST", "/personal/avtal/{plan_id}/vardkontakt"): PROBED,
    ("GET", "/personal/avtal/{plan_id}/avsluta"): PROBED,
    ("POST", "/personal/avtal/{plan_id}/avsluta"): PROBED,
    ("GET", "/personal/avtal/{plan_id}/ateroppna"): PROBED,
    ("POST", "/personal/avtal/{plan_id}/ateroppna"): PROBED,
    ("GET", "/personal/avtal/{plan_id}/aktivitet/{index}"): PROBED,
    ("POST", "/personal/avtal/{plan_id}/aktivitet/{index}"): PROBED,
    ("GET", "/personal/avtal/{plan_id}/mal/{goal_id}"): PROBED,
    ("POST", "/personal/avtal/{plan_id}/mal/{goal_id}"): PROBED,
    ("GET", "/personal/enhet"): "the care unit's own contact details: its Organization, directory data",
    ("POST", "/personal/enhet"): "changes the care unit's own contact details: its Organization, directory data",
    # -- the e-service (api/pages/mitt.py) -------------------------------------------------------
    ("GET", "/mitt/logga-in"): "starts the e-service's sign-in: a redirect to /oauth/authorize",
    ("GET", "/mitt/callback"): "finishes the e-service's sign-in: the code becomes the session (test_sessions.py)",
    ("POST", "/mitt/logga-ut"): "signs out: ends the session on the server (test_sessions.py)",
    ("GET", "/mitt"): PROBED,
    ("POST", "/mitt/mal"): PROBED,
    ("GET", "/mitt/mal/{goal_id}"): PROBED,
    ("GET", "/mitt/sparrar"): PROBED,
    ("POST", "/mitt/mal/{goal_id}"): PROBED,
    # -- the rest (api/app.py, api/docs.py) ------------------------------------------------------
    ("GET", "/"): "the home page: fixed links",
    ("GET", "/healthz"): "liveness: the process answers; nothing is read",
    ("GET", "/readyz"): "readiness: database, schema revision and worker heartbeat, in fixed words; no data",
    ("GET", "/metrics"): "Prometheus metrics: counts by route template, pool, outbox and log ages; no id, no "
                         "patient (test_metrics.py); off without PK_METRICS_TOKEN",
    ("GET", "/lang"): "keeps the chosen language in a cookie and redirects to a local path",
    ("GET", "/openapi.json"): "the OpenAPI description of the routes, the same for everyone",
    ("HEAD", "/openapi.json"): "the OpenAPI description of the routes, the same for everyone",
    ("GET", "/docs"): "Swagger UI: a fixed page that loads /openapi.json",
    ("GET", "/static"): "the package's static files (CSS, JavaScript)",
    ("GET", "/static/docs"): "Swagger UI's static files (the fastapi-offline package)",
    # -- the provider's log review (api/pages/log_review.py) -------------------------------------
    ("GET", "/personal/logg"): _LOG_REVIEW,
    ("GET", "/personal/logg.csv"): _LOG_REVIEW,
    # -- samtycke, spärr, emergency access and SIP on the staff pages (api/pages/sharing.py,
    # emergency.py, sip.py) -----------------------------------------------------------------------
    ("GET", "/personal/patient/{patient_id}/samtycke"): PROBED,
    ("POST", "/personal/patient/{patient_id}/samtycke"): PROBED,
    ("POST", "/personal/patient/{patient_id}/samtycke/{consent_id}/aterkalla"): PROBED,
    ("GET", "/personal/patient/{patient_id}/nodatkomst"): PROBED,
    ("POST", "/personal/patient/{patient_id}/nodatkomst"): PROBED,
    ("POST", "/personal/nodatkomst/avsluta"): "ends the session's emergency access: revokes its token and drops it "
                                             "from the session; no resource is read (test_sharing_pages.py)",
    ("GET", "/personal/sip/{plan_id}"): PROBED,
    # -- Patient/$everything (api/fhir.py, patientkontrakt/fhir/everything.py) -------------------
    ("GET", "/fhir/Patient/{id_}/$everything"): PROBED,
    ("POST", "/fhir/Patient/{id_}/$everything"): PROBED,
    # -- operations by POST, and $validate refused by GET (api/fhir.py) ---------------------------
    ("POST", "/fhir/Patient/{id_}/$patientkontrakt"): PROBED,
    ("POST", "/fhir/CarePlan/{id_}/$patientkontrakt"): PROBED,
    ("GET", "/fhir/{type_}/$validate"): "always 405: $validate takes a resource, so only POST invokes it; "
                                        "nothing is read (test_operations.py)",
    ("GET", "/fhir/{type_}/{id_}/$validate"): "always 405: $validate takes a resource, so only POST invokes it; "
                                              "nothing is read (test_operations.py)",
    # -- the conformance resources (api/fhir.py, patientkontrakt/fhir/conformance.py) -------------
    ("GET", "/fhir/{type_:conformance}"): _CONFORMANCE,
    ("POST", "/fhir/{type_:conformance}/_search"): _CONFORMANCE,
    ("GET", "/fhir/{type_:conformance}/{id_}"): _CONFORMANCE,
    ("POST", "/fhir/{type_:conformance}"): _CONFORMANCE_WRITE,
    ("PUT", "/fhir/{type_:conformance}"): _CONFORMANCE_WRITE,
    ("DELETE", "/fhir/{type_:conformance}"): _CONFORMANCE_WRITE,
    ("POST", "/fhir/{type_:conformance}/{id_}"): _CONFORMANCE_WRITE,
    ("PUT", "/fhir/{type_:conformance}/{id_}"): _CONFORMANCE_WRITE,
    ("DELETE", "/fhir/{type_:conformance}/{id_}"): _CONFORMANCE_WRITE,
    ("PATCH", "/fhir/{type_:conformance}/{id_}"): _CONFORMANCE_WRITE,
    # -- subscriptions (api/fhir.py, patientkontrakt/notify/status_operation.py) -------------------
    ("GET", "/fhir/Subscription/{id_}/$status"): _SUBSCRIPTION_STATUS,
    ("POST", "/fhir/Subscription/{id_}/$status"): _SUBSCRIPTION_STATUS,
    # -- PATCH (api/fhir.py) ----------------------------------------------------------------------
    ("PATCH", "/fhir/{type_}/{id_}"): PROBED,
    ("PATCH", "/fhir/{type_}"): PROBED,
    ("PATCH", "/fhir/AuditEvent"): _LOG_WRITE,
    # -- Bulk Data $export (api/export.py, patientkontrakt/fhir/export.py) -------------------------
    ("GET", "/fhir/$export"): _EXPORT_KICK_OFF,
    ("POST", "/fhir/$export"): _EXPORT_KICK_OFF,
    ("GET", "/fhir/Patient/$export"): _EXPORT_KICK_OFF,
    ("POST", "/fhir/Patient/$export"): _EXPORT_KICK_OFF,
    ("GET", "/fhir/Group/{group_id}/$export"): _GROUP_EXPORT_KICK_OFF,
    ("POST", "/fhir/Group/{group_id}/$export"): _GROUP_EXPORT_KICK_OFF,
    ("GET", "/fhir/$export-status/{job_id}"): "an export's status and manifest (file URLs and counts, no resource); "
                                              "the client that started it only, 404 for anyone else (test_export.py)",
    ("DELETE", "/fhir/$export-status/{job_id}"): "cancels an export: the client that started it only, 404 for anyone "
                                                 "else; nothing is read (test_export.py)",
    ("GET", "/fhir/$export-file/{job_id}/{file_id}"): "an export's ndjson file: the client that started it only (404 "
                                                      "for anyone else); exactly what that client's searches find, "
                                                      "consent and spärr included; each download logged, one entry "
                                                      "per patient (test_export.py)",
}


def app_routes(app: FastAPI) -> set[Route]:
    """Every (method, path) the app serves; a mount (static files) as one GET."""
    try:
        from fastapi.routing import iter_route_contexts
        found: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:  # FastAPI before 0.16x keeps its routes flat
        found = list(app.routes)
    return {(method, route.path) for route in found for method in (getattr(route, "methods", None) or {"GET"})}


# -- the module's database and app ---------------------------------------------------------------------


def _internal_put(url: str, *resources: dict[str, Any], domain_rules: bool = True) -> None:
    """Write as the service itself: the set-up, not what is tested."""
    async def run() -> None:
        store = Store(create_engine(url, pool_size=1))
        try:
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                for r in resources]}
            service = build_service(make_settings(url), store, domain_rules=domain_rules)
            await BundleProcessor(service).process(INTERNAL, bundle, Preferences())
        finally:
            await store.dispose()
    asyncio.run(run())


def _plain(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


@dataclass(frozen=True)
class Call:
    """One HTTP request of a probe (without who sends it)."""

    method: str
    url: str
    json: Any = None
    form: str | None = None  # an application/x-www-form-urlencoded body
    headers: dict[str, str] = field(default_factory=dict)


class Database:
    """One connection to the module's database for the probes' own queries, on a loop of its own
    (a connection per query would cost more than most probes)."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(_dsn(url)))

    def fetch(self, statement: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.loop.run_until_complete(self.conn.fetch(statement, *args))]

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


@dataclass
class Ctx:
    """The loaded region, the app, and what the probes need of them."""

    world: World
    http: TestClient
    db: Database
    _headers: dict[tuple[str, ...], dict[str, str]] = field(default_factory=dict)
    _markers: dict[int, tuple[str, ...]] = field(default_factory=dict)

    # -- who ------------------------------------------------------------------------------------

    def agreement(self, number: int = TARGET) -> Agreement:
        return self.world.agreements[number]

    def _cached(self, key: tuple[str, ...], make: Callable[[], dict[str, str]]) -> dict[str, str]:
        if key not in self._headers:
            self._headers[key] = make()
        return self._headers[key]

    def staff(self, org: str = AUTHOR, scope: str = STAFF_SCOPES) -> dict[str, str]:
        """A nurse of ``org`` (client ``pk-personal``)."""
        return self._cached(("staff", org, scope), lambda: self.world.staff(self.world.role_at(org, "nurse"), scope))

    def patient(self, number: int = TARGET, scope: str = PATIENT_SCOPES) -> dict[str, str]:
        """The patient of agreement ``number`` (client ``pk-mitt``)."""
        return self._cached(("patient", str(number), scope),
                            lambda: self.world.patient(self.agreement(number).patient, scope))

    @property
    def own(self) -> dict[str, str]:
        return self.staff()

    @property
    def other(self) -> dict[str, str]:
        return self.staff(OTHER_UNIT)

    def lacking(self, letter: str) -> dict[str, str]:
        """A nurse of the responsible unit whose token grants every permission on every type
        (AuditEvent too) but ``letter`` (of ``cruds``)."""
        return self.staff(scope="openid fhirUser user/*." + "".join(p for p in "cruds" if p != letter))

    def system(self) -> dict[str, str]:
        return self._cached(("system", AUTHOR), lambda: self.world.system(AUTHOR))

    # -- the data ---------------------------------------------------------------------------------

    def get(self, type_: str, id_: str) -> dict[str, Any]:
        """``type_/id_`` as stored now, read from the database: what a probe sends is built from it
        without an access of its own in the log."""
        rows = self._query("SELECT body FROM resource WHERE res_type = $1 AND res_id = $2 AND NOT deleted",
                           type_, id_)
        assert len(rows) == 1, (type_, id_)
        return dict(json.loads(rows[0]["body"]))

    def body(self, type_: str, id_: str) -> dict[str, Any]:
        return _plain(self.get(type_, id_))

    def names(self, number: int = TARGET) -> set[str]:
        """The agreement's patient data: its Patient, CarePlan, CareTeam and Goals."""
        a = self.agreement(number)
        return {f"Patient/{a.patient}", f"CarePlan/{a.plan}", f"CareTeam/{a.team}", *(f"Goal/{g}" for g in a.goals)}

    def markers(self, number: int = TARGET) -> tuple[str, ...]:
        """What shows the agreement's patient on a page or in a response: the personnummer, as
        stored and as shown, and the name."""
        if number not in self._markers:
            a = self.agreement(number)
            patient = self.get("Patient", a.patient)
            number_ = next(i["value"] for i in patient["identifier"] if i["system"] == PERSONNUMMER)
            name = patient["name"][0]
            self._markers[number] = (number_, format_person_number(number_), " ".join([*name["given"], name["family"]]))
        return self._markers[number]

    def new_goal(self, number: int = TARGET, text: str = "Orka gå till affären") -> dict[str, Any]:
        """A goal the patient of agreement ``number`` states."""
        patient = f"Patient/{self.agreement(number).patient}"
        return {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": text},
                "subject": {"reference": patient}, "expressedBy": {"reference": patient},
                "meta": {"tag": [dict(codes.TEST_DATA_TAG)]}}

    def throwaway_goal(self) -> str:
        """A goal of the target's patient that no agreement names, made for one probe (so it can be
        deleted)."""
        created = self.http.post("/fhir/Goal", json=self.new_goal(text=f"Att ta bort {uuid.uuid4().hex[:6]}"),
                                 headers=self.system())
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    # -- the database -----------------------------------------------------------------------------

    def _query(self, statement: str, *args: Any) -> list[dict[str, Any]]:
        return self.db.fetch(statement, *args)

    def mark(self) -> int:
        """Where the access log ends now."""
        return int(self._query("SELECT coalesce(max(seq), 0) AS m FROM audit_log")[0]["m"])

    def entries(self, after: int) -> list[dict[str, Any]]:
        """The access log's entries after ``after``, in order."""
        return self._query("SELECT seq, interaction, request, resources, patient_id, outcome, status, client_id "
                           "FROM audit_log WHERE seq > $1 ORDER BY seq", after)

    def written(self) -> int:
        """Where the history of every resource ends now: a write of anything moves it."""
        return int(self._query("SELECT coalesce(max(seq), 0) AS m FROM resource_version")[0]["m"])

    def snapshot(self, number: int = TARGET) -> set[tuple[Any, ...]]:
        """The current version of every resource of the agreement's patient."""
        rows = self._query("SELECT res_type, res_id, version_id, deleted FROM resource WHERE patient_id = $1",
                           self.agreement(number).patient)
        return {tuple(r.values()) for r in rows}

    # -- requests ---------------------------------------------------------------------------------

    def send(self, call: Call, headers: dict[str, str]) -> httpx.Response:
        extra = {"content-type": "application/x-www-form-urlencoded"} if call.form is not None else {}
        response: httpx.Response = self.http.request(call.method, call.url, json=call.json, content=call.form,
                                                     headers={**headers, **extra, **call.headers})
        return response

    def cookie(self, area: sessions.Area, headers: dict[str, str]) -> str:
        """The area's session cookie around the access token in ``headers``, sealed as the
        sign-in seals it."""
        token = headers["authorization"].removeprefix("Bearer ")
        app: Any = self.http.app
        claims = app.state.oauth.tokens.verify(token)
        session = sessions.Session(access_token=token, refresh_token=None, expires_at=float(claims["exp"]),
                                   csrf=CSRF, name=str(claims.get("name") or ""), unit=claims.get("care_unit_name"),
                                   fhir_user=claims.get("fhirUser"), patient=claims.get("patient"),
                                   started=time.time())
        sealed = Response()
        sessions.save(types.SimpleNamespace(app=app), sealed, area, session)  # type: ignore[arg-type]
        return sealed.headers["set-cookie"].split(";")[0]

    def page(self, method: str, path: str, area: sessions.Area, headers: dict[str, str],
             form: dict[str, str] | None = None) -> httpx.Response:
        self.http.cookies.clear()
        response: httpx.Response = self.http.request(method, path, headers={"cookie": self.cookie(area, headers)},
                                                     data=form, follow_redirects=False)
        return response


@pytest.fixture(scope="module")
def ctx() -> Iterator[Ctx]:
    with demo_database(f"pk_routes_{os.getpid()}", AGREEMENTS) as url:
        settings = make_settings(url)
        world = World(settings, DemoGenerator(seed=1), _agreements(DemoGenerator(seed=1)))
        db = Database(url)
        with TestClient(create_app(settings), base_url=BASE_URL) as http:
            found = Ctx(world, http, db)
            _share_the_patient_of(found, SHARED)
            _close(found, REOPEN)
            _record_samtycke(found, CONSENTED)
            _consent_and_sip_of(found, TARGET)
            _register_staff_pages(url)
            yield found
        db.close()


def _share_the_patient_of(ctx: Ctx, number: int) -> None:
    """A draft agreement of Strandvägen (with its own team) for the patient of agreement ``number``:
    the patient is then visible to both units, each unit's agreement its own (as in
    test_access_leaks.py)."""
    a = ctx.agreement(number)
    plan, team = ctx.body("CarePlan", a.plan), ctx.body("CareTeam", a.team)
    nurse = ctx.world.role_at(OTHER_UNIT, "nurse")
    contact = [{"coding": [{"system": codes.CARETEAM_ROLE, "code": codes.FAST_VARDKONTAKT}]}]
    own_team = {**team, "id": "strandvagen-team", "managingOrganization": [{"reference": f"Organization/{OTHER_UNIT}"}],
                "participant": [{"role": contact, "member": {"reference": f"PractitionerRole/{nurse}"},
                                 "period": {"start": "2024-01-01"}}]}
    own_plan = {**{k: v for k, v in plan.items() if k not in ("goal", "activity", "contributor")},
                "id": "strandvagen-plan", "status": "draft", "author": {"reference": f"Organization/{OTHER_UNIT}"},
                "careTeam": [{"reference": "CareTeam/strandvagen-team"}]}
    _internal_put(ctx.world.settings.database_url, own_team, own_plan)


def _register_staff_pages(url: str) -> None:
    """The staff pages' OAuth client, which exchanges a nurse's token for an emergency access."""
    async def run() -> None:
        store = Store(create_engine(url, pool_size=1))
        try:
            await Clients(store).add("pk-personal", name="Patientkontrakt – personal", kind="public",
                                     redirect_uris=["http://127.0.0.1/personal/callback"], scope=STAFF_SCOPES)
        finally:
            await store.dispose()
    asyncio.run(run())


PROBE_CONSENT = "probe-samtycke"  # agreement 2's patient's samtycke at its unit, revoked by a probe
PROBE_SIP = "probe-sip"  # a SIP of agreement 2 written by its unit


def _consent_and_sip_of(ctx: Ctx, number: int) -> None:
    """A samtycke of the patient of agreement ``number`` recorded by its unit (covering only the
    unit's own data, so it changes what nobody sees) and a SIP of the agreement written by the
    unit. The SIP is written by the bare engine: its profile is tested in
    tests/pages/test_sharing_pages.py, and the probes need only a CarePlan of category sip."""
    a = ctx.agreement(number)
    def actor(role: str) -> dict[str, Any]:
        return {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                     "code": role}]}, "reference": {"reference": f"Organization/{AUTHOR}"}}

    consent = {"resourceType": "Consent", "id": PROBE_CONSENT, "status": "active",
               "meta": {"profile": [f"{codes.CANONICAL}/StructureDefinition/pk-samtycke"]},
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                     "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": f"{codes.CANONICAL}/CodeSystem/pk-consent-category",
                                         "code": "samtycke"}]}],
               "patient": {"reference": f"Patient/{a.patient}"}, "dateTime": "2024-01-01T10:00:00+01:00",
               "performer": [{"reference": f"Patient/{a.patient}"}],
               "organization": [{"reference": f"Organization/{AUTHOR}"}],
               "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                          "code": "OPTIN"}]},
               "provision": {"type": "permit", "period": {"start": "2024-01-01"},
                             "actor": [actor("IRCP"), actor("CST")]}}
    _internal_put(ctx.world.settings.database_url, consent)
    sip = {"resourceType": "CarePlan", "id": PROBE_SIP, "status": "active", "intent": "plan", "title": "SIP",
           "category": [{"coding": [{"system": codes.CAREPLAN_CATEGORY, "code": "sip"}]}],
           "partOf": [{"reference": f"CarePlan/{a.plan}"}], "subject": {"reference": f"Patient/{a.patient}"},
           "author": {"reference": f"Organization/{AUTHOR}"},
           "supportingInfo": [{"reference": f"Consent/{PROBE_CONSENT}"}],
           "activity": [{"detail": {"status": "in-progress", "description": "Hemtjänst varje morgon",
                                    "performer": [{"reference": f"Organization/{AUTHOR}"}]}}]}
    _internal_put(ctx.world.settings.database_url, sip, domain_rules=False)


def _close(ctx: Ctx, number: int) -> None:
    """Close agreement ``number`` as its unit's staff do, on the staff pages."""
    plan = ctx.get("CarePlan", ctx.agreement(number).plan)
    closed = ctx.page("POST", f"/personal/avtal/{plan['id']}/avsluta", sessions.STAFF, ctx.own, {
        "csrf": CSRF, "version": plan["meta"]["versionId"], "outcome": "completed", "reason": "Klart",
        "goals": "keep", "confirm": "yes"})
    assert closed.status_code == 303, closed.text


def _record_samtycke(ctx: Ctx, number: int) -> None:
    """The patient of agreement ``number`` gives Björkbacken their samtycke, recorded there."""
    body = consent(ctx.agreement(number).patient, "samtycke", "IRCP", AUTHOR)
    response = ctx.http.post("/fhir/Consent", json=body, headers={**ctx.own, "content-type": "application/fhir+json"})
    assert response.status_code == 201, response.text


# -- what the stages check -------------------------------------------------------------------------------


def refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (status, response.status_code, response.text[:1000])
    assert response.headers["content-type"].startswith("application/fhir+json"), response.headers
    assert response.json()["resourceType"] == "OperationOutcome", response.text[:1000]


def _shown(response: httpx.Response) -> str:
    """The answer without a page's signed-in user (on /mitt the patient's own name, from the sign-in)."""
    return re.sub(r'<div class="user">.*?</div>', "", response.text, flags=re.S)


def shows_nothing(ctx: Ctx, response: httpx.Response, number: int = TARGET) -> None:
    """None of the agreement's patient is in the answer."""
    shown = [m for m in ctx.markers(number) if m in _shown(response)]
    assert not shown, f"{response.request.method} {response.request.url} shows {shown}"


def listed(bundle: dict[str, Any]) -> set[str]:
    """``Type/id`` of every resource a searchset or history Bundle holds (not its outcome)."""
    found = set()
    for entry in bundle.get("entry", []):
        if entry.get("search", {}).get("mode") == "outcome":
            continue
        resource = entry.get("resource")
        if resource is not None and "id" in resource:
            found.add(f"{resource['resourceType']}/{resource['id']}")
        elif "fullUrl" in entry:  # a deletion in a history
            found.add("/".join(entry["fullUrl"].split("/")[-2:]))
    return found


def counts_only_what_it_shows(bundle: dict[str, Any]) -> None:
    """The total is what the Bundle holds (the probes ask for one page with everything): a resource
    the caller does not see is not counted."""
    assert not any(link["relation"] == "next" for link in bundle.get("link", [])), "one page holds it all"
    matches = [e for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]
    assert bundle.get("total") == len(matches), (bundle.get("total"), len(matches))


_VOLATILE = frozenset({"id", "lastUpdated", "fullUrl", "location", "etag", "lastModified"})


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def shape(response: httpx.Response, name: str) -> tuple[int, Any]:
    """Status and body with ``name`` written as X and what always varies (ids given by the server,
    times) left out: a hidden and an absent resource must give the same."""
    text = response.text.replace(name, "X")
    try:
        body: Any = _scrub(json.loads(text)) if text else None
    except json.JSONDecodeError:
        body = text
    return response.status_code, body


def logged(ctx: Ctx, start: int, interactions: tuple[str, ...], number: int = TARGET, exact: bool = True) -> None:
    """The access after ``start`` left success entries for the agreement's patient with
    ``interactions`` (exactly these, in order, when ``exact``) and no refused ones."""
    patient = ctx.agreement(number).patient
    about = [e for e in ctx.entries(start) if e["patient_id"] == patient]
    assert all(e["outcome"] == "success" for e in about), about
    seen = tuple(e["interaction"] for e in about)
    if exact:
        assert seen == interactions, f"logged {seen} for {patient}, expected {interactions}"
    else:
        assert set(interactions) <= set(seen), f"logged {seen} for {patient}, expected {interactions} among them"


def logged_refused(ctx: Ctx, start: int, interaction: str, number: int = TARGET) -> None:
    """The refused attempt after ``start`` left its entry: refused, 404, with the patient."""
    patient = ctx.agreement(number).patient
    about = [e for e in ctx.entries(start) if e["patient_id"] == patient]
    assert [(e["interaction"], e["outcome"], e["status"]) for e in about] == [(interaction, "refused", 404)], \
        f"the refused attempt is not logged for {patient} as {interaction}: {about}"


def logged_nothing_shown(ctx: Ctx, start: int, hidden: set[str], number: int = TARGET) -> None:
    """No entry after ``start`` says the caller was given the hidden resources."""
    patient = ctx.agreement(number).patient
    for entry in ctx.entries(start):
        if entry["patient_id"] == patient and entry["outcome"] == "success":
            assert not set(json.loads(entry["resources"])) & hidden, entry


# -- the probes --------------------------------------------------------------------------------------------

STAGES = ("scope", "unit", "logged")


@dataclass
class Probe:
    """One interaction on one route; each stage a method that sends what it needs and asserts."""

    id: str
    route: Route
    not_applicable: dict[str, str] = field(default_factory=dict)  # stage -> why it does not apply
    holes: dict[str, str] = field(default_factory=dict)  # stage -> the hole the code has (xfail, strict)

    def scope(self, ctx: Ctx) -> None:
        raise NotImplementedError

    def unit(self, ctx: Ctx) -> None:
        raise NotImplementedError

    def logged(self, ctx: Ctx) -> None:
        raise NotImplementedError


def _goal(index: int) -> Callable[[Ctx], str]:
    return lambda ctx: ctx.agreement().goals[index]


@dataclass
class Api(Probe):
    """An interaction on one resource named by id (or, for creates, on the patient named)."""

    interaction: str = "read"
    letter: str = "r"  # the permission it needs
    call: Callable[[Ctx, str], Call] = lambda ctx, name: Call("GET", name)
    mine: Callable[[Ctx], str] = _goal(1)  # what the responsible unit's nurse acts on
    hidden: Callable[[Ctx], str] = _goal(1)  # agreement 2's, for the other unit
    ok: tuple[int, ...] = (200,)
    absent: int = 404  # the answer to a name nobody uses
    refused_entry: bool = True  # the hidden attempt is logged as refused (it names the hidden resource)

    def scope(self, ctx: Ctx) -> None:
        call, before = self.call(ctx, self.mine(ctx)), ctx.written()
        response = ctx.send(call, ctx.lacking(self.letter))
        refused(response, 403)
        shows_nothing(ctx, response)
        assert ctx.written() == before, "nothing is written"

    def unit(self, ctx: Ctx) -> None:
        hidden, before = self.hidden(ctx), ctx.snapshot()
        seen = ctx.send(self.call(ctx, hidden), ctx.other)
        unseen = ctx.send(self.call(ctx, ABSENT), ctx.other)
        assert seen.status_code == self.absent, seen.text
        assert shape(seen, hidden) == shape(unseen, ABSENT)
        shows_nothing(ctx, seen)
        assert ctx.snapshot() == before, "nothing of the hidden patient is written"

    def logged(self, ctx: Ctx) -> None:
        call = self.call(ctx, self.mine(ctx))
        start = ctx.mark()
        response = ctx.send(call, ctx.own)
        assert response.status_code in self.ok, response.text
        logged(ctx, start, (self.interaction,))
        call = self.call(ctx, self.hidden(ctx))
        start = ctx.mark()
        ctx.send(call, ctx.other)
        if self.refused_entry:
            logged_refused(ctx, start, self.interaction)
        else:
            logged_nothing_shown(ctx, start, ctx.names())


@dataclass
class Listing(Probe):
    """A search or a history: the same request for every caller."""

    interaction: str = "search-type"
    letter: str = "s"
    call: Callable[[Ctx], Call] = lambda ctx: Call("GET", "/")
    number: int = TARGET  # whose resources the responsible unit finds and the other unit does not
    shared: bool = False  # the agreement's patient is visible to the other unit (it has one of its own)

    def hidden_names(self, ctx: Ctx) -> set[str]:
        names = ctx.names(self.number)
        return {n for n in names if not n.startswith("Patient/")} if self.shared else names

    def scope(self, ctx: Ctx) -> None:
        before = ctx.written()
        response = ctx.send(self.call(ctx), ctx.lacking(self.letter))
        refused(response, 403)
        shows_nothing(ctx, response, self.number)
        assert ctx.written() == before

    def unit(self, ctx: Ctx) -> None:
        response = ctx.send(self.call(ctx), ctx.other)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert not listed(bundle) & self.hidden_names(ctx), sorted(listed(bundle) & self.hidden_names(ctx))
        counts_only_what_it_shows(bundle)
        if not self.shared:
            shows_nothing(ctx, response, self.number)

    def logged(self, ctx: Ctx) -> None:
        start = ctx.mark()
        response = ctx.send(self.call(ctx), ctx.own)
        assert response.status_code == 200, response.text
        found = listed(response.json()) & ctx.names(self.number)
        assert found & self.hidden_names(ctx), "the responsible unit finds the agreement"
        logged(ctx, start, (self.interaction,), self.number)
        patient = ctx.agreement(self.number).patient
        [entry] = [e for e in ctx.entries(start) if e["patient_id"] == patient]
        assert found <= set(json.loads(entry["resources"])), (found, entry["resources"])
        start = ctx.mark()
        ctx.send(self.call(ctx), ctx.other)
        logged_nothing_shown(ctx, start, self.hidden_names(ctx), self.number)


@dataclass
class InBundle(Probe):
    """One entry of a batch or a transaction."""

    kind: str = "batch"
    interaction: str = "read"  # the entry's interaction (a batch logs it; a transaction logs "transaction")
    letter: str = "r"
    entry: Callable[[Ctx, str], dict[str, Any]] = lambda ctx, name: {}
    mine: Callable[[Ctx], str] = _goal(1)
    hidden: Callable[[Ctx], str] = _goal(1)
    by_id: bool = True  # the entry names the hidden resource: 404, and the attempt logged as refused
    ok: tuple[int, ...] = (200,)

    def call(self, ctx: Ctx, name: str) -> Call:
        return Call("POST", "/fhir", json={"resourceType": "Bundle", "type": self.kind,
                                           "entry": [self.entry(ctx, name)]})

    def status(self, response: httpx.Response) -> int:
        """The entry's status: a batch answers it in the entry, a transaction as a whole."""
        if self.kind == "transaction" and response.status_code != 200:
            return response.status_code
        assert response.status_code == 200, response.text
        return int(response.json()["entry"][0]["response"]["status"].split()[0])

    def scope(self, ctx: Ctx) -> None:
        call, before = self.call(ctx, self.mine(ctx)), ctx.written()
        response = ctx.send(call, ctx.lacking(self.letter))
        assert self.status(response) == 403, response.text
        if self.kind == "batch":
            assert response.json()["entry"][0]["response"]["outcome"]["resourceType"] == "OperationOutcome"
        else:
            refused(response, 403)
        shows_nothing(ctx, response)
        assert ctx.written() == before, "nothing is written"

    def unit(self, ctx: Ctx) -> None:
        hidden, before = self.hidden(ctx), ctx.snapshot()
        seen = ctx.send(self.call(ctx, hidden), ctx.other)
        unseen = ctx.send(self.call(ctx, ABSENT), ctx.other)
        if self.by_id:
            assert self.status(seen) == 404, seen.text
        assert shape(seen, hidden) == shape(unseen, ABSENT)
        shows_nothing(ctx, seen)
        assert ctx.snapshot() == before, "nothing of the hidden patient is written"

    def logged(self, ctx: Ctx) -> None:
        call = self.call(ctx, self.mine(ctx))
        start = ctx.mark()
        response = ctx.send(call, ctx.own)
        assert self.status(response) in self.ok, response.text
        logged(ctx, start, (self.interaction if self.kind == "batch" else "transaction",))
        call = self.call(ctx, self.hidden(ctx))
        start = ctx.mark()
        ctx.send(call, ctx.other)
        if self.by_id:
            # a batch's refused entry is logged as its own interaction, a transaction as the whole
            logged_refused(ctx, start, self.interaction if self.kind == "batch" else "transaction")
        else:
            logged_nothing_shown(ctx, start, ctx.names())


@dataclass
class AuditProbe(Probe):
    """The access log as AuditEvent: an entry about agreement 2's patient that the responsible
    unit's access made, read or searched for."""

    letter: str = "r"
    call: Callable[[Ctx, int], Call] = lambda ctx, seq: Call("GET", f"/fhir/AuditEvent/{seq}")
    search: bool = False

    @staticmethod
    def entry(ctx: Ctx) -> int:
        start = ctx.mark()
        assert ctx.http.get(f"/fhir/Goal/{ctx.agreement().goals[1]}", headers=ctx.own).status_code == 200
        [entry] = ctx.entries(start)
        return int(entry["seq"])

    @staticmethod
    def ids(response: httpx.Response) -> set[int]:
        return {int(e["resource"]["id"]) for e in response.json().get("entry", [])}

    def scope(self, ctx: Ctx) -> None:
        response = ctx.send(self.call(ctx, self.entry(ctx)), ctx.lacking(self.letter))
        refused(response, 403)
        shows_nothing(ctx, response)

    def unit(self, ctx: Ctx) -> None:
        seq = self.entry(ctx)
        response = ctx.send(self.call(ctx, seq), ctx.other)
        if self.search:
            assert response.status_code == 200, response.text
            assert seq not in self.ids(response) and response.json()["total"] == 0, response.text
        else:
            absent = ctx.send(self.call(ctx, 999_999_999), ctx.other)
            refused(response, 404)
            assert shape(response, str(seq)) == shape(absent, "999999999")
        shows_nothing(ctx, response)

    def logged(self, ctx: Ctx) -> None:
        seq = self.entry(ctx)
        start = ctx.mark()
        response = ctx.send(self.call(ctx, seq), ctx.own)
        assert response.status_code == 200, response.text
        assert seq in (self.ids(response) if self.search else {int(response.json()["id"])})
        assert ctx.entries(start) == [], \
            "reading the access log is not itself logged (docs/security.md, Choices and limits); if that changes, " \
            "this probe should check the entry instead"


@dataclass
class Page(Probe):
    """A page of the staff pages or the e-service, signed in."""

    area: sessions.Area = sessions.STAFF
    path: Callable[[Ctx, int], str] = lambda ctx, number: "/"
    form: Callable[[Ctx, int], dict[str, str]] | None = None  # a POST's form, as the page's form would send it
    number: int = TARGET  # the agreement acted on
    interactions: tuple[str, ...] = ("operation",)  # what the signed-in user's access logs
    refused_as: str | None = "operation"  # how the other unit's (patient's) attempt is logged; None: no id
    ok: tuple[int, ...] = (200,)
    # what shows the agreement on this page (the page shown to the signed-in user holds one, a refused
    # or other user's none); by default its patient's personnummer and name
    content: Callable[[Ctx, int], tuple[str, ...]] | None = None

    def shown(self, ctx: Ctx, response: httpx.Response, what: tuple[str, ...]) -> list[str]:
        return [c for c in what if c in _shown(response)]

    def what(self, ctx: Ctx) -> tuple[str, ...]:
        return ctx.markers(self.number) + (self.content(ctx, self.number) if self.content is not None else ())

    def _send(self, ctx: Ctx, headers: dict[str, str]) -> httpx.Response:
        method = "POST" if self.form is not None else "GET"
        form = self.form(ctx, self.number) if self.form is not None else None
        return ctx.page(method, self.path(ctx, self.number), self.area, headers, form)

    def _who(self, ctx: Ctx, who: str) -> dict[str, str]:
        staff = self.area is sessions.STAFF
        if who == "own":
            return ctx.staff() if staff else ctx.patient(self.number)
        if who == "other":
            return ctx.other if staff else ctx.patient(OTHER_PATIENT)
        if who == "no-patient-data":
            return ctx.staff(scope=STAFF_NO_PATIENT_DATA) if staff \
                else ctx.patient(self.number, PATIENT_NO_PATIENT_DATA)
        return ctx.staff(scope=STAFF_READ_ONLY) if staff else ctx.patient(self.number, PATIENT_READ_ONLY)

    def scope(self, ctx: Ctx) -> None:
        before, what = ctx.written(), self.what(ctx)
        response = self._send(ctx, self._who(ctx, "no-patient-data"))
        assert response.status_code == 403, (response.status_code, response.text[-2000:])
        assert not self.shown(ctx, response, what), self.shown(ctx, response, what)
        if self.form is not None:  # reading allowed, writing not: nothing is saved
            response = self._send(ctx, self._who(ctx, "read-only"))
            assert response.status_code not in (200, 303), (response.status_code, response.text[-2000:])
        assert ctx.written() == before, "nothing is written"

    def unit(self, ctx: Ctx) -> None:
        before, what = ctx.snapshot(self.number), self.what(ctx)
        response = self._send(ctx, self._who(ctx, "other"))
        assert response.status_code == (404 if self.refused_as else 200), (response.status_code, response.text[-2000:])
        assert not self.shown(ctx, response, what), self.shown(ctx, response, what)
        assert ctx.snapshot(self.number) == before, "nothing of the hidden patient is written"

    def logged(self, ctx: Ctx) -> None:
        what = self.what(ctx)
        start = ctx.mark()
        response = self._send(ctx, self._who(ctx, "own"))
        assert response.status_code in self.ok, (response.status_code, response.text[-2000:])
        if response.status_code == 200:
            assert self.shown(ctx, response, what), f"the page shows the agreement: none of {what}"
        logged(ctx, start, self.interactions, self.number, exact=False)
        patient = ctx.agreement(self.number).patient
        clients = {e["client_id"] for e in ctx.entries(start) if e["patient_id"] == patient}
        assert clients == {self.area.client_id}, clients
        start = ctx.mark()
        self._send(ctx, self._who(ctx, "other"))
        if self.refused_as is not None:
            logged_refused(ctx, start, self.refused_as, self.number)
        else:
            logged_nothing_shown(ctx, start, ctx.names(self.number), self.number)


@dataclass
class NewAgreementPage(Page):
    """``POST /personal/nytt``: the patient is found by personnummer; one the unit may not see is
    not found, and the form answers as for a personnummer nobody has."""

    UNUSED = "191212121212"  # a valid personnummer (Tolvan Tolvansson) that no demo patient has

    def unit(self, ctx: Ctx) -> None:
        before = ctx.snapshot(self.number)
        hidden = ctx.markers(self.number)[0]
        form = {**self.new_form(ctx, self.number), "vardkontakt": "", "lakarkontakt": ""}
        seen = ctx.page("POST", "/personal/nytt", sessions.STAFF, ctx.other, {**form, "personnummer": hidden})
        unseen = ctx.page("POST", "/personal/nytt", sessions.STAFF, ctx.other, {**form, "personnummer": self.UNUSED})
        assert seen.status_code == 422, seen.text
        masked = [seen.text, unseen.text]
        for i, number in enumerate((hidden, self.UNUSED)):
            masked[i] = masked[i].replace(number, "X").replace(format_person_number(number), "X")
        assert masked[0] == masked[1], "the hidden patient is answered as a personnummer nobody has"
        name = ctx.markers(self.number)[2]
        assert name not in _shown(seen), "the form echoes the number typed, and nothing of the hidden patient"
        assert ctx.snapshot(self.number) == before

    @staticmethod
    def new_form(ctx: Ctx, number: int) -> dict[str, str]:
        return {"csrf": CSRF, "personnummer": ctx.markers(number)[0], "given": "", "family": "", "phone": "",
                "vardkontakt": ctx.world.role_at(AUTHOR, "nurse"), "lakarkontakt": ctx.world.role_at(AUTHOR, "doctor"),
                "description": "", "own_goals": "", "care_goals": "", "status": "draft"}


# -- the requests -------------------------------------------------------------------------------------------


def _changed_goal(ctx: Ctx, name: str, source: int = 1, with_id: bool = True) -> dict[str, Any]:
    """Goal ``source`` of agreement 2 as the body of a write of ``name``, with a new description."""
    body = {**ctx.body("Goal", ctx.agreement().goals[source]), "id": name,
            "description": {"text": f"Ändrat mål {uuid.uuid4().hex[:6]}"}}
    if not with_id:
        body.pop("id")
    return body


def _create_for(ctx: Ctx, patient: str) -> dict[str, Any]:
    """A new goal for the patient named: agreement 2's, or one nobody has."""
    return {**ctx.new_goal(), "subject": {"reference": f"Patient/{patient}"},
            "expressedBy": {"reference": f"Patient/{patient}"}}


def _own_patient_goal(ctx: Ctx) -> dict[str, Any]:
    """The body of a conditional create: a goal of the other unit's own patient (what it would
    create when nothing matches; the responsible unit's create matches agreement 2's goal)."""
    patient = f"Patient/{ctx.agreement(OTHER_PATIENT).patient}"
    return {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Villkorat mål"},
            "subject": {"reference": patient}, "expressedBy": {"reference": patient},
            "meta": {"tag": [dict(codes.TEST_DATA_TAG)]}}


def _patient(ctx: Ctx) -> str:
    return ctx.agreement().patient


def _plan(ctx: Ctx) -> str:
    return ctx.agreement().plan


def _throwaway(ctx: Ctx) -> str:
    return ctx.throwaway_goal()


def _read(type_: str, attribute: str) -> Api:
    def name(ctx: Ctx) -> str:
        value = getattr(ctx.agreement(), attribute)
        return str(value[1] if isinstance(value, list) else value)
    return Api(f"read-{type_}", ("GET", "/fhir/{type_}/{id_}"), interaction="read",
               call=lambda ctx, n: Call("GET", f"/fhir/{type_}/{n}"), mine=name, hidden=name)


API: list[Probe] = [
    *(_read(t, a) for t, a in (("Patient", "patient"), ("CarePlan", "plan"), ("CareTeam", "team"), ("Goal", "goals"))),
    Api("vread", ("GET", "/fhir/{type_}/{id_}/_history/{version}"), interaction="vread",
        call=lambda ctx, n: Call("GET", f"/fhir/Goal/{n}/_history/1")),
    Api("history-instance", ("GET", "/fhir/{type_}/{id_}/_history"), interaction="history-instance",
        call=lambda ctx, n: Call("GET", f"/fhir/CarePlan/{n}/_history"), mine=_plan, hidden=_plan),
    Api("update", ("PUT", "/fhir/{type_}/{id_}"), interaction="update", letter="u",
        call=lambda ctx, n: Call("PUT", f"/fhir/Goal/{n}", json=_changed_goal(ctx, n))),
    Api("conditional-update", ("PUT", "/fhir/{type_}"), interaction="update", letter="u",
        call=lambda ctx, n: Call("PUT", f"/fhir/Goal?_id={n}", json=_changed_goal(ctx, n, 2, with_id=False)),
        mine=_goal(2), hidden=_goal(2), absent=422, refused_entry=False),
    Api("delete", ("DELETE", "/fhir/{type_}/{id_}"), interaction="delete", letter="d",
        call=lambda ctx, n: Call("DELETE", f"/fhir/Goal/{n}"), mine=_throwaway, ok=(204,)),
    Api("conditional-delete", ("DELETE", "/fhir/{type_}"), interaction="delete", letter="d",
        call=lambda ctx, n: Call("DELETE", f"/fhir/Goal?_id={n}"), mine=_throwaway, ok=(204,), refused_entry=False),
    Api("create", ("POST", "/fhir/{type_}"), interaction="create", letter="c",
        call=lambda ctx, n: Call("POST", "/fhir/Goal", json=_create_for(ctx, n)), mine=_patient, hidden=_patient,
        ok=(201,), absent=422, refused_entry=False),
    Api("conditional-create", ("POST", "/fhir/{type_}"), interaction="create", letter="c",
        call=lambda ctx, n: Call("POST", "/fhir/Goal", json=_own_patient_goal(ctx),
                                 headers={"if-none-exist": f"_id={n}"}),
        absent=201, refused_entry=False),  # the responsible unit's matches agreement 2's goal: 200, that goal
    Api("patientkontrakt-Patient", ("GET", "/fhir/Patient/{id_}/$patientkontrakt"), interaction="operation",
        call=lambda ctx, n: Call("GET", f"/fhir/Patient/{n}/$patientkontrakt"), mine=_patient, hidden=_patient),
    Api("patientkontrakt-CarePlan", ("GET", "/fhir/CarePlan/{id_}/$patientkontrakt"), interaction="operation",
        call=lambda ctx, n: Call("GET", f"/fhir/CarePlan/{n}/$patientkontrakt"), mine=_plan, hidden=_plan),
    Api("validate-instance", ("POST", "/fhir/{type_}/{id_}/$validate"), interaction="validate",
        call=lambda ctx, n: Call("POST", f"/fhir/Goal/{n}/$validate?mode=update", json=_changed_goal(ctx, n)),
        absent=200),  # checked against the stored resource and answered from it: logged like a read
    Api("validate-type", ("POST", "/fhir/{type_}/$validate"), interaction="validate",
        call=lambda ctx, n: Call("POST", "/fhir/Goal/$validate?mode=create", json=_create_for(ctx, n)),
        mine=_patient, hidden=_patient, absent=200,
        not_applicable={"logged": "validates the resource the caller sends, as a create would (a reference is "
                                  "checked to exist for the caller), and answers only with issues: no stored "
                                  "resource is shown"}),
    # A conditional read tells the caller the resource is unchanged: a read of it, and never for a hidden one.
    Api("conditional-read-if-none-match", ("GET", "/fhir/{type_}/{id_}"), interaction="read", ok=(304,),
        call=lambda ctx, n: Call("GET", f"/fhir/Goal/{n}", headers={"if-none-match": "*"})),
    Api("conditional-read-if-modified-since", ("GET", "/fhir/{type_}/{id_}"), interaction="read", ok=(304,),
        call=lambda ctx, n: Call("GET", f"/fhir/Goal/{n}", headers={"if-modified-since": _FAR_FUTURE})),
    Api("patch", ("PATCH", "/fhir/{type_}/{id_}"), interaction="update", letter="u",
        call=lambda ctx, n: Call("PATCH", f"/fhir/Goal/{n}", json=_description_patch(), headers=_JSON_PATCH)),
    Api("conditional-patch", ("PATCH", "/fhir/{type_}"), interaction="update", letter="u",
        call=lambda ctx, n: Call("PATCH", f"/fhir/Goal?_id={n}", json=_description_patch(), headers=_JSON_PATCH),
        mine=_goal(2), hidden=_goal(2), refused_entry=False),  # a hidden goal matches nothing: 404 as absent
    Api("conditional-vread", ("GET", "/fhir/{type_}/{id_}/_history/{version}"), interaction="vread", ok=(304,),
        call=lambda ctx, n: Call("GET", f"/fhir/Goal/{n}/_history/1", headers={"if-none-match": 'W/"1"'})),
]


_FAR_FUTURE = "Fri, 31 Dec 9998 23:59:59 GMT"
_JSON_PATCH = {"content-type": "application/json-patch+json"}


def _description_patch() -> list[dict[str, Any]]:
    return [{"op": "replace", "path": "/description/text", "value": f"Ändrat mål {uuid.uuid4().hex[:6]}"}]


def _entry_read(ctx: Ctx, n: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": f"Goal/{n}"}}


def _entry_vread(ctx: Ctx, n: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": f"Goal/{n}/_history/1"}}


def _entry_search(ctx: Ctx, n: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": f"Goal?_id={n}"}}


def _entry_create(ctx: Ctx, n: str) -> dict[str, Any]:
    return {"fullUrl": "urn:uuid:7d4f6a52-0b3e-4c1e-9a57-5f0c2b7e1d11", "resource": _create_for(ctx, n),
            "request": {"method": "POST", "url": "Goal"}}


def _entry_conditional_create(ctx: Ctx, n: str) -> dict[str, Any]:
    return {"fullUrl": "urn:uuid:0b8e5c33-6f41-4d2a-8c7e-3a9d1f2b4c55", "resource": _own_patient_goal(ctx),
            "request": {"method": "POST", "url": "Goal", "ifNoneExist": f"_id={n}"}}


def _entry_update(ctx: Ctx, n: str) -> dict[str, Any]:
    return {"resource": _changed_goal(ctx, n), "request": {"method": "PUT", "url": f"Goal/{n}"}}


def _entry_conditional_update(ctx: Ctx, n: str) -> dict[str, Any]:
    return {"resource": _changed_goal(ctx, n, 2, with_id=False), "request": {"method": "PUT", "url": f"Goal?_id={n}"}}


def _entry_delete(ctx: Ctx, n: str) -> dict[str, Any]:
    return {"request": {"method": "DELETE", "url": f"Goal/{n}"}}


def _entry_conditional_delete(ctx: Ctx, n: str) -> dict[str, Any]:
    return {"request": {"method": "DELETE", "url": f"Goal?_id={n}"}}


def _binary_patch() -> dict[str, Any]:
    data = base64.b64encode(json.dumps(_description_patch()).encode()).decode()
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


def _entry_patch(ctx: Ctx, n: str) -> dict[str, Any]:
    return {"resource": _binary_patch(), "request": {"method": "PATCH", "url": f"Goal/{n}"}}


def _entry_conditional_patch(ctx: Ctx, n: str) -> dict[str, Any]:
    return {"resource": _binary_patch(), "request": {"method": "PATCH", "url": f"Goal?_id={n}"}}


def _bundle_probes(kind: str) -> list[Probe]:
    route = ("POST", "/fhir")
    return [
        InBundle(f"{kind}-read", route, kind=kind, interaction="read", entry=_entry_read),
        InBundle(f"{kind}-vread", route, kind=kind, interaction="vread", entry=_entry_vread),
        InBundle(f"{kind}-search", route, kind=kind, interaction="search-type", letter="s", entry=_entry_search,
                 by_id=False),
        InBundle(f"{kind}-create", route, kind=kind, interaction="create", letter="c", entry=_entry_create,
                 mine=_patient, hidden=_patient, by_id=False, ok=(201,)),
        InBundle(f"{kind}-conditional-create", route, kind=kind, interaction="create", letter="c",
                 entry=_entry_conditional_create, by_id=False),
        InBundle(f"{kind}-update", route, kind=kind, interaction="update", letter="u", entry=_entry_update),
        InBundle(f"{kind}-conditional-update", route, kind=kind, interaction="update", letter="u",
                 entry=_entry_conditional_update, mine=_goal(2), hidden=_goal(2), by_id=False),
        InBundle(f"{kind}-delete", route, kind=kind, interaction="delete", letter="d", entry=_entry_delete,
                 mine=_throwaway, ok=(204,)),
        InBundle(f"{kind}-conditional-delete", route, kind=kind, interaction="delete", letter="d",
                 entry=_entry_conditional_delete, mine=_throwaway, by_id=False, ok=(204,)),
        InBundle(f"{kind}-conditional-read", route, kind=kind, interaction="read", ok=(304,),
                 entry=lambda ctx, n: {"request": {"method": "GET", "url": f"Goal/{n}", "ifNoneMatch": "*"}}),
        InBundle(f"{kind}-patch", route, kind=kind, interaction="update", letter="u", entry=_entry_patch),
        InBundle(f"{kind}-conditional-patch", route, kind=kind, interaction="update", letter="u",
                 entry=_entry_conditional_patch, mine=_goal(2), hidden=_goal(2), by_id=False),
    ]


def _shared_patient(ctx: Ctx) -> str:
    return ctx.agreement(SHARED).patient


LISTINGS: list[Probe] = [
    Listing("search", ("GET", "/fhir/{type_}"),
            call=lambda ctx: Call("GET", "/fhir/Goal?_count=1000&_total=accurate")),
    Listing("search-by-post", ("POST", "/fhir/{type_}/_search"),
            call=lambda ctx: Call("POST", "/fhir/CarePlan/_search", form="_count=1000&_total=accurate")),
    Listing("search-include", ("GET", "/fhir/{type_}"), number=SHARED, shared=True,
            call=lambda ctx: Call("GET", f"/fhir/CarePlan?subject=Patient/{_shared_patient(ctx)}&_total=accurate"
                                         "&_include=CarePlan:care-team&_include=CarePlan:goal&_include=CarePlan:subject")),
    Listing("search-revinclude", ("GET", "/fhir/{type_}"), number=SHARED, shared=True,
            call=lambda ctx: Call("GET", f"/fhir/Patient?_id={_shared_patient(ctx)}&_total=accurate"
                                         "&_revinclude=CarePlan:subject&_revinclude=Goal:subject"
                                         "&_revinclude=CareTeam:subject")),
    Listing("history-type", ("GET", "/fhir/{type_}/_history"), interaction="history-type",
            call=lambda ctx: Call("GET", "/fhir/Goal/_history?_count=1000")),
    Listing("history-system", ("GET", "/fhir/_history"), interaction="history-system",
            call=lambda ctx: Call("GET", "/fhir/_history?_count=1000")),
]

_EVERYTHING_PARAMETERS = {"resourceType": "Parameters", "parameter": [{"name": "_count", "valueInteger": 1000}]}
API += [
    Api("everything", ("GET", "/fhir/Patient/{id_}/$everything"), interaction="operation",
        call=lambda ctx, n: Call("GET", f"/fhir/Patient/{n}/$everything?_count=1000"), mine=_patient, hidden=_patient),
    Api("everything-by-post", ("POST", "/fhir/Patient/{id_}/$everything"), interaction="operation",
        call=lambda ctx, n: Call("POST", f"/fhir/Patient/{n}/$everything", json=_EVERYTHING_PARAMETERS),
        mine=_patient, hidden=_patient),
]

AUDIT: list[Probe] = [
    AuditProbe("AuditEvent-read", ("GET", "/fhir/AuditEvent/{id_}")),
    AuditProbe("AuditEvent-search", ("GET", "/fhir/AuditEvent"), letter="s", search=True,
               call=lambda ctx, seq: Call("GET", f"/fhir/AuditEvent?patient={_patient(ctx)}&_count=200")),
    AuditProbe("AuditEvent-search-by-post", ("POST", "/fhir/AuditEvent/_search"), letter="s", search=True,
               call=lambda ctx, seq: Call("POST", "/fhir/AuditEvent/_search", form=f"patient={_patient(ctx)}")),
]


# -- the pages' forms, as the pages fill them in ------------------------------------------------------


def _version(resource: dict[str, Any]) -> str:
    return str(resource["meta"]["versionId"])


def _edit_form(ctx: Ctx, number: int) -> dict[str, str]:
    plan = ctx.get("CarePlan", ctx.agreement(number).plan)
    return {"csrf": CSRF, "version": _version(plan), "title": plan["title"],
            "description": f"Reviderad {uuid.uuid4().hex[:6]}", "status": plan["status"], "end": "",
            "care_goals": "", "own_goals": ""}


def _contact_form(ctx: Ctx, number: int) -> dict[str, str]:
    team = ctx.get("CareTeam", ctx.agreement(number).team)
    contacts = {p["member"]["reference"] for p in team["participant"]
                if any(c.get("code") == codes.FAST_VARDKONTAKT for r in p.get("role", []) for c in r["coding"])}
    new = next(r["id"] for r in ctx.world.generator.region.roles
               if r["organization"]["reference"] == f"Organization/{AUTHOR}"
               and f"PractitionerRole/{r['id']}" not in contacts)
    return {"csrf": CSRF, "version": _version(team), "new": new, "reason": "Ny fast vårdkontakt"}


def _close_form(ctx: Ctx, number: int) -> dict[str, str]:
    plan = ctx.get("CarePlan", ctx.agreement(number).plan)
    return {"csrf": CSRF, "version": _version(plan), "outcome": "completed", "reason": "Genomfört",
            "goals": "keep", "confirm": "yes"}


def _reopen_form(ctx: Ctx, number: int) -> dict[str, str]:
    plan = ctx.get("CarePlan", ctx.agreement(number).plan)
    return {"csrf": CSRF, "version": _version(plan), "reason": "Patienten behöver det igen"}


def _activity_form(ctx: Ctx, number: int) -> dict[str, str]:
    plan = ctx.get("CarePlan", ctx.agreement(number).plan)
    detail = plan["activity"][0]["detail"]
    later = datetime.date.today() + datetime.timedelta(days=40)
    return {"csrf": CSRF, "version": _version(plan), "kind": detail["code"]["coding"][0]["code"],
            "description": detail.get("description", ""), "date": later.isoformat(), "time": "10:00", "place": "",
            "performer": detail["performer"][0]["reference"].split("/")[1], "reason": "Flyttad", "action": ""}


def _care_goal_form(ctx: Ctx, number: int) -> dict[str, str]:
    goal = ctx.get("Goal", ctx.agreement(number).goals[1])
    return {"csrf": CSRF, "version": _version(goal), "text": f"Vårdens mål {uuid.uuid4().hex[:6]}", "due": "",
            "outcome": "active", "reason": "Omformulerat"}


def _add_goal_form(ctx: Ctx, number: int) -> dict[str, str]:
    return {"csrf": CSRF, "text": f"Mitt nya mål {uuid.uuid4().hex[:6]}", "due": ""}


def _own_goal_form(ctx: Ctx, number: int) -> dict[str, str]:
    goal = ctx.get("Goal", ctx.agreement(number).patient_goal)
    return {"csrf": CSRF, "version": _version(goal), "text": f"Mitt mål {uuid.uuid4().hex[:6]}", "due": "",
            "status": "active", "reason": ""}


def _goal_links(ctx: Ctx, number: int) -> tuple[str, ...]:
    """On /mitt: the links to the agreement's goals (the patient's name there is the signed-in user's)."""
    return tuple(f'href="/mitt/mal/{g}"' for g in ctx.agreement(number).goals)


def _own_goal_text(ctx: Ctx, number: int) -> tuple[str, ...]:
    """On /mitt/mal/{id}: the goal as it is now."""
    return (ctx.get("Goal", ctx.agreement(number).patient_goal)["description"]["text"],)


def _samtycke_text(ctx: Ctx, number: int) -> tuple[str, ...]:
    """On /mitt/sparrar: the patient's samtycke (``_record_samtycke``)."""
    unit = next(o["name"] for o in ctx.world.generator.region.organizations if o["id"] == AUTHOR)
    return (f"Du har gett ditt samtycke till att {unit} får ta del av uppgifter om dig från andra vårdgivare.",)


def _plan_page(suffix: str = "") -> Callable[[Ctx, int], str]:
    return lambda ctx, number: f"/personal/avtal/{ctx.agreement(number).plan}{suffix}"


_AGREEMENT = "/personal/avtal/{plan_id}"

PAGES: list[Probe] = [
    Page("personal-list", ("GET", "/personal"), path=lambda ctx, n: "/personal", interactions=("search-type",),
         refused_as=None),
    Page("personal-agreement", ("GET", _AGREEMENT), path=_plan_page()),
    Page("personal-edit-form", ("GET", _AGREEMENT + "/redigera"), path=_plan_page("/redigera")),
    Page("personal-edit", ("POST", _AGREEMENT + "/redigera"), path=_plan_page("/redigera"), form=_edit_form,
         interactions=("operation", "transaction"), ok=(303,)),
    Page("personal-contact-form", ("GET", _AGREEMENT + "/vardkontakt"), path=_plan_page("/vardkontakt")),
    Page("personal-contact", ("POST", _AGREEMENT + "/vardkontakt"), path=_plan_page("/vardkontakt"),
         form=_contact_form, interactions=("operation", "update"), ok=(303,)),
    Page("personal-close-form", ("GET", _AGREEMENT + "/avsluta"), path=_plan_page("/avsluta")),
    Page("personal-close", ("POST", _AGREEMENT + "/avsluta"), path=_plan_page("/avsluta"), form=_close_form,
         number=SHARED, interactions=("operation", "transaction"), ok=(303,)),
    # reopening: the form (or, once reopened, a redirect to the agreement) and the reopening itself
    Page("personal-reopen-form", ("GET", _AGREEMENT + "/ateroppna"), path=_plan_page("/ateroppna"), number=REOPEN,
         ok=(200, 303)),
    Page("personal-reopen", ("POST", _AGREEMENT + "/ateroppna"), path=_plan_page("/ateroppna"), form=_reopen_form,
         number=REOPEN, interactions=("operation", "update"), ok=(303,)),
    Page("personal-activity-form", ("GET", _AGREEMENT + "/aktivitet/{index}"), path=_plan_page("/aktivitet/0")),
    Page("personal-activity", ("POST", _AGREEMENT + "/aktivitet/{index}"), path=_plan_page("/aktivitet/0"),
         form=_activity_form, interactions=("operation", "update"), ok=(303,)),
    Page("personal-goal-form", ("GET", _AGREEMENT + "/mal/{goal_id}"),
         path=lambda ctx, n: f"/personal/avtal/{ctx.agreement(n).plan}/mal/{ctx.agreement(n).goals[1]}"),
    Page("personal-goal", ("POST", _AGREEMENT + "/mal/{goal_id}"),
         path=lambda ctx, n: f"/personal/avtal/{ctx.agreement(n).plan}/mal/{ctx.agreement(n).goals[1]}",
         form=_care_goal_form, interactions=("operation", "transaction"), ok=(303,)),
    NewAgreementPage("personal-new", ("POST", "/personal/nytt"), path=lambda ctx, n: "/personal/nytt",
                     form=NewAgreementPage.new_form, interactions=("search-type", "transaction"), refused_as=None,
                     ok=(303,)),
    Page("mitt", ("GET", "/mitt"), area=sessions.PATIENT, path=lambda ctx, n: "/mitt", refused_as=None,
         content=_goal_links),
    Page("mitt-add-goal", ("POST", "/mitt/mal"), area=sessions.PATIENT, path=lambda ctx, n: "/mitt/mal",
         form=_add_goal_form, interactions=("create",), refused_as=None, ok=(303,), content=_goal_links,
         not_applicable={"unit": "the goal is always the signed-in patient's own: its subject comes from the "
                                 "session, so there is nothing of another patient to name"}),
    Page("mitt-goal-form", ("GET", "/mitt/mal/{goal_id}"), area=sessions.PATIENT,
         path=lambda ctx, n: f"/mitt/mal/{ctx.agreement(n).patient_goal}", interactions=("read",), refused_as="read",
         content=_own_goal_text),
    Page("mitt-goal", ("POST", "/mitt/mal/{goal_id}"), area=sessions.PATIENT,
         path=lambda ctx, n: f"/mitt/mal/{ctx.agreement(n).patient_goal}", form=_own_goal_form,
         interactions=("read", "update"), refused_as="read", ok=(303,), content=_own_goal_text),
    Page("mitt-consents", ("GET", "/mitt/sparrar"), area=sessions.PATIENT, path=lambda ctx, n: "/mitt/sparrar",
         number=CONSENTED, interactions=("search-type",), refused_as=None, content=_samtycke_text),
]

@dataclass
class EmergencyPage(Page):
    """``POST /personal/patient/{id}/nodatkomst``: it writes no resource (the emergency access is
    a token in the page session), so a session that may only read starts one as well; one without
    scopes for patient data does not, and nothing is written either way."""

    def scope(self, ctx: Ctx) -> None:
        before, what = ctx.written(), self.what(ctx)
        response = self._send(ctx, self._who(ctx, "no-patient-data"))
        assert response.status_code == 403, (response.status_code, response.text[-2000:])
        assert not self.shown(ctx, response, what), self.shown(ctx, response, what)
        assert ctx.written() == before, "nothing is written"


def _patient_page(suffix: str) -> Callable[[Ctx, int], str]:
    return lambda ctx, number: f"/personal/patient/{ctx.agreement(number).patient}{suffix}"


def _samtycke_form(ctx: Ctx, number: int) -> dict[str, str]:
    """A samtycke for the unit itself, ending tomorrow (it lets the unit read no one else's for long)."""
    tomorrow = datetime.date.today() + datetime.timedelta(days=1)
    return {"csrf": CSRF, "kind": "samtycke", "custodian": "", "end": tomorrow.isoformat(),
            "tillbaka": f"/personal/avtal/{ctx.agreement(number).plan}"}


def _revoke_form(ctx: Ctx, number: int) -> dict[str, str]:
    return {"csrf": CSRF, "version": _version(ctx.get("Consent", PROBE_CONSENT)),
            "tillbaka": f"/personal/avtal/{ctx.agreement(number).plan}"}


def _emergency_form(ctx: Ctx, number: int) -> dict[str, str]:
    return {"csrf": CSRF, "reason": "Medvetslös vid ankomst, anhöriga nås inte",
            "tillbaka": f"/personal/avtal/{ctx.agreement(number).plan}"}


PAGES += [
    Page("personal-consents", ("GET", "/personal/patient/{patient_id}/samtycke"), path=_patient_page("/samtycke"),
         interactions=("read", "search-type"), refused_as="read"),
    Page("personal-consent-record", ("POST", "/personal/patient/{patient_id}/samtycke"),
         path=_patient_page("/samtycke"), form=_samtycke_form, interactions=("read", "create"), refused_as="read",
         ok=(303,)),
    Page("personal-consent-revoke", ("POST", "/personal/patient/{patient_id}/samtycke/{consent_id}/aterkalla"),
         path=_patient_page(f"/samtycke/{PROBE_CONSENT}/aterkalla"), form=_revoke_form,
         interactions=("read", "update"), refused_as="read", ok=(303,)),
    Page("personal-emergency-form", ("GET", "/personal/patient/{patient_id}/nodatkomst"),
         path=_patient_page("/nodatkomst"), interactions=("read",), refused_as="read"),
    EmergencyPage("personal-emergency", ("POST", "/personal/patient/{patient_id}/nodatkomst"),
                  path=_patient_page("/nodatkomst"), form=_emergency_form, interactions=("read",), refused_as="read",
                  ok=(303,)),
    Page("personal-sip", ("GET", "/personal/sip/{plan_id}"), path=lambda ctx, n: f"/personal/sip/{PROBE_SIP}",
         interactions=("read",), refused_as="read"),
]

# $patientkontrakt by POST (R4: every operation by POST too), with an empty Parameters body.
_NO_PARAMETERS = {"resourceType": "Parameters"}
OPERATIONS_BY_POST: list[Probe] = [
    Api("patientkontrakt-Patient-POST", ("POST", "/fhir/Patient/{id_}/$patientkontrakt"), interaction="operation",
        call=lambda ctx, n: Call("POST", f"/fhir/Patient/{n}/$patientkontrakt", json=_NO_PARAMETERS),
        mine=_patient, hidden=_patient),
    Api("patientkontrakt-CarePlan-POST", ("POST", "/fhir/CarePlan/{id_}/$patientkontrakt"), interaction="operation",
        call=lambda ctx, n: Call("POST", f"/fhir/CarePlan/{n}/$patientkontrakt", json=_NO_PARAMETERS),
        mine=_plan, hidden=_plan),
]

PROBES: list[Probe] = [*API, *LISTINGS, *_bundle_probes("batch"), *_bundle_probes("transaction"), *AUDIT, *PAGES,
                       *OPERATIONS_BY_POST]


# -- the tests ---------------------------------------------------------------------------------------------


def test_every_route_is_classified(ctx: Ctx) -> None:
    app: Any = ctx.http.app
    served = app_routes(app)
    unclassified = sorted(served - set(ROUTES))
    gone = sorted(set(ROUTES) - served)
    assert not unclassified, f"routes the table does not name (classify them in ROUTES, and probe them): {unclassified}"
    assert not gone, f"routes in the table that the app no longer serves: {gone}"


def test_every_route_with_patient_data_is_probed() -> None:
    probed = {route for route, why in ROUTES.items() if why == PROBED}
    covered = {p.route for p in PROBES}
    assert not probed - covered, f"routes with patient data and no probe: {sorted(probed - covered)}"
    assert not covered - probed, f"probes of routes not marked as carrying patient data: {sorted(covered - probed)}"
    assert len({p.id for p in PROBES}) == len(PROBES), "probe ids are unique"
    for probe in PROBES:
        assert set(probe.not_applicable) | set(probe.holes) <= set(STAGES), probe.id
        assert not set(probe.not_applicable) & set(probe.holes), probe.id


def _params(stage: str) -> list[Any]:
    return [pytest.param(p, id=p.id, marks=pytest.mark.xfail(strict=True, reason=p.holes[stage])
                         if stage in p.holes else ())
            for p in PROBES if stage not in p.not_applicable]


@pytest.mark.parametrize("probe", _params("scope"))
def test_without_the_scope_it_is_refused(ctx: Ctx, probe: Probe) -> None:
    probe.scope(ctx)


@pytest.mark.parametrize("probe", _params("unit"))
def test_outside_the_care_unit_it_is_as_if_absent(ctx: Ctx, probe: Probe) -> None:
    probe.unit(ctx)


@pytest.mark.parametrize("probe", _params("logged"))
def test_every_access_is_logged(ctx: Ctx, probe: Probe) -> None:
    probe.logged(ctx)


def test_what_carries_no_patient_data_shows_and_logs_none(ctx: Ctx) -> None:
    """The GET routes classified as carrying no patient data, signed in where they are the pages'
    (``POST``s there change sessions, tokens or the directory): no entry about a patient in the
    access log, and nothing of agreement 2's patient in the answer."""
    values = {"plan_id": ctx.agreement().plan, "goal_id": ctx.agreement().goals[1], "type_": "Goal",
              "id_": ctx.agreement().goals[1], "version": "1", "index": "0",
              "job_id": "no-such-job", "file_id": "1", "group_id": "g"}  # $export: nothing to show
    files = {"/static": "/static/site.css", "/static/docs": "/static/docs/swagger-ui.css",
             "/fhir/{type_:conformance}": "/fhir/StructureDefinition?name=PK",
             "/fhir/{type_:conformance}/{id_}": "/fhir/StructureDefinition/pk-patient"}
    start = ctx.mark()
    for (method, path), why in sorted(ROUTES.items()):
        if why == PROBED or method not in ("GET", "HEAD"):
            continue
        url = files[path] if path in files else path.format(**values)
        if path.startswith("/personal"):
            response = ctx.page(method, url, sessions.STAFF, ctx.own)
        elif path.startswith("/mitt"):
            response = ctx.page(method, url, sessions.PATIENT, ctx.patient())
        else:
            response = ctx.http.request(method, url, headers=ctx.own, follow_redirects=False)
        assert response.status_code < 500, (method, url, response.status_code)
        shows_nothing(ctx, response)
    about = [e for e in ctx.entries(start) if e["patient_id"] is not None]
    assert about == [], about
