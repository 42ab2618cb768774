"""A Subscription resource as this server serves it: what a client may ask for, and the delivery
state and triggers derived from it, written in the same transaction as the resource.

Two forms (docs/api.md, "Subscriptions"):

* R4 (subscription.html): ``criteria`` is ``Type?query`` (or ``Type``), parsed by the search
  machinery strictly (an unknown type or parameter is 400, a result parameter such as ``_count``
  422); ``channel.payload`` ``application/fhir+json`` sends the resource (content
  ``full-resource``), no payload an empty notification (``empty``).
* The Subscriptions R5 Backport IG 1.1, R4 form: ``criteria`` is a topic's canonical URL
  (``topics.TOPICS``), its filters ``criteria.extension`` ``backport-filter-criteria``
  (``Type?param=value``, only the topic's filter parameters), the content
  ``channel.payload.extension`` ``backport-payload-content`` (``empty``, ``id-only`` or
  ``full-resource``; ``id-only`` when a payload type is given without it). The profile
  ``backport-subscription`` is added to ``meta.profile``.

Both: ``channel.type`` ``rest-hook`` only (else 422 ``not-supported``); ``channel.endpoint`` as
``endpoints.check_url`` allows; ``channel.header`` lines ``Name: value``, kept for delivery
(never logged); the client may read (search and read) every type the subscription watches, or
it is 403. The status a client sends is a request: ``off`` is kept, anything else is stored as
``requested`` and owes a handshake; ``active`` and ``error`` are the worker's to set
(``set_status``), with ``error`` saying why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import sqlalchemy as sa

from patientkontrakt.fhir.access import Access, Internal, access_of
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.fhir.errors import BadRequest, Forbidden, Unprocessable
from patientkontrakt.fhir.search.params import RESULT_PARAMS, SearchParser
from patientkontrakt.logs import REQUEST_ID
from patientkontrakt.notify.endpoints import check_url
from patientkontrakt.notify.topics import (
    BACKPORT_PROFILE,
    CONTENTS,
    FILTER_CRITERIA,
    PAYLOAD_CONTENT,
    TOPICS,
    Topic,
)
from patientkontrakt.notify.wakeup import announce
from patientkontrakt.security.stored_access import principal_of
from patientkontrakt.storage.repository import StoredResource, Unit
from patientkontrakt.storage.search_sql import QueryBuilder
from patientkontrakt.storage.tables import SUBSCRIPTION as S
from patientkontrakt.storage.tables import SUBSCRIPTION_OUTBOX as O
from patientkontrakt.storage.tables import SUBSCRIPTION_TRIGGER as T

TYPE = "Subscription"
FHIR_JSON = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_HEADER = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*$")
_MAX_HEADERS = 20
_MAX_HEADER_LENGTH = 4096


class NotSupported(Unprocessable):
    code = "not-supported"
    default_sv = "Det stöds inte här."


@dataclass(frozen=True)
class Parsed:
    """A Subscription's delivery state and triggers (``subscription``, ``subscription_trigger``)."""

    resource: dict[str, Any]  # as stored: status and meta.profile set by the server
    status: str  # requested | off (a client's); active | error (the worker's)
    topic: str | None
    endpoint: str
    content: str  # empty | id-only | full-resource
    headers: tuple[str, ...]
    triggers: tuple[tuple[str, str], ...]  # (resource type, query without the type)


def _invalid(message: str, where: str, sv: str) -> Unprocessable:
    return Unprocessable(message, expression=(where,), details_sv=sv)


