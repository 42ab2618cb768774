"""``python -m bench --database sqlite`` end to end, small and short: the SQLite file is loaded
with what the server stores (checked against its write path), the real service, the no-auth app
and the bare FastAPI route serve reads from the same file, the service answers creates, and what
the load generator counted is what the file holds afterwards (access log entries, CarePlans)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import embedded, runner, synthetic

AGREEMENTS = 20
CONNECTIONS = 2


async def test_sqlite_mode_reads_creates_and_logs(tmp_path: Path) -> None:
    args = runner.build_parser().parse_args([
        "--database", "sqlite", "--agreements", str(AGREEMENTS), "--duration", "1", "--warmup", "0",
        "--rounds", "1", "--quiet-wait", "0", "--connections", str(CONNECTIONS),
        "--sqlite-dir", str(tmp_path / "files"), "--output", str(tmp_path / "results"),
    ])
    results = await runner.run(args)
    run = results["runs"][str(AGREEMENTS)]

    loaded = run["database"]
    assert loaded["reused"] is False
    assert loaded["resources"] == AGREEMENTS * synthetic.RESOURCES_PER_AGREEMENT + len(synthetic.shared())
    assert loaded["writer_equivalence_index_rows"] > 0
    pristine = Path(loaded["database"])
    assert embedded.count_rows(pristine, "resource") == loaded["resources"]
    assert embedded.count_rows(pristine, "audit_log") == 0  # the runs wrote to a copy

    reads = [run["scenarios"]["read"], run["scenarios"]["read_noauth"], run["baselines"]["fastapi_read"]]
    for row in reads:
        assert row["requests"] > 0 and row["errors"] == 0, row
        assert row["server_cpu_us_per_req"] > 0
    # Every authenticated read (and the preflight) was logged; the others were not. A request
    # in flight when the load generator stopped was answered but not counted.
    read = run["scenarios"]["read"]["requests"]
    assert read + 1 <= run["access_events_after_reads"] <= read + 1 + CONNECTIONS

    create = run["scenarios"]["create"]
    assert create["requests"] > 0 and create["errors"] == 0, create
    assert create["requests"] + 1 <= run["created_careplans"] <= create["requests"] + 1 + CONNECTIONS

    assert run["ratios"]["read_vs_fastapi"] > 0
    assert results["targets"]["sqlite_read_vs_fastapi"]["value"] == run["ratios"]["read_vs_fastapi"]
    assert (tmp_path / "results" / "latest-sqlite.json").exists()

    # The loaded file is reused while its fingerprint matches.
    again, info = await embedded.prepare(argparse.Namespace(**{**vars(args), "scenarios": []}), AGREEMENTS,
                                         tmp_path)
    assert info["reused"] is True
    assert embedded.count_rows(again, "resource") == loaded["resources"]
