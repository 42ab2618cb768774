"""Bulk Data ``$export`` (Bulk Data Access IG 2.0; patientkontrakt/fhir/export.py).

Over a live server (``patientkontrakt serve`` in a subprocess, on PostgreSQL and on SQLite, with
the demo region loaded and the export runner polling every 0.2 s): kick-off → status polling →
manifest → ndjson files, read back and compared with what a search by the same client finds
(``_total=accurate``), at the system, Patient and Group levels, with ``_type`` and ``_since``;
another client cannot see the job or its files; a patient's token is refused; a Group is
exported only by its own unit; a resource hidden by the consent rules (no samtycke, a spärr) is
in no file, at the system and Group levels; cancel; expiry; the access log of a download.

In-process (a clean PostgreSQL database, no runner): the kick-off's checks and the limit of jobs
per client.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.config import Settings
from patientkontrakt.domain.demo import DemoGenerator, load_demo
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.bundles import BundleProcessor
from patientkontrakt.fhir.export import kept_lines
from patientkontrakt.security.tokens import Grant
from patientkontrakt.storage import export as sql
from patientkontrakt.storage.database import create_engine, migrate
from patientkontrakt.storage.repository import Store
from patientkontrakt.storage.tables import EXPORT_JOB
from tests.conftest import BASE_URL, audit_key_file, demo_database, issue_token, make_settings
from tests.interop.test_fhirpy import Server, serving
from tests.interop.test_smart_clients import _command
from tests.security.conftest import World, _agreements
from tests.security.test_consent_matrix import CLINIC, HOMECARE, TARGET, VC, consent

AGREEMENTS = 8
SYSTEM = "system/*.rs"
EXPORTED = ("Patient", "CarePlan", "CareTeam", "Goal", "Appointment", "Provenance", "Consent", "Organization",
            "Practitioner", "PractitionerRole")


# -- the live server ----------------------------------------------------------------------------


@dataclass
class Site:
    server: Server
    world: World
    url: str

    @property
    def base(self) -> str:
        return self.server.fhir_base

    def system(self, org: str = VC, scope: str = SYSTEM, client: str = "test-ehr") -> dict[str, str]:
        unit = self.world._run(lambda d: d.care_unit_by_id(org))
        grant = Grant(kind="system", sub=client, name="Test EHR", care_unit=unit[0], care_unit_name=unit[1],
                      care_unit_org=org, care_provider=unit[2])
        return {"authorization": f"Bearer {issue_token(self.world.settings, grant, scope, client)}"}

    def kick_off(self, headers: dict[str, str], path: str = "$export", method: str = "GET",
                 **params: str) -> str:
        response = httpx.request(method, f"{self.base}/{path}", params=params, timeout=30,
                                 headers={**headers, "prefer": "respond-async", "accept": "application/fhir+json"})
        assert response.status_code == 202, response.text
        return response.headers["content-location"]

    def manifest(self, headers: dict[str, str], status_url: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            response = httpx.get(status_url, headers=headers, timeout=30)
            if response.status_code == 200:
                assert response.headers["content-type"].startswith("application/json")
                return dict(response.json())
            assert response.status_code == 202, response.text
            assert response.headers["retry-after"] == "1"
            assert response.headers["x-progress"]
            time.sleep(0.2)
        pytest.fail(f"the export did not finish within 60 s:\n{self.server.log()}")

    def download(self, headers: dict[str, str], manifest: dict[str, Any], *, as_written: bool = True
                 ) -> dict[str, list[dict[str, Any]]]:
        """type -> the resources of every file of that type; each file's count checked
        (``as_written``: no rule has changed since it was written, so it is served whole)."""
        by_type: dict[str, list[dict[str, Any]]] = {}
        for output in manifest["output"]:
            response = httpx.get(output["url"], headers={**headers, "accept": "application/fhir+ndjson"}, timeout=30)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("application/fhir+ndjson")
            lines = [orjson.loads(line) for line in response.text.splitlines()]
            assert len(lines) == output["count"] if as_written else len(lines) <= output["count"]
            assert response.text.endswith("\n") or not lines
            assert {r["resourceType"] for r in lines} == {output["type"]}
            by_type.setdefault(output["type"], []).extend(lines)
        return by_type

    def export(self, headers: dict[str, str], path: str = "$export", **params: str
               ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        manifest = self.manifest(headers, self.kick_off(headers, path, **params))
        return manifest, self.download(headers, manifest)

    def search_ids(self, headers: dict[str, str], type_: str, **params: str) -> set[str]:
        """Every id a search by the same client finds, paged to the end; its total checked."""
        ids: set[str] = set()
        url: str | None = f"{self.base}/{type_}"
        query: dict[str, str] | None = {"_count": "200", "_total": "accurate", **params}
        total = None
        while url:
            response = httpx.get(url, params=query, headers=headers, timeout=30)
            assert response.status_code == 200, response.text
            bundle = response.json()
            total = bundle.get("total", total)
            ids |= {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
            query = None
        assert total == len(ids)
        return ids

    def sql(self, statement: str | sa.Executable, **values: Any) -> list[Any]:
        async def run() -> list[Any]:
            engine = create_engine(self.url, pool_size=1)
            try:
                async with engine.begin() as conn:
                    query = sa.text(statement) if isinstance(statement, str) else statement
                    result = await conn.execute(query, values)
                    return list(result.all()) if result.returns_rows else []
            finally:
                await engine.dispose()
        return asyncio.run(run())

    def expire(self, job: str) -> None:
        """Age the job past its expiry (``PK_EXPORT_EXPIRY``), as if its time had come."""
        self.sql(sa.update(EXPORT_JOB).where(EXPORT_JOB.c.id == job).values(expires=datetime(2000, 1, 1)))


def _environment(url: str, signing_key: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    return {**env, "PK_DATABASE_URL": url, "PK_SIGNING_KEY": str(signing_key), "PK_AUDIT_KEY": str(audit_key_file()),
            "PK_LOG_LEVEL": "info", "PK_AUDIT_SEAL_INTERVAL": "0", "PK_EXPORT_POLL_INTERVAL": "0.2",
            "PK_EXPORT_RETRY_AFTER": "1", "PK_EXPORT_BATCH_SIZE": "7", "PK_EXPORT_FILE_SIZE": "20",
            "PK_EXPORT_MAX_JOBS": "3"}


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo region (8 agreements) on a database of its own."""
    if request.param == "postgresql":
        with demo_database(f"pk_export_{os.getpid()}", AGREEMENTS) as url:
            yield url
        return
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('export') / 'pk.db'}"
    migrate(url)

    async def load() -> None:
        store = Store(create_engine(url, pool_size=2))
        try:
            await load_demo(BundleProcessor(build_service(make_settings(url), store)), AGREEMENTS)
        finally:
            await store.dispose()

    asyncio.run(load())
    yield url


