"""The alerting rules (deploy/prometheus/alerts.yaml) with Prometheus's own ``promtool``
(Debian's ``prometheus`` package, which ``make test`` installs): the file loads, each alert fires
on the series that should raise it and stays quiet on a healthy deployment
(tests/deploy/prometheus/alerts_test.yaml), every alert has such a case, and every metric a rule
names is one the service exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from patientkontrakt.config import PROJECT_ROOT
from patientkontrakt.metrics import Snapshot, exposition

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yaml"
CASES = Path(__file__).parent / "prometheus" / "alerts_test.yaml"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable).parent))
    assert tool, "promtool is missing: `make test` takes it out of Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_the_rules_load() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_each_alert_fires_when_it_should_and_only_then() -> None:
    tested = promtool("test", "rules", str(CASES))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    checks = [check for test in yaml.safe_load(CASES.read_text())["tests"] for check in test["alert_rule_test"]]
    fired = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    alerts = {rule["alert"] for rule in rules()}
    assert alerts - fired == set(), "alerts never shown to fire"
    assert alerts - quiet == set(), "alerts never shown to stay quiet"
    assert (fired | quiet) - alerts == set(), "cases for alerts the rules do not have"


def test_every_metric_the_rules_name_is_exposed() -> None:
    """Against the exposition itself, with every figure from the database present."""
    found = Snapshot(outbox_pending=1, outbox_oldest_age=1.0, subscriptions={"error": 1}, consecutive_failures=1,
                     heartbeat_age=1.0, checkpoint_age=1.0, unsealed_age=1.0)
    families = text_string_to_metric_families(exposition(found).decode())
    exposed = {f.name + suffix for f in families for suffix in _SUFFIXES.get(f.type, ("",))}
    named = {name for rule in rules() for name in re.findall(r"\bpk_[a-z_]+", rule["expr"])}
    assert {"pk_audit_oldest_unsealed_age_seconds", "pk_http_requests_total", "pk_database_up"} <= named
    assert named - exposed == set()
