"""Bulk export throughput, and the database's own COPY rate over the same rows.

``run_export`` is a Bulk Data client (Bulk Data Access IG 2.0): kick-off ``GET [base]/$export``
with ``Prefer: respond-async`` and the bench's backend token, then status polling of the
``Content-Location`` (``Retry-After`` honoured, capped at ``poll`` seconds so that the figure
is not mostly waiting), then every ``output`` file of the manifest downloaded (streamed,
``concurrency`` at a time) and its ndjson lines counted. Resources per second are counted
from kick-off to the last byte of the last file.

``copy_rate`` is what PostgreSQL itself does with the same rows: ``COPY (SELECT body FROM
resource WHERE NOT deleted AND res_type = ANY(…)) TO STDOUT`` through asyncpg
(``copy_from_query``) into a sink that only counts, on one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

COPY_QUERY = "SELECT body FROM resource WHERE NOT deleted AND res_type = ANY($1::text[])"


@dataclass
class CopyResult:
    rows: int
    bytes: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"resources": self.rows, "bytes": self.bytes, "seconds": round(self.seconds, 2),
                "resources_per_s": round(self.per_second), "mb_per_s": round(self.bytes / 1e6 / self.seconds, 1)
                if self.seconds else None}


async def copy_rate(dsn: str, types: list[str]) -> CopyResult:
    """COPY the bodies of every current resource of ``types`` to a counting sink."""
    counted = {"bytes": 0}

    async def sink(chunk: bytes) -> None:
        counted["bytes"] += len(chunk)

    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        status = await conn.copy_from_query(COPY_QUERY, types, output=sink, format="text")
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return CopyResult(int(status.split()[-1]), counted["bytes"], seconds)


async def resource_types(dsn: str) -> dict[str, int]:
    """Current resources per type in the database at ``dsn``."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT res_type, count(*) AS n FROM resource WHERE NOT deleted GROUP BY res_type")
    finally:
        await conn.close()
    return {row["res_type"]: row["n"] for row in rows}


class ExportFailed(RuntimeError):
    pass


@dataclass
class ExportResult:
    resources: int
    bytes: int
    files: int
    by_type: dict[str, int]
    seconds: float  # kick-off to the last byte
    seconds_to_complete: float  # kick-off to the manifest
    polls: int
    manifest_counts: dict[str, int] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"resources": self.resources, "bytes": self.bytes, "files": self.files, "by_type": self.by_type,
                "seconds": round(self.seconds, 2), "seconds_to_complete": round(self.seconds_to_complete, 2),
                "seconds_download": round(self.seconds - self.seconds_to_complete, 2), "polls": self.polls,
                "resources_per_s": round(self.per_second),
                "mb_per_s": round(self.bytes / 1e6 / self.seconds, 1) if self.seconds else None}


def _retry_after(response: httpx.Response, cap: float) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.05, min(cap, float(value)))
    except ValueError:
        return cap


async def run_export(base_url: str, token: str, *, path: str = "/fhir/$export", params: dict[str, str] | None = None,
                     poll: float = 0.5, timeout: float = 1800.0, concurrency: int = 2,
                     report_every: float = 0.0) -> ExportResult:
    """One system-level export as a backend client, from kick-off to every file read;
    ``report_every`` > 0: print the status's ``X-Progress`` that often (seconds)."""
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=120.0) as client:
        started = time.perf_counter()
        kickoff = await client.get(path, params=params or {},
                                   headers={**auth, "Accept": "application/fhir+json", "Prefer": "respond-async"})
        if kickoff.status_code != 202 or "content-location" not in kickoff.headers:
            raise ExportFailed(f"kick-off: {kickoff.status_code}, expected 202 with Content-Location:\n"
                               f"{kickoff.text[:2000]}")
        status_url = kickoff.headers["content-location"]
        polls = 0
        reported = started
        while True:
            polls += 1
            status = await client.get(status_url, headers={**auth, "Accept": "application/json"})
            if status.status_code == 200:
                break
            if status.status_code not in (202, 429):
                raise ExportFailed(f"status: {status.status_code}:\n{status.text[:2000]}")
            if report_every > 0 and time.perf_counter() - reported >= report_every:
                reported = time.perf_counter()
                print(f"  export running for {reported - started:.0f} s: {status.headers.get('x-progress', '?')}",
                      flush=True)
            if time.perf_counter() - started > timeout:
                with contextlib.suppress(httpx.HTTPError):
                    await client.delete(status_url, headers=auth)
                raise ExportFailed(f"not complete after {timeout:.0f} s ({polls} polls; "
                                   f"{status.headers.get('x-progress', 'no progress')})")
            await asyncio.sleep(_retry_after(status, poll))
        complete = time.perf_counter()
        manifest = status.json()
        if manifest.get("error"):
            raise ExportFailed(f"the manifest reports errors: {manifest['error']}")
        outputs = manifest.get("output") or []
        needs_token = bool(manifest.get("requiresAccessToken", True))
        by_type: dict[str, int] = {}
        manifest_counts: dict[str, int] = {}
        totals = {"bytes": 0}
        gate = asyncio.Semaphore(concurrency)

        async def download(item: dict[str, Any]) -> None:
            type_ = str(item.get("type"))
            if isinstance(item.get("count"), int):
                manifest_counts[type_] = manifest_counts.get(type_, 0) + item["count"]
            headers = {"Accept": "application/fhir+ndjson", **(auth if needs_token else {})}
            lines = 0
            last = b"\n"
            async with gate, client.stream("GET", item["url"], headers=headers) as response:
                if response.status_code != 200:
                    raise ExportFailed(f"file {item['url']}: {response.status_code}")
                async for chunk in response.aiter_bytes():
                    if chunk:
                        lines += chunk.count(b"\n")
                        totals["bytes"] += len(chunk)
                        last = chunk[-1:]
            lines += 0 if last == b"\n" else 1  # a last line without its newline
            by_type[type_] = by_type.get(type_, 0) + lines

        await asyncio.gather(*(download(item) for item in outputs))
        finished = time.perf_counter()
        # Cancel/clean up the job's files (Bulk Data: DELETE on the status URL); not timed.
        try:
            await client.delete(status_url, headers=auth)
        except httpx.HTTPError:
            pass
    return ExportResult(sum(by_type.values()), totals["bytes"], len(outputs), dict(sorted(by_type.items())),
                        finished - started, complete - started, polls, dict(sorted(manifest_counts.items())))
