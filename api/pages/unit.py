"""The care unit's contact details, ``/personal/enhet``: phone, telephone hours, address and
opening hours, as the unit's patients see them on ``/mitt``.

The unit is the one the staff member signed in for. The form writes the unit's Organization
through the FHIR core with the staff member's own ``Access``: the access rules let a unit's staff
change their own unit's ``telecom`` and ``address`` and nothing else of the directory
(``patientkontrakt/security/rules.py``). Where the values live in FHIR:
``patientkontrakt/domain/contact_paths.py``.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.pages.common import Page, bilingual, body, signed_in
from api.pages.labels import N_
from api.pages.session import STAFF
from patientkontrakt.domain.contact_paths import (
    DAYS,
    Hours,
    Phone,
    PostalAddress,
    unit_contact,
    with_contact_details,
)
from patientkontrakt.fhir.errors import FhirError, PreconditionFailed
from patientkontrakt.fhir.requests import Preferences

router = APIRouter(prefix="/personal", include_in_schema=False)
_PREFER = Preferences()
HOURS_ROWS = 3
# The day choices of the form: a set of days of week per choice (FHIR days-of-week codes).
DAY_CHOICES: dict[str, tuple[str, ...]] = {
    "mon-fri": DAYS[:5], "mon-thu": DAYS[:4], "mon-sun": DAYS, "sat-sun": DAYS[5:],
    **{day: (day,) for day in DAYS},
}
DAY_LABELS = {
    "mon-fri": N_("Monday–Friday"), "mon-thu": N_("Monday–Thursday"), "mon-sun": N_("Every day"),
    "sat-sun": N_("Saturday–Sunday"), "mon": N_("Monday"), "tue": N_("Tuesday"), "wed": N_("Wednesday"),
    "thu": N_("Thursday"), "fri": N_("Friday"), "sat": N_("Saturday"), "sun": N_("Sunday"),
}
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{2,24}[0-9]$")
_POSTAL_CODE = re.compile(r"^([0-9]{3}) ?([0-9]{2})$")
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
MAX_TEXT = 100


def _rows(hours: tuple[Hours, ...]) -> list[dict[str, str]]:
    """Form rows for ``hours``: one per choice of days; days no choice covers, one row per day."""
    rows = []
    for h in hours:
        start, end = ("", "") if h.all_day else (h.start, h.end)
        choice = next((key for key, days in DAY_CHOICES.items() if days == h.days), None)
        for days in [choice] if choice else list(h.days):
            rows.append({"days": days, "start": start, "end": end})
    return rows + [{"days": "", "start": "", "end": ""} for _ in range(max(1, HOURS_ROWS - len(rows)))]


def _form_of(org: dict[str, Any]) -> dict[str, Any]:
    unit = unit_contact(org)
    return {
        "phone": unit.phone.number if unit.phone else "",
        "phone_hours": _rows(unit.phone.hours if unit.phone else ()),
        "line": unit.address.line, "postal_code": unit.address.postal_code, "city": unit.address.city,
        "opening": _rows(unit.opening), "version": str((org.get("meta") or {}).get("versionId", "")),
    }


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name, "")
    return str(value[0] if isinstance(value, list) else value).strip()


def _read_hours(data: dict[str, Any], kind: str, errors: dict[str, Any]) -> tuple[list[dict[str, str]], list[Hours]]:
    rows, hours = [], []
    count = 0
    while f"{kind}-{count}-days" in data and count < 20:
        count += 1
    for index in range(count):
        row = {k: _text(data, f"{kind}-{index}-{k}") for k in ("days", "start", "end")}
        rows.append(row)
        at = f"{kind}-{index}"
        if not row["days"]:
            if row["start"] or row["end"]:
                errors[f"{at}-days"] = N_("Choose the days these times are for.")
            continue
        if row["days"] not in DAY_CHOICES:
            errors[f"{at}-days"] = N_("Choose the days from the list.")
            continue
        if not row["start"] and not row["end"]:
            hours.append(Hours(DAY_CHOICES[row["days"]], all_day=True))
            continue
        for part in ("start", "end"):
            if not _CLOCK.match(row[part]):
                errors[f"{at}-{part}"] = N_("Write the time as HH:MM, for example 08:00.")
        if f"{at}-start" in errors or f"{at}-end" in errors:
            continue
        if row["end"] <= row["start"]:
            errors[f"{at}-end"] = N_("The end must be after the start.")
            continue
        hours.append(Hours(DAY_CHOICES[row["days"]], row["start"], row["end"]))
    return rows, hours


def _read_form(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Phone | None, PostalAddress,
                                               list[Hours]]:
    errors: dict[str, Any] = {}
    form: dict[str, Any] = {k: _text(data, k) for k in ("phone", "line", "postal_code", "city", "version")}
    form["phone_hours"], phone_hours = _read_hours(data, "phone_hours", errors)
    form["opening"], opening = _read_hours(data, "opening", errors)
    if form["phone"] and not _PHONE.match(form["phone"]):
        errors["phone"] = N_("Write the phone number with digits, for example 0123-456 78.")
    elif not form["phone"] and phone_hours:
        errors["phone"] = N_("Write the phone number the telephone hours are for.")
    postal = _POSTAL_CODE.match(form["postal_code"])
    if form["postal_code"] and not postal:
        errors["postal_code"] = N_("Write the postal code as five digits, for example 123 45.")
    elif postal:
        form["postal_code"] = f"{postal[1]} {postal[2]}"
    for name in ("line", "city"):
        if len(form[name]) > MAX_TEXT:
            errors[name] = N_("Write at most 100 characters.")
    phone = Phone(form["phone"], tuple(phone_hours)) if form["phone"] else None
    address = PostalAddress(form["line"], form["postal_code"], form["city"])
    return form, errors, phone, address, opening


async def _unit(page: Page) -> dict[str, Any]:
    care_unit_org = getattr(page.access, "care_unit_org", "")
    if not care_unit_org:
        raise FhirError("You act for no care unit", details_sv="Du är inte inloggad för någon vårdenhet.")
    return body(await page.request.app.state.service.read(page.access, "Organization", care_unit_org))


def _render(page: Page, org: dict[str, Any], form: dict[str, Any], errors: dict[str, Any],
            general: list[Any], status_code: int = 200) -> Response:
    return page.render("personal/unit.html", {
        "unit": org, "f": form, "errors": errors, "general": general, "day_choices": list(DAY_CHOICES),
        "day_labels": DAY_LABELS, "saved": page.request.query_params.get("sparat"),
    }, status_code=status_code)


@router.get("/enhet")
async def unit_form(request: Request) -> Response:
    async def run(page: Page) -> Response:
        org = await _unit(page)
        return _render(page, org, _form_of(org), {}, [])
    return await signed_in(request, STAFF, run)


@router.post("/enhet")
async def save_unit(request: Request) -> Response:
    async def run(page: Page) -> Response:
        form, errors, phone, address, opening = _read_form(await page.form())
        org = await _unit(page)
        general: list[Any] = []
        status = 422
        if not errors:
            try:
                await page.request.app.state.service.update(
                    page.access, "Organization", org["id"], with_contact_details(org, phone, address, opening),
                    if_match=f'W/"{form["version"]}"', prefer=_PREFER)
                return page.redirect("/personal/enhet?sparat=1")
            except PreconditionFailed:
                status = 409
                general.append(N_("Someone else changed the unit's contact details since you opened the page. "
                                  "Reload the page and make your change again."))
            except FhirError as error:
                status = error.status if error.status in (403, 409, 422) else 400
                general.append(bilingual(error.issues[0].details_sv or error.diagnostics,
                                         error.issues[0].diagnostics))
        return _render(page, org, form, errors, general, status_code=status)
    return await signed_in(request, STAFF, run)
