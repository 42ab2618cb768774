"""Sessions and revocation across processes: what ends a sign-in ends it on every process.

Two instances of the service (two apps in ``TestClient``s, as two processes would be: nothing
shared but the PostgreSQL database) serve the same demo region with the test IdP:

* **revoked access tokens at /fhir**: an access token revoked through one instance (RFC 7009) is
  refused by that instance at once and by the other once its revocation list is reloaded, which
  the tests trigger (``Revocations.expire``, what ``PK_REVOCATION_REFRESH_SECONDS`` passing does)
  or make happen on every request (the setting 0), never by waiting; the per-process caches of
  verified tokens do not outlive the revocation. Revoking a refresh token ends the access tokens
  of its sign-in (``sid``), and removing a client ends its tokens; other sign-ins keep working.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from patientkontrakt.config import Settings
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.security.clients import Clients
from patientkontrakt.security.demo_clients import PATIENT_SCOPES, STAFF_SCOPES
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.oauth import OAuthStore
from patientkontrakt.storage.repository import Store
from tests.conftest import BASE_URL, make_settings
from tests.security.conftest import World
from tests.security.test_oauth import (
    APP,
    EC_KEY,
    EHR_EC,
    UNIT,
    Site,
    _register_clients,
    assertion,
    backend,
    client_credentials,
    introspect,
    nurse,
    plan_ids,
    refresh,
    sign_in,
)

RELOAD_NEVER = 3600.0  # the list is reloaded only when a test lets the interval pass


@dataclass
class Instances:
    """Two processes of the service on one database. ``a`` revokes; ``b`` reloads its list only
    when told (``pass_interval``); ``eager`` reloads on every request (interval 0)."""

    world: World
    settings: Settings
    a: TestClient
    b: TestClient
    eager: TestClient

    def site(self, http: TestClient) -> Site:
        return Site(self.world, self.settings, http)

    def pass_interval(self, http: TestClient) -> None:
        http.app.state.revocations.expire()  # type: ignore[attr-defined]


@pytest.fixture
def instances(world: World, clean_pg: str) -> Iterator[Instances]:
    settings = make_settings(clean_pg, test_idp=True, revocation_refresh_seconds=RELOAD_NEVER)
    eager = make_settings(clean_pg, test_idp=True, revocation_refresh_seconds=0)

    async def register() -> None:
        """The pages' clients as ``patientkontrakt demo`` registers them, for the test server's
        address (which ``clients add`` refuses: http only on loopback)."""
        store = Store(create_engine(clean_pg, pool_size=2))
        try:
            for client_id, area, scope in (("pk-personal", "/personal", STAFF_SCOPES),
                                           ("pk-mitt", "/mitt", PATIENT_SCOPES)):
                await OAuthStore(store).save_client({
                    "client_id": client_id, "name": client_id, "kind": "public", "scope": scope,
                    "redirect_uris": json.dumps([f"{BASE_URL}{area}/callback"]), "jwks": None, "jwks_uri": None,
                    "care_unit": None, "created": now_utc()})
        finally:
            await store.dispose()

    asyncio.run(register())
    with ExitStack() as stack:
        a, b, c = (stack.enter_context(TestClient(create_app(s), base_url=BASE_URL))
                   for s in (settings, settings, eager))
        found = Instances(world, settings, a, b, c)
        _register_clients(found.site(a))
        yield found


def fhir(http: TestClient, token: str, path: str = "CarePlan") -> httpx.Response:
    return http.get(f"/fhir/{path}", headers={"authorization": f"Bearer {token}"})


def refused(response: httpx.Response) -> bool:
    return response.status_code == 401 and 'error="invalid_token"' in response.headers.get("www-authenticate", "")


def revoke(http: TestClient, token: str, client_id: str = APP) -> None:
    response = http.post("/oauth/revoke", data={"token": token, "client_id": client_id})
    assert response.status_code == 200, response.text


# -- revoked access tokens at /fhir ---------------------------------------------------------------


def test_a_revoked_access_token_is_refused_by_every_instance(instances: Instances) -> None:
    a, b, eager = instances.a, instances.b, instances.eager
    body = sign_in(instances.site(a), nurse(instances.site(a)))
    token, other = body["access_token"], sign_in(instances.site(a), nurse(instances.site(a)))["access_token"]
    for http in (a, b, eager):  # every instance has verified (and cached) the token, and loaded its list
        assert fhir(http, token).status_code == 200

    revoke(a, token)
    assert refused(fhir(a, token)), "the instance that revoked it knows at once"
    assert refused(fhir(eager, token)), "an instance that reloads on every request knows at once"
    # the other instance reloads its list when the interval has passed: until then it may still
    # accept the token (the documented window), then it refuses it, its cache notwithstanding
    assert fhir(b, token).status_code == 200
    instances.pass_interval(b)
    assert refused(fhir(b, token))
    assert refused(fhir(b, token, f"CarePlan/{instances.world.by_author(UNIT)[0].plan}"))

    # what must still work: another sign-in's token, on every instance, and a new sign-in
    for http in (a, b, eager):
        assert plan_ids(fhir(http, other)) == instances.site(a).involving(UNIT)
    assert fhir(b, sign_in(instances.site(b), nurse(instances.site(b)))["access_token"]).status_code == 200
    # introspection agrees, on either instance
    for http in (a, b):
        with backend(instances.site(http)) as rs:
            assert introspect(rs, token) == {"active": False}
            assert introspect(rs, other)["active"] is True


def test_revoking_a_refresh_token_ends_the_access_tokens_of_its_sign_in(instances: Instances) -> None:
    """RFC 7009 §2.1: revoking a refresh token "SHOULD also invalidate all access tokens based on
    the same authorization grant"; a sign-in's access tokens name its refresh token family (sid)."""
    site = instances.site(instances.a)
    first = sign_in(site, nurse(site))
    rotated = refresh(site, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert site.claims(first["access_token"])["sid"] == site.claims(second["access_token"])["sid"]
    unrelated = sign_in(site, nurse(site))
    assert site.claims(unrelated["access_token"])["sid"] != site.claims(first["access_token"])["sid"]

    revoke(instances.a, second["refresh_token"])
    for http in (instances.a, instances.eager):
        for token in (first["access_token"], second["access_token"]):
            assert refused(fhir(http, token))
        assert fhir(http, unrelated["access_token"]).status_code == 200
    assert refresh(site, second["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(site, unrelated["refresh_token"]).status_code == 200


def test_a_replayed_refresh_token_ends_the_access_tokens_of_its_sign_in(instances: Instances) -> None:
    site = instances.site(instances.a)
    first = sign_in(site, nurse(site))
    second = refresh(site, first["refresh_token"]).json()
    assert fhir(instances.eager, second["access_token"]).status_code == 200
    # the used refresh token again: a thief or the owner, the sign-in ends for both
    assert refresh(site, first["refresh_token"]).json()["error"] == "invalid_grant"
    for http in (instances.a, instances.eager):
        assert refused(fhir(http, second["access_token"]))


def test_a_revoked_backend_token_and_a_removed_clients_tokens_are_refused(instances: Instances) -> None:
    site = instances.site(instances.a)
    first = client_credentials(site, assertion()).json()["access_token"]
    second = client_credentials(site, assertion()).json()["access_token"]
    assert "sid" not in site.claims(first)
    revoke_as_backend = instances.a.post("/oauth/revoke", data={
        "token": first, "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion()})
    assert revoke_as_backend.status_code == 200
    assert refused(fhir(instances.eager, first)) and fhir(instances.eager, second).status_code == 200
    nurse_token = sign_in(site, nurse(site))["access_token"]
    assert fhir(instances.b, second).status_code == 200  # b has loaded its list

    async def remove() -> None:
        store = Store(create_engine(instances.settings.database_url, pool_size=1))
        try:
            assert await Clients(store).remove(EHR_EC)
        finally:
            await store.dispose()

    asyncio.run(remove())  # what `patientkontrakt clients remove` does, from another process
    assert refused(fhir(instances.eager, second))
    assert fhir(instances.b, second).status_code == 200  # until b reloads
    instances.pass_interval(instances.b)
    assert refused(fhir(instances.b, second))
    assert fhir(instances.b, nurse_token).status_code == 200, "another client's tokens are not affected"
    assert client_credentials(site, assertion(EHR_EC, EC_KEY)).status_code == 401
