"""The write side of notifications: every stored write, in its own transaction, owes an ``event``
row in ``subscription_outbox`` to each subscription it matches (design §7: a change and its
notifications commit together or not at all).

``Notifications`` is the ``WriteObserver`` the writer calls after every create, update, PATCH,
conditional write and Bundle entry, and after every delete (not after a reindex: nothing changed).

Cost: one indexed query (``ix_subscription_trigger_type``) finds the triggers on the written
type whose subscription is ``requested`` or ``active``; a type nobody watches pays that and
nothing more. Nothing is cached between writes, so every process sees a new subscription at once.
When there are triggers, one more statement evaluates all their queries against the written
resource alone (``resource.pk``), with the search SQL (``QueryBuilder.conditions``) on the index
rows the write has just replaced; a match inserts the rows and, on PostgreSQL, a ``NOTIFY`` that
wakes the workers at commit (``notify/wakeup.py``).

Who may read the resource is not asked here: the worker reads it as the subscriber at delivery
time (``security.stored_access.access_from``), so consent given or revoked in between counts.

A delete notifies the subscriptions whose query matched the version it deletes (its index rows
are kept): the event names the deleted version, which the subscriber's rules still judge (its
owners are answered 410, others 404), so a receiver learns that what it watched is gone.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qsl

import orjson
import sqlalchemy as sa

from patientkontrakt.fhir.access import access_of
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.fhir.search.params import SearchParser
from patientkontrakt.logs import REQUEST_ID
from patientkontrakt.notify.subscriptions import TYPE, SubscriptionRules
from patientkontrakt.notify.wakeup import announce
from patientkontrakt.storage.repository import StoredResource, Unit
from patientkontrakt.storage.search_sql import QueryBuilder
from patientkontrakt.storage.tables import RESOURCE
from patientkontrakt.storage.tables import SUBSCRIPTION as S
from patientkontrakt.storage.tables import SUBSCRIPTION_OUTBOX as O
from patientkontrakt.storage.tables import SUBSCRIPTION_TRIGGER as T

WATCHING = ("requested", "active")
R = RESOURCE.c
_TRIGGERS = (
    sa.select(T.c.subscription_pk, T.c.query)
    .join(S, S.c.resource_pk == T.c.subscription_pk)
    .where(T.c.res_type == sa.bindparam("res_type"), S.c.status.in_(WATCHING))
)
_PARSED_LIMIT = 1024


class Notifications:
    """The ``WriteObserver`` of the service (``domain/setup.py`` plugs it into the writer)."""

    def __init__(self, parser: SearchParser, builder: QueryBuilder, rules: SubscriptionRules) -> None:
        self._parser = parser
        self._builder = builder
        self.rules = rules
        self._parsed: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()  # criteria, per process

    # -- WriteObserver -----------------------------------------------------------------------

    async def before_store(self, unit: Unit, resource: dict[str, Any], existing: StoredResource | None
                           ) -> dict[str, Any]:
        if resource.get("resourceType") != TYPE:
            return resource
        return self.rules.parse(resource, access_of(unit)).resource

    async def stored(self, unit: Unit, stored: StoredResource, existing: StoredResource | None) -> None:
        if stored.type == TYPE:
            # parsed again from what was stored (the same answer: nothing of it depends on the database)
            parsed = self.rules.parse(orjson.loads(stored.body), access_of(unit))
            await self.rules.store_state(unit, stored, parsed, existing is not None and not existing.deleted)
            return
        await self._events(unit, stored, deleted=False)

    async def deleted(self, unit: Unit, gone: StoredResource) -> None:
        if gone.type == TYPE:
            await self.rules.remove_state(unit, gone)
            return
        await self._events(unit, gone, deleted=True)

    # -- matching ----------------------------------------------------------------------------

    async def _events(self, unit: Unit, stored: StoredResource, *, deleted: bool) -> None:
        if unit.dialect == "postgresql":  # on every write: without SQLAlchemy's per-execution work
            triggers: list[Any] = await unit.fetch_compiled(_TRIGGERS, {"res_type": stored.type})
        else:
            triggers = list((await unit.conn.execute(_TRIGGERS, {"res_type": stored.type})).all())
        if not triggers:
            return
        matched = await self.matching(unit, stored, [(int(pk), str(query)) for pk, query in triggers])
        if not matched:
            return
        now = now_utc()
        await unit.conn.execute(O.insert(), [
            {"subscription_pk": pk, "kind": "event", "res_type": stored.type, "res_id": stored.id,
             "version_id": stored.version_id, "created": now, "attempts": 0, "request_id": REQUEST_ID.get()}
            for pk in matched])
        await announce(unit)

    async def matching(self, unit: Unit, stored: StoredResource, triggers: list[tuple[int, str]]) -> list[int]:
        """The subscriptions (of ``triggers``: (subscription, query)) whose query the resource
        row ``stored.pk`` matches, as its index rows are now; in the order given, each once."""
        queries = list(dict.fromkeys(query for _, query in triggers if query))
        hits: dict[str, bool] = {"": True}
        if queries:
            columns = [sa.exists().where(R.pk == stored.pk, *self._criteria(stored.type, query)).label(f"q{index}")
                       for index, query in enumerate(queries)]
            row = (await unit.conn.execute(sa.select(*columns))).one()
            hits.update(zip(queries, (bool(value) for value in row), strict=True))
        return list(dict.fromkeys(pk for pk, query in triggers if hits[query]))

    def _criteria(self, type_: str, query: str) -> list[Any]:
        """The search conditions of ``type_?query`` (without the type and not-deleted conditions:
        the row is named by its key, and a delete is judged on the version it deletes)."""
        key = (type_, query)
        if key not in self._parsed:
            parsed = self._parser.parse(type_, parse_qsl(query, keep_blank_values=True), strict=False)
            self._parsed[key] = self._builder.conditions(parsed)[2:]
            if len(self._parsed) > _PARSED_LIMIT:
                self._parsed.popitem(last=False)
        return self._parsed[key]
