"""A subscriber's access, recorded with its Subscription and rebuilt by the worker, sees and is
refused exactly what the request's access was (same rules, same scopes, same care unit,
samtycke and spärr through the same access SQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest

from patientkontrakt.config import Settings
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.access import PERMISSIONS, Access
from patientkontrakt.fhir.errors import FhirError
from patientkontrakt.security.authenticate import Authenticator
from patientkontrakt.security.keys import SigningKeys
from patientkontrakt.security.rules import CareUnitAccess
from patientkontrakt.security.stored_access import UnknownPrincipal, access_from, exportable, principal_of
from patientkontrakt.security.tokens import AccessTokens
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.security.conftest import AUTHOR, OTHER_UNIT, TARGET, World

TYPES = ("Patient", "CarePlan", "CareTeam", "Goal", "Appointment", "Provenance", "Consent",
         "Organization", "Practitioner", "PractitionerRole")
KOMMUN_UNIT = "demo-org-hemtjanst-exempelstad"  # in the target's team; another provider, no samtycke


def _callers(world: World) -> dict[str, Callable[[], dict[str, str]]]:
    target = world.agreements[TARGET]
    return {
        "staff-author": lambda: world.staff(world.role_at(AUTHOR)),
        "staff-other-unit": lambda: world.staff(world.role_at(OTHER_UNIT)),
        "staff-kommun": lambda: world.staff(world.role_at(KOMMUN_UNIT)),
        "staff-narrowed": lambda: world.staff(world.role_at(AUTHOR),
                                              "openid user/CarePlan.rs?status=active user/Goal.read"),
        "system-author": lambda: world.system(AUTHOR),
        "patient": lambda: world.patient(target.patient),
        "directory": lambda: world.directory(),
    }


def _refusals(access: Access) -> set[tuple[str, str]]:
    refused = set()
    for type_ in TYPES:
        for interaction in PERMISSIONS:
            try:
                access.require(type_, interaction)
            except FhirError:
                refused.add((type_, interaction))
    return refused


async def _seen(store: Store, service: object, access: Access) -> dict[str, list[str]]:
    seen = {}
    async with store.reading(access) as unit:
        for type_ in TYPES:
            query = service.parser.parse(type_, [("_count", "1000")], strict=True)  # type: ignore[attr-defined]
            page = await service.search_engine.find(unit, query)  # type: ignore[attr-defined]
            seen[type_] = sorted(r.id for r in page.matches)
    return seen


def test_a_rebuilt_access_sees_and_refuses_what_the_original_does(world: World, settings: Settings) -> None:
    headers = {name: make()["authorization"] for name, make in _callers(world).items()}
    seen_by = asyncio.run(_compare(settings, headers))
    # The comparison means something: the callers see different things.
    target = world.agreements[TARGET]
    assert target.plan in seen_by["staff-author"]["CarePlan"]
    assert target.plan not in seen_by["staff-other-unit"]["CarePlan"]
    assert target.plan not in seen_by["staff-kommun"]["CarePlan"]  # no samtycke for the region's records
    assert target.patient in seen_by["staff-kommun"]["Patient"]
    assert seen_by["patient"]["Patient"] == [target.patient]
    assert seen_by["directory"]["CarePlan"] == []
    assert set(seen_by["staff-narrowed"]["CarePlan"]) < set(seen_by["staff-author"]["CarePlan"])


async def _compare(settings: Settings, headers: dict[str, str]) -> dict[str, dict[str, list[str]]]:
    store = Store(create_engine(settings.database_url, pool_size=2))
    try:
        service = build_service(settings, store)
        tokens = AccessTokens(SigningKeys.load(settings.signing_key), settings.base_url, settings.fhir_base)
        authenticator = Authenticator(tokens, service.parser, service.search_engine.builder)
        seen_by: dict[str, dict[str, list[str]]] = {}
        for name, authorization in headers.items():
            original = authenticator.access(authorization)
            recorded = principal_of(original)
            assert "Bearer" not in recorded and "eyJ" not in recorded  # never the token
            rebuilt = access_from(recorded, service.parser, service.search_engine.builder)
            assert type(rebuilt) is type(original), name
            assert rebuilt.principal == original.principal, name
            assert rebuilt.parameters == original.parameters, name
            assert _refusals(rebuilt) == _refusals(original), name
            seen = await _seen(store, service, original)
            assert await _seen(store, service, rebuilt) == seen, name
            seen_by[name] = seen
    finally:
        await store.dispose()
    return seen_by


def test_emergency_access_is_not_kept_and_garbage_is_refused(settings: Settings) -> None:
    from patientkontrakt.fhir.access import Principal
    from patientkontrakt.security.scopes import Scopes

    store = Store(create_engine(settings.database_url, pool_size=1))
    service = build_service(settings, store)
    who = Principal(kind="staff", id="SE2321000016-X", purpose="ETREAT", reason="akut", care_provider="SE1")
    original = CareUnitAccess(who, Scopes.parse("user/*.rs"), service.parser, service.search_engine.builder,
                              AUTHOR, emergency_patient="p1")
    record = orjson.loads(principal_of(original))
    assert record["principal"]["purpose"] == "TREAT" and record["principal"]["reason"] is None
    rebuilt = access_from(principal_of(original), service.parser, service.search_engine.builder)
    assert isinstance(rebuilt, CareUnitAccess) and rebuilt.emergency_patient is None
    for bad in ("", "{}", '{"v": 1, "rules": "root"}', '{"v": 99}', "[1]"):
        with pytest.raises(UnknownPrincipal):
            access_from(bad, service.parser, service.search_engine.builder)


def test_only_a_care_units_system_or_the_bare_engines_client_may_keep_an_export(world: World,
                                                                              settings: Settings) -> None:
    """An export job keeps its caller as a Subscription does (``exportable``); a patient's or the
    directory client's access is not kept (their kick-off is 403)."""
    service = build_service(settings, Store(create_engine(settings.database_url, pool_size=1)))
    tokens = AccessTokens(SigningKeys.load(settings.signing_key), settings.base_url, settings.fhir_base)
    authenticator = Authenticator(tokens, service.parser, service.search_engine.builder)
    kept = exportable(authenticator.access(world.system(AUTHOR)["authorization"]))
    assert kept is not None
    rebuilt = access_from(kept, service.parser, service.search_engine.builder)
    assert isinstance(rebuilt, CareUnitAccess) and rebuilt.care_unit_org == AUTHOR
    for other in (world.patient(world.agreements[TARGET].patient), world.directory()):
        assert exportable(authenticator.access(other["authorization"])) is None
