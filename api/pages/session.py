"""Sign-in and sessions of the pages (``/personal``, ``/mitt``).

The pages are OAuth clients of the service's own authorization server, like any SMART app:
authorization code with PKCE (clients ``pk-personal`` and ``pk-mitt``), signed in through the
same identity provider. The code is exchanged in-process (``AuthorizationServer.token``, the
same code as ``/oauth/token``), and every page then calls the FHIR core with the ``Access`` of
its access token, so the pages obey the same access rules and access log as the API.

The session is an encrypted cookie (JWE ``dir``/``A256GCM``; the key is derived from the
signing key and the area, and the area is sealed inside too, so a ``/mitt`` cookie is no session
at ``/personal`` and the reverse), ``HttpOnly``, ``SameSite=Lax``, ``Secure`` on https, limited
to its area's path. It holds the access and refresh tokens and a CSRF token that every form
carries. Nothing is kept in the process, so any number of processes can serve the pages. An
expired access token is renewed with the refresh token (which rotates). Signing out ends the
sign-in on the server (``AuthorizationServer.end_session``: the refresh token family and every
access token issued in it are revoked, in the database), so the cookie, if kept or copied, is
no session any more on any process of the service.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from patientkontrakt.fhir.access import Access
from patientkontrakt.fhir.errors import FhirError
from patientkontrakt.security.demo_clients import PATIENT_SCOPES, STAFF_SCOPES
from patientkontrakt.security.oauth import AuthorizationServer, OAuthError

SESSION_LIFETIME = 12 * 3600
LOGIN_LIFETIME = 600
EMERGENCY_PART, EMERGENCY_PARTS = 3800, 3  # an emergency token's cookies: characters of each, how many


@dataclass(frozen=True)
class Area:
    """One set of pages: its path, OAuth client, scopes and the kind of user it is for."""

    path: str  # "/personal" or "/mitt"
    client_id: str
    scope: str
    kind: str  # staff | patient

    @property
    def cookie(self) -> str:
        return f"pk_session_{self.path.strip('/')}"

    @property
    def login_cookie(self) -> str:
        return f"pk_login_{self.path.strip('/')}"


STAFF = Area("/personal", "pk-personal", STAFF_SCOPES, "staff")
PATIENT = Area("/mitt", "pk-mitt", PATIENT_SCOPES, "patient")


@dataclass
class Session:
    access_token: str
    refresh_token: str | None
    expires_at: float
    csrf: str
    name: str
    unit: str | None  # the care unit acted for (staff)
    fhir_user: str | None
    patient: str | None
    started: float
    # Emergency access (nödåtkomst, lag 2022:913 3 kap. 6 §): an access token marked ETREAT for one
    # patient (``emergency_patient``, named ``emergency_name``), exchanged for the staff member's
    # own (``api/pages/emergency.py``); while it is valid the pages act with it, never after.
    emergency_token: str | None = None
    emergency_patient: str | None = None
    emergency_name: str = ""
    emergency_expires: float = 0.0

    @property
    def emergency(self) -> bool:
        """Whether an emergency access is in force now."""
        return bool(self.emergency_token) and self.emergency_expires > time.time()

    @property
    def emergency_until(self) -> str:
        """When the emergency access ends, HH:MM in the server's local time (as the pages' times)."""
        return datetime.datetime.fromtimestamp(self.emergency_expires).strftime("%H:%M")

    def without_emergency(self) -> Session:
        return replace(self, emergency_token=None, emergency_patient=None, emergency_name="", emergency_expires=0.0)


class NotSignedIn(Exception):
    """The page needs a signed-in user of the area (the handler redirects to sign-in)."""


class WrongUser(OAuthError):
    """Someone signed in who is not the kind of user the area is for: a patient at ``/personal``,
    a staff member at ``/mitt`` (``kind``: what they are). Their tokens are revoked already."""

    def __init__(self, area: Area, kind: str) -> None:
        super().__init__("access_denied", f"these pages are for {area.kind} users, not {kind}")
        self.kind = kind


def _key(request: Request, area: Area) -> OctKey:
    """A 256-bit key derived from the server's signing key for one area (HKDF-like, labelled)."""
    server: AuthorizationServer = request.app.state.oauth
    material = server.keys.active.as_pem(private=True)
    label = f"patientkontrakt page session\n{area.path}\n".encode()
    return OctKey.import_key(hashlib.sha256(label + material).digest())


