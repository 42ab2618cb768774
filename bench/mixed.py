"""The mixed workload (issue 16, *Load*): reads, searches, updates and transactions at once, as a
region's clients send them, with per-kind latencies.

Each of ``connections`` client tasks draws every request's kind by weight (``MIX``): 50 % read
``CarePlan/{id}``, 20 % ``CarePlan?patient=…&_include=CarePlan:care-team`` (the ``read`` and
``search`` scenarios' requests), 20 % an update (a changed CarePlan, ``PUT`` with ``If-Match``
naming the version it replaces) and 10 % a 10-entry transaction (a whole new agreement, as the
``transaction`` scenario). Connection *k*'s first request is of the *k*-th kind, so that even a
short run with four connections or more sends every kind.

Every connection updates only agreements of its own (``Plan.updates`` dealt out in turn) and
follows each one's version from the answer's ``ETag``, so an ``If-Match`` never names a stale
version and a ``412`` is an error like any other; every transaction creates an agreement number
no other request uses (``Plan.new``). Every answer must have the expected status; a search must
hold a match and its included CareTeam, a transaction all ten entries created. Anything else, a
transport error included, is an error (a few kept as samples, long digit runs masked).

The client is Python (httpx, one asyncio task per connection): wrk's Lua cannot tell one
request's latency from another's kind. It stays far below one core at the rates a mixed load
reaches (the writes cost the server milliseconds each); its CPU is reported.

``run_mixed`` can report a window every ``interval`` seconds (the soak: ``bench --soak``) to a
callback that adds what it measures (server RSS, database connections, outbox depth).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import resource
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from bench import synthetic
from bench.load import _percentile
from bench.scenarios import WRITE_SAMPLE, read_lines, search_lines

# Per 100 requests: 70 reads and searches, 20 updates, 10 transactions (issue 16).
MIX = {"read": 50, "search": 20, "update": 20, "transaction": 10}
KINDS = tuple(MIX)
# New agreements of the transactions start this far after the loaded ones: past the transaction
# scenario's (``scenarios.TRANSACTIONS``), which may have run on the same run database.
NEW_AGREEMENTS_OFFSET = 100_000
REFRESH_TOKEN_S = 300.0  # the bench's tokens live 900 s; a soak runs longer

_DIGITS = re.compile(r"\d{6,}")


@dataclass
class Plan:
    """What a mixed run requests at ``agreements`` loaded agreements. ``new`` deals out the
    transactions' new agreement numbers, across the runs of one plan (warm-up, measured)."""

    agreements: int
    reads: list[str]  # request targets
    searches: list[str]
    updates: list[int]  # agreement numbers whose CarePlan the updates change
    new: Iterator[int]

    @property
    def update_ids(self) -> list[str]:
        return [synthetic.careplan_id(i) for i in self.updates]


def plan(agreements: int) -> Plan:
    rng = random.Random(16)
    return Plan(
        agreements=agreements,
        reads=[target for _, target, _ in read_lines(agreements)],
        searches=[target for _, target, _ in search_lines(agreements)],
        updates=rng.sample(range(agreements), min(agreements, WRITE_SAMPLE)),
        new=itertools.count(agreements + NEW_AGREEMENTS_OFFSET),
    )


async def current_versions(dsn: str, ids: list[str]) -> dict[str, int]:
    """The stored version of each CarePlan ``ids`` names (what the first ``If-Match`` says)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT res_id, version_id FROM resource WHERE res_type = 'CarePlan' "
                                "AND res_id = ANY($1::text[])", ids)
    finally:
        await conn.close()
    return {r["res_id"]: int(r["version_id"]) for r in rows}


@dataclass
class Tally:
    """Latencies (seconds) and errors per kind."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: dict[str, int] = field(default_factory=dict)  # "kind:reason" -> count

    def error_count(self) -> int:
        return sum(self.errors.values())

    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values()) + self.error_count()


