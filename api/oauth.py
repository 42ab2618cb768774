"""The authorization server over HTTP: ``/oauth/*``, discovery, and the sign-in pages.

The OAuth logic is ``patientkontrakt.security.oauth``; this module turns HTTP into its calls,
shows the sign-in (the built-in test IdP, or a redirect to the external OpenID Connect
provider and back), and renders OAuth errors as RFC 6749 JSON. The OAuth endpoints are not
FHIR endpoints: their errors are OAuth's, not OperationOutcomes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from joserfc.errors import JoseError

from api.oidc import ExternalIdP, OidcError, ProviderRefused
from api.templating import render
from patientkontrakt.domain.identifiers import IdentifierError, parse_person_number
from patientkontrakt.logs import describe
from patientkontrakt.security.oauth import AuthorizationServer, AuthorizeRequest, OAuthError, user_kinds
from patientkontrakt.security.tokens import Grant

router = APIRouter()
log = logging.getLogger("patientkontrakt.oauth")
BINDING_COOKIE = "pk_auth"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _server(request: Request) -> AuthorizationServer:
    server: AuthorizationServer = request.app.state.oauth
    return server


def _secure(request: Request) -> bool:
    return str(request.app.state.settings.base_url).startswith("https://")


def _oauth_error(error: OAuthError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=_NO_STORE)


def _page_error(request: Request, message_sv: str, message_en: str, status: int = 400) -> HTMLResponse:
    return render(request, "oauth/error.html", {"message_sv": message_sv, "message_en": message_en},
                  status_code=status)


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "send the parameters as application/x-www-form-urlencoded")
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


# -- discovery -------------------------------------------------------------------------------


@router.get("/fhir/.well-known/smart-configuration", include_in_schema=False)
async def smart_configuration(request: Request) -> JSONResponse:
    return JSONResponse(_server(request).smart_configuration())


@router.get("/.well-known/openid-configuration", include_in_schema=False)
async def openid_configuration(request: Request) -> JSONResponse:
    return JSONResponse(_server(request).openid_configuration())


@router.get("/oauth/jwks")
async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(_server(request).keys.jwks())


# -- authorize and sign-in -------------------------------------------------------------------


@router.get("/oauth/authorize", include_in_schema=False)
async def authorize(request: Request) -> Response:
    server = _server(request)
    params = {k: v for k, v in request.query_params.items()}
    binding = request.cookies.get(BINDING_COOKIE) or secrets.token_urlsafe(24)
    try:
        auth_request = await server.authorize_request(params, binding)
    except OAuthError as error:
        if error.redirect:
            return RedirectResponse(server.error_redirect(None, params, error), status_code=303)
        return _page_error(request, "Inloggningen kan inte starta: appen är okänd eller adressen den vill "
                                    "tillbaka till är inte registrerad.", error.description)
    external: ExternalIdP | None = request.app.state.external_idp
    if external is not None:
        try:
            response: Response = await external.start(request, server.seal(auth_request))
        except OidcError as error:
            log.warning("external sign-in cannot start: %s", error)
            return _page_error(request, "Inloggningstjänsten svarar inte. Försök igen om en stund.", str(error), 502)
    elif request.app.state.settings.test_idp:
        response = await _test_idp_page(request, auth_request, server.seal(auth_request))
    else:
        return _page_error(request, "Ingen inloggningstjänst är konfigurerad.",
                           "No identity provider is configured (PK_OIDC_ISSUER, or PK_TEST_IDP for demos)", 503)
    response.set_cookie(BINDING_COOKIE, binding, httponly=True, samesite="lax", secure=_secure(request),
                        path="/oauth", max_age=900)
    return response


async def _test_idp_page(request: Request, auth_request: AuthorizeRequest, sealed: str) -> HTMLResponse:
    """The people the request is for come first (patients for the patient e-service, staff for
    the staff pages, by the scopes asked for); the others are folded away below, still there to
    try what happens when the wrong person signs in."""
    directory = _server(request).directory
    staff, patients = await asyncio.gather(directory.staff(), directory.patients())  # two connections
    by_person: dict[str, list[Any]] = {}
    for choice in staff:
        by_person.setdefault(f"{choice.practitioner_name}|{choice.grant.sub}", []).append(choice)
    first = user_kinds(auth_request.scope)
    return render(request, "oauth/test_idp.html", {
        "client_name": auth_request.client_name, "sealed": sealed,
        "people": [(key.split("|")[0], key.split("|")[1], choices) for key, choices in by_person.items()],
        "patients": patients, "first": first, "others": [k for k in ("patient", "staff") if k not in first],
    }, headers=_NO_STORE, form_targets=[auth_request.redirect_uri])


@router.post("/oauth/test-idp", include_in_schema=False)
async def test_idp_login(request: Request) -> Response:
    """The test IdP's form: sign in as the chosen commission or patient."""
    server = _server(request)
    if not request.app.state.settings.test_idp:
        return _page_error(request, "Testinloggningen är avstängd.", "The test IdP is not enabled", 404)
    form = await request.form()
    try:
        auth_request = server.unseal(str(form.get("request", "")), request.cookies.get(BINDING_COOKIE))
    except OAuthError as error:
        return _page_error(request, "Inloggningen gick inte att slutföra. Börja om från appen.", error.description)
    choice = str(form.get("as", ""))
    kind, _, ident = choice.partition(":")
    grant: Grant | None = None
    if kind == "role":
        grant = await server.directory.commission(ident)
    elif kind == "patient":
        grant = await server.directory.patient(ident)
    elif kind == "pnr":
        try:
            number = parse_person_number(str(form.get("personnummer", ""))).value
        except IdentifierError:
            number = ""
        grant = await server.directory.patient_by_number(number) if number else None
    if grant is None:
        return _page_error(request, "Välj en person i listan.", "Choose someone from the list")
    return RedirectResponse(await server.issue_code(auth_request, grant), status_code=303)


