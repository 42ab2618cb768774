"""Notification latency: a rest-hook receiver in the bench process, and a write load that
records when each write was answered.

``Receiver`` is a small HTTP/1.1 server on 127.0.0.1 (asyncio streams, keep-alive, a body by
``Content-Length`` or chunked) that answers every request ``200`` and records, for each
resource version a notification carries, the wall-clock time the request had fully arrived.
``notified`` reads the versions out of whatever a rest-hook sends: the resource itself (R4
``payload`` full resource), or a Bundle (a Subscriptions Backport notification, an R4
``history`` Bundle) with the resources or, id-only, their ``fullUrl``/``request.url``
``Type/id/_history/v``. Handshakes and heartbeats carry no resource and are counted apart.

``write_load`` replays update and create lines (``bench.scenarios``) with ``connections``
httpx tasks for ``duration`` seconds, like ``bench.load.run_python``, and records for every
successful write its ``(type, id, version)`` (from ``Location``, else ``ETag`` and the body)
and the wall-clock time its response arrived. That time is an *upper bound* of the commit
(the server commits, then answers), so arrival minus it is a lower bound of the latency and
can even be negative (the worker may deliver before the client has read the answer);
``meta.lastUpdated`` (stamped before the commit, in milliseconds) gives the upper bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from bench.load import _percentile
from patientkontrakt.domain import codes

Key = tuple[str, str, int]  # resource type, id, version

# What the bench subscribes to: every Patientkontrakt CarePlan (the update scenario's new
# versions and the create scenario's drafts alike).
CRITERIA = f"CarePlan?category={codes.CAREPLAN_CATEGORY}|{codes.PATIENTKONTRAKT}"


def subscription(endpoint: str) -> dict[str, Any]:
    """The bench's R4 Subscription: rest-hook to ``endpoint``, the full resource as payload."""
    return {"resourceType": "Subscription", "status": "requested", "reason": "Benchmark: notification latency",
            "criteria": CRITERIA,
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}}

_VERSIONED = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})/_history/([0-9]+)(?:$|[/?#])")
_ETAG = re.compile(r'^(?:W/)?"([0-9]+)"$')


def _key(resource: dict[str, Any]) -> Key | None:
    type_, id_ = resource.get("resourceType"), resource.get("id")
    version = (resource.get("meta") or {}).get("versionId")
    if isinstance(type_, str) and isinstance(id_, str) and isinstance(version, str) and version.isdigit():
        return type_, id_, int(version)
    return None


def _url_key(url: object) -> Key | None:
    if not isinstance(url, str):
        return None
    match = _VERSIONED.search(url)
    return (match.group(1), match.group(2), int(match.group(3))) if match else None


def notified(body: bytes) -> list[Key]:
    """The resource versions a notification's body names (empty for a handshake, a heartbeat
    or a body we cannot read)."""
    if not body.strip():
        return []
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(data, dict):
        return []
    if data.get("resourceType") != "Bundle":
        key = _key(data)
        return [key] if key else []
    out: list[Key] = []
    for entry in data.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if isinstance(resource, dict) and resource.get("resourceType") in ("SubscriptionStatus", "Parameters"):
            continue  # the Backport's status entry (R4: a Parameters), not a change
        key = _key(resource) if isinstance(resource, dict) else None
        key = key or _url_key(entry.get("fullUrl")) or _url_key((entry.get("request") or {}).get("url"))
        if key:
            out.append(key)
    return out


@dataclass
class Receiver:
    """The subscription's endpoint: ``url`` once started (``async with``)."""

    host: str = "127.0.0.1"
    path: str = "/hook"
    arrivals: dict[Key, list[float]] = field(default_factory=dict)
    requests: int = 0
    empty: int = 0  # handshakes, heartbeats: requests naming no resource version
    bytes_received: int = 0
    _server: asyncio.base_events.Server | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def first_arrival(self, key: Key) -> float | None:
        times = self.arrivals.get(key)
        return min(times) if times else None

    def duplicates(self) -> int:
        return sum(len(times) - 1 for times in self.arrivals.values())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line.strip():
                    return
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    body = await _chunked(reader)
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                arrived = time.time()
                self.requests += 1
                self.bytes_received += len(body)
                keys = notified(body)
                if not keys:
                    self.empty += 1
                for key in keys:
                    self.arrivals.setdefault(key, []).append(arrived)
                close = headers.get("connection", "").lower() == "close"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                             + (b"Connection: close\r\n" if close else b"") + b"\r\n")
                await writer.drain()
                if close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return
        finally:
            writer.close()


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def written(response: httpx.Response) -> Key | None:
    """``(type, id, version)`` of a successful create or update, from its answer."""
    key = _url_key(response.headers.get("location") or response.headers.get("content-location"))
    if key:
        return key
    etag = _ETAG.match(response.headers.get("etag", "").strip())
    with contextlib.suppress(orjson.JSONDecodeError):
        body = orjson.loads(response.content) if response.content else None
        if isinstance(body, dict):
            key = _key(body)
            if key:
                return key
            if etag and isinstance(body.get("resourceType"), str) and isinstance(body.get("id"), str):
                return body["resourceType"], body["id"], int(etag.group(1))
    return None


@dataclass
class WriteLoad:
    answered: dict[Key, float]  # wall-clock time each write's response had arrived
    requests: int
    errors: int
    unread: int  # successful writes whose version the answer did not tell
    seconds: float
    latencies_s: list[float]  # request → response, as the other scenarios report

    @property
    def rps(self) -> float:
        return len(self.answered) / self.seconds if self.seconds else 0.0


async def write_load(base_url: str, lines: list[tuple[str, str, str]], token: str | None, connections: int,
                     duration: float) -> WriteLoad:
    """Replay ``lines`` (``METHOD, path, body``; ``__REV__`` made unique) for ``duration`` s."""
    headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    answered: dict[Key, float] = {}
    latencies: list[float] = []
    # Unique per call: an update identical to the current version would write none, and its
    # answer would name a version another load wrote.
    tag = f"{random.randrange(1 << 32):08x}"
    counts = {"requests": 0, "errors": 0, "unread": 0}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0, headers=headers) as client:
        started = time.perf_counter()
        deadline = started + duration

        async def worker(number: int) -> None:
            rng = random.Random(f"{tag}-{number}")
            counter = 0
            while time.perf_counter() < deadline:
                counter += 1
                method, target, body = rng.choice(lines)
                content = body.replace("__REV__", f"{tag}-{number}-{counter}").encode() if body else None
                begin = time.perf_counter()
                counts["requests"] += 1
                try:
                    response = await client.request(method, target, content=content)
                except httpx.HTTPError:
                    counts["errors"] += 1
                    continue
                now = time.time()
                if response.status_code >= 400:
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - begin)
                key = written(response)
                if key is None:
                    counts["unread"] += 1
                else:
                    answered[key] = now

        await asyncio.gather(*(worker(n) for n in range(connections)))
        seconds = time.perf_counter() - started
    return WriteLoad(answered, counts["requests"], counts["errors"], counts["unread"], seconds, latencies)