@pytest.fixture(scope="module")
def site(database: str, signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with serving(_command(), _environment(database, signing_key), tmp_path_factory.mktemp("server")) as server:
        settings = make_settings(database, base_url=server.base_url)
        generator = DemoGenerator(seed=1)
        yield Site(server, World(settings, generator, _agreements(generator)[:AGREEMENTS]), database)
        assert server.process.poll() is None, "the server died"


def _ids(resources: list[dict[str, Any]]) -> set[str]:
    ids = [r["id"] for r in resources]
    assert len(ids) == len(set(ids)), "a resource exported twice"
    return set(ids)


# -- the whole flow -----------------------------------------------------------------------------


def test_a_system_export_holds_exactly_what_the_client_finds_by_search(site: Site) -> None:
    headers = site.system()
    manifest, files = site.export(headers, _outputFormat="application/fhir+ndjson")
    assert manifest["requiresAccessToken"] is True
    assert manifest["error"] == []
    assert manifest["request"].startswith(f"{site.base}/$export")
    assert manifest["transactionTime"].endswith("Z")
    for type_ in EXPORTED:
        assert _ids(files.get(type_, [])) == site.search_ids(headers, type_), type_
    assert sum(o["count"] for o in manifest["output"]) == sum(len(v) for v in files.values())
    # small files (PK_EXPORT_FILE_SIZE=20 from batches of 7): a type of many resources is in parts
    assert max(sum(1 for o in manifest["output"] if o["type"] == t) for t in files) > 1


def test_type_and_since_narrow_the_export(site: Site) -> None:
    headers = site.system()
    manifest, files = site.export(headers, _type="CarePlan,Goal")
    assert set(files) <= {"CarePlan", "Goal"} and {o["type"] for o in manifest["output"]} == set(files)
    assert _ids(files["CarePlan"]) == site.search_ids(headers, "CarePlan")
    updated = sorted(g["meta"]["lastUpdated"] for g in files["Goal"])
    since = updated[len(updated) // 2]
    _, later = site.export(headers, _type="Goal", _since=since)
    assert _ids(later.get("Goal", [])) == site.search_ids(headers, "Goal", _lastUpdated=f"gt{since}")
    assert 0 < len(later.get("Goal", [])) < len(files["Goal"])


def test_a_patient_level_export_holds_the_patient_compartments(site: Site) -> None:
    headers = site.system()
    manifest, files = site.export(headers, "Patient/$export", method="POST")
    assert not {"Organization", "Practitioner", "PractitionerRole"} & set(files)
    for type_ in ("Patient", "CarePlan", "Goal", "CareTeam"):
        assert _ids(files[type_]) == site.search_ids(headers, type_), type_
    one = sorted(_ids(files["Patient"]))[0]
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{one}"}},
        {"name": "_type", "valueString": "Patient,CarePlan"}]}
    response = httpx.post(f"{site.base}/Patient/$export", json=body, timeout=30, headers={
        **headers, "prefer": "respond-async", "content-type": "application/fhir+json"})
    assert response.status_code == 202, response.text
    single = site.download(headers, site.manifest(headers, response.headers["content-location"]))
    assert _ids(single["Patient"]) == {one}
    assert _ids(single["CarePlan"]) == site.search_ids(headers, "CarePlan", patient=one)


