"""The benchmark's report checks issue 16's write targets against the figures of its own run."""

from __future__ import annotations

from typing import Any

from bench import report


def _run(create_us: int, update_us: int, transaction_us: int, create_rps: float, insert_rps: float) -> dict[str, Any]:
    def row(rps: float, cpu: int) -> dict[str, Any]:
        return {"rps": rps, "server_cpu_us_per_req": cpu, "p50_ms": 1.0, "p99_ms": 2.0}

    run: dict[str, Any] = {
        "scenarios": {"create": row(create_rps, create_us), "update": row(create_rps / 2, update_us),
                      "transaction": row(10, transaction_us)},
        "baselines": {"db_insert": {"rps": insert_rps}},
    }
    run["ratios"] = report.ratios(run)
    return run


def test_write_targets_are_met_at_their_limits_and_not_beyond() -> None:
    met = report.targets({"10000": _run(3_000, 2_999, 20_000, 1_000, 10_000)}, 10_000)
    assert [met[k]["met"] for k in ("create_cpu_us", "update_cpu_us", "transaction_cpu_us", "create_vs_db_insert")] \
        == [True, True, True, True]
    assert met["update_vs_db_insert"] == {"target": ">= 10% of the raw asyncpg INSERTs/s", "value": 0.05,
                                          "met": False}
    missed = report.targets({"10000": _run(3_001, 3_915, 20_001, 300, 8_667)}, 10_000)
    assert [missed[k]["met"] for k in ("create_cpu_us", "update_cpu_us", "transaction_cpu_us",
                                       "create_vs_db_insert")] == [False, False, False, False]
    assert missed["create_vs_db_insert"]["value"] == 0.035