async def wait_delivered(receiver: Receiver, expected: set[Key], timeout: float) -> float:
    """Wait until every ``expected`` version has arrived or ``timeout`` s passed; the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if all(key in receiver.arrivals for key in expected):
            break
        await asyncio.sleep(0.1)
    return time.perf_counter() - started


def _ms_stats(values_s: list[float]) -> dict[str, float | None]:
    values = sorted(values_s)
    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "min_ms": None}
    return {"p50_ms": round(_percentile(values, 50) * 1000, 2), "p90_ms": round(_percentile(values, 90) * 1000, 2),
            "p99_ms": round(_percentile(values, 99) * 1000, 2), "max_ms": round(values[-1] * 1000, 2),
            "min_ms": round(values[0] * 1000, 2)}


def latency_report(receiver: Receiver, load: WriteLoad, committed: dict[Key, datetime],
                   waited_s: float) -> dict[str, Any]:
    """The figures of one notification run. ``committed``: ``last_updated`` of each written
    version as stored (naive UTC, milliseconds), stamped before the commit."""
    expected = set(load.answered)
    delivered = [key for key in expected if key in receiver.arrivals]
    from_response = [receiver.first_arrival(k) - load.answered[k] for k in delivered]  # type: ignore[operator]
    from_stamp = [receiver.first_arrival(k) - committed[k].replace(tzinfo=UTC).timestamp()  # type: ignore[operator]
                  for k in delivered if k in committed]
    unexpected = [key for key in receiver.arrivals if key not in expected]
    return {
        "writes": len(expected),
        "write_rps": round(load.rps, 1),
        "write_errors": load.errors,
        "write_unread_versions": load.unread,
        "write_p50_ms": _ms_stats(load.latencies_s)["p50_ms"],
        "write_p99_ms": _ms_stats(load.latencies_s)["p99_ms"],
        "expected": len(expected),
        "delivered": len(delivered),
        "missing": len(expected) - len(delivered),
        "missing_sample": ["{}/{}/_history/{}".format(*key) for key in sorted(expected - set(delivered))[:10]],
        "duplicates": receiver.duplicates(),
        "other_versions_notified": len(unexpected),
        "receiver_requests": receiver.requests,
        "receiver_empty_requests": receiver.empty,
        "drain_seconds": round(waited_s, 2),
        # response received → arrival: a lower bound of commit → arrival
        "from_response": _ms_stats(from_response),
        # meta.lastUpdated (stamped before the commit) → arrival: an upper bound
        "from_last_updated": _ms_stats(from_stamp),
        "p50_ms": _ms_stats(from_response)["p50_ms"],
        "p99_ms": _ms_stats(from_response)["p99_ms"],
    }