def _group(site: Site, headers: dict[str, str], *patients: str) -> str:
    """A Group of ``patients`` made by the unit of ``headers`` (which need Group.c)."""
    body = {"resourceType": "Group", "type": "person", "actual": True, "name": "Exportlista",
            "member": [{"entity": {"reference": f"Patient/{p}"}} for p in patients]}
    response = httpx.post(f"{site.base}/Group", json=body, timeout=30,
                          headers={**headers, "content-type": "application/fhir+json"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _of_patients(site: Site, headers: dict[str, str], type_: str, patients: list[str], **params: str) -> set[str]:
    return {id_ for p in patients for id_ in site.search_ids(headers, type_, patient=p, **params)}


def test_a_group_export_holds_its_members_compartments(site: Site) -> None:
    w = site.world
    headers = site.system()
    members = sorted({a.patient for a in w.by_author(VC)})[:2]
    group = _group(site, site.system(scope=f"{SYSTEM} system/Group.c"), *members)
    path = f"Group/{group}/$export"
    manifest, files = site.export(headers, path)
    assert manifest["request"] == f"{site.base}/{path}" and manifest["error"] == []
    assert not {"Organization", "Practitioner", "PractitionerRole", "Group"} & set(files)
    assert _ids(files["Patient"]) == set(members)
    for type_ in ("CarePlan", "CareTeam", "Goal", "Provenance"):
        assert _ids(files.get(type_, [])) == _of_patients(site, headers, type_, members), type_
    assert files["CarePlan"] and {r["subject"]["reference"] for r in files["CarePlan"]} == {
        f"Patient/{m}" for m in members}
    assert len(files["CarePlan"]) < len(site.search_ids(headers, "CarePlan"))  # not every patient's

    # _type, _since, and the patient parameter (POST) among the members
    since = min(g["meta"]["lastUpdated"] for g in files["Goal"])
    manifest, later = site.export(headers, path, _type="Goal", _since=since)
    assert manifest["request"].startswith(f"{site.base}/{path}?")
    assert set(later) <= {"Goal"}
    assert _ids(later.get("Goal", [])) == _of_patients(site, headers, "Goal", members, _lastUpdated=f"gt{since}")
    assert 0 < len(later.get("Goal", [])) < len(files["Goal"])
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{members[1]}"}},
        {"name": "_type", "valueString": "Patient"}]}
    response = httpx.post(f"{site.base}/{path}", json=body, timeout=30, headers={
        **headers, "prefer": "respond-async", "content-type": "application/fhir+json"})
    assert response.status_code == 202, response.text
    single = site.download(headers, site.manifest(headers, response.headers["content-location"]))
    assert _ids(single["Patient"]) == {members[1]}


