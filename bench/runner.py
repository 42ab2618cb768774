"""The benchmark run: databases, servers, scenarios, baselines, report.

For the main size (``--agreements``) every scenario and baseline is measured; for the other
``--scales`` only the search (for the growth check). The consent scenarios (``read-samtycke``,
``search-samtycke``, ``read-sparr``, ``search-sparr``) run after the plain reads and before the
writes: their Consents are loaded into the run database (``loader.load_consents``, checked
against the server's write path), a server started on it, and the Consents removed again.

Each measurement is a warm-up run and a measured run with the same load generator, connections
and duration, started when the machine is quiet. Servers are measured one at a time (an idle one
costs nothing), and read by id alternates with the bare FastAPI baseline in rounds, so drift on
a shared machine hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy.engine import make_url

from bench import checks, dbloops, embedded, export, mixed, notify, pooler, report, synthetic
from bench.database import (
    DEFAULT_PREFIX,
    Admin,
    asyncpg_dsn,
    fingerprint,
    pristine_name,
    relative,
    run_name,
    sqlalchemy_url,
)
from bench.explain import explain
from bench.load import LoadResult, ensure_wrk, run_python, run_wrk, write_request_file, wrk_version
from bench.loader import default_jobs, load, load_consents, offline_service, remove_consents
from bench.scenarios import SCENARIOS, Scenario
from bench.servers import Server, baseline_server, machine_busy, patientkontrakt_server, worker_process
from patientkontrakt.config import PROJECT_ROOT, Settings
from patientkontrakt.security.keys import SigningKeys, generate_key
from patientkontrakt.security.tokens import AccessTokens
from patientkontrakt.storage.database import migrate

MAX_AGREEMENTS = 1_000_000
# Besides the load-generator scenarios (bench/scenarios.py): notification latency, export, the
# mixed workload (bench/mixed.py) and authenticated reads on 1 and on 2 server processes.
ALL_SCENARIOS = [*SCENARIOS, "notify", "export", "mixed", "read-workers"]
QUIET_BELOW = 0.30  # machine busy share under which a measurement may start
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin = Admin(args.database_url)
        self.wrk = None if args.client == "python" else ensure_wrk()
        if args.client == "wrk" and self.wrk is None:
            raise SystemExit("--client wrk: wrk is not installed and could not be installed")
        if self.wrk is None:
            print("load generator: Python httpx client (wrk unavailable)", flush=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="pk-bench-"))
        self.output = Path(args.output)
        self.signing_key = generate_key(self.workdir / "signing.pem")

    def token(self, server: Server, grant: str = "clinic") -> str | None:
        """A fresh access token for ``server``: a system acting for the regional clinic that takes
        part in every synthetic agreement (``bench.synthetic.shared``), or for ``grant``
        (``synthetic.GRANTS``), with every system scope. Signed with the key the server was
        started with; the no-auth server needs none."""
        if server.name.endswith("-noauth") or not server.name.startswith("patientkontrakt"):
            return None
        tokens = AccessTokens(SigningKeys.load(self.signing_key), server.url, f"{server.url}/fhir", lifetime=900)
        return tokens.issue(synthetic.GRANTS[grant](), synthetic.BENCH_SCOPE, "bench")[0]

    # -- databases -------------------------------------------------------------------------

    async def prepare(self, n: int) -> tuple[str, dict[str, Any]]:
        """A fresh run database holding ``n`` agreements; the load info for the report."""
        pristine, run = pristine_name(n, self.args.database_prefix), run_name(n, self.args.database_prefix)
        expected = fingerprint(n)
        info: dict[str, Any] = {"database": pristine, "fingerprint": expected}
        await self.admin.drop(run)
        if not self.args.reload and await self.admin.comment(pristine) == expected:
            print(f"[{n:,}] reusing loaded database {pristine}", flush=True)
            info["reused"] = True
        else:
            info.update(await self._load(n, pristine))
        started = time.perf_counter()
        await self.admin.create(run, template=pristine)
        info["clone_seconds"] = round(time.perf_counter() - started, 1)
        info["size_bytes"] = await self.admin.size(run)
        print(f"[{n:,}] run database {run}: clone of {pristine} ({info['size_bytes'] / 2**30:.2f} GiB) "
              f"in {info['clone_seconds']} s", flush=True)
        return sqlalchemy_url(self.args.database_url, run), info

    async def _load(self, n: int, pristine: str) -> dict[str, Any]:
        print(f"[{n:,}] creating and loading {pristine}", flush=True)
        await self.admin.drop(pristine)
        await self.admin.create(pristine)
        url = sqlalchemy_url(self.args.database_url, pristine)
        await asyncio.to_thread(migrate, url)
        stats = await load(asyncpg_dsn(url), n, self.args.jobs)
        print(f"[{n:,}] loaded {stats.resources:,} resources and {stats.index_rows:,} index rows in "
              f"{stats.seconds:.0f} s (generate+COPY {stats.seconds_generate_copy:.0f} s, indexes "
              f"{stats.seconds_indexes:.0f} s, VACUUM ANALYZE {stats.seconds_vacuum:.0f} s)", flush=True)
        sample = sorted({0, n // 2, n - 1, *range(0, n, max(1, n // 20))})
        extra = [_body(line) for line in SCENARIOS["create"].lines(n)[:20]]
        extra += [_body(line) for line in SCENARIOS["update"].lines(n)[:20]]
        extra += synthetic.transaction_resources(n, 0)
        validated = checks.validate_sample(offline_service(), sample, extra)
        compared = await checks.verify_against_writer(url, n // 2)
        owned = await checks.check_owners(url, n // 2)
        print(f"[{n:,}] validated {validated} resources through the server's prepare (FHIR validator, profiles, "
              f"rules); agreement {n // 2} matches the server's write path ({compared} index rows and owners "
              f"compared; {owned} resources owned by the vårdcentral and the region)", flush=True)
        await self.admin.set_comment(pristine, fingerprint(n))
        return {
            "reused": False,
            "resources": stats.resources,
            "index_rows": stats.index_rows,
            "load_seconds": round(stats.seconds, 1),
            "generate_copy_seconds": round(stats.seconds_generate_copy, 1),
            "index_build_seconds": round(stats.seconds_indexes, 1),
            "vacuum_analyze_seconds": round(stats.seconds_vacuum, 1),
            "resources_per_second": round(stats.resources / stats.seconds_generate_copy),
            "validated_resources": validated,
            "writer_equivalence_index_rows": compared,
        }

    # -- measuring -------------------------------------------------------------------------

    def _request_file(self, n: int, scenario: Scenario) -> Path:
        return write_request_file(self.workdir / f"{scenario.name}-{n}.txt", scenario.lines(n))

    def _generate(self, url: str, request_file: Path, mode: str, duration: float, connections: int,
                  token: str | None) -> LoadResult:
        if self.wrk:
            return run_wrk(self.wrk, url, request_file, mode=mode, connections=connections,
                           threads=min(self.args.threads, connections), duration=duration, token=token)
        return run_python(url, request_file, mode=mode, connections=connections, duration=duration, token=token)

    def _quiet(self) -> float:
        """Wait (up to ``--quiet-wait`` s) until the machine is mostly idle; the busy share seen last.

        Other processes on a shared machine skew a measurement more than anything in it.
        """
        deadline = time.monotonic() + self.args.quiet_wait
        while True:
            busy_before, total_before = machine_busy()
            time.sleep(1.0 if self.args.quiet_wait > 0 else 0.2)  # 0: only a glance, for the report
            busy_after, total_after = machine_busy()
            busy = (busy_after - busy_before) / max(1.0, total_after - total_before)
            if busy < QUIET_BELOW or time.monotonic() >= deadline:
                return busy

    def measure_http(self, server: Server, request_file: Path, mode: str, label: str,
                     connections: int | None = None, grant: str = "clinic") -> dict[str, Any]:
        connections = connections or self.args.connections
        token = self.token(server, grant)
        if self.args.warmup > 0:
            self._generate(server.url, request_file, mode, self.args.warmup, connections, token)
        idle = self._quiet()
        cpu_before, (busy_before, total_before) = server.cpu_seconds(), machine_busy()
        result = self._generate(server.url, request_file, mode, self.args.duration, connections, token)
        cpu_after, (busy_after, total_after) = server.cpu_seconds(), machine_busy()
        row = _row(result, server_cpu=cpu_after - cpu_before,
                   busy=(busy_after - busy_before) / max(1.0, total_after - total_before), busy_before=idle)
        print(f"  {label:<34} {row['rps']:>8,.0f} req/s  p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:7.2f} ms"
              f"  server {row['server_cpu_us_per_req'] or 0:5.0f} us CPU/req  errors {row['errors']}"
              f"  (machine {100 * idle:.0f}% busy before)", flush=True)
        return row

    async def measure_db(self, label: str, run: Any) -> dict[str, Any]:
        if self.args.warmup > 0:
            await run(self.args.warmup)
        idle = self._quiet()
        busy_before, total_before = machine_busy()
        result = await run(self.args.duration)
        busy_after, total_after = machine_busy()
        row = _row(result, server_cpu=None, busy=(busy_after - busy_before) / max(1.0, total_after - total_before),
                   busy_before=idle)
        print(f"  {label:<34} {row['rps']:>8,.0f} ops/s  p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:7.2f} ms"
              f"  (machine {100 * idle:.0f}% busy before)", flush=True)
        return row

    async def run_size(self, n: int, full: bool, export: bool = False, mixed: bool = False) -> dict[str, Any]:
        """Measure at ``n`` agreements: every scenario if ``full``, else the search (``--scales``);
        the export and its COPY baseline if ``export`` (``--export-agreements``); the mixed
        workload if ``mixed`` (``--mixed-agreements``; with ``--soak`` nothing else)."""
        url, info = await self.prepare(n)
        out: dict[str, Any] = {"agreements": n, "resources": n * synthetic.RESOURCES_PER_AGREEMENT,
                               "database": info, "scenarios": {}, "baselines": {}}
        names = [s for s in self.args.scenarios if s in SCENARIOS
                 and (full or (s == "search" and n in self.args.scales))]
        try:
            if names:
                await self._scenarios(n, url, names, full, out)
            if full and "read-workers" in self.args.scenarios:
                await self._read_workers(n, url, out)
            if full and (self.args.pgbouncer or self.args.replica_url):
                await self._pooled(n, url, out)
            if full and "notify" in self.args.scenarios:
                await self._notify(n, url, out)
            if mixed:
                await self._mixed(n, url, out)
            if export:
                await self._export(n, url, out)
            if (full or mixed) and not self.args.soak:
                await self._db_baselines(n, url, out)
            out["ratios"] = report.ratios(out)
        finally:
            if not self.args.keep:
                await self.admin.drop(run_name(n, self.args.database_prefix))
        return out

    async def _scenarios(self, n: int, url: str, names: list[str], full: bool, out: dict[str, Any]) -> None:
        """The HTTP scenarios ``names`` (``bench.scenarios``) and, if ``full``, the read's
        interleaved baselines."""
        await self._explain(n, url, out)
        files = {name: self._request_file(n, SCENARIOS[name]) for name in names}
        paired = full and "read" in names
        plain = [name for name in names if SCENARIOS[name].consents is None]
        states = list(dict.fromkeys(SCENARIOS[name].consents for name in names if SCENARIOS[name].consents))
        states.sort(key=lambda state: state != "none")  # the control first, right before the Consents
        print(f"[{n:,}] patientkontrakt serve ({self.args.workers} worker(s))"
              + (", the same without authentication and access log (bench/noauth_app.py) and the bare "
                 "FastAPI baseline (bench/baseline_app.py), all idle but the one measured"
                 if paired else ""), flush=True)
        root = Path(self.args.server_root)
        with contextlib.ExitStack() as stack:
            ours = stack.enter_context(patientkontrakt_server(url, self.args.workers, self.signing_key, root))
            base = stack.enter_context(baseline_server(asyncpg_dsn(url), self.args.workers,
                                                       Settings().db_pool_size)) if paired else None
            noauth = stack.enter_context(patientkontrakt_server(
                url, self.args.workers, self.signing_key, root, auth=False)) if paired else None
            other = stack.enter_context(patientkontrakt_server(url, self.args.workers, self.signing_key, Path(
                self.args.compare_root))) if paired and self.args.compare_root else None
            for name in plain:
                SCENARIOS[name].preflight(ours.url, _first_line(files[name]),
                                          self.token(ours, SCENARIOS[name].grant))
            for name in names:
                if SCENARIOS[name].refused is not None:
                    SCENARIOS[name].preflight(ours.url, _first_line(files[name]),
                                              self.token(ours, SCENARIOS[name].grant), without_consents=True)
            if base is not None and noauth is not None:
                SCENARIOS["read"].preflight(base.url, _first_line(files["read"]))
                SCENARIOS["read"].preflight(noauth.url, _first_line(files["read"]))
                sides = [("fastapi_read", base, "baseline: bare FastAPI read"),
                         ("read_noauth", noauth, f"{SCENARIOS['read'].title}, no auth/log"),
                         ("read", ours, SCENARIOS["read"].title)]
                if other is not None:
                    sides.append(("read_compare", other, f"{SCENARIOS['read'].title} (--compare-root)"))
                # Interleaved rounds: drift on a shared machine hits every side alike.
                rounds: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in sides}
                for number in range(1, self.args.rounds + 1):
                    for key, server, title in sides:
                        rounds[key].append(self.measure_http(server, files["read"], "random",
                                                             f"{title} [{number}]"))
                out["baselines"]["fastapi_read"] = _best(rounds.pop("fastapi_read"))
                for key, values in rounds.items():
                    out["scenarios"][key] = _best(values)
            # The read-only scenarios, then those of each Consent state, then the writes (a
            # created draft would be a second match of the searches).
            for name in [name for name in plain if not SCENARIOS[name].writes]:
                self._measure(ours, n, name, files[name], out)
            for state in states:
                await self._consent_state(n, url, state, [name for name in names
                                                          if SCENARIOS[name].consents == state], files, out,
                                          pause=[s for s in (ours, other) if s is not None])
            for name in [name for name in plain if SCENARIOS[name].writes]:
                self._measure(ours, n, name, files[name], out)

    def _measure(self, server: Server, n: int, name: str, request_file: Path, out: dict[str, Any]) -> None:
        if name in out["scenarios"]:
            return
        scenario = SCENARIOS[name]
        key = name.replace("-", "_")
        if scenario.consents is not None and scenario.lines is SCENARIOS["read"].lines and self.args.rounds > 1:
            # As the read it is compared with: the best of the rounds (not interleaved: the
            # Consents are not in force for the read).
            out["scenarios"][key] = _best([
                self.measure_http(server, request_file, scenario.mode, f"{scenario.title} [{number}]",
                                  grant=scenario.grant)
                for number in range(1, self.args.rounds + 1)])
        else:
            out["scenarios"][key] = self.measure_http(server, request_file, scenario.mode, scenario.title,
                                                      grant=scenario.grant)
        if scenario.name == "search" and self.args.connections > 1:
            # Service time without queueing: what the data size does, apart from the load.
            out["scenarios"]["search_1conn"] = self.measure_http(
                server, request_file, scenario.mode, f"{scenario.title}, 1 connection", connections=1)

    async def _consent_state(self, n: int, url: str, state: str, names: list[str], files: dict[str, Path],
                             out: dict[str, Any], pause: list[Server]) -> None:
        """Measure ``names`` with every patient's Consent ``state`` in force: load the Consents
        into the run database, check one against the server's write path, serve the database
        from a server started now (its statements planned with the Consents there), then take
        them out again. The servers in ``pause`` are stopped meanwhile: an idle server's access
        log sealer would otherwise seal the measured server's entries for it (whichever takes the
        lock seals), making it look cheaper than the baseline, which sealed its own."""
        dsn = asyncpg_dsn(url)
        for server in pause:
            server.stop()
        try:
            if state == "none":
                await self._serve_and_measure(n, url, names, files, out)
                return
            loaded = await load_consents(dsn, n, state, self.args.jobs)
            try:
                sample = synthetic.CONSENTS[state](n // 2)
                compared = await checks.verify_against_writer(url, n // 2, [sample])
                print(f"[{n:,}] loaded {loaded.count:,} Consents ({state}) in {loaded.seconds:.1f} s; "
                      f"{sample['resourceType']}/{sample['id']} matches the server's write path ({compared} index, "
                      f"consent rule and owner rows compared)", flush=True)
                out.setdefault("consents", {})[state] = {
                    "consents": loaded.count, "load_seconds": round(loaded.seconds, 1),
                    "writer_equivalence_rows": compared}
                await self._explain(n, url, out, state, SCENARIOS[names[0]].grant)
                await self._serve_and_measure(n, url, names, files, out)
            finally:
                await remove_consents(dsn, loaded)
        finally:
            for server in pause:
                server.start()

    async def _serve_and_measure(self, n: int, url: str, names: list[str], files: dict[str, Path],
                                 out: dict[str, Any]) -> None:
        """Start a server on the run database as it is now and measure ``names`` on it."""
        with patientkontrakt_server(url, self.args.workers, self.signing_key, Path(self.args.server_root)) as server:
            for name in names:
                SCENARIOS[name].preflight(server.url, _first_line(files[name]),
                                          self.token(server, SCENARIOS[name].grant))
            for name in names:
                self._measure(server, n, name, files[name], out)

    async def _explain(self, n: int, url: str, out: dict[str, Any], state: str | None = None,
                       grant: str = "clinic") -> None:
        patient = synthetic.patient_id(n // 3)
        pairs = [("patient", patient), ("_include", "CarePlan:care-team")]
        caller = ("a system of the regional clinic" if grant == "clinic"
                  else "a system of the kommun's hemsjukvård, another care provider")
        consents = f", every patient's {state} in force (bench/scenarios.py)" if state else ""
        header = (f"-- EXPLAIN (ANALYZE, BUFFERS) of the statements the server runs for\n"
                  f"-- GET /fhir/CarePlan?patient={patient}&_include=CarePlan:care-team\n"
                  f"-- N = {n:,} agreements ({n * synthetic.RESOURCES_PER_AGREEMENT:,} resources){consents}; built by "
                  f"FhirService.parser.parse + search_engine.find for the bench's token ({caller}, with its access "
                  f"rules), compiled with literal binds (bench/explain.py)\n"
                  f"-- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, command: {_command()}")
        text = await explain(url, "CarePlan", pairs, header, self.signing_key, grant)
        path = self.output / (f"explain-{n}-{state}.txt" if state else f"explain-{n}.txt")
        path.write_text(text, encoding="utf-8")
        out[f"explain_{state}" if state else "explain"] = relative(path)
        print(f"[{n:,}] wrote {relative(path)}", flush=True)

    # -- several processes and the mixed workload (issue 16) ---------------------------------

    async def _read_workers(self, n: int, url: str, out: dict[str, Any]) -> None:
        """Authenticated read by id on a server of one process and on one of two, in
        interleaved rounds (the best of each): two processes must serve at least as many reads
        as one on the same machine. Both stay up, idle but the one measured (each one's access
        log sealer may seal the other's entries: alike for both)."""
        request_file = self._request_file(n, SCENARIOS["read"])
        root = Path(self.args.server_root)
        counts = sorted({1, self.args.mixed_workers})
        print(f"[{n:,}] read by id on patientkontrakt serve with {' and '.join(map(str, counts))} worker "
              f"processes, interleaved rounds", flush=True)
        rounds: dict[int, list[dict[str, Any]]] = {k: [] for k in counts}
        with contextlib.ExitStack() as stack:
            servers = {k: stack.enter_context(patientkontrakt_server(url, k, self.signing_key, root)) for k in counts}
            for server in servers.values():
                SCENARIOS["read"].preflight(server.url, _first_line(request_file), self.token(server))
            for number in range(1, self.args.rounds + 1):
                for k, server in servers.items():
                    rounds[k].append(self.measure_http(server, request_file, "random",
                                                       f"read, {k} worker process(es) [{number}]"))
        for k, values in rounds.items():
            out["scenarios"][f"read_workers_{k}"] = _best(values)

    async def _pooled(self, n: int, url: str, out: dict[str, Any]) -> None:
        """The read scenario through PgBouncer (``--pgbouncer``) and the search scenario with a
        hot standby answering (``--replica-url``), each in interleaved rounds with the same
        scenario on a server connected straight to the primary (``bench.pooler``). Needs the
        service's settings for them (``PK_DATABASE_PGBOUNCER``, ``PK_DATABASE_REPLICA_URL``):
        without them in the served tree the measurement is skipped and says why."""
        root = Path(self.args.server_root)
        config = (root / "patientkontrakt" / "config.py").read_text(encoding="utf-8")
        database = str(make_url(url).database)
        sides: dict[str, tuple[Scenario, dict[str, str]]] = {}
        if self.args.pgbouncer:
            if "database_pgbouncer" not in config:
                out["pgbouncer"] = {"error": f"{root} has no PK_DATABASE_PGBOUNCER setting"}
            else:
                binary = pooler.ensure_pgbouncer()
                if binary is None:
                    out["pgbouncer"] = {"error": "pgbouncer is not installed and could not be installed"}
                else:
                    sides["pgbouncer"] = (SCENARIOS["read"], {"PK_DATABASE_PGBOUNCER": "true"})
        if self.args.replica_url:
            if "database_replica_url" not in config:
                out["replica"] = {"error": f"{root} has no PK_DATABASE_REPLICA_URL setting"}
            else:
                replica = pooler.replica_url(self.args.replica_url, database)
                waited = await pooler.wait_replayed(asyncpg_dsn(url), asyncpg_dsn(replica))
                print(f"[{n:,}] the replica has replayed the run database ({waited} s)", flush=True)
                sides["replica"] = (SCENARIOS["search"], {"PK_DATABASE_REPLICA_URL": replica})
        for key in ("pgbouncer", "replica"):
            if "error" in out.get(key, {}):
                print(f"[{n:,}] {key}: NOT measured: {out[key]['error']}", flush=True)
        if not sides:
            return
        with contextlib.ExitStack() as stack:
            bouncer = None
            if "pgbouncer" in sides:
                # Behind PgBouncer the connection settings are the database's (ALTER DATABASE).
                await pooler.set_database_settings(asyncpg_dsn(self.args.database_url), database,
                                                   pooler.database_settings(Settings().statement_timeout))
                bouncer = stack.enter_context(pooler.PgBouncer(pooler.ensure_pgbouncer() or "pgbouncer",
                                                               self.args.database_url,
                                                               pool_size=Settings().db_pool_size))
                print(f"[{n:,}] PgBouncer (transaction mode) on 127.0.0.1:{bouncer.port}", flush=True)
            direct = stack.enter_context(patientkontrakt_server(url, self.args.workers, self.signing_key, root))
            for key, (scenario, env) in sides.items():
                try:
                    served = bouncer.url(database) if key == "pgbouncer" and bouncer else url
                    other = stack.enter_context(patientkontrakt_server(served, self.args.workers, self.signing_key,
                                                                       root, env=env))
                    request_file = self._request_file(n, scenario)
                    for server in (direct, other):
                        scenario.preflight(server.url, _first_line(request_file), self.token(server))
                    standby_before = await _standby_transactions(self.args.replica_url, database) \
                        if key == "replica" else None
                    rounds: dict[str, list[dict[str, Any]]] = {"direct": [], key: []}
                    for number in range(1, self.args.rounds + 1):
                        for name, server in (("direct", direct), (key, other)):
                            label = {"direct": "primary, direct", "pgbouncer": "through PgBouncer",
                                     "replica": "replica answering"}[name]
                            rounds[name].append(self.measure_http(server, request_file, scenario.mode,
                                                                  f"{scenario.title}, {label} [{number}]"))
                    mine, theirs = f"{scenario.name}_{key}", f"{scenario.name}_direct"
                    out["scenarios"][theirs] = _best(rounds["direct"])
                    out["scenarios"][mine] = _best(rounds[key])
                    row: dict[str, Any] = {"scenario": scenario.name, "settings": env | (
                        {"PK_DATABASE_URL": served} if key == "pgbouncer" else {})}
                    if standby_before is not None:
                        after = await _standby_transactions(self.args.replica_url, database)
                        row["standby_transactions"] = after - standby_before
                        print(f"  the standby ran {row['standby_transactions']:,} transactions on the run database",
                              flush=True)
                    out[key] = row
                except RuntimeError as failed:  # the server refused to start, say: reported, the run kept
                    out[key] = {"error": str(failed)[-2000:]}
                    print(f"[{n:,}] {key}: FAILED: {str(failed)[-600:]}", flush=True)

    async def _mixed(self, n: int, url: str, out: dict[str, Any]) -> None:
        """The mixed workload (``bench.mixed``): ``--mixed-workers`` server processes, a
        ``patientkontrakt worker`` beside them delivering to a rest-hook Subscription on the
        agreements' CarePlans (every update and transaction notifies the receiver in this
        process, as in ``notify``), ``--connections`` Python clients; a warm-up, then
        ``--duration`` s (``--soak``: that many seconds, with a line every ``--soak-interval`` s).
        Then, unless soaking, the bare FastAPI read on as many processes, for the ratios."""
        workers, soak = self.args.mixed_workers, self.args.soak
        duration = soak or self.args.duration
        dsn = asyncpg_dsn(url)
        root = Path(self.args.server_root)
        the_plan = mixed.plan(n)
        share = ", ".join(f"{p} % {k}" for k, p in mixed.MIX.items())
        print(f"[{n:,}] mixed workload ({share}): patientkontrakt serve with {workers} worker process(es), "
              f"patientkontrakt worker beside, {self.args.connections} Python clients, "
              f"{duration:,.0f} s" + (f", a line every {self.args.soak_interval:g} s (soak)" if soak else ""),
              flush=True)
        env = {"PK_SUBSCRIPTION_ALLOWED_HOSTS": "127.0.0.1"}
        gauges: list[dict[str, Any]] = []
        async with notify.Receiver() as receiver:
            with contextlib.ExitStack() as stack:
                server = stack.enter_context(patientkontrakt_server(url, workers, self.signing_key, root, env=env))
                worker = stack.enter_context(worker_process(server))
                subscription = await asyncio.to_thread(_subscribe, server.url, self.token(server), receiver.url)
                await _wait_active(dsn, subscription)
                versions = await mixed.current_versions(dsn, the_plan.update_ids)
                monitor = await asyncpg.connect(dsn)
                database = str(make_url(url).database)

                def token() -> str | None:
                    return self.token(server)

                async def on_window(row: dict[str, Any]) -> None:
                    measured = {"server_rss_mib": round(mixed.tree_rss_bytes(server.process.pid) / 2**20, 1)
                                if server.process else 0.0,
                                "worker_rss_mib": round(mixed.tree_rss_bytes(worker.process.pid) / 2**20, 1)
                                if worker.process else 0.0,
                                **await mixed.database_gauges(monitor, database)}
                    row.update(measured)
                    gauges.append({"elapsed_s": row["elapsed_s"], **measured})
                    print(f"  [{row['elapsed_s']:>7,.0f} s] {row['rps']:>7,.1f} req/s  p50 {row['p50_ms']:7.2f} ms  "
                          f"p99 {row['p99_ms']:8.2f} ms  errors {row['errors']} (total {row['errors_total']})  "
                          f"server RSS {measured['server_rss_mib']:,.0f} MiB  worker RSS "
                          f"{measured['worker_rss_mib']:,.0f} MiB  db connections {measured['db_connections']}  "
                          f"outbox {measured['outbox_depth']}", flush=True)

                try:
                    if self.args.warmup > 0:
                        await mixed.run_mixed(server.url, the_plan, versions, connections=self.args.connections,
                                              duration=self.args.warmup, token=token, seed=0)
                    received_before = receiver.requests
                    idle = self._quiet()
                    cpu_server, cpu_worker = server.cpu_seconds(), worker.cpu_seconds()
                    busy_before, total_before = machine_busy()
                    result = await mixed.run_mixed(
                        server.url, the_plan, versions, connections=self.args.connections, duration=duration,
                        token=token, seed=1, interval=self.args.soak_interval if soak else None,
                        on_window=on_window if soak else None)
                    busy_after, total_after = machine_busy()
                    cpu_server = server.cpu_seconds() - cpu_server
                    cpu_worker = worker.cpu_seconds() - cpu_worker
                    drained = await _drain_outbox(monitor, self.args.notify_drain)
                    end = await mixed.database_gauges(monitor, database)
                finally:
                    await monitor.close()
                received = receiver.requests - received_before
                # Stopped off the event loop: a delivery under way must get its answer from the
                # receiver on this loop, or the worker would wait out its timeout before ending.
                await asyncio.to_thread(worker.stop)
        row = result.as_dict()
        done = max(1, row["requests"] - row["errors"])
        row.update({
            "agreements": n, "workers": workers, "connections": self.args.connections,
            "mix": dict(mixed.MIX), "notification_worker": True,
            "server_cpu_s": round(cpu_server, 2), "server_cpu_pct": round(100 * cpu_server / row["seconds"], 1),
            "server_cpu_us_per_req": round(1e6 * cpu_server / done), "worker_cpu_s": round(cpu_worker, 2),
            "notifications_received": received, "outbox_depth_after_drain": end["outbox_depth"],
            "outbox_drain_s": drained,
            "machine_busy_pct": round(100 * (busy_after - busy_before) / max(1.0, total_after - total_before), 1),
            "machine_busy_before_pct": round(100 * idle, 1),
        })
        out["mixed"] = row
        print(report.mixed_lines(row, None), flush=True)
        for sample in result.error_samples:
            print(f"  error: {sample}", flush=True)
        if soak:
            out["soak"] = report.soak_summary(row, result.windows, gauges, self.args.soak_rss_growth)
            return
        # The framework + database limit on as many processes, measured the same way as the read.
        request_file = self._request_file(n, SCENARIOS["read"])
        with baseline_server(dsn, workers, Settings().db_pool_size) as base:
            SCENARIOS["read"].preflight(base.url, _first_line(request_file))
            out["baselines"]["fastapi_read_mixed"] = self.measure_http(
                base, request_file, "random", f"baseline: bare FastAPI read, {workers} process(es)")

    # -- notifications and export (issue 15) ---------------------------------------------

    async def _notify(self, n: int, url: str, out: dict[str, Any]) -> None:
        """Notification latency under the write load: a rest-hook Subscription on the
        agreements' CarePlans (``notify.CRITERIA``) with its endpoint in this
        process (``bench.notify.Receiver``), a server and ``patientkontrakt worker`` started for
        it (the other servers are stopped by now), then the update and create requests of those
        scenarios from ``--connections`` Python clients for ``--duration`` s, each answer's
        version and time recorded (``bench.notify``)."""
        lines = SCENARIOS["update"].lines(n) + SCENARIOS["create"].lines(n)
        env = {"PK_SUBSCRIPTION_ALLOWED_HOSTS": "127.0.0.1"}
        root = Path(self.args.server_root)
        print(f"[{n:,}] notification latency: a rest-hook Subscription ({notify.CRITERIA}), "
              f"patientkontrakt serve and {self.args.notify_workers} patientkontrakt worker(s); update and "
              f"create from {self.args.connections} Python clients", flush=True)
        async with notify.Receiver() as receiver:
            with contextlib.ExitStack() as stack:
                server = stack.enter_context(patientkontrakt_server(url, self.args.workers, self.signing_key, root,
                                                                    env=env))
                workers = [stack.enter_context(worker_process(server, k + 1))
                           for k in range(self.args.notify_workers)]
                token = self.token(server)
                dsn = asyncpg_dsn(url)
                subscription = await asyncio.to_thread(_subscribe, server.url, token, receiver.url)
                await _wait_active(dsn, subscription)
                print(f"  Subscription/{subscription} active; receiver {receiver.url}", flush=True)
                if self.args.warmup > 0:
                    warm = await notify.write_load(server.url, lines, token, self.args.connections,
                                                   self.args.warmup)
                    await notify.wait_delivered(receiver, set(warm.answered), self.args.notify_drain)
                receiver.arrivals.clear()
                receiver.requests = receiver.empty = 0
                idle = self._quiet()
                first_seq = await _max_seq(dsn)
                cpu_server, cpu_workers = server.cpu_seconds(), sum(w.cpu_seconds() for w in workers)
                busy_before, total_before = machine_busy()
                load = await notify.write_load(server.url, lines, token, self.args.connections, self.args.duration)
                busy_after, total_after = machine_busy()
                waited = await notify.wait_delivered(receiver, set(load.answered), self.args.notify_drain)
                cpu_server = server.cpu_seconds() - cpu_server
                cpu_workers = sum(w.cpu_seconds() for w in workers) - cpu_workers
                committed = await _committed(dsn, first_seq)
                state = await asyncio.to_thread(_subscription_status, server.url, token, subscription)
                delivery_state = await _delivery_state(dsn, subscription)
        row = notify.latency_report(receiver, load, committed, waited)
        row.update({"subscription_status_after": state, "delivery_state_after": delivery_state,
                    "criteria": notify.CRITERIA,
                    "workers": self.args.notify_workers, "server_cpu_s": round(cpu_server, 2),
                    "worker_cpu_s": round(cpu_workers, 2),
                    "worker_cpu_us_per_notification": round(1e6 * cpu_workers / max(1, row["delivered"])),
                    "machine_busy_pct": round(100 * (busy_after - busy_before) / max(1.0, total_after - total_before),
                                              1),
                    "machine_busy_before_pct": round(100 * idle, 1)})
        out["notify"] = row
        resp, stamp = row["from_response"], row["from_last_updated"]
        print(f"  notifications {row['delivered']:,}/{row['expected']:,} delivered ({row['duplicates']} duplicates)"
              f" of {row['write_rps']:,.0f} writes/s; latency from the write's answer p50 {resp['p50_ms']} ms p99 "
              f"{resp['p99_ms']} ms (from meta.lastUpdated p50 {stamp['p50_ms']} ms p99 {stamp['p99_ms']} ms); "
              f"Subscription {state} (delivery state {delivery_state})", flush=True)
        if row["missing"]:
            print(f"  WARNING: {row['missing']} notifications did not arrive within {self.args.notify_drain:.0f} s "
                  f"of the load's end", flush=True)

    async def _export(self, n: int, url: str, out: dict[str, Any]) -> None:
        """System-level ``$export`` as the bench's backend client (the regional clinic, which may
        read every synthetic agreement), every file downloaded and counted; and the database's
        COPY of the same rows (``bench.export``), before and after it: the best of the two is
        the baseline."""
        dsn = asyncpg_dsn(url)
        in_database = await export.resource_types(dsn)
        types = sorted(in_database)
        root = Path(self.args.server_root)
        print(f"[{n:,}] export: GET /fhir/$export (Prefer: respond-async) as the regional clinic's backend client, "
              f"beside COPY of the same rows ({sum(in_database.values()):,} resources in the database)", flush=True)
        copies = [await export.copy_rate(dsn, types)]
        with contextlib.ExitStack() as stack:
            # The job runs in the API process (PK_EXPORT_POLL_INTERVAL); no worker is needed.
            server = stack.enter_context(patientkontrakt_server(url, self.args.workers, self.signing_key, root))
            idle = self._quiet()
            cpu_server = server.cpu_seconds()
            try:
                result = await export.run_export(server.url, self.token(server) or "", poll=self.args.export_poll,
                                                 timeout=self.args.export_timeout, report_every=60.0)
            except export.ExportFailed as failed:
                # Reported, and the rest of the run kept (the server stops with the job).
                print(f"  export FAILED: {failed}", flush=True)
                out["export"] = {"error": str(failed)[:2000]}
                return
            cpu_server = server.cpu_seconds() - cpu_server
        exported_types = sorted(result.by_type)
        if exported_types != types:  # the first COPY was of other rows: not a baseline
            copies = [await export.copy_rate(dsn, exported_types)]
        copies.append(await export.copy_rate(dsn, exported_types))
        best = max(copies, key=lambda c: c.per_second)
        row = result.as_dict()
        row.update({
            "server_cpu_s": round(cpu_server, 2),
            "server_cpu_us_per_resource": round(1e6 * cpu_server / max(1, result.resources), 1),
            "machine_busy_before_pct": round(100 * idle, 1),
            "in_database": {t: in_database.get(t, 0) for t in exported_types},
            "not_exported_types": [t for t in types if t not in result.by_type],
            "manifest_counts": result.manifest_counts,
            "copy": best.as_dict(), "copy_runs": [c.as_dict() for c in copies],
            "copy_rows_match": best.rows == result.resources,
            "vs_copy": round(result.per_second / best.per_second, 4) if best.per_second else None,
        })
        out["export"] = row
        print(f"  export {result.resources:,} resources in {result.files} files, {result.bytes / 1e6:,.0f} MB, "
              f"{result.seconds:.1f} s ({result.seconds_to_complete:.1f} s to the manifest): "
              f"{result.per_second:,.0f} resources/s; COPY of the same rows {best.rows:,} in {best.seconds:.1f} s: "
              f"{best.per_second:,.0f} resources/s (export {row['vs_copy']:.1%} of COPY)", flush=True)
        if not row["copy_rows_match"]:
            print(f"  NOTE: the export returned {result.resources:,} resources, the COPY {best.rows:,} rows "
                  f"(by type: export {result.by_type}, database {row['in_database']})", flush=True)

    async def _db_baselines(self, n: int, url: str, out: dict[str, Any]) -> None:
        dsn = asyncpg_dsn(url)
        ids = [line[1].rsplit("/", 1)[1] for line in SCENARIOS["read"].lines(n)]
        bodies = [_body_text(i) for i in range(min(n, 200))]
        connections = self.args.connections
        print(f"[{n:,}] baseline: raw asyncpg loops, {connections} connections, no HTTP", flush=True)
        out["baselines"]["db_select"] = await self.measure_db(
            "baseline: asyncpg SELECT", lambda d: dbloops.select_loop(dsn, ids, connections, d))
        out["baselines"]["db_insert"] = await self.measure_db(
            "baseline: asyncpg INSERT", lambda d: dbloops.insert_loop(dsn, bodies, connections, d))


def _subscribe(base_url: str, token: str | None, endpoint: str) -> str:
    """Create the bench's rest-hook Subscription; its id."""
    headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json",
               **({"Authorization": f"Bearer {token}"} if token else {})}
    body = notify.subscription(endpoint)
    response = httpx.post(f"{base_url}/fhir/Subscription", content=orjson.dumps(body), headers=headers, timeout=30.0)
    if response.status_code != 201:
        raise RuntimeError(f"creating the Subscription: {response.status_code}\n{response.text[:2000]}")
    return str(response.json()["id"])