def _stats(values_s: list[float], errors: int, seconds: float) -> dict[str, Any]:
    values = sorted(values_s)
    return {
        "requests": len(values) + errors,
        "errors": errors,
        "rps": round(len(values) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(_percentile(values, 50) * 1000, 2),
        "p90_ms": round(_percentile(values, 90) * 1000, 2),
        "p99_ms": round(_percentile(values, 99) * 1000, 2),
        "max_ms": round(values[-1] * 1000, 2) if values else 0.0,
    }


def summary(tally: Tally, seconds: float) -> dict[str, Any]:
    """Overall and per-kind figures of ``tally`` over ``seconds``."""
    every = [v for values in tally.latencies.values() for v in values]
    out = _stats(every, tally.error_count(), seconds)
    out["seconds"] = round(seconds, 3)
    out["error_detail"] = dict(sorted(tally.errors.items()))
    out["kinds"] = {kind: _stats(tally.latencies[kind],
                                 sum(n for key, n in tally.errors.items() if key.split(":", 1)[0] == kind), seconds)
                    for kind in KINDS}
    done = sum(len(v) for v in tally.latencies.values())
    out["mix_pct"] = {kind: round(100 * len(tally.latencies[kind]) / done, 1) if done else 0.0 for kind in KINDS}
    return out


@dataclass
class MixedResult:
    summary: dict[str, Any]
    client_cpu_s: float
    error_samples: list[str]
    windows: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        seconds = self.summary["seconds"] or 1.0
        return {**self.summary, "client_cpu_s": round(self.client_cpu_s, 2),
                "client_cpu_pct": round(100 * self.client_cpu_s / seconds, 1),
                "error_samples": self.error_samples}


def _search_problem(body: bytes) -> str | None:
    bundle = orjson.loads(body)
    modes = {e.get("search", {}).get("mode") for e in bundle.get("entry", [])}
    if not bundle.get("total") or modes != {"include", "match"}:
        return "search-content"
    return None


def _transaction_problem(body: bytes) -> str | None:
    statuses = [e["response"]["status"] for e in orjson.loads(body).get("entry", [])]
    if len(statuses) != synthetic.TRANSACTION_ENTRIES or any(not s.startswith("201") for s in statuses):
        return "transaction-content"
    return None


def _sample(kind: str, response: httpx.Response | None, reason: str) -> str:
    """An error for the report, without patient data: the status and the OperationOutcome's
    codes and diagnostics, long digit runs (a personnummer, an HSA number) masked."""
    text = f"{kind}: {reason}"
    if response is not None:
        try:
            issues = orjson.loads(response.content).get("issue", [])
            text += " " + "; ".join(f"{i.get('code')}: {str(i.get('diagnostics', ''))[:200]}" for i in issues)
        except (orjson.JSONDecodeError, AttributeError):
            pass
    return _DIGITS.sub("#", text)[:400]


Window = Callable[[dict[str, Any]], Awaitable[None]]


async def run_mixed(base_url: str, the_plan: Plan, versions: dict[str, int], *, connections: int,
                    duration: float, token: Callable[[], str | None], interval: float | None = None,
                    on_window: Window | None = None, seed: int = 0) -> MixedResult:
    """Send the mixed load for ``duration`` s. ``versions``: the current version of every
    CarePlan ``the_plan.updates`` names, kept up to date here (a following run goes on from
    them). With ``interval`` and ``on_window``, every ``interval`` s the figures of the window
    just ended (``summary`` of it, plus ``elapsed_s`` and ``errors_total``) are passed to
    ``on_window``."""
    if len(the_plan.updates) < connections:
        raise ValueError(f"the mixed load needs at least one agreement per connection ({connections})")
    headers = {"Accept": "application/fhir+json"}
    body_headers = {"Content-Type": "application/fhir+json"}
    tally, window = Tally(), Tally()
    samples: list[str] = []
    windows: list[dict[str, Any]] = []
    kinds = list(MIX)
    weights = list(itertools.accumulate(MIX.values()))
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    def fail(kind: str, reason: str, response: httpx.Response | None = None) -> None:
        key = f"{kind}:{reason}"
        tally.errors[key] = tally.errors.get(key, 0) + 1
        window.errors[key] = window.errors.get(key, 0) + 1
        if len(samples) < 10:
            samples.append(_sample(kind, response, reason))

    def authorize(client: httpx.AsyncClient) -> None:
        value = token()
        if value:
            client.headers["Authorization"] = f"Bearer {value}"

    before = resource.getrusage(resource.RUSAGE_SELF)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0, headers=headers) as client:
        authorize(client)
        started = time.perf_counter()
        deadline = started + duration

        async def one(kind: str, rng: random.Random, own: list[int], tag: str) -> None:
            content: bytes | None = None
            extra: dict[str, str] = {}
            if kind == "read":
                method, target = "GET", rng.choice(the_plan.reads)
            elif kind == "search":
                method, target = "GET", rng.choice(the_plan.searches)
            elif kind == "update":
                i = rng.choice(own)
                plan_body = {**synthetic.care_plan(i), "description": f"Ändrad överenskommelse {tag}"}
                method, target = "PUT", f"/fhir/CarePlan/{plan_body['id']}"
                content = orjson.dumps(plan_body)
                extra = {**body_headers, "If-Match": f'W/"{versions[plan_body["id"]]}"'}
            else:
                k = next(the_plan.new)
                method, target = "POST", "/fhir"
                content = orjson.dumps(synthetic.transaction_bundle(k, k % the_plan.agreements))
                extra = body_headers
            begin = time.perf_counter()
            try:
                response = await client.request(method, target, content=content, headers=extra)
            except httpx.HTTPError as error:
                fail(kind, type(error).__name__)
                return
            elapsed = time.perf_counter() - begin
            if response.status_code != 200:
                fail(kind, str(response.status_code), response)
                return
            problem = None
            if kind == "search":
                problem = _search_problem(response.content)
            elif kind == "transaction":
                problem = _transaction_problem(response.content)
            elif kind == "update":
                etag = re.match(r'^(?:W/)?"([0-9]+)"$', response.headers.get("etag", ""))
                if etag is None:
                    problem = "no-etag"
                else:
                    versions[target.rsplit("/", 1)[1]] = int(etag.group(1))
            if problem:
                fail(kind, problem, response)
                return
            tally.latencies[kind].append(elapsed)
            window.latencies[kind].append(elapsed)

        async def connection(number: int) -> None:
            rng = random.Random(f"{seed}-{number}")
            own = the_plan.updates[number::connections]
            sent = 0
            while time.perf_counter() < deadline:
                sent += 1
                roll = rng.random() * weights[-1]
                kind = kinds[next(k for k, w in enumerate(weights) if roll < w)]
                if sent == 1:  # every kind from the start, however short the run (one request each)
                    kind = kinds[number % len(kinds)]
                await one(kind, rng, own, f"{seed}-{number}-{sent}")

        async def reporter() -> None:
            nonlocal window
            assert interval is not None and on_window is not None
            last, refreshed = started, started
            while True:
                await asyncio.sleep(max(0.0, min(interval, deadline - time.perf_counter())))
                now = time.perf_counter()
                ended, window = window, Tally()
                row = summary(ended, now - last)
                row["elapsed_s"] = round(now - started, 1)
                row["errors_total"] = tally.error_count()
                windows.append(row)
                await on_window(row)
                last = now
                if now - refreshed > REFRESH_TOKEN_S:
                    authorize(client)
                    refreshed = now
                if now >= deadline:
                    return

        async def refresher() -> None:
            while time.perf_counter() + REFRESH_TOKEN_S < deadline:
                await asyncio.sleep(REFRESH_TOKEN_S)
                authorize(client)

        side = reporter() if interval and on_window else refresher()
        side_task = asyncio.create_task(side)
        await asyncio.gather(*(connection(n) for n in range(connections)))
        seconds = time.perf_counter() - started
        if interval and on_window:
            await side_task  # the last window, to the end of the load
        else:
            side_task.cancel()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return MixedResult(summary(tally, seconds), cpu, samples, windows)


# -- what a soak watches -------------------------------------------------------------------------

_PAGE = 4096


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (the uvicorn workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
        todo.extend(children.get(current, []))
    return total


async def database_gauges(conn: asyncpg.Connection, database: str) -> dict[str, int]:
    """Connections to ``database`` (this one not counted) and the outbox's undelivered rows."""
    connections = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                                      "AND pid <> pg_backend_pid()", database)
    depth = await conn.fetchval("SELECT count(*) FROM subscription_outbox WHERE delivered IS NULL")
    return {"db_connections": int(connections), "outbox_depth": int(depth)}


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if not var:
        return None
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in points) / var
