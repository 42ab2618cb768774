"""Contact paths (*kontaktvägar*): how a patient reaches their fast vårdkontakt, fast läkarkontakt
and care unit, read from and written to FHIR R4 resources the service already serves.

Where each fact lives (the reasons are in docs/patientkontrakt.md, "Kontaktvägar"):

* a staff member's direct number: ``PractitionerRole.telecom``, and when it is answered:
  ``PractitionerRole.availableTime`` (core R4);
* the unit's phone and address: ``Organization.telecom`` and ``Organization.address`` (core R4);
* when the unit's phone is answered (*telefontid*) and when the address is open (*öppettider*):
  the extension ``pk-available-time`` on that ContactPoint and on that Address. R4 keeps hours
  only on HealthcareService, Location and PractitionerRole; the extension has the shape of their
  ``availableTime`` (days of week, all day, start and end time), one per set of days.

Nothing here knows HTTP or pages: plain values in, FHIR JSON out, and back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from patientkontrakt.domain import codes

AVAILABLE_TIME = codes.profile_url("pk-available-time")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$")


@dataclass(frozen=True)
class Hours:
    """Some days of the week, all day or from ``start`` to ``end`` (``HH:MM``)."""

    days: tuple[str, ...]
    start: str = ""
    end: str = ""
    all_day: bool = False

    def ranges(self) -> list[tuple[str, str]]:
        """The days as runs of consecutive days: mon, tue, wed, fri → [(mon, wed), (fri, fri)]."""
        ordered = [d for d in DAYS if d in self.days]
        runs: list[tuple[str, str]] = []
        for day in ordered:
            if runs and DAYS.index(day) == DAYS.index(runs[-1][1]) + 1:
                runs[-1] = (runs[-1][0], day)
            else:
                runs.append((day, day))
        return runs


@dataclass(frozen=True)
class Phone:
    number: str
    hours: tuple[Hours, ...] = ()

    @property
    def dial(self) -> str:
        """The number for a ``tel:`` link: digits and a leading +."""
        return re.sub(r"[^0-9+]", "", self.number)


@dataclass(frozen=True)
class PostalAddress:
    line: str = ""
    postal_code: str = ""
    city: str = ""

    def __bool__(self) -> bool:
        return bool(self.line or self.postal_code or self.city)

    @property
    def text(self) -> str:
        place = " ".join(p for p in (self.postal_code, self.city) if p)
        return ", ".join(p for p in (self.line, place) if p)


@dataclass(frozen=True)
class UnitContact:
    """A care unit as the patient reaches it."""

    id: str
    name: str
    phone: Phone | None = None
    address: PostalAddress = field(default_factory=PostalAddress)
    opening: tuple[Hours, ...] = ()


@dataclass(frozen=True)
class RoleContact:
    """A staff member (a PractitionerRole) as the patient reaches them: a direct number with its
    hours, if the role has one, and always their unit."""

    direct: Phone | None
    unit: UnitContact | None


# -- reading ---------------------------------------------------------------------------------------


def _time(value: Any) -> str:
    return value[:5] if isinstance(value, str) and _TIME.match(value) else ""


def _hours(days: Iterable[Any], all_day: Any, start: Any, end: Any) -> Hours | None:
    chosen = tuple(d for d in DAYS if d in {str(x) for x in days})
    if not chosen:
        return None
    return Hours(chosen, _time(start), _time(end), all_day is True)


def available_times(items: Any) -> tuple[Hours, ...]:
    """R4 ``availableTime`` (PractitionerRole, HealthcareService) as ``Hours``."""
    found = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            hours = _hours(item.get("daysOfWeek") or [], item.get("allDay"), item.get("availableStartTime"),
                           item.get("availableEndTime"))
            if hours is not None:
                found.append(hours)
    return tuple(found)


def hours_of(element: Any) -> tuple[Hours, ...]:
    """The ``pk-available-time`` extensions of a ContactPoint or Address as ``Hours``."""
    found = []
    extensions = element.get("extension") if isinstance(element, dict) else None
    for extension in extensions if isinstance(extensions, list) else []:
        if not isinstance(extension, dict) or extension.get("url") != AVAILABLE_TIME:
            continue
        parts: dict[str, list[Any]] = {}
        for part in extension.get("extension") or []:
            if isinstance(part, dict):
                value = next((v for k, v in part.items() if k.startswith("value")), None)
                parts.setdefault(str(part.get("url")), []).append(value)
        hours = _hours(parts.get("daysOfWeek", []), (parts.get("allDay") or [None])[0],
                       (parts.get("availableStartTime") or [None])[0], (parts.get("availableEndTime") or [None])[0])
        if hours is not None:
            found.append(hours)
    return tuple(found)


def _first_phone(resource: dict[str, Any]) -> dict[str, Any] | None:
    phones = [t for t in resource.get("telecom") or [] if isinstance(t, dict) and t.get("system") == "phone"
              and t.get("value")]
    return next((t for t in phones if t.get("use") == "work"), phones[0] if phones else None)


def _first_address(resource: dict[str, Any]) -> dict[str, Any] | None:
    addresses = [a for a in resource.get("address") or [] if isinstance(a, dict)]
    return next((a for a in addresses if a.get("use") == "work"), addresses[0] if addresses else None)


def unit_contact(org: dict[str, Any]) -> UnitContact:
    phone = _first_phone(org)
    address = _first_address(org) or {}
    lines = [str(line) for line in address.get("line") or []]
    return UnitContact(
        id=str(org.get("id", "")), name=str(org.get("name", "")),
        phone=Phone(str(phone["value"]), hours_of(phone)) if phone else None,
        address=PostalAddress(", ".join(lines), str(address.get("postalCode", "")), str(address.get("city", ""))),
        opening=hours_of(address),
    )


def role_contact(role: dict[str, Any], org: dict[str, Any] | None) -> RoleContact:
    """A role's phone counts as direct only if it is not the unit's own number."""
    unit = unit_contact(org) if org else None
    phone = _first_phone(role)
    direct = None
    if phone and (unit is None or unit.phone is None or Phone(str(phone["value"])).dial != unit.phone.dial):
        direct = Phone(str(phone["value"]), available_times(role.get("availableTime")))
    return RoleContact(direct, unit)


# -- writing ---------------------------------------------------------------------------------------


def _parts(hours: Hours) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"url": "daysOfWeek", "valueCode": d} for d in hours.days]
    if hours.all_day:
        parts.append({"url": "allDay", "valueBoolean": True})
    else:
        parts.append({"url": "availableStartTime", "valueTime": f"{hours.start}:00"})
        parts.append({"url": "availableEndTime", "valueTime": f"{hours.end}:00"})
    return parts


def hours_extensions(hours: Sequence[Hours]) -> list[dict[str, Any]]:
    return [{"url": AVAILABLE_TIME, "extension": _parts(h)} for h in hours]


def available_time(hours: Sequence[Hours]) -> list[dict[str, Any]]:
    """``Hours`` as R4 ``availableTime`` (PractitionerRole)."""
    out = []
    for h in hours:
        item: dict[str, Any] = {"daysOfWeek": list(h.days)}
        if h.all_day:
            item["allDay"] = True
        else:
            item["availableStartTime"] = f"{h.start}:00"
            item["availableEndTime"] = f"{h.end}:00"
        out.append(item)
    return out


def _with_hours(element: dict[str, Any], hours: Sequence[Hours]) -> dict[str, Any]:
    others = [e for e in element.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == AVAILABLE_TIME)]
    extensions = [*others, *hours_extensions(hours)]
    result = {k: v for k, v in element.items() if k != "extension"}
    return {"extension": extensions, **result} if extensions else result


def with_contact_details(org: dict[str, Any], phone: Phone | None, address: PostalAddress,
                         opening: Sequence[Hours]) -> dict[str, Any]:
    """``org`` with its phone (and telephone hours), address and opening hours replaced; its
    other telecoms (e-mail, a second phone) and other addresses stay as they were, and so do its
    tags, security labels and profiles. A narrative (``text``) is left out: it would show the old
    details."""
    result = {k: v for k, v in org.items() if k not in ("meta", "text")}
    meta = {k: v for k, v in (org.get("meta") or {}).items() if k in ("tag", "security", "profile")}
    if meta:
        result["meta"] = meta
    telecom = list(org.get("telecom") or [])
    current_phone = _first_phone(org)
    index = telecom.index(current_phone) if current_phone is not None else None
    if phone is None:
        if index is not None:
            del telecom[index]
    else:
        base = {k: v for k, v in (current_phone or {"system": "phone", "use": "work"}).items() if k != "value"}
        updated = _with_hours({**base, "value": phone.number}, phone.hours)
        if index is None:
            telecom.insert(0, updated)
        else:
            telecom[index] = updated
    if telecom:
        result["telecom"] = telecom
    else:
        result.pop("telecom", None)
    addresses = list(org.get("address") or [])
    current = _first_address(org)
    at = addresses.index(current) if current is not None else None
    if address or opening:
        base = {k: v for k, v in (current or {"use": "work", "type": "both"}).items()
                if k not in ("line", "postalCode", "city", "text")}
        new: dict[str, Any] = {**base}
        if address.line:
            new["line"] = [address.line]
        if address.postal_code:
            new["postalCode"] = address.postal_code
        if address.city:
            new["city"] = address.city
        new = _with_hours(new, opening)
        if at is None:
            addresses.insert(0, new)
        else:
            addresses[at] = new
    elif at is not None:
        del addresses[at]
    if addresses:
        result["address"] = addresses
    else:
        result.pop("address", None)
    return result
