"""One notification: what it says, read as the subscriber at delivery time, and sending it.

Two forms (docs/api.md, "Subscriptions"):

* R4 ``Subscription`` with ``criteria`` (R4 subscription.html, channel ``rest-hook``): without a
  payload, a ``POST`` with an empty body to the endpoint; with ``payload`` ``application/fhir+json``,
  the resource is sent as an update, ``PUT [endpoint]/[type]/[id]`` (the endpoint taken as a FHIR
  base, as HAPI FHIR does), a deletion as ``DELETE [endpoint]/[type]/[id]``. The handshake is an
  empty ``POST``.
* The topic-based form of the Subscriptions R5 Backport IG (1.1): a ``Bundle`` of type ``history``
  ``POST``ed to the endpoint, its first entry the ``Parameters`` of the SubscriptionStatus
  (``$status``: status, type, events-since-subscription-start, and per event its notification-event
  with event-number, timestamp and focus), then, for ``full-resource``, the resource itself.

Every notification carries ``X-Request-ID``, the id of its delivery (its attempt: a retry has
a new one), also in the worker's log records and the access-log entry of its read;
``X-Correlation-ID``, the ``X-Request-ID`` of the API request whose write queued it (the same on
every attempt; in the log line of each attempt, and the write's own access-log entry has it); and
``X-Subscription-Event-Number`` (and the backport Bundle its event
number), and the announced resource's version where the resource is named (``meta.versionId``,
``X-Subscription-Resource-Version``), so a receiver can de-duplicate an at-least-once delivery.
The subscriber's own ``channel.header`` lines go with each request; they are credentials and are
never logged.

What the notification says is read through the service's ``vread`` under the subscriber's
``Access`` as it is now (``security.stored_access.access_from``): the same scopes, care-unit rules,
samtycke and spärr as an API request, and logged in the access log like one. If the subscriber may
no longer read the resource, nothing is sent for that event (``Skip``): an empty notification
would still tell them that something they may not see changed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import httpx
import orjson

from patientkontrakt.fhir.access import Access
from patientkontrakt.fhir.dates import format_instant
from patientkontrakt.fhir.errors import Forbidden, Gone, NotFound
from patientkontrakt.fhir.service import FhirService
from patientkontrakt.logs import REQUEST_ID, request_id
from patientkontrakt.notify.endpoints import EndpointRefused, resolve_checked

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
EVENT_HEADER = "X-Subscription-Event-Number"
VERSION_HEADER = "X-Subscription-Resource-Version"
CORRELATION_HEADER = "X-Correlation-ID"  # the X-Request-ID of the write that queued the notification
# Headers the server sets itself; a channel.header line naming one of them is not sent.
_OWN_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection",
                          EVENT_HEADER.lower(), VERSION_HEADER.lower(), "x-request-id",
                          CORRELATION_HEADER.lower()})


@dataclass(frozen=True)
class Subscriber:
    """A Subscription as the worker delivers it (a ``subscription`` row)."""

    pk: int
    id: str
    status: str
    topic: str | None
    endpoint: str
    content: str  # empty | id-only | full-resource
    headers: tuple[str, ...]
    principal: str
    events_since_start: int

    @classmethod
    def of(cls, row: Any) -> Subscriber:
        return cls(pk=row.resource_pk, id=row.res_id, status=row.status, topic=row.topic, endpoint=row.endpoint,
                   content=row.content, headers=tuple(orjson.loads(row.headers or "[]")), principal=row.principal,
                   events_since_start=row.events_since_start)


@dataclass(frozen=True)
class Event:
    """An outbox row: what to announce (``kind`` handshake | event | heartbeat)."""

    id: int
    kind: str
    res_type: str | None
    res_id: str | None
    version_id: int | None
    event_number: int | None
    created: datetime
    request_id: str | None = None  # of the write that queued it: X-Correlation-ID


@dataclass
class Request:
    method: str
    url: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Skip(Exception):
    """Nothing is sent for this event: the subscriber may not read what it announces."""


class DeliveryFailed(Exception):
    """The endpoint did not accept the notification; ``reason`` is safe to store and log (no
    header value, no patient data)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def announced(service: FhirService, access: Access, event: Event) -> dict[str, Any] | None:
    """The announced version of the resource, read as the subscriber now (None: the version is a
    deletion they may see); ``Skip`` if they may not see it."""
    assert event.res_type and event.res_id and event.version_id is not None
    try:
        result = await service.vread(access, event.res_type, event.res_id, str(event.version_id))
    except Gone:
        return None
    except (NotFound, Forbidden) as exc:
        raise Skip(type(exc).__name__) from None
    if result.body is None:
        raise Skip("no body")
    resource: dict[str, Any] = orjson.loads(result.body)
    return resource