async def _wait_active(dsn: str, id_: str, timeout: float = 60.0) -> None:
    """Wait for the handshake: the Subscription's delivery state ``active`` (what the worker
    delivers by), or fail with the state it is in."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while True:
            row = await conn.fetchrow("SELECT status, error FROM subscription WHERE res_id = $1", id_)
            status = row["status"] if row else None
            if status == "active":
                return
            if status in ("error", "off") or time.monotonic() > deadline:
                raise RuntimeError(f"Subscription/{id_} is {status!r}, not active ({row['error'] if row else ''})")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


def _subscription_status(base_url: str, token: str | None, id_: str) -> str:
    headers = {"Accept": "application/fhir+json", **({"Authorization": f"Bearer {token}"} if token else {})}
    response = httpx.get(f"{base_url}/fhir/Subscription/{id_}", headers=headers, timeout=30.0)
    return str(response.json().get("status")) if response.status_code == 200 else f"HTTP {response.status_code}"


async def _delivery_state(dsn: str, id_: str) -> str | None:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval("SELECT status FROM subscription WHERE res_id = $1", id_)
        return None if value is None else str(value)
    finally:
        await conn.close()


async def _max_seq(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM resource_version"))
    finally:
        await conn.close()


async def _committed(dsn: str, after_seq: int) -> dict[notify.Key, datetime]:
    """``last_updated`` of every version written after ``after_seq`` (stamped before its commit)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT res_type, res_id, version_id, last_updated FROM resource_version "
                                "WHERE seq > $1", after_seq)
    finally:
        await conn.close()
    return {(r["res_type"], r["res_id"], r["version_id"]): r["last_updated"] for r in rows}


