"""Sessions and revocation across processes: what ends a sign-in ends it on every process.

Two instances of the service (two apps in ``TestClient``s, as two processes would be: nothing
shared but the PostgreSQL database) serve the same demo region with the test IdP:

* **revoked access tokens at /fhir**: an access token revoked through one instance (RFC 7009) is
  refused by that instance at once and by the other once its revocation list is reloaded, which
  the tests trigger (``Revocations.expire``, what ``PK_REVOCATION_REFRESH_SECONDS`` passing does)
  or make happen on every request (the setting 0), never by waiting; the per-process caches of
  verified tokens do not outlive the revocation. Revoking a refresh token ends the access tokens
  of its sign-in (``sid``), and removing a client ends its tokens; other sign-ins keep working.
* **signing out of the pages** (``/personal``, ``/mitt``) ends the sign-in on the server: the
  old cookie, presented again to either instance, is no session (the sign-in page or the
  landing page, never the pages behind it).
* **a session belongs to its area**: a ``/mitt`` cookie presented as the ``/personal`` cookie
  (and the reverse) is no session.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import asyncpg
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
    sealed_of,
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


def register_pages_clients(database_url: str) -> None:
    """The pages' clients as ``patientkontrakt demo`` registers them, for the test server's
    address (which ``clients add`` refuses: http only on loopback)."""
    async def register() -> None:
        store = Store(create_engine(database_url, pool_size=2))
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


@pytest.fixture
def instances(world: World, clean_pg: str) -> Iterator[Instances]:
    settings = make_settings(clean_pg, test_idp=True, revocation_refresh_seconds=RELOAD_NEVER)
    eager = make_settings(clean_pg, test_idp=True, revocation_refresh_seconds=0)

    register_pages_clients(clean_pg)
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


# -- the pages: signing out, and sessions bound to their area ------------------------------------------


def pages_sign_in(http: TestClient, area: str, who: str) -> str:
    """Sign in to ``/personal`` or ``/mitt`` through the test IdP; returns the session cookie."""
    start = http.get(f"{area}/logga-in", follow_redirects=False)
    assert start.status_code == 303 and start.headers["location"].startswith("/oauth/authorize?")
    chosen = http.post("/oauth/test-idp", data={"request": sealed_of(http.get(start.headers["location"])),
                                                "as": who}, follow_redirects=False)
    assert chosen.status_code == 303, chosen.text
    back = http.get(chosen.headers["location"], follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"] == area, back.text
    cookie = http.cookies.get(f"pk_session_{area.strip('/')}")
    assert cookie
    return str(cookie)


def with_cookie(http: TestClient, method: str, path: str, name: str, value: str, **form: Any) -> httpx.Response:
    """A request carrying only this cookie (what a copied or kept cookie is)."""
    fresh = {"cookie": f"{name}={value}"}
    return http.request(method, path, headers=fresh, data=form or None, follow_redirects=False)


def signed_out(response: httpx.Response, area: str) -> bool:
    """The answer to someone not signed in: sent to sign in, or the area's landing page."""
    if response.status_code == 303:
        return response.headers["location"].startswith(("/oauth/authorize?", area))
    return response.status_code == 200 and f'href="{area}/logga-in"' in response.text \
        and "logga-ut" not in response.text


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:2000]
    return match.group(1)


