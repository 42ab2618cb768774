"""Swedish identifiers: personnummer, samordningsnummer, HSA-id, organisationsnummer.

Systems follow HL7 Sweden's base profiles (domain.md). People and older systems send
``YYYYMMDD-NNNN``, ``YYMMDD-NNNN`` (``+`` for age 100 and over) and the OID systems; we accept
those and store the normalised form: 12 digits without separator, under the
``http://electronichealth.se/identifier/...`` system.

python-stdnum (``stdnum.se.personnummer``, ``stdnum.se.orgnr``, ``stdnum.luhn``) does the check
digit, the separator forms and the century of the short form; we wrap it and add what it
lacks: samordningsnummer (day + 60, which its date check refuses), refusing birth dates in
the future, the 12-digit normal form, and HSA-ids.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from stdnum import luhn
from stdnum.exceptions import ValidationError
from stdnum.se import orgnr as _orgnr
from stdnum.se import personnummer as _personnummer

PERSONNUMMER = "http://electronichealth.se/identifier/personnummer"
SAMORDNINGSNUMMER = "http://electronichealth.se/identifier/samordningsnummer"
RESERVNUMMER = "http://electronichealth.se/identifier/nationelltReservnummer"
HSA_ID = "urn:oid:1.2.752.29.4.19"
ORGANISATIONSNUMMER = "urn:oid:2.5.4.97"

# Older systems' OIDs for the same identifiers, normalised on input.
SYSTEM_ALIASES = {
    "urn:oid:1.2.752.129.2.1.3.1": PERSONNUMMER,
    "urn:oid:1.2.752.129.2.1.3.3": SAMORDNINGSNUMMER,
}

_HSA = re.compile(r"^SE(?:16)?(\d{10})-[A-Za-z0-9]+$")
_SEPARATORS = re.compile(r"[\s:]")


class IdentifierError(ValueError):
    """An identifier value that is not valid; carries an English and a Swedish message, and
    ``reason`` (``format``, ``check-digit``, ``date``, ``future``, or ``invalid``) for a page that
    words its own message."""

    def __init__(self, english: str, swedish: str, reason: str = "invalid") -> None:
        super().__init__(english)
        self.english = english
        self.swedish = swedish
        self.reason = reason


@dataclass(frozen=True)
class PersonIdentity:
    """A validated personnummer or samordningsnummer in normal form."""

    system: str
    value: str  # 12 digits
    birth_date: datetime.date

    @property
    def is_coordination_number(self) -> bool:
        return self.system == SAMORDNINGSNUMMER


def normalize_system(system: str | None) -> str | None:
    if system is None:
        return None
    return SYSTEM_ALIASES.get(system, system)


def parse_person_number(text: str, today: datetime.date | None = None) -> PersonIdentity:
    """Validate and normalise a personnummer or samordningsnummer in any of the usual forms.

    Returns the 12-digit form and whether it is a samordningsnummer (day + 60).
    """
    today = today or datetime.date.today()
    raw = _SEPARATORS.sub("", text or "")
    if not re.fullmatch(r"\d{6}(\d{2})?[-+]?\d{4}", raw):
        raise IdentifierError(
            f"{text!r} is not a personnummer: use YYYYMMDD-NNNN or YYYYMMDDNNNN",
            f"{text!r} är inget personnummer. Skriv ÅÅÅÅMMDD-NNNN.",
            "format",
        )
    digits = raw.replace("-", "").replace("+", "")
    if not luhn.is_valid(digits[-10:]):
        raise IdentifierError(
            f"{text!r} has a wrong check digit",
            f"Kontrollsiffran i {text!r} stämmer inte.",
            "check-digit",
        )
    month, day = digits[-8:-6], int(digits[-6:-4])
    coordination = day > 60
    real_day = day - 60 if coordination else day
    try:
        if len(digits) == 12:
            birth = datetime.date(int(digits[:4]), int(month), real_day)
        else:
            # stdnum infers the century of the short form (a '+' means 100 years or more).
            separator = "+" if "+" in raw else "-"
            birth = _personnummer.get_birth_date(f"{digits[:2]}{month}{real_day:02d}{separator}{digits[-4:]}")
    except (ValueError, ValidationError):
        raise IdentifierError(
            f"{text!r} does not contain a valid date",
            f"{text!r} innehåller inget giltigt datum.",
            "date",
        ) from None
    if birth > today:
        raise IdentifierError(
            f"{text!r} has a birth date in the future",
            f"Födelsedatumet i {text!r} ligger i framtiden.",
            "future",
        )
    return PersonIdentity(
        system=SAMORDNINGSNUMMER if coordination else PERSONNUMMER,
        value=f"{birth.year:04d}{month}{day:02d}{digits[-4:]}",
        birth_date=birth,
    )


def validate_hsa_id(value: str) -> str:
    """An HSA-id: ``SE`` + organisationsnummer (optionally ``16``-prefixed) + ``-`` + alphanumerics."""
    if not value or len(value) > 31 or not value.isascii() or "@" in value:
        raise IdentifierError(
            f"{value!r} is not an HSA-id (at most 31 characters, no å/ä/ö or @)",
            f"{value!r} är inget HSA-id (högst 31 tecken, inga å/ä/ö eller @).",
        )
    match = _HSA.match(value)
    if not match:
        raise IdentifierError(
            f"{value!r} is not an HSA-id: expected SE<organisationsnummer>-<id>",
            f"{value!r} är inget HSA-id: förväntat SE<organisationsnummer>-<id>.",
        )
    validate_organisationsnummer(match.group(1))
    return value


def validate_organisationsnummer(value: str) -> str:
    try:
        return str(_orgnr.compact(_orgnr.validate(value)))
    except ValidationError:
        raise IdentifierError(
            f"{value!r} is not a valid organisationsnummer",
            f"{value!r} är inget giltigt organisationsnummer.",
        ) from None


def format_person_number(value: str) -> str:
    """``YYYYMMDD-NNNN`` for display."""
    return f"{value[:8]}-{value[8:]}"
