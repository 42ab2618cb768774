"""SMART on FHIR scopes (App Launch 2.0 §scopes-and-launch-context), v2 and v1.

* v2: ``patient|user|system`` ``/`` ``Type|*`` ``.`` permissions from ``cruds`` in that order,
  optionally ``?param=value&…`` narrowing the resources granted (``patient/Observation.rs?category=…``);
* v1: ``…/Type.read`` (= ``rs``), ``.write`` (= ``cud``), ``.*`` (= ``cruds``).

Other scopes (``openid``, ``fhirUser``, ``launch/patient``, ``offline_access``, …) are kept as
they are. A scope string that is neither is ignored when a token is issued (RFC 6749 §3.3: the
server may grant fewer scopes than requested) and never grants anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

_V2 = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(c?r?u?d?s?)(\?[^\s]+)?$")
_V1 = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*)$")
_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
OTHER_SCOPES = frozenset({
    "openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access",
})


@dataclass(frozen=True)
class ResourceScope:
    context: str  # patient | user | system
    type: str  # a resource type or "*"
    permissions: frozenset[str]  # letters of "cruds"
    query: tuple[tuple[str, str], ...] = ()  # v2 ?param=value narrowing

    def covers(self, type_: str, permission: str) -> bool:
        return (self.type == "*" or self.type == type_) and permission in self.permissions


def parse_scope(text: str) -> ResourceScope | None:
    """One resource scope, or None if ``text`` is not one."""
    match = _V2.match(text)
    if match and match.group(3):
        context, type_, letters, query = match.groups()
        return ResourceScope(context, type_, frozenset(letters),
                             tuple(parse_qsl(query[1:], keep_blank_values=True)) if query else ())
    match = _V1.match(text)
    if match:
        context, type_, word = match.groups()
        return ResourceScope(context, type_, frozenset(_V1_PERMISSIONS[word]))
    return None


@dataclass(frozen=True)
class Scopes:
    """A token's granted scopes."""

    resource: tuple[ResourceScope, ...]
    other: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scopes:
        resource: list[ResourceScope] = []
        other: set[str] = set()
        for part in text.split():
            scope = parse_scope(part)
            if scope is not None:
                resource.append(scope)
            elif part in OTHER_SCOPES:
                other.add(part)
        return cls(tuple(resource), frozenset(other))

    def granting(self, contexts: frozenset[str], type_: str, permission: str) -> list[ResourceScope]:
        """The scopes in ``contexts`` that grant ``permission`` on ``type_``."""
        return [s for s in self.resource if s.context in contexts and s.covers(type_, permission)]


def is_known(text: str) -> bool:
    return text in OTHER_SCOPES or parse_scope(text) is not None


def narrow(requested: str, allowed: str) -> str:
    """The scopes of ``requested`` that ``allowed`` (a client's registration) covers.

    A requested resource scope is granted when an allowed scope of the same context covers its
    type and every permission it asks for (and, if the allowed scope is narrowed by a query,
    asks for the same query); other scopes when they are allowed as such.
    """
    allowed_scopes = Scopes.parse(allowed)
    granted: list[str] = []
    for part in requested.split():
        scope = parse_scope(part)
        if scope is None:
            if part in allowed_scopes.other:
                granted.append(part)
            continue
        if any(a.context == scope.context and (a.type == "*" or a.type == scope.type)
               and scope.permissions <= a.permissions and (not a.query or a.query == scope.query)
               for a in allowed_scopes.resource):
            granted.append(part)
    return " ".join(dict.fromkeys(granted))
