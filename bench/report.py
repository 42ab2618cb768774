"""Machine facts, target checks, the printed table and ``bench/results/latest.json``."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import asyncpg

TARGET_READ_RATIO = 0.70
TARGET_SQLITE_READ_RATIO = 0.50  # issue 16: authenticated reads on SQLite, of the bare route on the same file
TARGET_SEARCH_P99_MS = 50.0
# issue 16: the server's CPU per write (srv us/req) and a write's throughput against raw INSERTs
TARGET_WRITE_CPU_US = {"create": 3_000, "update": 3_000, "transaction": 20_000}
TARGET_WRITE_VS_INSERT = 0.10
TARGET_SEARCH_GROWTH = 2.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def machine_info(dsn: str | None, wrk: str | None) -> dict[str, Any]:
    """The machine, the software and (with ``dsn``) PostgreSQL's version and settings; without
    ``dsn`` (``--database sqlite``) SQLite's version instead."""
    pg_version: str | None = None
    settings: dict[str, Any] = {}
    if dsn is not None:
        conn = await asyncpg.connect(dsn)
        try:
            pg_version = await conn.fetchval("SELECT version()")
            settings = {name: await conn.fetchval(f"SHOW {name}") for name in
                        ("shared_buffers", "work_mem", "effective_cache_size", "max_connections",
                         "synchronous_commit")}
        finally:
            await conn.close()
    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), "0")
    import fastapi
    import uvicorn

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(int(memory) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "postgresql_settings": settings,
        "sqlite": sqlite3.sqlite_version,
        "uvicorn": uvicorn.__version__,
        "fastapi": fastapi.__version__,
        "load_generator": wrk or "python httpx client",
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def ratios(run: dict[str, Any]) -> dict[str, float]:
    ours, base = run.get("scenarios", {}), run.get("baselines", {})
    out: dict[str, float] = {}
    pairs = (("read_vs_fastapi", "read", "fastapi_read"), ("read_compare_vs_fastapi", "read_compare", "fastapi_read"),
             ("read_noauth_vs_fastapi", "read_noauth", "fastapi_read"),
             ("read_vs_db_select", "read", "db_select"),
             ("create_vs_db_insert", "create", "db_insert"),
             ("update_vs_db_insert", "update", "db_insert"))
    for key, mine, theirs in pairs:
        if mine in ours and theirs in base and base[theirs]["rps"]:
            out[key] = round(ours[mine]["rps"] / base[theirs]["rps"], 3)
    if run.get("export", {}).get("vs_copy") is not None:
        out["export_vs_copy"] = run["export"]["vs_copy"]
    out.update(mixed_ratios(run))
    for key, mine, theirs in (("read_pgbouncer_vs_direct", "read_pgbouncer", "read_direct"),
                              ("search_replica_vs_direct", "search_replica", "search_direct")):
        if mine in ours and theirs in ours and ours[theirs]["rps"]:
            out[key] = round(ours[mine]["rps"] / ours[theirs]["rps"], 3)
    one, two = ours.get("read_workers_1"), ours.get("read_workers_2")
    if one and two and one["rps"]:
        out["read_2_workers_vs_1"] = round(two["rps"] / one["rps"], 3)
    if "read" in ours and "read_noauth" in ours and ours["read_noauth"]["rps"]:
        out["read_auth_vs_noauth"] = round(ours["read"]["rps"] / ours["read_noauth"]["rps"], 3)
    # The consent scenarios against the same requests without the Consents (bench/scenarios.py):
    # throughput, and the server's CPU per request (> 1: the Consents cost CPU).
    for mine, theirs in CONSENT_BASELINES.items():
        if mine in ours and theirs in ours and ours[theirs]["rps"]:
            out[f"{mine}_vs_{theirs}"] = round(ours[mine]["rps"] / ours[theirs]["rps"], 3)
            cpu, base_cpu = ours[mine].get("server_cpu_us_per_req"), ours[theirs].get("server_cpu_us_per_req")
            if cpu and base_cpu:
                out[f"{mine}_vs_{theirs}_cpu_per_req"] = round(cpu / base_cpu, 3)
    return out


def mixed_ratios(run: dict[str, Any]) -> dict[str, float]:
    """The mixed workload against the baselines of the same run: its throughput against the bare
    FastAPI read on as many processes and against raw asyncpg SELECTs, the resources it wrote
    per second (an update writes one, a transaction ten) against raw INSERTs, and its latencies
    (overall and of its reads) as multiples of the bare FastAPI read's."""
    row, base = run.get("mixed"), run.get("baselines", {})
    if not row:
        return {}
    out: dict[str, float] = {}
    fastapi = base.get("fastapi_read_mixed")
    if fastapi and fastapi["rps"]:
        out["mixed_vs_fastapi"] = round(row["rps"] / fastapi["rps"], 3)
        for label, mine in (("mixed", row), ("mixed_read", row["kinds"]["read"])):
            for q in ("p50", "p99"):
                if fastapi[f"{q}_ms"]:
                    out[f"{label}_{q}_vs_fastapi"] = round(mine[f"{q}_ms"] / fastapi[f"{q}_ms"], 2)
    if base.get("db_select", {}).get("rps"):
        out["mixed_vs_db_select"] = round(row["rps"] / base["db_select"]["rps"], 4)
    if base.get("db_insert", {}).get("rps"):
        written = row["kinds"]["update"]["rps"] + TRANSACTION_RESOURCES * row["kinds"]["transaction"]["rps"]
        out["mixed_writes_vs_db_insert"] = round(written / base["db_insert"]["rps"], 4)
    return out


TRANSACTION_RESOURCES = 10  # synthetic.TRANSACTION_ENTRIES


CONSENT_BASELINES = {"read_control": "read", "search_control": "search",
                     "read_samtycke": "read_control", "search_samtycke": "search_control",
                     "read_sparr": "read_control", "search_sparr": "search_control"}


def targets(runs: dict[str, dict[str, Any]], main_n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    main = runs.get(str(main_n), {})
    for key, target in (("read_noauth_vs_fastapi", "of the bare FastAPI req/s (no auth, core issue)"),
                        ("read_auth_vs_noauth", "of the no-auth read req/s (auth + access log)"),
                        ("read_vs_fastapi", "of the bare FastAPI req/s (as deployed)")):
        value = main.get("ratios", {}).get(key)
        if value is not None:
            out[key] = {"target": f">= {TARGET_READ_RATIO:.0%} {target}", "value": value,
                        "met": value >= TARGET_READ_RATIO}
    for n, run in runs.items():
        if run.get("mixed"):
            errors = run["mixed"]["errors"]
            out[f"mixed_errors_at_{n}"] = {"target": "0 errors (mixed workload)", "value": errors,
                                           "met": errors == 0}
    value = main.get("ratios", {}).get("read_2_workers_vs_1")
    if value is not None:
        out["read_2_workers_vs_1"] = {"target": ">= 1.0 (2 processes vs 1, authenticated read)", "value": value,
                                      "met": value >= 1.0}
    scenarios = main.get("scenarios", {})
    for kind, limit in TARGET_WRITE_CPU_US.items():
        cpu = scenarios.get(kind, {}).get("server_cpu_us_per_req")
        if cpu is not None:
            out[f"{kind}_cpu_us"] = {"target": f"<= {limit:,} us of server CPU per request", "value": cpu,
                                     "met": cpu <= limit}
    for kind in ("create", "update"):
        value = main.get("ratios", {}).get(f"{kind}_vs_db_insert")
        if value is not None:
            out[f"{kind}_vs_db_insert"] = {"target": f">= {TARGET_WRITE_VS_INSERT:.0%} of the raw asyncpg INSERTs/s",
                                           "value": value, "met": value >= TARGET_WRITE_VS_INSERT}
    at_10k = runs.get("10000", {}).get("scenarios", {})
    for key, label in (("search", "search_p99_at_10000"), ("search_1conn", "search_p99_at_10000_1conn")):
        if key in at_10k:
            value = at_10k[key]["p99_ms"]
            out[label] = {"target": f"< {TARGET_SEARCH_P99_MS:.0f} ms", "value": value,
                          "met": value < TARGET_SEARCH_P99_MS}
    for key in ("search", "search_1conn"):
        sizes = sorted(int(n) for n, run in runs.items() if key in run.get("scenarios", {}))
        if len(sizes) < 2:
            continue
        first = runs[str(sizes[0])]["scenarios"][key]
        for n in sizes[1:]:
            other = runs[str(n)]["scenarios"][key]
            growth = {
                "p50": round(other["p50_ms"] / first["p50_ms"], 2) if first["p50_ms"] else None,
                "p99": round(other["p99_ms"] / first["p99_ms"], 2) if first["p99_ms"] else None,
                "1/throughput": round(first["rps"] / other["rps"], 2) if other["rps"] else None,
            }
            values = [v for v in growth.values() if v is not None]
            out[f"{key}_growth_{sizes[0]}_to_{n}"] = {
                "target": f"< {TARGET_SEARCH_GROWTH:.0f}x",
                "value": growth,
                "met": bool(values) and all(v < TARGET_SEARCH_GROWTH for v in values),
            }
    return out


def sqlite_targets(run: dict[str, Any]) -> dict[str, Any]:
    """``--database sqlite``: authenticated reads against the bare FastAPI route on the same file."""
    value = run.get("ratios", {}).get("read_vs_fastapi")
    if value is None:
        return {}
    return {"sqlite_read_vs_fastapi": {
        "target": f">= {TARGET_SQLITE_READ_RATIO:.0%} of the bare FastAPI req/s on SQLite (as deployed)",
        "value": value, "met": value >= TARGET_SQLITE_READ_RATIO}}


_ROWS = (
    ("scenarios", "read", "read CarePlan/{id}", "fastapi_read"),
    ("scenarios", "read_noauth", "read, no auth/access log", "fastapi_read"),
    ("scenarios", "read_compare", "read, --compare-root", "fastapi_read"),
    ("scenarios", "search", "search ?patient&_include", None),
    ("scenarios", "search_1conn", "search, 1 connection", None),
    ("scenarios", "read_control", "read, again (control)", "read"),
    ("scenarios", "search_control", "search, again (control)", "search"),
    ("scenarios", "read_samtycke", "read, other provider+samtycke", "read_control"),
    ("scenarios", "search_samtycke", "search, other prov.+samtycke", "search_control"),
    ("scenarios", "read_sparr", "read, inre spärr elsewhere", "read_control"),
    ("scenarios", "search_sparr", "search, inre spärr elsewhere", "search_control"),
    ("scenarios", "create", "create CarePlan", "db_insert"),
    ("scenarios", "update", "update CarePlan", None),
    ("scenarios", "transaction", "transaction (10 entries)", None),
    ("scenarios", "read_workers_1", "read, 1 server process", None),
    ("scenarios", "read_workers_2", "read, 2 server processes", None),
    ("scenarios", "read_direct", "read, primary (vs PgBouncer)", None),
    ("scenarios", "read_pgbouncer", "read through PgBouncer", None),
    ("scenarios", "search_direct", "search, primary (vs replica)", None),
    ("scenarios", "search_replica", "search, replica answering", None),
    ("baselines", "fastapi_read", "baseline: bare FastAPI read", None),
    ("baselines", "fastapi_read_mixed", "baseline: FastAPI, mixed procs", None),
    ("baselines", "db_select", "baseline: asyncpg SELECT", None),
    ("baselines", "db_insert", "baseline: asyncpg INSERT", None),
)


def table(n: int, run: dict[str, Any], engine: str = "PostgreSQL") -> str:
    lines = [
        f"N = {n:,} agreements ({run.get('resources', 0):,} resources loaded) on {engine}",
        f"{'scenario':<30} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>8} {'vs baseline':>26} {'errors':>6}"
        f" {'srv CPU':>7} {'srv us/req':>10} {'client CPU':>10}",
    ]
    for group, key, label, baseline in _ROWS:
        row = run.get(group, {}).get(key)
        if row is None:
            continue
        ratio = ""
        if baseline in CONSENT_BASELINES.values():
            mine = run.get("scenarios", {}).get(baseline)
            if mine and mine["rps"]:
                ratio = f"{row['rps'] / mine['rps']:.0%} of {'control' if baseline.endswith('_control') else baseline}"
                if row.get("server_cpu_us_per_req") and mine.get("server_cpu_us_per_req"):
                    ratio += f", {row['server_cpu_us_per_req'] / mine['server_cpu_us_per_req']:.2f}x us"
        elif baseline and baseline in run.get("baselines", {}) and run["baselines"][baseline]["rps"]:
            ratio = f"{row['rps'] / run['baselines'][baseline]['rps']:.0%}"
            ratio += " of FastAPI" if baseline == "fastapi_read" else " of INSERT"
        server = f"{row['server_cpu_pct']:.0f}%" if row.get("server_cpu_pct") is not None else "-"
        per_request = f"{row['server_cpu_us_per_req']:,}" if row.get("server_cpu_us_per_req") is not None else "-"
        client = f"{row['client_cpu_pct']:.0f}%"
        lines.append(f"{label:<30} {row['rps']:>8,.0f} {row['p50_ms']:>7.2f} {row['p99_ms']:>8.2f} {ratio:>26}"
                     f" {row['errors']:>6} {server:>7} {per_request:>10} {client:>10}")
    for key in ("pgbouncer", "replica"):
        if "error" in run.get(key, {}):
            lines.append(f"{key}: not measured: {run[key]['error']}")
    ours = run.get("scenarios", {})
    for mine, theirs, label in (("read_pgbouncer", "read_direct", "read through PgBouncer"),
                                ("search_replica", "search_direct", "search with the replica answering")):
        if mine in ours and theirs in ours and ours[theirs]["rps"]:
            lines.append(f"{label}: {ours[mine]['rps'] / ours[theirs]['rps']:.0%} of the direct server's req/s, "
                         f"p99 {ours[mine]['p99_ms']} ms against {ours[theirs]['p99_ms']} ms")
    lines.extend(notify_lines(run.get("notify")))
    if run.get("mixed"):
        lines.append(mixed_lines(run["mixed"], run.get("ratios")))
    lines.extend(export_lines(run.get("export")))
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def notify_lines(row: dict[str, Any] | None) -> list[str]:
    """The notification latency rows (bench/notify.py): commit → arrival at the receiver."""
    if not row:
        return []
    answer, stamp = row["from_response"], row["from_last_updated"]
    return [
        f"notifications under update+create ({row['write_rps']:,.0f} writes/s, {row['workers']} worker(s)): "
        f"{row['delivered']:,} of {row['expected']:,} delivered, {row['duplicates']} duplicates, "
        f"{row['missing']} missing",
        f"  {'latency from the write':<28} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
        f"  {'answer (lower bound)':<28} {_ms(answer['p50_ms']):>8} {_ms(answer['p99_ms']):>8} "
        f"{_ms(answer['max_ms']):>8}",
        f"  {'meta.lastUpdated (upper)':<28} {_ms(stamp['p50_ms']):>8} {_ms(stamp['p99_ms']):>8} "
        f"{_ms(stamp['max_ms']):>8}",
    ]


def export_lines(row: dict[str, Any] | None) -> list[str]:
    """The export row (bench/export.py) and the COPY of the same rows beside it."""
    if not row:
        return []
    if "error" in row:
        return [f"{'$export':<30} failed: {row['error'][:200]}"]
    copy = row["copy"]
    ratio = "-" if row.get("vs_copy") is None else f"{row['vs_copy']:.1%}"
    lines = [
        f"{'$export, kick-off to last byte':<30} {row['resources_per_s']:>8,} resources/s  {row['resources']:,} "
        f"resources, {row['files']} files, {row['bytes'] / 1e6:,.0f} MB in {row['seconds']:,.1f} s "
        f"({row['seconds_to_complete']:,.1f} s to the manifest)  {ratio} of COPY",
        f"{'baseline: COPY of the same rows':<30} {copy['resources_per_s']:>8,} resources/s  {copy['resources']:,} "
        f"rows, {copy['bytes'] / 1e6:,.0f} MB in {copy['seconds']:,.1f} s",
    ]
    if not row.get("copy_rows_match", True):
        lines.append(f"  (the export returned {row['resources']:,} resources, the COPY {copy['resources']:,} rows)")
    return lines


def target_lines(checks: dict[str, Any]) -> str:
    lines = ["targets (checked, not asserted):"]
    for name, check in checks.items():
        mark = "met" if check["met"] else "NOT met"
        lines.append(f"  {name:<34} {check['target']:<38} value {check['value']}  -> {mark}")
    return "\n".join(lines)


def mixed_lines(row: dict[str, Any], ratios: dict[str, float] | None) -> str:
    """The mixed workload (bench/mixed.py): overall and per kind, and its ratios to the baselines."""
    mix = ", ".join(f"{share} % {kind}" for kind, share in row["mix"].items())
    lines = [f"mixed workload at N = {row['agreements']:,} ({mix}), {row['workers']} server process(es) and the "
             f"notification worker, {row['connections']} connections: {row['errors']} errors",
             f"  {'kind':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'share':>6} {'errors':>6}"]
    rows = [("all", row, 100.0)] + [(kind, row["kinds"][kind], row["mix_pct"][kind]) for kind in row["kinds"]]
    for label, figures, share in rows:
        lines.append(f"  {label:<28} {figures['rps']:>8,.1f} {figures['p50_ms']:>8.2f} {figures['p99_ms']:>8.2f} "
                     f"{share:>5.1f}% {figures['errors']:>6}")
    lines.append(f"  server {row['server_cpu_pct']:.0f}% CPU ({row['server_cpu_us_per_req']:,} us/req), worker "
                 f"{row['worker_cpu_s']:.1f} s CPU, client {row['client_cpu_pct']:.0f}%; "
                 f"{row['notifications_received']:,} notifications received, outbox "
                 f"{row['outbox_depth_after_drain']} pending after {row['outbox_drain_s']} s")
    if row["error_detail"]:
        lines.append(f"  errors: {row['error_detail']}")
    shown = {k: v for k, v in (ratios or {}).items() if k.startswith("mixed")}
    if shown:
        lines.append("  vs baselines: " + ", ".join(f"{k.removeprefix('mixed_')} {v}" for k, v in shown.items()))
    return "\n".join(lines)


def soak_summary(row: dict[str, Any], windows: list[dict[str, Any]], gauges: list[dict[str, Any]],
                 rss_growth: float) -> dict[str, Any]:
    """The soak's verdict: every window's figures, memory from the first line to the last (the
    first comes after a warm-up and one interval of load), and ``failures`` (empty: passed)."""
    from bench.mixed import slope_per_minute

    out: dict[str, Any] = {"requests": row["requests"], "errors": row["errors"], "rps": row["rps"],
                           "p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"], "windows": windows,
                           "rss_growth_bound": rss_growth}
    failures = []
    if row["errors"]:
        failures.append(f"{row['errors']} errors: {row['error_detail']}")
    for name in ("server_rss_mib", "worker_rss_mib"):
        values = [g[name] for g in gauges]
        if len(values) < 2 or not values[0]:
            continue
        growth = values[-1] / values[0] - 1
        out[name] = {"first": values[0], "last": values[-1], "max": max(values), "growth": round(growth, 3),
                     "mib_per_minute": round(slope_per_minute([(g["elapsed_s"], g[name]) for g in gauges]) or 0.0, 2)}
        if growth > rss_growth:
            failures.append(f"{name.removesuffix('_mib').replace('_', ' ')} grew {growth:.0%} "
                            f"({values[0]:,.0f} -> {values[-1]:,.0f} MiB), more than {rss_growth:.0%}")
    for name in ("db_connections", "outbox_depth"):
        values = [g[name] for g in gauges]
        if values:
            out[name] = {"first": values[0], "last": values[-1], "max": max(values)}
    if len(windows) >= 2:
        p99 = [w["p99_ms"] for w in windows]
        rps = [w["rps"] for w in windows]
        out["p99_ms_first_last"] = [p99[0], p99[-1]]
        out["rps_first_last"] = [rps[0], rps[-1]]
    out["failures"] = failures
    return out


def soak_lines(soak: dict[str, Any]) -> str:
    lines = [f"soak: {soak['requests']:,} requests, {soak['rps']:,.1f} req/s, p50 {soak['p50_ms']} ms, "
             f"p99 {soak['p99_ms']} ms, {soak['errors']} errors"]
    for name in ("server_rss_mib", "worker_rss_mib"):
        if name in soak:
            m = soak[name]
            lines.append(f"  {name.removesuffix('_mib').replace('_', ' ')}: {m['first']:,.0f} -> {m['last']:,.0f} MiB "
                         f"(max {m['max']:,.0f}, {m['growth']:+.1%}, {m['mib_per_minute']:+.2f} MiB/min)")
    for name in ("db_connections", "outbox_depth"):
        if name in soak:
            m = soak[name]
            lines.append(f"  {name.replace('_', ' ')}: first {m['first']}, last {m['last']}, max {m['max']}")
    if "p99_ms_first_last" in soak:
        (p99_first, p99_last), (rps_first, rps_last) = soak["p99_ms_first_last"], soak["rps_first_last"]
        lines.append(f"  first and last window: p99 {p99_first} -> {p99_last} ms, {rps_first} -> {rps_last} req/s")
    lines.append("  PASSED" if not soak["failures"] else "  FAILED: " + "; ".join(soak["failures"]))
    return "\n".join(lines)