async def _standby_transactions(replica_url: str, database: str) -> int:
    """Transactions the standby has run on ``database`` (its own statistics: what it answered)."""
    conn = await asyncpg.connect(asyncpg_dsn(pooler.replica_url(replica_url, database)))
    try:
        return int(await conn.fetchval("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                       "WHERE datname = $1", database) or 0)
    finally:
        await conn.close()


async def _drain_outbox(conn: asyncpg.Connection, timeout: float) -> float:
    """Wait up to ``timeout`` s for the worker to deliver every pending notification; the
    seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if not await conn.fetchval("SELECT count(*) FROM subscription_outbox WHERE delivered IS NULL"):
            break
        await asyncio.sleep(0.2)
    return round(time.perf_counter() - started, 2)


def _body(line: tuple[str, str, str]) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(line[2].replace("__REV__", "check"))
    return data


def _body_text(i: int) -> str:
    return orjson.dumps(synthetic.care_plan(i)).decode()


def _first_line(path: Path) -> tuple[str, str, str]:
    method, target, body = path.read_text(encoding="utf-8").split("\n", 1)[0].split("\t", 2)
    return method, target, body


def _row(result: LoadResult, *, server_cpu: float | None, busy: float, busy_before: float) -> dict[str, Any]:
    row = result.as_dict()
    seconds = result.seconds or 1.0
    done = max(1, result.requests - result.errors)
    row["client_cpu_pct"] = round(100 * result.client_cpu_s / seconds, 1)
    row["server_cpu_s"] = None if server_cpu is None else round(server_cpu, 2)
    row["server_cpu_pct"] = None if server_cpu is None else round(100 * server_cpu / seconds, 1)
    row["server_cpu_us_per_req"] = None if server_cpu is None else round(1e6 * server_cpu / done)
    row["machine_busy_pct"] = round(100 * busy, 1)
    row["machine_busy_before_pct"] = round(100 * busy_before, 1)
    return row


def _best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the highest throughput (interference only ever slows a round down)."""
    best = dict(max(rounds, key=lambda r: r["rps"]))
    best["rounds"] = [{k: r[k] for k in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req")} for r in rounds]
    return best


def _command() -> str:
    return shlex.join(getattr(sys, "orig_argv", sys.argv))


def _sizes(text: str) -> list[int]:
    values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    for value in values:
        if not 1 <= value <= MAX_AGREEMENTS:
            raise argparse.ArgumentTypeError(f"sizes must be between 1 and {MAX_AGREEMENTS:,}")
    return values


def _agreements(text: str) -> int:
    return _sizes(text)[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load synthetic Patientkontrakt agreements into PostgreSQL and measure a live server "
                    "against a bare FastAPI app and raw asyncpg (see docs/performance.md).",
    )
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql",
                        help="postgresql (default), or sqlite: the embedded default, read and create against a "
                             "bare FastAPI route on the same SQLite file (bench/embedded.py)")
    parser.add_argument("--agreements", type=_agreements, default=None,
                        help="agreements (11 resources each) for the full run, up to 1,000,000 (default 10,000; "
                             f"{embedded.DEFAULT_AGREEMENTS:,} with --database sqlite)")
    parser.add_argument("--scales", type=_sizes, default=[],
                        help="comma-separated sizes at which to run the search scenario too, for the growth "
                             "check (e.g. 10000,100000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each (default 2)")
    parser.add_argument("--connections", type=int, default=10,
                        help="concurrent connections of the load generator and the DB loops (default 10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of read vs the bare FastAPI baseline; the best of each is "
                             "reported (default 3)")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="before each measurement wait up to this many seconds for the machine to be "
                             f"under {QUIET_BELOW * 100:.0f}%% busy (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers for both servers (default 1)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk (installed with apt-get if missing) or the Python httpx client")
    parser.add_argument("--scenarios", type=lambda s: [x for x in s.split(",") if x], default=ALL_SCENARIOS,
                        help=f"comma-separated subset of {','.join(ALL_SCENARIOS)} (notify: notification latency "
                             "under the write load at the main size; export: $export and COPY at --export-agreements)")
    parser.add_argument("--export-agreements", type=_agreements, default=100_000,
                        help="size of the export scenario's database (default 100,000 agreements: 1.1 M resources; "
                             "loaded once, like every size, and reused while its fingerprint matches)")
    parser.add_argument("--export-poll", type=float, default=0.5,
                        help="poll the export's status at Retry-After, but at least this often (s, default 0.5)")
    parser.add_argument("--export-timeout", type=float, default=1800.0,
                        help="give up on an export after this many seconds (default 1800)")
    parser.add_argument("--notify-workers", type=int, default=1,
                        help="patientkontrakt worker processes beside the server for notify (default 1)")
    parser.add_argument("--notify-drain", type=float, default=60.0,
                        help="after the write load, wait up to this many seconds for the last notifications "
                             "(default 60)")
    parser.add_argument("--mixed-agreements", type=_agreements, default=None,
                        help="size of the mixed workload's database (default: --agreements; the issue's figure "
                             "is 100,000)")
    parser.add_argument("--mixed-workers", type=int, default=2,
                        help="server processes for the mixed workload, and the second count of read-workers "
                             "(default 2)")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                        help="run only the mixed workload, for this many seconds, with a line every "
                             "--soak-interval s (req/s, p99, errors, server RSS, database connections, outbox "
                             "depth); exit 1 on any error or on RSS growth beyond --soak-rss-growth (make soak)")
    parser.add_argument("--soak-interval", type=float, default=30.0, help="seconds per soak line (default 30)")
    parser.add_argument("--soak-rss-growth", type=float, default=0.25,
                        help="largest allowed growth of the server's and the worker's resident memory from the "
                             "first soak line to the last, as a fraction (default 0.25)")
    parser.add_argument("--pgbouncer", action="store_true",
                        help="also measure read by id on a server behind a private PgBouncer (Debian's package, "
                             "transaction mode; PK_DATABASE_PGBOUNCER), in rounds with one connected directly")
    parser.add_argument("--replica-url", default=None,
                        help="a hot standby of --database-url's cluster (any database): also measure the search "
                             "on a server with PK_DATABASE_REPLICA_URL, in rounds with one without")
    parser.add_argument("--sqlite-dir", default=str(embedded.DEFAULT_DIR),
                        help="--database sqlite: where the loaded SQLite files are kept for reuse "
                             f"(default {embedded.DEFAULT_DIR})")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL,
                        help=f"PostgreSQL server and maintenance database (default {DEFAULT_ADMIN_URL})")
    parser.add_argument("--server-root", default=str(PROJECT_ROOT),
                        help="run `patientkontrakt serve` from this source tree (e.g. an older checkout, for "
                             "before/after comparisons; default: this one)")
    parser.add_argument("--compare-root", default=None,
                        help="also measure read by id on a server run from this source tree, in the same "
                             "interleaved rounds (before/after comparisons)")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="loader processes (default: nproc)")
    parser.add_argument("--reload", action="store_true", help="reload even if a loaded database matches")
    parser.add_argument("--keep", action="store_true", help="keep the run database (pk_bench_<N>_run)")
    parser.add_argument("--database-prefix", default=DEFAULT_PREFIX,
                        help=f"name the databases <prefix>_<N> and <prefix>_<N>_run (default {DEFAULT_PREFIX}; "
                             "another one keeps a second checkout from replacing this one's)")
    parser.add_argument("--output", default=str(PROJECT_ROOT / "bench" / "results"), help="results directory")
    return parser