def test_a_group_is_exported_only_by_its_own_unit_and_its_systems(site: Site) -> None:
    w = site.world
    group = _group(site, site.system(scope=f"{SYSTEM} system/Group.c"), w.by_author(VC)[0].patient)
    refusals = [(site.system(org=CLINIC), f"Group/{group}/$export", 404),
                (site.system(), "Group/no-such-group/$export", 404),
                (site.system(client="other-ehr", scope="system/CarePlan.rs"), f"Group/{group}/$export", 403),
                (w.patient(w.by_author(VC)[0].patient), f"Group/{group}/$export", 403),
                (w.staff(w.role_at(VC, "nurse")), f"Group/{group}/$export", 403)]
    for headers, path, status in refusals:
        for method in ("GET", "POST"):
            response = httpx.request(method, f"{site.base}/{path}", timeout=30,
                                     headers={**headers, "prefer": "respond-async"})
            assert response.status_code == status, (path, response.text)
            assert response.json()["resourceType"] == "OperationOutcome"
    logged = site.sql("SELECT user_kind, status, outcome FROM audit_log WHERE request = :request",
                      request=f"Group/{group}/$export")
    assert {("system", 404, "refused"), ("patient", 403, "refused"), ("staff", 403, "refused")} <= set(logged)


def test_only_the_client_that_kicked_off_sees_the_job_and_its_files(site: Site) -> None:
    headers = site.system()
    status_url = site.kick_off(headers, _type="Patient")
    manifest = site.manifest(headers, status_url)
    file_url = manifest["output"][0]["url"]
    others = [site.system(client="other-ehr"), site.system(org=CLINIC),
              site.world.patient(site.world.agreements[0].patient)]
    for other in others:
        assert httpx.get(status_url, headers=other, timeout=30).status_code == 404
        assert httpx.get(file_url, headers=other, timeout=30).status_code == 404
        assert httpx.delete(status_url, headers=other, timeout=30).status_code == 404
    assert httpx.get(file_url, timeout=30).status_code == 401
    assert httpx.get(file_url, headers=headers, timeout=30).status_code == 200


def test_patient_and_staff_tokens_are_refused(site: Site) -> None:
    w = site.world
    for headers in (w.patient(w.agreements[0].patient), w.staff(w.role_at(VC, "nurse"))):
        response = httpx.get(f"{site.base}/$export", timeout=30, headers={**headers, "prefer": "respond-async"})
        assert response.status_code == 403, response.text
        assert response.json()["issue"][0]["code"] == "forbidden"
    refusals = site.sql("SELECT user_kind, status, outcome FROM audit_log WHERE request = '$export'")
    assert {("patient", 403, "refused"), ("staff", 403, "refused")} <= set(refusals)


def test_a_download_is_in_the_access_log_one_entry_per_patient(site: Site) -> None:
    headers = site.system()
    manifest = site.manifest(headers, site.kick_off(headers, _type="Patient"))
    job = manifest["output"][0]["url"].split("/")[-2]
    query = "SELECT patient_id, interaction, resources, user_kind FROM audit_log WHERE request LIKE :request"
    assert site.sql(query, request=f"$export-file/{job}/%") == []  # nothing logged before the download
    files = site.download(headers, manifest)
    rows = site.sql(query, request=f"$export-file/{job}/%")
    assert len(rows) == len(files["Patient"])
    assert {r[0] for r in rows} == _ids(files["Patient"])
    assert {(r[1], r[3]) for r in rows} == {("operation", "system")}
    assert all(orjson.loads(r[2]) == [f"Patient/{r[0]}"] for r in rows)
    site.download(headers, manifest)  # each download is a disclosure of its own
    assert len(site.sql(query, request=f"$export-file/{job}/%")) == 2 * len(rows)


def test_cancel_removes_the_job_and_its_files(site: Site) -> None:
    headers = site.system()
    status_url = site.kick_off(headers, _type="Goal")
    manifest = site.manifest(headers, status_url)
    response = httpx.delete(status_url, headers=headers, timeout=30)
    assert response.status_code == 202
    assert httpx.get(status_url, headers=headers, timeout=30).status_code == 404
    assert httpx.get(manifest["output"][0]["url"], headers=headers, timeout=30).status_code == 404
    job = status_url.rsplit("/", 1)[1]
    assert site.sql("SELECT count(*) FROM export_file WHERE job_id = :job", job=job)[0][0] == 0