@router.get("/oauth/callback", include_in_schema=False)
async def oidc_callback(request: Request) -> Response:
    """Back from the external OpenID Connect provider."""
    server = _server(request)
    external: ExternalIdP | None = request.app.state.external_idp
    if external is None:
        return _page_error(request, "Ingen extern inloggningstjänst är konfigurerad.", "No external IdP", 404)
    try:
        sealed, claims = await external.finish(request)
        auth_request = server.unseal(sealed, request.cookies.get(BINDING_COOKIE))
        choices = await external.grants(claims, server.directory)
    except ProviderRefused as refusal:
        return _refused_by_provider(request, refusal)
    except (OAuthError, OidcError) as error:
        log.warning("external sign-in failed: %s", error)
        return _page_error(request, "Inloggningen misslyckades. Börja om från appen.", str(error))
    if not choices:
        return _page_error(request, "Du finns inte i tjänstens register (ingen medarbetare eller patient med "
                                    "din identitet).", "The signed-in person is not known to this service", 403)
    if len(choices) == 1:
        return RedirectResponse(await server.issue_code(auth_request, choices[0].grant), status_code=303)
    # each choice is signed for this sign-in only: it cannot finish another one without the provider
    commissions = [(server.keys.sign({"aud": "pk-commission", "grant": c.grant.claims(), "req": _digest(sealed)},
                                     typ="pk-commission"), c) for c in choices]
    return render(request, "oauth/commission.html", {"sealed": sealed, "commissions": commissions},
                  headers=_NO_STORE, form_targets=[auth_request.redirect_uri])


def _digest(sealed: str) -> str:
    return hashlib.sha256(sealed.encode()).hexdigest()


def _refused_by_provider(request: Request, refusal: ProviderRefused) -> Response:
    """The person cancelled at the provider, or it refused: the app hears it from us, as the
    authorization server's own answer to its request (RFC 6749 §4.1.2.1)."""
    server = _server(request)
    log.info("external sign-in ended at the provider: %s", refusal)
    try:
        auth_request = server.unseal(refusal.sealed, request.cookies.get(BINDING_COOKIE))
    except OAuthError as error:
        return _page_error(request, "Inloggningen misslyckades. Börja om från appen.", str(error))
    if refusal.error == "access_denied":
        error = OAuthError("access_denied", "the sign-in was cancelled or refused at the identity provider")
    else:
        error = OAuthError("server_error", "the identity provider refused the sign-in")
    return RedirectResponse(server.error_redirect(auth_request, {}, error), status_code=303)


@router.post("/oauth/commission", include_in_schema=False)
async def choose_commission(request: Request) -> Response:
    """A staff member with several commissions chose the one (and its care unit) to act for."""
    server = _server(request)
    form = await request.form()
    sealed = str(form.get("request", ""))
    try:
        auth_request = server.unseal(sealed, request.cookies.get(BINDING_COOKIE))
        token = server.keys.decode(str(form.get("commission", "")))
    except (OAuthError, JoseError, ValueError, TypeError) as error:  # a forged or stale form
        log.warning("commission choice refused: %s", describe(error))
        return _page_error(request, "Valet gick inte att slutföra. Börja om från appen.", "invalid choice")
    claims = token.claims
    if token.header.get("typ") != "pk-commission" or claims.get("req") != _digest(sealed):
        return _page_error(request, "Valet gick inte att slutföra. Börja om från appen.", "invalid choice")
    return RedirectResponse(await server.issue_code(auth_request, Grant.from_claims(claims["grant"])),
                            status_code=303)


# -- token, introspection, revocation --------------------------------------------------------


@router.post("/oauth/token")
async def token(request: Request) -> Response:
    try:
        body = await _server(request).token(await _form(request))
    except OAuthError as error:
        return _oauth_error(error)
    return JSONResponse(body, headers=_NO_STORE)


@router.post("/oauth/introspect")
async def introspect(request: Request) -> Response:
    try:
        body = await _server(request).introspect(await _form(request))
    except OAuthError as error:
        return _oauth_error(error)
    return JSONResponse(body, headers=_NO_STORE)


@router.post("/oauth/revoke")
async def revoke(request: Request) -> Response:
    try:
        await _server(request).revoke(await _form(request))
    except OAuthError as error:
        return _oauth_error(error)
    return Response(status_code=200, headers=_NO_STORE)
