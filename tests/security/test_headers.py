"""Security headers on every response: a Content-Security-Policy with ``frame-ancestors 'none'``
and ``form-action 'self'`` (plus only the origins a form's redirects really reach) on every HTML
document, ``X-Frame-Options``, ``Referrer-Policy``, and ``nosniff`` everywhere.

The test walks every route of the app (``app.routes``: each path with each method, signed in to
the staff pages and the e-service where the path is theirs, forms with their CSRF token), so a
page added later is checked without being named here; it also checks that the routes known to
answer with HTML did (a walk that met no HTML would prove nothing). That the pages still work
under the policy is checked in a real browser (``tests/browser``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from tests.conftest import BASE_URL, make_settings
from tests.security.conftest import World
from tests.security.test_oauth import APP_REDIRECT, Site, _register_clients, attempt, authorize
from tests.security.test_sessions import csrf_of, pages_sign_in, register_pages_clients

# the routes that answer a browser with an HTML document
HTML_ROUTES = {"/", "/docs", "/oauth/authorize", "/oauth/test-idp", "/oauth/callback", "/oauth/commission",
               "/personal", "/personal/avtal/{plan_id}", "/personal/nytt", "/personal/avtal/{plan_id}/redigera",
               "/personal/avtal/{plan_id}/vardkontakt", "/personal/avtal/{plan_id}/avsluta",
               "/personal/avtal/{plan_id}/aktivitet/{index}", "/personal/avtal/{plan_id}/mal/{goal_id}",
               "/personal/callback", "/mitt", "/mitt/mal",
               "/mitt/mal/{goal_id}", "/mitt/callback"}
HTML_ROUTES |= {"/personal/enhet"}  # the unit's contact details
# samtycke, spärr and emergency access (a SIP's route sees an agreement here: a redirect to it)
HTML_ROUTES |= {"/personal/patient/{patient_id}/samtycke", "/personal/patient/{patient_id}/nodatkomst",
                "/personal/patient/{patient_id}/samtycke/{consent_id}/aterkalla"}
# the patient's samtycke and spärr at /mitt; the log review (to a nurse who is no log reviewer, refused as a page)
HTML_ROUTES |= {"/mitt/sparrar", "/personal/logg", "/personal/logg.csv"}


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (path, method) the app serves, mounts as one GET each."""
    try:
        from fastapi.routing import iter_route_contexts
        found: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:  # FastAPI before 0.16x keeps its routes flat
        found = list(app.routes)
    pairs = {(route.path, method) for route in found for method in (getattr(route, "methods", None) or {"GET"})}
    return sorted(pairs, key=lambda pair: (pair[0].endswith("logga-ut"), pair))  # sign out last


def directives(response: httpx.Response) -> dict[str, list[str]]:
    policy = response.headers["content-security-policy"]
    return {name: values for name, *values in (part.split() for part in policy.split(";") if part.strip())}


def check_document(label: str, response: httpx.Response, form_targets: set[str] = frozenset()) -> None:
    policy = directives(response)
    assert policy["frame-ancestors"] == ["'none'"], label
    assert policy["form-action"][0] == "'self'" and set(policy["form-action"][1:]) == form_targets, \
        (label, policy["form-action"])
    for name, sources in policy.items():
        assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "http:", "https:", "data:"} & set(sources) \
            or (name, sources) == ("img-src", ["'self'", "data:"]), (label, name, sources)
    assert policy["default-src"] == ["'none'"] and policy["script-src"] == ["'self'"], label
    assert policy["base-uri"] == ["'none'"] and policy["object-src"] == ["'none'"], label
    assert response.headers["x-frame-options"] == "DENY", label
    assert response.headers["referrer-policy"] == "same-origin", label


@pytest.fixture
def site(world: World, clean_pg: str) -> Iterator[Site]:
    register_pages_clients(clean_pg)
    settings = make_settings(clean_pg, test_idp=True)
    with TestClient(create_app(settings), base_url=BASE_URL) as http:
        found = Site(world, settings, http)
        _register_clients(found)
        yield found