def test_an_expired_export_is_gone(site: Site) -> None:
    headers = site.system()
    status_url = site.kick_off(headers, _type="Patient")
    manifest = site.manifest(headers, status_url)
    job = status_url.rsplit("/", 1)[1]
    site.expire(job)
    assert httpx.get(manifest["output"][0]["url"], headers=headers, timeout=30).status_code == 404
    assert httpx.get(status_url, headers=headers, timeout=30).status_code == 404
    assert site.sql("SELECT count(*) FROM export_job WHERE id = :job", job=job)[0][0] == 0
    assert site.sql("SELECT count(*) FROM export_file WHERE job_id = :job", job=job)[0][0] == 0


def test_what_consent_and_sparr_hide_is_in_no_file(site: Site) -> None:
    """The hemsjukvård (another care provider) takes part in agreement TARGET of the vårdcentral:
    without the patient's samtycke its system does not see the vårdcentral's part, with one it
    does, and a yttre spärr hides it again (tests/security/test_consent_matrix.py)."""
    w = site.world
    target = w.agreements[TARGET]
    homecare = site.system(org=HOMECARE)

    def exported() -> dict[str, set[str]]:
        _, files = site.export(homecare, _type="CarePlan,CareTeam")
        found = {t: _ids(files.get(t, [])) for t in ("CarePlan", "CareTeam")}
        for type_, ids in found.items():
            assert ids == site.search_ids(homecare, type_), type_
        return found

    def record(unit: str, resource: dict[str, Any]) -> None:
        response = httpx.post(f"{site.base}/Consent", json=resource, timeout=30, headers={
            **w.staff(w.role_at(unit, "nurse")), "content-type": "application/fhir+json"})
        assert response.status_code == 201, response.text

    hidden = exported()
    assert target.plan not in hidden["CarePlan"] and target.team not in hidden["CareTeam"]
    record(HOMECARE, consent(target.patient, "samtycke", "IRCP", HOMECARE))
    shown = exported()
    assert target.plan in shown["CarePlan"] and target.team in shown["CareTeam"]
    # An export written with the samtycke, downloaded after the spärr: served under the rules of
    # the download, without the agreement, and logged without its patient.
    manifest = site.manifest(homecare, site.kick_off(homecare, _type="CarePlan,CareTeam"))
    record(VC, consent(target.patient, "yttre-sparr", "CST", VC))
    late = site.download(homecare, manifest, as_written=False)
    assert target.plan not in _ids(late["CarePlan"]) and target.team not in _ids(late["CareTeam"])
    assert _ids(late["CarePlan"]) == shown["CarePlan"] - {target.plan}
    assert _ids(late["CareTeam"]) == shown["CareTeam"] - {target.team}
    assert sum(o["count"] for o in manifest["output"]) == len(late["CarePlan"]) + len(late["CareTeam"]) + 2
    job = manifest["output"][0]["url"].split("/")[-2]
    logged = site.sql("SELECT patient_id FROM audit_log WHERE request LIKE :request", request=f"$export-file/{job}/%")
    assert logged and target.patient not in {row[0] for row in logged}
    blocked = exported()
    assert target.plan not in blocked["CarePlan"] and target.team not in blocked["CareTeam"]


def test_a_download_is_served_under_the_scopes_of_its_token(site: Site) -> None:
    """The token of a download may be narrower than the kick-off's: a file of a type it does not
    grant is refused."""
    manifest = site.manifest(site.system(), site.kick_off(site.system(), _type="Patient,Goal"))
    narrow = site.system(scope="system/Patient.rs")
    by_type = {output["type"]: output["url"] for output in manifest["output"]}
    assert httpx.get(by_type["Patient"], headers=narrow, timeout=30).status_code == 200
    refused = httpx.get(by_type["Goal"], headers=narrow, timeout=30)
    assert refused.status_code == 403 and refused.json()["issue"][0]["code"] == "forbidden"


