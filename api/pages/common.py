"""What every page handler shares: the signed-in session, its ``Access``, rendering, errors, and
each area's sign-in, its callback and sign-out."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.pages import session as sessions
from api.pages.session import PATIENT, STAFF, Area, NotSignedIn, Session, WrongUser
from api.templating import render
from patientkontrakt.fhir.access import Access
from patientkontrakt.fhir.errors import FhirError
from patientkontrakt.fhir.results import Result
from patientkontrakt.security.oauth import OAuthError

_NO_STORE = {"Cache-Control": "no-store"}
log = logging.getLogger("patientkontrakt.pages")


@dataclass
class Page:
    """A signed-in request: who, with what access, and a session to save if it was renewed."""

    request: Request
    area: Area
    session: Session
    access: Access
    renewed: Session | None

    def render(self, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
        # a form posted after the session ended goes on to the sign-in (form-action: api/headers.py)
        response = render(self.request, name, {"session": self.session, "area": self.area,
                                               "csrf": self.session.csrf, **context},
                          status_code=status_code, headers=_NO_STORE,
                          form_targets=sessions.sign_in_urls(self.request))
        return self.finish(response)

    def finish(self, response: Response) -> Response:
        if self.renewed is not None:
            sessions.save(self.request, response, self.area, self.renewed)
        return response

    def redirect(self, path: str) -> Response:
        return self.finish(RedirectResponse(path, status_code=303))

    async def form(self) -> dict[str, Any]:
        """The posted form, after the CSRF check (``NotSignedIn`` when it fails: sign in again)."""
        form = await self.request.form()
        data: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                data.setdefault(key, []).append(value)
        flat = {k: (v[0] if len(v) == 1 else v) for k, v in data.items()}
        if not sessions.check_csrf(self.session, flat.get("csrf") if isinstance(flat.get("csrf"), str) else None):
            raise CsrfError()
        return flat


@dataclass(frozen=True)
class Bilingual:
    """A message the core gives in Swedish and English (identifier errors, OperationOutcomes):
    the page shows the one of its language (``say`` in the templates)."""

    sv: str
    en: str

    def __str__(self) -> str:
        return self.sv


def bilingual(sv: str, en: str) -> Bilingual:
    return Bilingual(sv, en)


class CsrfError(Exception):
    """A form posted without this session's CSRF token."""


def body(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(result.body or b"{}")
    return data


Handler = Callable[[Page], Awaitable[Response]]


async def signed_in(request: Request, area: Area, handler: Handler) -> Response:
    """Run ``handler`` for a signed-in user of ``area``; otherwise go to sign-in and come back."""
    try:
        current = sessions.current(request, area)
        access, renewed = await sessions.access(request, area, current)
    except NotSignedIn:
        if request.method == "GET":
            response = sessions.start_login(request, area, request.url.path)
        else:
            response = RedirectResponse(area.path, status_code=303)
        if area.cookie in request.cookies:
            sessions.forget(response, area)  # a session that ended, or none of this area's
        return response
    page = Page(request, area, renewed or current, access, renewed)
    try:
        return await handler(page)
    except CsrfError:
        return page.render("pages/error.html", {"code": 403, "message": "form-expired"}, status_code=403)
    except FhirError as error:
        status = error.status if error.status in (403, 404, 409, 410) else 400
        return page.render("pages/error.html", {"code": status, "message": "fhir", "error": error},
                           status_code=status)


async def home_page(request: Request, area: Area, landing: str, handler: Handler) -> Response:
    """An area's first page: ``landing`` (which leads to the sign-in) for a visitor who is not
    signed in, ``handler`` for one who is."""
    try:
        sessions.current(request, area)
    except NotSignedIn:
        return render(request, landing, {"area": area})
    return await signed_in(request, area, handler)


def login_failed(request: Request, area: Area, error: Exception) -> HTMLResponse:
    """The sign-in came back without a session: say why in the reader's language and lead on
    (sign in again; someone who is not who the area is for, to the area that is), never the
    OAuth error's own text, which goes to the log."""
    log.info("sign-in at %s failed: %s", area.path, error)
    if isinstance(error, WrongUser):
        elsewhere = next((a for a in (STAFF, PATIENT) if a.kind == error.kind), None)
        return render(request, "pages/login_failed.html",
                      {"area": area, "reason": "wrong-user", "elsewhere": elsewhere}, status_code=403,
                      headers=_NO_STORE)
    if isinstance(error, OAuthError) and error.error == "access_denied":
        reason = "cancelled"
    elif isinstance(error, OAuthError) and error.error in ("invalid_request", "invalid_grant"):
        reason = "expired"
    else:
        reason = "other"
    return render(request, "pages/login_failed.html", {"area": area, "reason": reason}, status_code=400,
                  headers=_NO_STORE)


def sign_in_routes(router: APIRouter, area: Area) -> None:
    """``/logga-in``, ``/callback`` (a failed sign-in: ``login_failed``) and ``/logga-ut`` (a
    form, with its CSRF check) of ``area``'s pages, on its ``router``."""

    @router.get("/logga-in")
    async def login(request: Request) -> Response:
        return sessions.start_login(request, area)

    @router.get("/callback")
    async def callback(request: Request) -> Response:
        try:
            return await sessions.finish_login(request, area)
        except (OAuthError, FhirError) as error:
            return login_failed(request, area, error)

    @router.post("/logga-ut")
    async def logout(request: Request) -> Response:
        async def run(page: Page) -> Response:
            await page.form()
            return await sessions.logout(request, area)
        return await signed_in(request, area, run)