def test_every_response_has_the_security_headers(site: Site) -> None:
    http, world = site.http, site.world
    agreement = world.agreements[0]
    pages_sign_in(http, "/personal", f"role:{world.role_at(agreement.author, 'nurse')}")
    pages_sign_in(http, "/mitt", f"patient:{agreement.patient}")
    csrf = {area: csrf_of(http.get(area)) for area in ("/personal", "/mitt")}
    values = {"plan_id": agreement.plan, "goal_id": agreement.patient_goal, "type_": "CarePlan",
              "id_": agreement.plan, "version": "1", "index": "0", "patient_id": agreement.patient,
              "consent_id": "no-such-consent", "job_id": "no-such-job", "file_id": "1", "group_id": "g"}
    # error pages and refusals too: an unknown agreement, an unknown client, no token, too large
    for response in (http.get("/personal/avtal/no-such-plan"), http.get("/oauth/authorize", params={"client_id": "x"})):
        assert response.status_code in (400, 404), response.text
        check_document(str(response.request.url), response)
    for response in (http.get("/fhir/CarePlan"), http.get("/no/such/path"),
                     http.post("/fhir", content=b"x" * 16, headers={"content-length": str(10**9)})):
        assert response.status_code in (401, 404, 413) and response.headers["x-content-type-options"] == "nosniff"

    app: Any = http.app
    html: set[str] = set()
    walked = 0
    for path, method in routes(app):
        url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        url = {"/static/docs": "/static/docs/swagger-ui.css", "/static": "/static/site.css"}.get(url, url)
        area = next((a for a in csrf if url.startswith(a)), None)
        form = {"csrf": csrf[area]} if area and method == "POST" else None
        response = http.request(method, url, data=form, follow_redirects=False)
        walked += 1
        label = f"{method} {url}: {response.status_code}"
        assert response.status_code < 500, label
        assert response.headers["x-content-type-options"] == "nosniff", label
        if response.headers.get("content-type", "").startswith("text/html"):
            html.add(path)
            check_document(label, response)
    assert walked > 50
    assert html == HTML_ROUTES, f"HTML seen from {sorted(html)}"



def test_the_home_page_and_the_api_explorer_have_the_policy_too(site: Site) -> None:
    for path in ("/", "/docs"):
        response = site.http.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert "content-security-policy" in response.headers, f"{path} has no Content-Security-Policy"
        check_document(path, response)
    # the API explorer runs no inline script and loads nothing from elsewhere
    docs = site.http.get("/docs").text
    assert re.findall(r"<script[^>]*>", docs) == ['<script src="/static/docs/swagger-ui-bundle.js">',
                                                  '<script src="/static/docs-init.js">']
    assert "http" not in docs
    for asset in ("/static/docs/swagger-ui-bundle.js", "/static/docs/swagger-ui.css", "/static/docs-init.js",
                  "/openapi.json"):
        assert site.http.get(asset).status_code == 200, asset
    assert site.http.get("/redoc").status_code == 404


def test_a_form_may_end_only_at_the_origin_its_redirects_reach(site: Site) -> None:
    """The test IdP's form redirects to the app's redirect URI: that origin, and no other."""
    assert APP_REDIRECT.startswith("http://127.0.0.1:8765/")
    check_document("test IdP", authorize(site, attempt()), {"http://127.0.0.1:8765"})
    # another app's sign-in names that app's origin only
    site.register("https-app", name="Https-appen", kind="public", redirect_uris=["https://app.example.org:8443/cb"],
                  scope="openid user/*.rs")
    other = authorize(site, attempt(client_id="https-app", redirect_uri="https://app.example.org:8443/cb",
                                    scope="openid user/*.rs"))
    check_document("test IdP, https app", other, {"https://app.example.org:8443"})
    # the pages' own sign-in comes back to the service: 'self' only
    start = site.http.get("/personal/logga-in", follow_redirects=False)
    check_document("test IdP for the staff pages", site.http.get(start.headers["location"]),
                   {BASE_URL})


@pytest.mark.parametrize("url", ["https://idp.example.org/authorize", "http://127.0.0.1:8080/x",
                                 "https://[::1]:8443/a", "HTTPS://IdP.Example.ORG"])
def test_origins_are_scheme_host_and_port(url: str) -> None:
    from api.headers import origin_of

    assert origin_of(url) == {"https://idp.example.org/authorize": "https://idp.example.org",
                              "http://127.0.0.1:8080/x": "http://127.0.0.1:8080",
                              "https://[::1]:8443/a": "https://[::1]:8443",
                              "HTTPS://IdP.Example.ORG": "https://idp.example.org"}[url]


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://a b.example", "https://x.example;script-src *",
                                 "https://x.example:99999", "data:text/html,x", "", "//x.example"])
def test_anything_else_is_no_origin(url: str) -> None:
    from api.headers import origin_of

    assert origin_of(url) is None