def test_what_consent_and_sparr_hide_is_in_no_group_export(site: Site) -> None:
    """As above, through a Group of the hemsjukvård's with the agreement's patient: with a
    samtycke and no spärr its system exports the vårdcentral's part; once a yttre spärr is
    recorded the member's Patient is still exported but that part is in no file."""
    w = site.world
    target = w.agreements[TARGET]
    homecare = site.system(org=HOMECARE)
    vc_nurse = {**w.staff(w.role_at(VC, "nurse")), "content-type": "application/fhir+json"}
    found = httpx.get(f"{site.base}/Consent", params={"patient": target.patient, "_count": "200"},
                      headers=vc_nurse, timeout=30).json()
    for entry in found.get("entry", []):
        consent_ = entry["resource"]
        if consent_["status"] == "active" and "sparr" in str(consent_.get("category")):
            revoked = httpx.put(f"{site.base}/Consent/{consent_['id']}", json={**consent_, "status": "inactive"},
                                headers=vc_nurse, timeout=30)
            assert revoked.status_code == 200, revoked.text
    recorded = httpx.post(f"{site.base}/Consent", json=consent(target.patient, "samtycke", "IRCP", HOMECARE),
                          headers={**w.staff(w.role_at(HOMECARE, "nurse")), "content-type": "application/fhir+json"},
                          timeout=30)
    assert recorded.status_code == 201, recorded.text
    group = _group(site, site.system(org=HOMECARE, scope=f"{SYSTEM} system/Group.c"), target.patient)

    def exported() -> dict[str, set[str]]:
        _, files = site.export(homecare, f"Group/{group}/$export", _type="Patient,CarePlan,CareTeam")
        ids = {t: _ids(files.get(t, [])) for t in ("Patient", "CarePlan", "CareTeam")}
        for type_ in ("CarePlan", "CareTeam"):
            assert ids[type_] == site.search_ids(homecare, type_, patient=target.patient), type_
        return ids

    shown = exported()
    assert shown["Patient"] == {target.patient}
    assert target.plan in shown["CarePlan"] and target.team in shown["CareTeam"]
    sparr = httpx.post(f"{site.base}/Consent", json=consent(target.patient, "yttre-sparr", "CST", VC),
                       headers=vc_nurse, timeout=30)
    assert sparr.status_code == 201, sparr.text
    blocked = exported()
    assert blocked["Patient"] == {target.patient}
    assert target.plan not in blocked["CarePlan"] and target.team not in blocked["CareTeam"]


# -- the kick-off's checks (in-process, no runner) ---------------------------------------------


@pytest.fixture
def app(clean_pg: str) -> Iterator[tuple[TestClient, Settings]]:
    settings = make_settings(clean_pg, export_poll_interval=0, export_max_jobs=2)
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        yield client, settings


def _system(settings: Settings, client: str = "test-ehr", scope: str = SYSTEM) -> dict[str, str]:
    grant = Grant(kind="system", sub=client, name="Test EHR", care_unit="SE2321000016-E001",
                  care_unit_name="Vårdcentralen Norr", care_unit_org="org-1", care_provider="SE2321000016-P001")
    return {"authorization": f"Bearer {issue_token(settings, grant, scope, client)}"}


@pytest.mark.parametrize(("params", "prefer", "status", "expression"), [
    ({}, None, 400, "Prefer"),
    ({"_outputFormat": "application/fhir+json"}, "respond-async", 400, "_outputFormat"),
    ({"_type": "Nothing"}, "respond-async", 400, "_type"),
    ({"_type": "AuditEvent"}, "respond-async", 400, "_type"),
    ({"_since": "yesterday"}, "respond-async", 400, "_since"),
    ({"_typeFilter": "CarePlan?status=active"}, "respond-async", 400, "_typeFilter"),
    ({"_elements": "id"}, "respond-async", 400, "_elements"),
    ({"includeAssociatedData": "LatestProvenanceResources"}, "respond-async", 400, "includeAssociatedData"),
    ({"patient": "Patient/x"}, "respond-async", 400, "patient"),
    ({"whatever": "1"}, "respond-async", 400, "whatever"),
    ({"_typeFilter": "CarePlan?status=active"}, "respond-async, handling=lenient", 202, None),
    ({"_outputFormat": "ndjson", "_type": "CarePlan", "_since": "2020-01-01T00:00:00Z"}, "respond-async", 202, None),
])
def test_kick_off_checks(app: tuple[TestClient, Settings], params: dict[str, str], prefer: str | None,
                         status: int, expression: str | None) -> None:
    client, settings = app
    headers = {**_system(settings), **({"prefer": prefer} if prefer else {})}
    response = client.get("/fhir/$export", params=params, headers=headers)
    assert response.status_code == status, response.text
    if status == 202:
        assert response.headers["content-location"].startswith(f"{BASE_URL}/fhir/$export-status/")
    else:
        issue = response.json()["issue"][0]
        assert issue["expression"] == [expression], issue