async def run(args: argparse.Namespace) -> dict[str, Any]:
    unknown = [s for s in args.scenarios if s not in ALL_SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; choose from {ALL_SCENARIOS}")
    if args.agreements is None:
        args.agreements = embedded.DEFAULT_AGREEMENTS if args.database == "sqlite" else 10_000
    if args.database == "sqlite":
        return await _run_sqlite(args)
    if args.soak:
        args.scenarios = ["mixed"]
    mixed_n = args.mixed_agreements or args.agreements
    bench = Bench(args)
    bench.output.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "command": _command(),
        "started": started.isoformat(timespec="seconds"),
        "machine": await report.machine_info(asyncpg_dsn(args.database_url),
                                             wrk_version(bench.wrk) if bench.wrk else None),
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "connections": args.connections,
                     "rounds": args.rounds, "quiet_wait_s": args.quiet_wait,
                     "export_agreements": args.export_agreements, "export_poll_s": args.export_poll,
                     "notify_workers": args.notify_workers, "server_root": args.server_root,
                     "compare_root": args.compare_root,
                     "wrk_threads": args.threads, "uvicorn_workers": args.workers,
                     "mixed_agreements": mixed_n, "mixed_workers": args.mixed_workers, "soak_s": args.soak,
                     "pgbouncer": args.pgbouncer, "replica_url": args.replica_url,
                     "client": "wrk" if bench.wrk else "python", "scenarios": args.scenarios},
        "agreements": args.agreements,
        "runs": {},
    }
    if args.soak:
        sizes = [mixed_n]
    else:
        sizes = list(dict.fromkeys([args.agreements, *args.scales,
                                    *([args.export_agreements] if "export" in args.scenarios else []),
                                    *([mixed_n] if "mixed" in args.scenarios else [])]))
    for n in sizes:
        results["runs"][str(n)] = await bench.run_size(
            n, full=(n == args.agreements and not args.soak),
            export=("export" in args.scenarios and n == args.export_agreements),
            mixed=("mixed" in args.scenarios and n == mixed_n))
    results["targets"] = report.targets(results["runs"], args.agreements)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    if args.soak:
        results["soak"] = results["runs"][str(mixed_n)].get("soak")
    path = bench.output / ("soak.json" if args.soak else "latest.json")
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print()
    for n in sizes:
        print(report.table(n, results["runs"][str(n)]))
        print()
    print(report.target_lines(results["targets"]))
    if results.get("soak"):
        print()
        print(report.soak_lines(results["soak"]))
    print(f"\nwrote {relative(path)}")
    shutil.rmtree(bench.workdir, ignore_errors=True)
    return results


