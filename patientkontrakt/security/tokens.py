"""Access tokens: signed JWTs (RFC 9068 profile), issued by ``oauth`` and checked on every request.

Claims: ``iss`` (the service's base URL), ``aud`` (the FHIR base), ``sub``, ``exp`` (at most
15 minutes after ``iat``), ``iat``, ``nbf``, ``jti``, ``client_id``, ``scope``, ``fhirUser``,
``patient`` (a patient's own Patient id, or the launch context), ``care_unit`` (HSA-id of the
vårdenhet acted for), ``commission`` and ``care_provider`` (HSA-ids of the medarbetaruppdrag
and the vårdgivare), and the service's own ``pk_kind`` (staff | patient | system), ``name``,
``title``, ``care_unit_name`` and ``care_unit_org`` (the unit's Organization id, so the access
rules need no lookup), and ``sid``: the sign-in the token belongs to (the family of its refresh
tokens; absent for client credentials), so ending a sign-in ends its access tokens too.

Every claim has a strict type (``claims.ClaimSet``): a token whose ``exp`` is the string
``"nan"`` is refused like any other malformed token, even when it carries our signature.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError

from patientkontrakt.fhir.errors import Unauthorized
from patientkontrakt.security.claims import AUDIENCE, ClaimError, ClaimSet, choice, date, text
from patientkontrakt.security.keys import SigningKeys

MAX_LIFETIME = 15 * 60
LEEWAY = 30  # seconds of clock skew tolerated on exp/nbf/iat
_CACHE_SIZE = 4096
KINDS = ("staff", "patient", "system", "directory")
ACCESS_TOKEN_CLAIMS = ClaimSet(
    iss=text(required=True, max_length=2048), aud=AUDIENCE, sub=text(required=True),
    exp=date(required=True), iat=date(required=True), nbf=date(), jti=text(required=True),
    client_id=text(required=True, max_length=128), scope=text(required=True, max_length=4096, min_length=0),
    pk_kind=choice(*KINDS, required=True), sid=text(max_length=64),
    fhirUser=text(max_length=256), patient=text(max_length=64), care_unit=text(max_length=64),
    care_unit_org=text(max_length=64), commission=text(max_length=64), care_provider=text(max_length=64),
    name=text(max_length=512, min_length=0), title=text(max_length=512, min_length=0),
    care_unit_name=text(max_length=512, min_length=0),
    purpose_of_use=choice("ETREAT"), emergency_patient=text(max_length=64),
    emergency_reason=text(max_length=1000), pk_roles=text(max_length=256),
)
# Roles a commission may carry beyond acting for its unit (``pk_roles``, space-separated):
# ``log-reviewer`` reviews the access log of every unit of its care provider (PDL 4 kap. 3 §).
LOG_REVIEWER = "log-reviewer"
ROLES = frozenset({LOG_REVIEWER})


@dataclass(frozen=True)
class Grant:
    """Who a token is for, decided at sign-in (or, for a backend, by its registration)."""

    kind: str  # staff | patient | system | directory
    sub: str  # HSA-id (staff), personnummer (patient), client id (system)
    name: str | None = None
    title: str | None = None  # the staff member's profession
    fhir_user: str | None = None
    patient: str | None = None
    care_unit: str | None = None
    care_unit_name: str | None = None
    care_unit_org: str | None = None
    commission: str | None = None
    care_provider: str | None = None
    # An emergency access (nödåtkomst, Patientdatalagen 6 kap 4 §): purpose of use ETREAT (HL7 v3
    # ActReason, as IHE IUA), for one patient, with the reason the staff member typed.
    purpose_of_use: str | None = None
    emergency_patient: str | None = None
    emergency_reason: str | None = None
    roles: tuple[str, ...] = ()  # of ``ROLES``, from the commission's PractitionerRole.code

    def claims(self) -> dict[str, Any]:
        values = {
            "pk_kind": self.kind, "sub": self.sub, "name": self.name, "title": self.title,
            "fhirUser": self.fhir_user, "patient": self.patient, "care_unit": self.care_unit,
            "care_unit_name": self.care_unit_name, "care_unit_org": self.care_unit_org,
            "commission": self.commission, "care_provider": self.care_provider,
            "purpose_of_use": self.purpose_of_use, "emergency_patient": self.emergency_patient,
            "emergency_reason": self.emergency_reason, "pk_roles": " ".join(self.roles) or None,
        }
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Grant:
        return cls(
            kind=str(claims["pk_kind"]), sub=str(claims["sub"]), name=claims.get("name"),
            title=claims.get("title"), fhir_user=claims.get("fhirUser"), patient=claims.get("patient"),
            care_unit=claims.get("care_unit"), care_unit_name=claims.get("care_unit_name"),
            care_unit_org=claims.get("care_unit_org"), commission=claims.get("commission"),
            care_provider=claims.get("care_provider"), purpose_of_use=claims.get("purpose_of_use"),
            emergency_patient=claims.get("emergency_patient"), emergency_reason=claims.get("emergency_reason"),
            roles=tuple(r for r in str(claims.get("pk_roles") or "").split() if r in ROLES),
        )


def invalid_token(description: str) -> Unauthorized:
    """401 with ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 §3)."""
    safe = description.replace('"', "'")
    return Unauthorized(
        f"The access token is not valid: {description}",
        details_sv="Inloggningen är ogiltig eller har gått ut. Logga in igen.",
        headers={"WWW-Authenticate": f'Bearer realm="patientkontrakt", error="invalid_token", '
                                     f'error_description="{safe}"'},
    )


def missing_token() -> Unauthorized:
    return Unauthorized(
        "This endpoint needs an access token: Authorization: Bearer <token> (SMART on FHIR; see "
        "/fhir/.well-known/smart-configuration)",
        details_sv="Du behöver logga in.",
        headers={"WWW-Authenticate": 'Bearer realm="patientkontrakt"'},
    )


class AccessTokens:
    def __init__(self, keys: SigningKeys, issuer: str, audience: str, lifetime: int = 600) -> None:
        if not 0 < lifetime <= MAX_LIFETIME:
            raise ValueError(f"access token lifetime must be 1..{MAX_LIFETIME} seconds, not {lifetime}")
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def issue(self, grant: Grant, scope: str, client_id: str, session: str | None = None,
              lifetime: int | None = None) -> tuple[str, dict[str, Any]]:
        """A token for ``grant``; ``session``: the sign-in (refresh token family) it belongs to;
        ``lifetime``: shorter than the usual, in seconds."""
        now = int(time.time())
        seconds = min(lifetime, self.lifetime) if lifetime else self.lifetime
        claims = {
            "iss": self.issuer, "aud": self.audience, "iat": now, "nbf": now, "exp": now + seconds,
            "jti": str(uuid.uuid4()), "client_id": client_id, "scope": scope, **grant.claims(),
            **({"sid": session} if session else {}),
        }
        return self.keys.sign(claims, typ="at+jwt"), claims

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; ``Unauthorized`` (401, ``invalid_token``) otherwise.

        A verified token is remembered (bounded, per process) until it expires, so a client
        that sends the same token on every request pays for the signature check once.
        """
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None:
            if cached["exp"] + LEEWAY > now:
                return cached
            self._verified.pop(token, None)
        try:
            decoded = self.keys.decode(token)
        except (JoseError, ValueError, TypeError):
            raise invalid_token("the signature does not verify, or it is not a JWT signed by this server") from None
        claims = decoded.claims
        if decoded.header.get("typ") not in ("at+jwt", "application/at+jwt"):
            raise invalid_token("not an access token")
        try:
            ACCESS_TOKEN_CLAIMS.check(claims)
        except ClaimError as error:
            raise invalid_token(str(error)) from None
        if claims["iss"] != self.issuer:
            raise invalid_token("issued by someone else")
        audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if self.audience not in audience:
            raise invalid_token(f"not meant for this server (aud must be {self.audience})")
        exp: float = claims["exp"]
        iat: float = claims["iat"]
        nbf: float = claims.get("nbf", iat)
        if exp + LEEWAY <= now:
            raise invalid_token("expired")
        if nbf - LEEWAY > now or iat - LEEWAY > now:
            raise invalid_token("not valid yet")
        if exp - iat > MAX_LIFETIME:
            raise invalid_token("lifetime longer than this server allows")
        self._verified[token] = claims
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims
