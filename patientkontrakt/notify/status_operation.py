"""``Subscription/[id]/$status`` (Subscriptions R5 Backport IG 1.1, OperationDefinition
``backport-subscription-status``): the subscription's status as the IG's SubscriptionStatus in
its R4 form, a ``Parameters`` (profile ``backport-subscription-status-r4``, type
``query-status``), in a ``searchset`` Bundle. Answered for both forms of subscription (an R4
``criteria`` one has no topic).

It runs through the interaction pipeline as a read of the Subscription: the scopes must grant
reading Subscriptions, and only a caller who may see the Subscription (its owner unit) gets an
answer; anyone else is answered 404, as for an id nobody uses.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from patientkontrakt.fhir.access import Access
from patientkontrakt.fhir.dates import format_instant, now_utc
from patientkontrakt.fhir.errors import HiddenResource
from patientkontrakt.fhir.interactions import Interaction
from patientkontrakt.fhir.rendering import dumps
from patientkontrakt.fhir.results import Result
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.notify.subscriptions import TYPE
from patientkontrakt.notify.topics import BACKPORT
from patientkontrakt.storage.tables import SUBSCRIPTION as S

STATUS_PROFILE = f"{BACKPORT}/StructureDefinition/backport-subscription-status-r4"
OPERATION = ("status", f"{BACKPORT}/OperationDefinition/backport-subscription-status")


async def subscription_status(service: FhirService, access: Access, id_: str) -> Result:
    service.check_id(TYPE, id_)
    request = f"{TYPE}/{id_}/$status"
    async with service.pipeline.run(access, Interaction("operation", TYPE, request, ((TYPE, "read"),))) as exchange:
        async with service.store.reading(access) as unit:
            stored = await service.writer.visible_existing(unit, TYPE, id_, lock=False)
            if stored is None or stored.deleted:
                raise HiddenResource(f"{TYPE}/{id_} is not known", None, details_sv="Resursen finns inte.")
            state = (await unit.conn.execute(sa.select(S).where(S.c.resource_pk == stored.pk))).first()
        if state is None:
            raise HiddenResource(f"{TYPE}/{id_} is not known", None, details_sv="Resursen finns inte.")
        await exchange.shown([stored], request=request)
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": service.full_url(TYPE, id_)}},
        *([{"name": "topic", "valueCanonical": state.topic}] if state.topic else []),
        {"name": "status", "valueCode": state.status},
        {"name": "type", "valueCode": "query-status"},
        {"name": "events-since-subscription-start", "valueString": str(state.events_since_start)},
        *([{"name": "error", "valueCodeableConcept": {"text": state.error}}] if state.error else []),
    ]
    status = {"resourceType": "Parameters", "meta": {"profile": [STATUS_PROFILE]}, "parameter": parameters}
    bundle = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"lastUpdated": format_instant(now_utc())},
              "type": "searchset", "total": 1,
              "link": [{"relation": "self", "url": f"{service.base}/{request}"}],
              "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": status, "search": {"mode": "match"}}]}
    return Result(200, dumps(bundle))
