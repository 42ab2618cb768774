"""One agreement on the staff pages: its view, read through ``$patientkontrakt`` with the
signed-in staff member's access, and the start that every page changing it shares.

``open_agreement`` runs a page's handler for a signed-in staff member with the posted form (read
first: its CSRF check), the agreement's view, and a closed agreement refused (``closed_page``,
409); ``closed_agreement`` is the same for the one page that wants a closed agreement
(reopening), and leads back to the agreement when it is open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from api.pages.common import Page, body, signed_in
from api.pages.lifecycle import closed_page
from api.pages.session import STAFF
from api.pages.views import AgreementView, GoalView, agreement_view
from patientkontrakt.domain.agreement_builder import transaction
from patientkontrakt.fhir.errors import FhirError
from patientkontrakt.fhir.requests import Preferences

_PREFER = Preferences()

AgreementHandler = Callable[[Page, AgreementView, dict[str, Any]], Awaitable[Response]]


async def load_agreement(page: Page, plan_id: str) -> AgreementView:
    """The agreement's view; ``FhirError`` (the error page) when the staff member may not see it."""
    bundle = orjson.loads(await page.request.app.state.overview.for_plan(page.access, plan_id))
    view = agreement_view(bundle, plan_id)
    if view is None:
        raise FhirError(f"CarePlan/{plan_id} is not known")
    return view


async def open_agreement(request: Request, plan_id: str, handler: AgreementHandler) -> Response:
    """``handler(page, view, form)`` for an agreement that is not closed (``form``: the posted
    form, empty on a GET)."""
    return await _with_agreement(request, plan_id, handler, closed=False)


async def closed_agreement(request: Request, plan_id: str, handler: AgreementHandler) -> Response:
    """``handler(page, view, form)`` for a closed agreement; an open one: back to it."""
    return await _with_agreement(request, plan_id, handler, closed=True)


async def _with_agreement(request: Request, plan_id: str, handler: AgreementHandler, closed: bool) -> Response:
    async def run(page: Page) -> Response:
        data = await page.form() if request.method == "POST" else {}
        view = await load_agreement(page, plan_id)
        if view.closed and not closed:
            return closed_page(page, view)
        if closed and not view.closed:
            return page.redirect(f"/personal/avtal/{plan_id}")
        return await handler(page, view, data)
    return await signed_in(request, STAFF, run)


async def goal_resources(page: Page, goals: list[GoalView]) -> list[dict[str, Any]]:
    """The stored Goals of ``goals``, to change and write back."""
    service = page.request.app.state.service
    return [body(await service.read(page.access, "Goal", g.id)) for g in goals]


async def save(page: Page, entries: list[dict[str, Any]]) -> None:
    """``entries`` as one transaction: all of them are written, or none."""
    await page.request.app.state.bundles.process(page.access, transaction(entries), _PREFER)