async def _run_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    """``--database sqlite`` (bench/embedded.py): read and create at ``--agreements`` only."""
    skipped = [s for s in args.scenarios if s not in embedded.SQLITE_SCENARIOS]
    if skipped and args.scenarios != ALL_SCENARIOS:
        print(f"--database sqlite measures {', '.join(embedded.SQLITE_SCENARIOS)}; not {', '.join(skipped)}",
              flush=True)
    bench = Bench(args)
    bench.output.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": _command(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": await report.machine_info(None, wrk_version(bench.wrk) if bench.wrk else None),
        "settings": {"database": "sqlite", "duration_s": args.duration, "warmup_s": args.warmup,
                     "connections": args.connections, "rounds": args.rounds, "quiet_wait_s": args.quiet_wait,
                     "server_root": args.server_root, "wrk_threads": args.threads, "uvicorn_workers": args.workers,
                     "client": "wrk" if bench.wrk else "python",
                     "scenarios": [s for s in args.scenarios if s in embedded.SQLITE_SCENARIOS]},
        "agreements": args.agreements,
        "runs": {},
    }
    try:
        run = results["runs"][str(args.agreements)] = await embedded.run_size(bench, args.agreements)
    finally:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    results["targets"] = report.sqlite_targets(run)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    path = bench.output / "latest-sqlite.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print()
    print(report.table(args.agreements, run, engine="SQLite"))
    print()
    print(report.target_lines(results["targets"]))
    print(f"\nwrote {relative(path)}")
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = asyncio.run(run(args))
    if args.soak and (results.get("soak") or {}).get("failures", ["no soak summary"]):
        return 1
    return 0