def _status_parameters(service: FhirService, sub: Subscriber, kind: str, status: str, event: Event,
                       number: int | None) -> dict[str, Any]:
    """The SubscriptionStatus of the Backport IG as R4 ``Parameters`` (its R4 profile)."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": service.full_url("Subscription", sub.id)}},
        {"name": "topic", "valueCanonical": sub.topic},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        # R4 has no integer64: the IG's R4 form carries the counts as strings
        {"name": "events-since-subscription-start", "valueString": str(number or 0)},
    ]
    if number is not None and event.res_type and event.res_id:
        part: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(number)},
            {"name": "timestamp", "valueInstant": format_instant(event.created)},
        ]
        if sub.content != "empty":
            focus = service.full_url(event.res_type, event.res_id)
            part.append({"name": "focus", "valueReference": {"reference": focus}})
        parameters.append({"name": "notification-event", "part": part})
    return {"resourceType": "Parameters", "id": str(uuid4()), "parameter": parameters}


def backport_bundle(service: FhirService, sub: Subscriber, event: Event, number: int | None,
                    resource: dict[str, Any] | None) -> dict[str, Any]:
    """The notification Bundle; ``resource`` None for a deletion (a ``DELETE`` entry, no resource)."""
    kind = {"handshake": "handshake", "heartbeat": "heartbeat"}.get(event.kind, "event-notification")
    status = "requested" if event.kind == "handshake" else "active"
    status_url = service.full_url("Subscription", sub.id) + "/$status"
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{uuid4()}",
        "resource": _status_parameters(service, sub, kind, status, event, number),
        "request": {"method": "GET", "url": status_url},
        "response": {"status": "200"},
    }]
    if sub.content == "full-resource" and event.kind == "event" and event.res_type and event.res_id:
        entry: dict[str, Any] = {"fullUrl": service.full_url(event.res_type, event.res_id)}
        if resource is not None:
            entry["resource"] = resource
        entry["request"] = {"method": "PUT" if resource is not None else "DELETE",
                            "url": f"{event.res_type}/{event.res_id}"}
        entry["response"] = {"status": "200" if resource is not None else "204",
                             "etag": f'W/"{event.version_id}"'}
        entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid4()), "type": "history",
            "timestamp": format_instant(event.created), "entry": entries}


async def build(service: FhirService, access: Access | None, sub: Subscriber, event: Event,
                number: int | None) -> Request:
    """The request that announces ``event`` (``number``: its event number; None for a handshake
    or heartbeat). Raises ``Skip`` when the subscriber may not read what it announces."""
    resource = None
    if event.kind == "event":
        if access is None:
            raise Skip("no subscriber")
        # always read, also for an empty notification: whether anything changed is itself news
        resource = await announced(service, access, event)
    headers: dict[str, str] = {}
    if event.request_id is not None:
        headers[CORRELATION_HEADER] = event.request_id
    if number is not None:
        headers[EVENT_HEADER] = str(number)
    if event.kind == "event" and sub.content != "empty":
        headers[VERSION_HEADER] = str(event.version_id)
    if sub.topic is not None:
        body = orjson.dumps(backport_bundle(service, sub, event, number, resource))
        headers["Content-Type"] = FHIR_JSON
        return Request("POST", sub.endpoint, body, headers)
    if event.kind == "event" and sub.content == "full-resource":
        url = sub.endpoint.rstrip("/") + f"/{event.res_type}/{event.res_id}"
        if resource is None:  # a deletion, as HAPI FHIR sends it: DELETE on the endpoint as a base
            return Request("DELETE", url, b"", headers)
        headers["Content-Type"] = FHIR_JSON
        return Request("PUT", url, orjson.dumps(resource), headers)
    return Request("POST", sub.endpoint, b"", headers)


def channel_headers(lines: tuple[str, ...]) -> dict[str, str]:
    """``channel.header`` lines (``Name: value``) as headers, without those the server sets."""
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        name = name.strip()
        if sep and name and name.lower() not in _OWN_HEADERS:
            headers[name] = value.strip()
    return headers


class Sender:
    """Sends requests to endpoints: checked addresses only, no redirects, no proxy."""

    def __init__(self, allowed: frozenset[str], timeout: float) -> None:
        self.allowed = allowed
        self.timeout = timeout  # the whole exchange; httpx's timeout is per connect, read and write
        # trust_env=False: no proxy from the environment, which would connect to where it likes
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)

    async def close(self) -> None:
        await self.client.aclose()

    async def send(self, request: Request, channel: tuple[str, ...]) -> int:
        """The endpoint's status code if it accepted the request (2xx); raises ``DeliveryFailed``."""
        parts = urlsplit(request.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = await resolve_checked(host, port, self.allowed)
        except EndpointRefused as refused:
            raise DeliveryFailed(refused.reason) from None
        # X-Request-ID: the delivery's id (notify/worker.py), in the worker's log and access-log entry too
        headers = {**channel_headers(channel), **request.headers, "Host": parts.netloc.rpartition("@")[2],
                   "X-Request-ID": REQUEST_ID.get() or request_id()}
        last = "no address"
        for address in addresses:
            literal = f"[{address}]" if ":" in address else address
            url = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
            extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
            try:
                status = await asyncio.wait_for(self._status_of(request, url, headers, extensions), self.timeout)
            except httpx.ConnectError:
                last = "cannot connect to the endpoint"
                continue
            except (httpx.TimeoutException, TimeoutError):
                raise DeliveryFailed("the endpoint did not answer in time") from None
            except httpx.HTTPError as exc:
                raise DeliveryFailed(f"the request failed ({type(exc).__name__})") from None
            if 200 <= status < 300:
                return status
            raise DeliveryFailed(f"the endpoint answered {status}")
        raise DeliveryFailed(last)

    async def _status_of(self, request: Request, url: str, headers: dict[str, str],
                         extensions: dict[str, Any]) -> int:
        """The answer's status; its body is never read (an endpoint could send without end)."""
        async with self.client.stream(request.method, url, content=request.body, headers=headers,
                                      extensions=extensions) as response:
            return response.status_code
