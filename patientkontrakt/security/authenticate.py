"""From the ``Authorization`` header of a request to the ``Access`` it runs under."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from patientkontrakt.fhir.access import Access, Principal
from patientkontrakt.fhir.search.params import SearchParser
from patientkontrakt.security.revocation import Revocations, keys_of
from patientkontrakt.security.rules import CareUnitAccess, DirectoryAccess, PatientAccess, ScopedAccess
from patientkontrakt.security.scopes import Scopes
from patientkontrakt.security.tokens import LEEWAY, AccessTokens, Grant, invalid_token, missing_token
from patientkontrakt.storage.search_sql import QueryBuilder

_ROLE = {"patient": "patient", "system": "system", "directory": "directory"}
_CACHE_SIZE = 4096
_PURPOSE = {"patient": "PATRQT", "staff": "TREAT", "system": "TREAT", "directory": "HSYSADMIN"}


class Authenticator:
    """``care_unit_rules=False`` gives the scopes-only rules of the bare FHIR engine (no care units).

    ``revocations``: the revocation list every token is checked against (the caller reloads it
    when due: ``Revocations.refresh_if_due``); without one, no token is taken as revoked.
    """

    def __init__(self, tokens: AccessTokens, parser: SearchParser, builder: QueryBuilder, *,
                 care_unit_rules: bool = True, revocations: Revocations | None = None) -> None:
        self.tokens = tokens
        self._parser = parser
        self._builder = builder
        self._unit_rules = care_unit_rules
        self._revocations = revocations
        self._built: OrderedDict[str, tuple[float, Access, list[tuple[str, str]]]] = OrderedDict()

    def access(self, authorization: str | None) -> Access:
        """Raises ``Unauthorized`` (401 with ``WWW-Authenticate``) without a valid bearer token.

        The ``Access`` of a token depends on the token alone, so it is built once and reused
        (bounded, per process) until the token expires; whether the token was revoked is checked
        on every call, so the reuse never outlives a revocation.
        """
        if not authorization:
            raise missing_token()
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise invalid_token("use the Bearer scheme")
        cached = self._built.get(token)
        if cached is not None and cached[0] > time.time():
            access, keys = cached[1], cached[2]
        else:
            claims = self.tokens.verify(token)
            keys = keys_of(claims)
            access = self._build(claims)
            self._built[token] = (float(claims["exp"]) + LEEWAY, access, keys)
            if len(self._built) > _CACHE_SIZE:
                self._built.popitem(last=False)
        if self._revocations is not None and self._revocations.revoked(keys):
            raise invalid_token("revoked")
        return access

    def _build(self, claims: dict[str, Any]) -> Access:
        grant = Grant.from_claims(claims)
        principal = Principal(
            kind="system" if grant.kind == "directory" else grant.kind, id=grant.sub, name=grant.name,
            role=grant.title or _ROLE.get(grant.kind),
            fhir_user=grant.fhir_user, care_unit=grant.care_unit, care_unit_name=grant.care_unit_name,
            care_provider=grant.care_provider, client_id=str(claims["client_id"]),
            purpose=_PURPOSE.get(grant.kind, "TREAT"),
            roles=frozenset(grant.roles) if grant.kind == "staff" else frozenset(),
        )
        emergency = grant.purpose_of_use == "ETREAT" and grant.kind == "staff" and grant.emergency_patient
        if emergency:
            principal = replace(principal, purpose="ETREAT", reason=grant.emergency_reason)
        scopes = Scopes.parse(str(claims["scope"]))
        if not self._unit_rules:
            return ScopedAccess(principal, scopes, self._parser, self._builder)
        if grant.kind == "patient":
            if not grant.patient:
                raise invalid_token("a patient's token must name the patient")
            return PatientAccess(principal, scopes, self._parser, self._builder, grant.patient)
        if grant.kind == "directory":
            return DirectoryAccess(principal, scopes, self._parser, self._builder)
        if grant.kind in ("staff", "system"):
            if not grant.care_unit_org:
                raise invalid_token("the token names no care unit to act for")
            return CareUnitAccess(principal, scopes, self._parser, self._builder, grant.care_unit_org,
                                  emergency_patient=grant.emergency_patient if emergency else None)
        raise invalid_token(f"unknown kind of user {grant.kind!r}")
