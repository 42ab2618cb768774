"""How long one heavy request holds up the others: the event loop, measured from outside.

While one heavy request runs against a live ``patientkontrakt serve`` (one worker), a second
client sends a trivial request (``GET /``: no database, no token) every few milliseconds and
records how long each took. A request that waits behind CPU work on the event loop shows it:
the longest probe is about the longest stretch the loop was blocked.

    .venv/bin/python -m bench.eventloop --database-url postgresql+asyncpg://…/db --key demo-ehr-key.pem

The database needs the demo region (``patientkontrakt demo --agreements 300``) and the key of its
``demo-ehr`` client; the server runs with this checkout's code and ``PK_SIGNING_KEY`` of the demo.
Scenarios: a 10 MB transaction (500 new Patients of about 20 KB each), a 1 MB one (500 of 2 KB),
and a search page of 1,000 CarePlans with their includes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.servers import free_port
from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.security.client_assertion import request_token

PNR_SYSTEM = "http://electronichealth.se/identifier/personnummer"


def personnummer(n: int) -> str:
    """A valid (Luhn) personnummer of someone born 1950–1999, distinct for each ``n`` < 10,000,000."""
    year, day, serial = 1950 + n % 50, 1 + (n // 50) % 28, 100 + (n // 1400) % 900
    digits = f"{year % 100:02d}{1 + (n // 39200) % 12:02d}{day:02d}{serial:03d}"
    total = 0
    for i, ch in enumerate(digits):
        value = int(ch) * (2 if i % 2 == 0 else 1)
        total += value // 10 + value % 10
    return f"{year}{digits[2:]}{(10 - total % 10) % 10}"


def big_patient(n: int, target_bytes: int) -> dict[str, Any]:
    """A valid Patient of about ``target_bytes`` of JSON: many addresses, as a record with a long
    history of moves has."""
    pnr = personnummer(n)
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": PNR_SYSTEM, "value": pnr}],
        "name": [{"family": f"Belastning{n}", "given": ["Test"]}],
        "gender": "female",
        "birthDate": f"{pnr[:4]}-{pnr[4:6]}-{pnr[6:8]}",
        "address": [],
    }
    while len(orjson.dumps(patient)) < target_bytes:
        i = len(patient["address"])
        patient["address"].append({"use": "old", "line": [f"Gamla vägen {i}", f"lägenhet {i}"], "city": "Göteborg",
                                   "postalCode": "411 01", "country": "SE",
                                   "period": {"start": f"{1960 + i % 60}-01-01", "end": f"{1961 + i % 60}-01-01"}})
    return patient


def transaction(entries: int, entry_bytes: int, start: int) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{start + i:012d}",
         "resource": big_patient(start + i, entry_bytes), "request": {"method": "POST", "url": "Patient"}}
        for i in range(entries)]})


@dataclass
class Probes:
    """Trivial requests sent back to back from a thread of their own: (sent at, seconds taken)."""

    url: str
    samples: list[tuple[float, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                client.get(self.url).raise_for_status()
                self.samples.append((sent, time.monotonic() - sent))
                time.sleep(0.002)

    def during(self, start: float, end: float) -> list[float]:
        return [took for sent, took in self.samples if start <= sent <= end]


def measure(base: str, token: str, name: str, send: Any, rounds: int) -> None:
    probes = Probes(f"{base}/")
    thread = threading.Thread(target=probes.run, daemon=True)
    thread.start()
    time.sleep(0.5)
    durations, worst, counts = [], [], []
    with httpx.Client(timeout=600, headers={"Authorization": f"Bearer {token}"}) as client:
        for number in range(rounds):
            start = time.monotonic()
            response = send(client, number)
            end = time.monotonic()
            if response.status_code >= 300:
                raise SystemExit(f"{name}: {response.status_code} {response.text[:500]}")
            during = probes.during(start, end)
            durations.append(end - start)
            worst.append(max(during, default=0.0))
            counts.append(len(during))
            time.sleep(0.3)
    probes.stop.set()
    thread.join()
    print(f"{name:34} request {statistics.median(durations) * 1000:7.0f} ms   probes during it "
          f"{statistics.median(counts):5.0f}   longest probe {statistics.median(worst) * 1000:6.0f} ms "
          f"(worst round {max(worst) * 1000:.0f} ms)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--key", required=True, type=Path, help="the demo-ehr client's private key")
    parser.add_argument("--signing-key", required=True, type=Path, help="PK_SIGNING_KEY of the demo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenarios", default="big,small,search",
                        help="comma-separated: big (500 entries of 20 KB), small (500 of 2 KB), search")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT,
                        help="the source tree to serve (another checkout, e.g. a commit before a change)")
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PK_DATABASE_URL": args.database_url, "PK_BASE_URL": base, "PK_LOG_LEVEL": "warning",
           "PK_SIGNING_KEY": str(args.signing_key.resolve())}
    server = subprocess.Popen([sys.executable, "-m", "patientkontrakt.cli", "serve", "--port", str(port)],
                              cwd=args.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        token = request_token(base, "demo-ehr", args.key, "system/*.cruds")
        first = 1_000_000 + int(time.time()) % 1000 * 10_000  # new people on every run
        for name, entry_bytes in (("big", 20_000), ("small", 2_000)):
            if name not in args.scenarios:
                continue
            bodies = [transaction(500, entry_bytes, first + (round_ + (name == "small") * 100) * 1000)
                      for round_ in range(args.rounds)]
            print(f"transaction body: {len(bodies[0]) / 1e6:.1f} MB", flush=True)
            measure(base, token, f"transaction, 500 entries, {len(bodies[0]) / 1e6:.0f} MB",
                    lambda client, n, bodies=bodies: client.post(
                        f"{base}/fhir", content=bodies[n],
                        headers={"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}), args.rounds)
        if "search" in args.scenarios:
            search = {"_count": "1000", "_include": "*", "_revinclude": "Provenance:target"}
            page = httpx.get(f"{base}/fhir/CarePlan", params=search, headers={"Authorization": f"Bearer {token}"},
                             timeout=600).json()
            print(f"search page: {len(page.get('entry', []))} entries, {len(orjson.dumps(page)) / 1e6:.1f} MB",
                  flush=True)
            measure(base, token, "search, 1,000 CarePlans + includes",
                    lambda client, n: client.get(f"{base}/fhir/CarePlan", params=search), args.rounds)
    finally:
        server.terminate()
        server.wait(timeout=15)


if __name__ == "__main__":
    main()