class SubscriptionRules:
    """Parses and checks Subscriptions (``parse``) and keeps their state (``store_state``)."""

    def __init__(self, parser: SearchParser, builder: QueryBuilder, served_types: frozenset[str],
                 allowed_hosts: frozenset[str]) -> None:
        self._parser = parser
        self._builder = builder
        self._types = served_types - {TYPE}
        self._allowed = allowed_hosts

    # -- the resource ----------------------------------------------------------------------

    def parse(self, resource: dict[str, Any], access: Access) -> Parsed:
        found = resource.get("channel")
        channel: dict[str, Any] = found if isinstance(found, dict) else {}
        if channel.get("type") != "rest-hook":
            raise NotSupported(f"channel.type {channel.get('type')!r} is not supported: this server delivers "
                               "only rest-hook", expression=("Subscription.channel.type",),
                               details_sv="Bara kanaltypen rest-hook stöds.")
        endpoint = channel.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise _invalid("A rest-hook Subscription needs channel.endpoint", "Subscription.channel.endpoint",
                           "Ange adressen som aviseringarna ska skickas till.")
        refusal = check_url(endpoint, self._allowed)
        if refusal is not None:
            raise _invalid(f"channel.endpoint is refused: {refusal}", "Subscription.channel.endpoint",
                           "Adressen kan inte användas: den ska vara https till en publik adress.")
        headers = self._headers(channel.get("header") or [])
        criteria = str(resource.get("criteria") or "")
        if criteria.startswith(("http://", "https://")):
            topic = TOPICS.get(criteria)
            if topic is None:
                raise NotSupported(f"Unknown subscription topic {criteria!r}; this server offers "
                                   f"{', '.join(sorted(TOPICS))}", expression=("Subscription.criteria",),
                                   details_sv="Ämnet finns inte här.")
            triggers = self._topic_triggers(topic, resource)
            content = self._backport_content(channel)
            resource = _with_profile(resource, BACKPORT_PROFILE)
        else:
            topic = None
            triggers = (self._criteria(criteria),)
            content = self._r4_content(channel)
        for type_ in dict.fromkeys(t for t, _ in triggers):
            access.require(type_, "search-type")
            access.require(type_, "read")
        if isinstance(access, Internal):
            status = str(resource.get("status"))
        else:
            status = "off" if resource.get("status") == "off" else "requested"
        stored = {k: v for k, v in resource.items() if k != "error" or isinstance(access, Internal)}
        stored["status"] = status
        return Parsed(stored, status, topic.url if topic else None, endpoint, content, headers, triggers)

    @staticmethod
    def _headers(lines: Any) -> tuple[str, ...]:
        if not isinstance(lines, list) or len(lines) > _MAX_HEADERS:
            raise _invalid(f"channel.header: at most {_MAX_HEADERS} lines", "Subscription.channel.header",
                           "För många rubriker.")
        for index, line in enumerate(lines):
            if not isinstance(line, str) or len(line) > _MAX_HEADER_LENGTH or not _HEADER.match(line):
                # the value is not repeated: it may be a secret
                raise _invalid(f"channel.header[{index}] must be one HTTP header line, 'Name: value'",
                               f"Subscription.channel.header[{index}]",
                               "Rubriken ska ha formen 'Namn: värde'.")
        return tuple(lines)

    def _criteria(self, criteria: str) -> tuple[str, str]:
        type_, _, query = criteria.partition("?")
        if type_ not in self._types:
            raise BadRequest(f"criteria {criteria!r}: {type_!r} is not a resource type one can subscribe to here "
                             f"({', '.join(sorted(self._types))})", expression=("Subscription.criteria",),
                             details_sv="Resurstypen i villkoret kan inte bevakas här.")
        pairs = parse_qsl(query, keep_blank_values=True)
        self._check_query(type_, pairs, "Subscription.criteria")
        return type_, urlencode(pairs)

    def _check_query(self, type_: str, pairs: list[tuple[str, str]], where: str) -> None:
        for name, _ in pairs:
            base = name.partition(":")[0]
            if base in RESULT_PARAMS or base.startswith(("_include", "_revinclude")):
                raise _invalid(f"{name} is a result parameter; a subscription's criteria only select resources",
                               where, "Villkoret får bara innehålla sökkriterier.")
        # unknown parameters (parse) and values that are not of the parameter's type (conditions): 400
        self._builder.conditions(self._parser.parse(type_, pairs, strict=True))

    def _topic_triggers(self, topic: Topic, resource: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        extensions = _extensions(resource.get("_criteria"))
        filters: list[tuple[str, str]] = []
        for index, ext in enumerate(extensions):
            where = f"Subscription.criteria.extension[{index}]"
            if not isinstance(ext, dict) or ext.get("url") != FILTER_CRITERIA:
                continue
            text = ext.get("valueString")
            type_, _, query = str(text or "").partition("?")
            if type_ not in topic.types or not query:
                raise _invalid(f"A filter of {topic.url} is Type?param=value with Type one of "
                               f"{', '.join(topic.types)}, not {text!r}", where,
                               "Filtret ska ha formen Typ?parameter=värde.")
            pairs = parse_qsl(query, keep_blank_values=True)
            unknown = sorted({name for name, _ in pairs} - set(topic.filters))
            if unknown:
                raise NotSupported(f"{topic.url} can be filtered by {', '.join(topic.filters)}, not "
                                   f"{', '.join(unknown)}", expression=(where,),
                                   details_sv="Ämnet kan inte filtreras så.")
            filters.extend(pairs)
        triggers = []
        for type_, query in topic.resources:
            pairs = [*parse_qsl(query), *filters]
            self._check_query(type_, pairs, "Subscription.criteria.extension")
            triggers.append((type_, urlencode(pairs)))
        return tuple(triggers)

    @staticmethod
    def _r4_content(channel: dict[str, Any]) -> str:
        payload = channel.get("payload")
        if payload is None:
            return "empty"
        if str(payload).split(";")[0].strip() not in FHIR_JSON:
            raise NotSupported(f"channel.payload {payload!r} is not supported: application/fhir+json, or none "
                               "for an empty notification", expression=("Subscription.channel.payload",),
                               details_sv="Bara application/fhir+json stöds.")
        return "full-resource"

    @staticmethod
    def _backport_content(channel: dict[str, Any]) -> str:
        payload = channel.get("payload")
        if payload is not None and str(payload).split(";")[0].strip() not in FHIR_JSON:
            raise NotSupported(f"channel.payload {payload!r} is not supported: application/fhir+json",
                               expression=("Subscription.channel.payload",),
                               details_sv="Bara application/fhir+json stöds.")
        contents = [ext.get("valueCode") for ext in _extensions(channel.get("_payload"))
                    if isinstance(ext, dict) and ext.get("url") == PAYLOAD_CONTENT]
        if not contents:
            return "empty" if payload is None else "id-only"
        if len(contents) > 1 or contents[0] not in CONTENTS:
            raise _invalid(f"backport-payload-content must be one of {', '.join(CONTENTS)}",
                           "Subscription.channel.payload.extension", "Ogiltigt innehåll för aviseringen.")
        return str(contents[0])

    # -- its state -------------------------------------------------------------------------

    async def store_state(self, unit: Unit, stored: StoredResource, parsed: Parsed, existing: bool) -> None:
        """The state row and triggers of ``stored`` (in its transaction); a handshake is owed when
        a client asked for the subscription (``requested``). The worker's own status changes
        (``set_status``) touch only the status."""
        access = access_of(unit)
        body = orjson.loads(stored.body)
        known = (await unit.conn.execute(sa.select(S.c.resource_pk).where(S.c.resource_pk == stored.pk))).first()
        if isinstance(access, Internal) and known is not None and existing:
            await unit.conn.execute(S.update().where(S.c.resource_pk == stored.pk)
                                    .values(status=parsed.status, error=body.get("error")))
            return
        values: dict[str, Any] = {
            "res_id": stored.id, "status": parsed.status, "topic": parsed.topic, "channel": "rest-hook",
            "endpoint": parsed.endpoint, "content": parsed.content, "headers": orjson.dumps(list(parsed.headers))
            .decode(), "principal": principal_of(access), "failures": 0, "error": None, "next_attempt": None,
        }
        if known is None:
            await unit.conn.execute(S.insert().values(resource_pk=stored.pk, events_since_start=0, **values))
        else:
            await unit.conn.execute(S.update().where(S.c.resource_pk == stored.pk).values(**values))
            await unit.conn.execute(T.delete().where(T.c.subscription_pk == stored.pk))
        await unit.conn.execute(T.insert(), [{"subscription_pk": stored.pk, "res_type": type_, "query": query}
                                             for type_, query in parsed.triggers])
        if parsed.status == "requested":
            await unit.conn.execute(O.insert().values(subscription_pk=stored.pk, kind="handshake",
                                                      created=now_utc(), attempts=0, request_id=REQUEST_ID.get()))
            await announce(unit)

    @staticmethod
    async def remove_state(unit: Unit, gone: StoredResource) -> None:
        """A deleted Subscription: its state, triggers and undelivered notifications go (the
        resource row stays, soft-deleted, so the foreign keys' cascade does not fire)."""
        await unit.conn.execute(O.delete().where(O.c.subscription_pk == gone.pk))
        await unit.conn.execute(T.delete().where(T.c.subscription_pk == gone.pk))
        await unit.conn.execute(S.delete().where(S.c.resource_pk == gone.pk))


def _extensions(element: Any) -> list[Any]:
    """The extensions of a primitive's ``_element`` (R4 json.html#primitive), whatever was sent."""
    found = element.get("extension") if isinstance(element, dict) else None
    return found if isinstance(found, list) else []


def _with_profile(resource: dict[str, Any], profile: str) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    profiles = list(meta.get("profile") or [])
    if profile not in profiles:
        meta["profile"] = [*profiles, profile]
    return {**resource, "meta": meta}


async def set_status(service: Any, unit: Unit, pk: int, status: str, error: str | None) -> None:
    """The system sets a Subscription's status (``active`` after the handshake, ``error`` with
    the reason): a new version of the resource, written as the service itself in ``unit`` (which
    must run as ``INTERNAL``), and the state row with it. ``service``: the ``FhirService``."""
    if not isinstance(access_of(unit), Internal):
        raise Forbidden("Only the service sets a Subscription's status", details_sv="Du saknar behörighet för detta.")
    rows = await unit.get_by_pks([pk])
    if not rows or rows[0].deleted:
        await unit.conn.execute(S.update().where(S.c.resource_pk == pk).values(status=status, error=error))
        return
    body = {k: v for k, v in orjson.loads(rows[0].body).items() if k != "error"}
    body["status"] = status
    if error:
        body["error"] = error
    await service.writer.update(unit, body)
