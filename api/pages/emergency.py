"""Emergency access (nödåtkomst, lag 2022:913 om sammanhållen vård- och omsorgsdokumentation
3 kap. 6 §) on the staff pages.

When the patient cannot give their samtycke and the care cannot wait, a staff member of a
health-care unit may read what other care providers hold about that one patient, never what a
spärr blocks. The page asks for the reason in the staff member's own words and exchanges the
session's access token for an emergency token (RFC 8693 token exchange at the service's own
authorization server, ``purpose_of_use=ETREAT``): the server checks the reason, refuses a
social-care unit (hemtjänst) and limits the time; every access under it is logged with the
reason, for the provider's log review. The token lives in the page session only while it is
valid (``Session.emergency``); the pages show a banner with the patient and the end time, and the
staff member may end it early.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages import forms
from api.pages.common import Page, body, signed_in
from api.pages.labels import N_
from api.pages.session import STAFF, forget_emergency
from api.pages.sharing import load_sharing
from api.pages.views import name_of
from patientkontrakt.security.oauth import ACCESS_TOKEN_TYPE, MAX_REASON, MIN_REASON, TOKEN_EXCHANGE, OAuthError

router = APIRouter(include_in_schema=False)  # included by personal.py, under /personal
REASON_LENGTH = N_("Write why, in 10 to 1000 characters.")
SOCIAL_CARE = N_("Emergency access is for health care. At a social-care unit (hemtjänst) other care "
                 "providers' information is read only with the person's samtycke.")
REFUSED = N_("The emergency access could not be started. Sign in again and try once more.")


def _render(page: Page, context: dict[str, Any], status: int = 200) -> Response:
    return page.render("personal/emergency.html", context, status_code=status)


@router.get("/patient/{patient_id}/nodatkomst")
async def emergency_form(request: Request, patient_id: str) -> Response:
    async def run(page: Page) -> Response:
        patient = body(await page.request.app.state.service.read(page.access, "Patient", patient_id))
        view = await load_sharing(page, patient, request.query_params.get("tillbaka", ""))
        return _render(page, {"s": view, "f": {"reason": ""}, "errors": {}, "general": []})
    return await signed_in(request, STAFF, run)


@router.post("/patient/{patient_id}/nodatkomst")
async def start(request: Request, patient_id: str) -> Response:
    async def run(page: Page) -> Response:
        data = await page.form()
        patient = body(await page.request.app.state.service.read(page.access, "Patient", patient_id))
        view = await load_sharing(page, patient, forms.text(data, "tillbaka"))
        reason = " ".join(forms.text(data, "reason").split())
        context: dict[str, Any] = {"s": view, "f": {"reason": reason}, "errors": {}, "general": []}
        if not MIN_REASON <= len(reason) <= MAX_REASON:
            context["errors"]["reason"] = REASON_LENGTH
            return _render(page, context, 422)
        server = page.request.app.state.oauth
        try:
            tokens = await server.token({
                "grant_type": TOKEN_EXCHANGE, "client_id": page.area.client_id,
                "subject_token": page.session.access_token, "subject_token_type": ACCESS_TOKEN_TYPE,
                "purpose_of_use": "ETREAT", "patient": patient_id, "reason": reason,
            })
        except OAuthError as error:
            context["general"] = [SOCIAL_CARE if "social-care" in error.description else REFUSED]
            return _render(page, context, 403)
        claims = server.tokens.verify(tokens["access_token"])
        page.session = page.renewed = replace(
            page.session, emergency_token=tokens["access_token"], emergency_patient=patient_id,
            emergency_name=name_of(patient),
            emergency_expires=min(float(claims["exp"]), time.time() + float(tokens["expires_in"])))
        return page.redirect(view.back)
    return await signed_in(request, STAFF, run)


@router.post("/nodatkomst/avsluta")
async def end(request: Request) -> Response:
    """End the emergency access now: the page session forgets the token, and the server revokes it."""
    async def run(page: Page) -> Response:
        await page.form()
        token = page.session.emergency_token
        if token:
            await page.request.app.state.oauth.revoke({"client_id": page.area.client_id, "token": token})
        page.session = page.renewed = page.session.without_emergency()
        response = page.redirect("/personal")
        forget_emergency(response, page.area)
        return response
    return await signed_in(request, STAFF, run)