async def _rows(url: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


@pytest.mark.parametrize("area", ["/personal", "/mitt"])
def test_signing_out_ends_the_session_on_every_instance(instances: Instances, area: str) -> None:
    world = instances.world
    agreement = world.agreements[0]
    who = f"role:{world.role_at(agreement.author, 'nurse')}" if area == "/personal" else f"patient:{agreement.patient}"
    name = f"pk_session_{area.strip('/')}"
    page = f"/personal/avtal/{agreement.plan}" if area == "/personal" else "/mitt"
    cookie = pages_sign_in(instances.a, area, who)
    for http in (instances.a, instances.b, instances.eager):  # the session works on every instance
        shown = with_cookie(http, "GET", page, name, cookie)
        assert shown.status_code == 200 and "logga-ut" in shown.text, shown.text[:500]

    signed_in_page = with_cookie(instances.a, "GET", page, name, cookie)
    out = with_cookie(instances.a, "POST", f"{area}/logga-ut", name, cookie, csrf=csrf_of(signed_in_page))
    assert out.status_code == 303 and out.headers["location"] == area
    assert f'{name}=""' in out.headers["set-cookie"] and "max-age=0" in out.headers["set-cookie"].lower()

    # the old cookie is no session: on this instance at once, on the others once they reload
    assert signed_out(with_cookie(instances.a, "GET", page, name, cookie), area)
    assert signed_out(with_cookie(instances.eager, "GET", page, name, cookie), area)
    instances.pass_interval(instances.b)
    for http in (instances.a, instances.b, instances.eager):
        assert signed_out(with_cookie(http, "GET", page, name, cookie), area)
        assert signed_out(with_cookie(http, "GET", area, name, cookie), area)
        posted = with_cookie(http, "POST", f"{area}/logga-ut", name, cookie, csrf=csrf_of(signed_in_page))
        assert posted.status_code == 303 and posted.headers["location"] == area

    # the sign-in ended in the database: its refresh tokens, and its access tokens (sid)
    client = "pk-personal" if area == "/personal" else "pk-mitt"
    url = instances.settings.database_url
    tokens = asyncio.run(_rows(url, f"SELECT family_id, revoked_at FROM refresh_token WHERE client_id = '{client}'"))
    assert tokens and all(row["revoked_at"] is not None for row in tokens)
    families = {row["family_id"] for row in tokens}
    ended = asyncio.run(_rows(url, "SELECT kind, value FROM token_revocation"))
    assert families <= {row["value"] for row in ended if row["kind"] == "session"}
    assert any(row["kind"] == "token" for row in ended)
    # and a new sign-in works
    again = pages_sign_in(instances.b, area, who)
    assert with_cookie(instances.a, "GET", page, name, again).status_code == 200


def test_a_session_is_no_session_in_the_other_area(instances: Instances) -> None:
    world, a = instances.world, instances.a
    agreement = world.agreements[0]
    patient_cookie = pages_sign_in(a, "/mitt", f"patient:{agreement.patient}")
    staff_cookie = pages_sign_in(a, "/personal", f"role:{world.role_at(agreement.author, 'nurse')}")
    plan = f"/personal/avtal/{agreement.plan}"

    # each cookie works in its own area
    assert "logga-ut" in with_cookie(a, "GET", plan, "pk_session_personal", staff_cookie).text
    assert "logga-ut" in with_cookie(a, "GET", "/mitt", "pk_session_mitt", patient_cookie).text

    # the patient's cookie as the staff pages' cookie: no session (the patient's own agreement
    # was shown there, under the patient's rules)
    for path in (plan, "/personal", "/personal/nytt"):
        assert signed_out(with_cookie(a, "GET", path, "pk_session_personal", patient_cookie), "/personal"), path
    # and the staff member's cookie at the e-service
    for path in ("/mitt", f"/mitt/mal/{agreement.patient_goal}"):
        assert signed_out(with_cookie(a, "GET", path, "pk_session_mitt", staff_cookie), "/mitt"), path
    # a sign-in started in one area cannot be finished in the other
    start = a.get("/mitt/logga-in", follow_redirects=False)
    login_cookie = a.cookies.get("pk_login_mitt")
    assert start.status_code == 303 and login_cookie
    chosen = a.post("/oauth/test-idp", data={"request": sealed_of(a.get(start.headers["location"])),
                                             "as": f"patient:{agreement.patient}"}, follow_redirects=False)
    code_query = chosen.headers["location"].split("?", 1)[1]
    crossed = a.get(f"/personal/callback?{code_query}", headers={"cookie": f"pk_login_personal={login_cookie}"},
                    follow_redirects=False)
    assert crossed.status_code == 400 and "pk_session_personal" not in crossed.headers.get("set-cookie", "")