def test_a_type_outside_the_scopes_is_forbidden_and_the_others_are_left_out(app: tuple[TestClient, Settings]) -> None:
    client, settings = app
    narrow = _system(settings, scope="system/CarePlan.rs system/Goal.rs")
    response = client.get("/fhir/$export", params={"_type": "Patient"}, headers={**narrow, "prefer": "respond-async"})
    assert response.status_code == 403
    response = client.get("/fhir/$export", headers={**narrow, "prefer": "respond-async"})
    assert response.status_code == 202
    job = response.headers["content-location"].rsplit("/", 1)[1]
    params = asyncio.run(_params(settings.database_url, job))
    assert params["types"] == ["CarePlan", "Goal"]


async def _params(url: str, job: str) -> dict[str, Any]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            text = (await conn.execute(sa.text("SELECT params FROM export_job WHERE id = :id"), {"id": job})).scalar()
    finally:
        await engine.dispose()
    return dict(orjson.loads(text))


def test_a_client_has_at_most_n_exports_running(app: tuple[TestClient, Settings]) -> None:
    client, settings = app
    headers = {**_system(settings), "prefer": "respond-async"}
    first = client.get("/fhir/$export", headers=headers)
    assert client.post("/fhir/Patient/$export", headers=headers).status_code == 202
    refused = client.get("/fhir/$export", headers=headers)
    assert refused.status_code == 429
    assert refused.json()["issue"][0]["code"] == "throttled"
    assert client.get("/fhir/$export", headers={**_system(settings, client="other"), "prefer": "respond-async"}
                      ).status_code == 202
    status_url = first.headers["content-location"]
    running = client.get(status_url, headers=headers)
    assert running.status_code == 202 and running.headers["retry-after"] and running.headers["x-progress"]
    assert client.delete(status_url, headers=headers).status_code == 202
    assert client.get("/fhir/$export", headers=headers).status_code == 202


# -- the runner: several at once, one that died ------------------------------------------------


async def test_runners_claim_different_jobs_and_take_over_one_whose_lease_ran_out(db_url: str) -> None:
    store = Store(create_engine(db_url, pool_size=4))
    try:
        now = datetime.now(UTC).replace(tzinfo=None)
        for n in range(2):
            job = {"id": f"job-{n}", "owner": "o", "access": "{}", "request": "r", "params": "{}",
                   "status": "queued", "created": now + timedelta(seconds=n)}
            assert await sql.create_job(store, job, max_active=5)
        lease = now + timedelta(seconds=60)
        first, second = await asyncio.gather(sql.claim(store, "a", now, lease, now),
                                             sql.claim(store, "b", now, lease, now))
        assert first is not None and second is not None and {first.id, second.id} == {"job-0", "job-1"}
        assert await sql.claim(store, "c", now, lease, now) is None  # both held
        held_by = {first.id: "a", second.id: "b"}  # which runner won which claim is the race's
        later = lease + timedelta(seconds=1)  # the runners died: their leases ran out
        taken = await sql.claim(store, "c", later, later + timedelta(seconds=60), later)
        assert taken is not None and taken.id in held_by
        file = {"res_type": "Patient", "part": 0, "count": 0, "content": "", "lines": "[]"}
        # the old runner writes nothing
        assert not await sql.write_file(store, taken.id, held_by[taken.id], later, "x", file)
        assert await sql.write_file(store, taken.id, "c", later + timedelta(seconds=60), "x", file)
        assert [f.type for f in await sql.files_of(store, taken.id)] == ["Patient"]
    finally:
        await store.dispose()


def test_a_file_is_filtered_line_by_line_whatever_its_text_holds() -> None:
    """Lines are ndjson lines ("\n"), not what ``str.splitlines`` calls lines: a resource whose
    text holds U+2028 or U+0085 (JSON leaves them unescaped) stays one line, kept or left out."""
    lines = ['{"id":"a","text":"one\u2028two"}', '{"id":"b","text":"x\x85y"}', '{"id":"c"}']
    content = "".join(f"{line}\n" for line in lines)
    assert kept_lines(content, [1, 2, 3], {1, 3}) == f"{lines[0]}\n{lines[2]}\n"
    assert kept_lines(content, [1, 2, 3], {2}) == f"{lines[1]}\n"
    assert kept_lines(content, [1, 2, 3], set()) == ""
