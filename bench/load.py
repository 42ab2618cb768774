"""Load generation: wrk (preferred) or a Python asyncio client, over the same request files.

A request file has one request per line, ``METHOD<TAB>PATH<TAB>BODY``; ``__REV__`` in a body is
replaced per request by a unique value. ``bench/lua/requests.lua`` replays such a file in wrk
(a C event loop: it stays far below one core at these rates); the fallback replays it with
httpx when wrk is missing and cannot be installed. Both report requests, errors and latency
percentiles; CPU seconds of the client process are measured so the report can show that the
client does not take the cores from the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patientkontrakt.config import PROJECT_ROOT

LUA_SCRIPT = PROJECT_ROOT / "bench" / "lua" / "requests.lua"


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: int
    error_detail: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    client_cpu_s: float

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "error_detail": self.error_detail,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p90_ms": round(self.p90_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "mean_ms": round(self.mean_ms, 2),
            "max_ms": round(self.max_ms, 2),
            "client_cpu_s": round(self.client_cpu_s, 2),
        }


def write_request_file(path: Path, lines: list[tuple[str, str, str]]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for method, target, body in lines:
            if "\t" in body or "\n" in body or "\t" in target:
                raise ValueError("request bodies and paths must be single-line JSON without tabs")
            out.write(f"{method}\t{target}\t{body}\n")
    return path


def ensure_wrk() -> str | None:
    """The wrk binary; installed from Debian's packages when missing (as root), else None."""
    found = shutil.which("wrk")
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("wrk is missing; installing the Debian package 'wrk'", flush=True)
    for command in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "wrk"]):
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if shutil.which("wrk"):
            break
    return shutil.which("wrk")


def wrk_version(binary: str) -> str:
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).splitlines()[0].strip() if (result.stdout or result.stderr) else "wrk"


def run_wrk(binary: str, url: str, request_file: Path, *, mode: str, connections: int, threads: int,
            duration: float, token: str | None = None) -> LoadResult:
    command = [
        binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
        "-s", str(LUA_SCRIPT), url, "--", str(request_file), mode, token or "",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    stdout = process.stdout.read().decode() if process.stdout else ""
    stderr = process.stderr.read().decode() if process.stderr else ""
    line = next((x for x in stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr or stdout}")
    data = json.loads(line.removeprefix("BENCHJSON "))
    errors = {k: int(v) for k, v in data["errors"].items()}
    lat = data["latency_us"]
    return LoadResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        errors=sum(errors.values()),
        error_detail=errors,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        mean_ms=lat["mean"] / 1000,
        max_ms=lat["max"] / 1000,
        client_cpu_s=usage.ru_utime + usage.ru_stime,
    )


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def summarize(latencies_s: list[float], seconds: float, errors: dict[str, int], cpu: float) -> LoadResult:
    """A LoadResult from raw per-request latencies (the Python client and the database loops)."""
    values = sorted(latencies_s)
    count = len(values) + sum(errors.values())
    return LoadResult(
        requests=count,
        seconds=seconds,
        errors=sum(errors.values()),
        error_detail=errors,
        p50_ms=_percentile(values, 50) * 1000,
        p90_ms=_percentile(values, 90) * 1000,
        p99_ms=_percentile(values, 99) * 1000,
        mean_ms=(sum(values) / len(values) * 1000) if values else 0.0,
        max_ms=(values[-1] * 1000) if values else 0.0,
        client_cpu_s=cpu,
    )


def run_python(url: str, request_file: Path, *, mode: str, connections: int, duration: float,
               token: str | None = None) -> LoadResult:
    """The fallback client: httpx on asyncio, one task per connection."""
    import httpx

    entries = []
    for line in request_file.read_text(encoding="utf-8").splitlines():
        method, target, body = line.split("\t", 2)
        entries.append((method, target, body))
    headers_get = {"Accept": "application/fhir+json"}
    if token:
        headers_get["Authorization"] = f"Bearer {token}"
    headers_body = {**headers_get, "Content-Type": "application/fhir+json"}

    async def main() -> tuple[list[float], dict[str, int], float]:
        latencies: list[float] = []
        errors = {"status": 0, "other": 0}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:
            started = time.perf_counter()
            deadline = started + duration

            async def worker(number: int) -> None:
                rng = random.Random(number)
                counter = number * 100003
                while time.perf_counter() < deadline:
                    counter += 1
                    method, target, body = entries[counter % len(entries)] if mode == "sequence" \
                        else rng.choice(entries)
                    content = body.replace("__REV__", f"{number}-{counter}").encode() if body else None
                    begin = time.perf_counter()
                    try:
                        response = await client.request(method, target, content=content,
                                                         headers=headers_body if content else headers_get)
                        await response.aread()
                    except httpx.HTTPError:
                        errors["other"] += 1
                        continue
                    if response.status_code >= 400:
                        errors["status"] += 1
                    else:
                        latencies.append(time.perf_counter() - begin)

            await asyncio.gather(*(worker(n + 1) for n in range(connections)))
            return latencies, errors, time.perf_counter() - started

    before = resource.getrusage(resource.RUSAGE_SELF)
    latencies, errors, seconds = asyncio.run(main())
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summarize(latencies, seconds, errors, cpu)