def _seal(request: Request, area: Area, data: dict[str, Any]) -> str:
    return jwe.encrypt_compact({"alg": "dir", "enc": "A256GCM"}, orjson.dumps({**data, "area": area.path}),
                               _key(request, area))


def _open(request: Request, area: Area, token: str | None) -> dict[str, Any] | None:
    """What ``_seal`` sealed for this area; None for anything else (another area's cookie too)."""
    if not token:
        return None
    try:
        data = orjson.loads(jwe.decrypt_compact(token, _key(request, area)).plaintext)
    except (JoseError, ValueError, TypeError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.pop("area", None) != area.path:
        return None
    return data


def _secure(request: Request) -> bool:
    return str(request.app.state.settings.base_url).startswith("https://")


def _set(request: Request, response: Response, name: str, value: str, area: Area, max_age: int) -> None:
    response.set_cookie(name, value, httponly=True, samesite="lax", secure=_secure(request), path=area.path,
                        max_age=max_age)


def _base(request: Request) -> str:
    return str(request.app.state.settings.base_url).rstrip("/")


def sign_in_urls(request: Request) -> list[str]:
    """Where signing in may take the browser besides the service: the external identity provider."""
    external = request.app.state.external_idp
    return list(external.sign_in_urls()) if external is not None else []


def redirect_uri(request: Request, area: Area) -> str:
    return f"{_base(request)}{area.path}/callback"


def start_login(request: Request, area: Area, next_path: str = "") -> Response:
    """Redirect to the authorization server with a fresh PKCE verifier and state."""
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({
        "response_type": "code", "client_id": area.client_id, "redirect_uri": redirect_uri(request, area),
        "scope": area.scope, "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
        "aud": request.app.state.settings.fhir_base,
    })
    response = RedirectResponse(f"/oauth/authorize?{query}", status_code=303)
    target = next_path if next_path.startswith(area.path) else area.path
    _set(request, response, area.login_cookie,
         _seal(request, area, {"v": verifier, "s": state, "n": target, "exp": time.time() + LOGIN_LIFETIME}),
         area, LOGIN_LIFETIME)
    return response


async def finish_login(request: Request, area: Area) -> Response:
    """The authorization server sent the browser back: exchange the code, start the session."""
    login = _open(request, area, request.cookies.get(area.login_cookie))
    params = request.query_params
    if login is None or login.get("exp", 0) < time.time() or params.get("state") != login.get("s"):
        raise OAuthError("invalid_request", "the sign-in was not started here, or took too long")
    if "error" in params:
        raise OAuthError(params.get("error", "access_denied"), params.get("error_description", ""))
    server: AuthorizationServer = request.app.state.oauth
    tokens = await server.token({
        "grant_type": "authorization_code", "client_id": area.client_id, "code": params.get("code", ""),
        "code_verifier": login["v"], "redirect_uri": redirect_uri(request, area),
    })
    claims = server.tokens.verify(tokens["access_token"])
    if claims.get("pk_kind") != area.kind or claims.get("client_id") != area.client_id:
        await server.revoke({"client_id": area.client_id, "token": tokens.get("refresh_token", "")}) \
            if tokens.get("refresh_token") else None
        raise WrongUser(area, str(claims.get("pk_kind") or "unknown"))
    session = Session(
        access_token=tokens["access_token"], refresh_token=tokens.get("refresh_token"),
        expires_at=float(claims["exp"]), csrf=secrets.token_urlsafe(24), name=str(claims.get("name") or ""),
        unit=claims.get("care_unit_name"), fhir_user=claims.get("fhirUser"), patient=claims.get("patient"),
        started=time.time(),
    )
    response = RedirectResponse(str(login.get("n") or area.path), status_code=303)
    save(request, response, area, session)
    response.delete_cookie(area.login_cookie, path=area.path)
    return response


def _emergency_cookie(area: Area, part: int) -> str:
    return f"pk_emergency_{area.path.strip('/')}_{part}"


def save(request: Request, response: Response, area: Area, session: Session) -> None:
    """The session in its cookie. An emergency access token (which carries the typed reason, up to
    1000 characters) would take the cookie past the 4096 bytes a browser keeps, so it goes
    sealed in cookies of its own, cut in parts (``EMERGENCY_PART``), kept as long as it is valid
    and bound to the session by its CSRF token."""
    _set(request, response, area.cookie, _seal(request, area, {**asdict(session), "emergency_token": None}), area,
         SESSION_LIFETIME)
    if session.emergency and session.emergency_token:
        sealed = _seal(request, area, {"token": session.emergency_token, "csrf": session.csrf})
        parts = [sealed[i:i + EMERGENCY_PART] for i in range(0, len(sealed), EMERGENCY_PART)]
        if len(parts) > EMERGENCY_PARTS:
            raise ValueError("the emergency access token does not fit its cookies")
        lifetime = max(1, int(session.emergency_expires - time.time()) + 1)
        for number in range(EMERGENCY_PARTS):
            if number < len(parts):
                _set(request, response, _emergency_cookie(area, number), parts[number], area, lifetime)
            else:
                response.delete_cookie(_emergency_cookie(area, number), path=area.path)


def forget_emergency(response: Response, area: Area) -> None:
    """Drop the cookies of an emergency access (ended early; the session no longer names it)."""
    for number in range(EMERGENCY_PARTS):
        response.delete_cookie(_emergency_cookie(area, number), path=area.path)


def forget(response: Response, area: Area) -> None:
    """Drop the area's session cookie (signed out, or a session that ended)."""
    response.delete_cookie(area.cookie, path=area.path)
    forget_emergency(response, area)


def current(request: Request, area: Area) -> Session:
    data = _open(request, area, request.cookies.get(area.cookie))
    if data is None or data.get("started", 0) + SESSION_LIFETIME < time.time():
        raise NotSignedIn()
    try:
        session = Session(**data)
    except TypeError:
        raise NotSignedIn() from None
    if session.emergency_patient and session.emergency_expires > time.time():
        sealed = "".join(request.cookies.get(_emergency_cookie(area, n), "") for n in range(EMERGENCY_PARTS))
        emergency = _open(request, area, sealed)
        if emergency is not None and emergency.get("csrf") == session.csrf:
            session = replace(session, emergency_token=str(emergency.get("token") or "") or None)
    return session


async def access(request: Request, area: Area, session: Session) -> tuple[Access, Session | None]:
    """The caller's ``Access``; renews the access token when it is about to expire (the new
    session must then be saved on the response, which is why it is returned). A session whose
    sign-in was ended (signed out, revoked) is ``NotSignedIn``, as is one of another area.
    During an emergency access the ``Access`` is the emergency token's; once it has expired the
    session forgets it (an emergency access is never renewed: the reason is given again)."""
    renewed: Session | None = None
    if session.emergency_patient and not session.emergency:  # expired, or its cookies are gone
        renewed = session = session.without_emergency()
    if session.expires_at - 30 < time.time():
        if not session.refresh_token:
            raise NotSignedIn()
        server: AuthorizationServer = request.app.state.oauth
        try:
            tokens = await server.token({"grant_type": "refresh_token", "client_id": area.client_id,
                                         "refresh_token": session.refresh_token})
        except OAuthError:
            raise NotSignedIn() from None
        claims = server.tokens.verify(tokens["access_token"])
        renewed = session = Session(**{**asdict(session), "access_token": tokens["access_token"],
                                       "refresh_token": tokens.get("refresh_token"),
                                       "expires_at": float(claims["exp"])})
    await request.app.state.revocations.refresh_if_due()
    try:
        caller: Access = request.app.state.authenticator.access(f"Bearer {session.access_token}")
    except FhirError:
        raise NotSignedIn() from None
    if session.emergency:
        try:
            caller = request.app.state.authenticator.access(f"Bearer {session.emergency_token}")
        except FhirError:  # revoked (signed out elsewhere): the pages go on without it
            renewed = session = session.without_emergency()
    if caller.principal.client_id != area.client_id:
        raise NotSignedIn()
    return caller, renewed


async def logout(request: Request, area: Area) -> Response:
    """Sign out: the sign-in ends on the server (every process), then the cookie goes."""
    response = RedirectResponse(area.path, status_code=303)
    try:
        session = current(request, area)
    except NotSignedIn:
        session = None
    if session is not None:
        server: AuthorizationServer = request.app.state.oauth
        await server.end_session(area.client_id, session.access_token, session.refresh_token)
    forget(response, area)
    return response


def check_csrf(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and secrets.compare_digest(session.csrf, str(submitted))
