"""The deployment files as written (deploy/): the Kubernetes manifests against the Kubernetes
schemas (kubernetes-validate, offline, a fixed version), and what each file must say — the
image, the compose file and the manifests are checked statically, since no container runtime runs
the tests (the entrypoint itself runs in tests/deploy/test_entrypoint.py)."""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from patientkontrakt.config import PROJECT_ROOT
from tests.deploy import SERVER_VARIABLES, SETTINGS

DEPLOY = PROJECT_ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.31.0"  # the oldest Kubernetes the manifests are meant for


def known(variable: str) -> bool:
    return variable in SETTINGS or variable in SERVER_VARIABLES


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache
def documents() -> list[dict[str, Any]]:
    """Every manifest (read once: the tests do not change them)."""
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def pod_specs() -> dict[str, dict[str, Any]]:
    """The pod template of every workload, by the workload's name."""
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in documents()
            if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet", "CronJob")}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# -- Kubernetes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validation_rejects_what_kubernetes_would() -> None:
    """The check above can fail: a misspelt field and a wrong type are refused."""
    deployment = one("Deployment", "patientkontrakt-api")
    misspelt = yaml.safe_load(yaml.safe_dump(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    hpa = yaml.safe_load(yaml.safe_dump(one("HorizontalPodAutoscaler", "patientkontrakt-api")))
    hpa["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_manifest_but_the_example_secrets() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in manifest_files() if not p.name.endswith(".example.yaml"))
    assert all(d["metadata"].get("namespace") == kustomization["namespace"]
               for d in documents() if d["kind"] != "Namespace")


def test_the_parts_the_issue_asks_for_are_there() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for d in documents()}
    assert {("apps/v1", "Deployment"), ("batch/v1", "Job"), ("v1", "Service"), ("v1", "Secret"),
            ("networking.k8s.io/v1", "NetworkPolicy"), ("policy/v1", "PodDisruptionBudget"),
            ("autoscaling/v2", "HorizontalPodAutoscaler")} <= kinds
    args = {name: spec["containers"][0]["args"][0] for name, spec in pod_specs().items()}
    assert sorted(args.values()) == ["api", "migrate", "worker"]


def test_the_api_is_probed_limited_scaled_and_kept_available() -> None:
    api = one("Deployment", "patientkontrakt-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    [container] = api["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["port"] in ("http", 8000)

    hpa = one("HorizontalPodAutoscaler", "patientkontrakt-api")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "patientkontrakt-api"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "cpu" in container["resources"]["requests"]  # utilisation is measured against the request

    pdb = one("PodDisruptionBudget", "patientkontrakt-api")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can still move one pod
    service = one("Service", "patientkontrakt-api")
    assert selects(service["spec"]["selector"], labels)
    assert not selects(service["spec"]["selector"],
                       one("Deployment", "patientkontrakt-worker")["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("workload", sorted(pod_specs()))
def test_every_pod_is_locked_down(workload: str) -> None:
    spec = pod_specs()[workload]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec.get("automountServiceAccountToken") is False
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp on the read-only root"


@pytest.mark.parametrize("workload", sorted(pod_specs()))
def test_every_pod_gets_its_settings_from_what_is_defined(workload: str) -> None:
    secrets = {d["metadata"]["name"]: d["stringData"] for d in documents() if d["kind"] == "Secret"}
    configs = {d["metadata"]["name"]: d["data"] for d in documents() if d["kind"] == "ConfigMap"}
    for container in pod_specs()[workload]["containers"]:
        names = set()
        for source in container.get("envFrom", []):
            names |= set(configs[source["configMapRef"]["name"]])
        for variable in container.get("env", []):
            names.add(variable["name"])
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], variable
        assert "PK_DATABASE_URL" in names
        assert {n for n in names if not known(n)} == set(), "misspelt settings are silently ignored"
    for volume in pod_specs()[workload].get("volumes", []):
        if "secret" in volume:
            keys = secrets[volume["secret"]["secretName"]]
            config = next(iter(configs.values()))
            assert {Path(config["PK_SIGNING_KEY"]).name, Path(config["PK_AUDIT_KEY"]).name} <= set(keys)


def test_the_secrets_in_the_repository_are_placeholders() -> None:
    for secret in (d for d in documents() if d["kind"] == "Secret"):
        assert "data" not in secret
        for value in secret["stringData"].values():
            assert "CHANGE-ME" in value
    text = (K8S / "secret.example.yaml").read_text()
    assert "kubectl -n patientkontrakt create secret generic" in text, "says how to make them for real"


def test_applying_the_kustomization_never_replaces_the_real_secrets() -> None:
    resources = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    applied = [d for name in resources for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert [d for d in applied if d["kind"] == "Secret"] == []
    assert {d["kind"] for d in applied} >= {"Deployment", "Job", "Service", "NetworkPolicy"}


def test_network_policies_deny_by_default_and_allow_only_what_each_part_needs() -> None:
    policies = [d for d in documents() if d["kind"] == "NetworkPolicy"]
    [default] = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert set(default["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in default["spec"] and "egress" not in default["spec"]

    def policy_for(workload: str) -> dict[str, Any]:
        labels = one(*workload.split(":"))["spec"]["template"]["metadata"]["labels"]
        [policy] = [p for p in policies if selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)]
        return policy["spec"]

    def egress_ports(spec: dict[str, Any]) -> set[int]:
        return {port["port"] for rule in spec["egress"] for port in rule["ports"]}

    api = policy_for("Deployment:patientkontrakt-api")
    [rule] = api["ingress"]
    assert rule["from"] and all(set(peer) == {"namespaceSelector"} for peer in rule["from"])
    assert [p["port"] for p in rule["ports"]] == [8000]
    assert egress_ports(api) == {53, 5432, 6432, 443}

    worker = policy_for("Deployment:patientkontrakt-worker")
    assert worker["ingress"] == []
    assert egress_ports(worker) == {53, 5432, 443}
    [https] = [rule for rule in worker["egress"] if rule["ports"] == [{"protocol": "TCP", "port": 443}]]
    assert {"10.0.0.0/8", "169.254.0.0/16"} <= set(https["to"][0]["ipBlock"]["except"])

    migrate = policy_for("Job:patientkontrakt-migrate-0-1-0")
    assert egress_ports(migrate) == {53, 5432}


# -- compose --------------------------------------------------------------------------------------

@functools.cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_compose_runs_two_apis_a_worker_a_primary_a_replica_and_pgbouncer() -> None:
    services = compose()["services"]
    assert services["api"]["command"] == ["api"] and services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"] == ["worker"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["db"]["image"] == services["replica"]["image"] == "postgres:15"
    assert "wal_level=replica" in services["db"]["command"]
    assert "pg_basebackup" in (DEPLOY / "postgres" / "replica.sh").read_text()
    assert "pgbouncer" in services["pgbouncer"]["build"]["dockerfile_inline"]
    ini = (DEPLOY / "pgbouncer" / "pgbouncer.ini").read_text()
    assert re.search(r"^pool_mode = transaction$", ini, re.M)
    assert re.search(r"^max_prepared_statements = [1-9]", ini, re.M)

    urls = {name: services[name]["environment"]["PK_DATABASE_URL"] for name in ("api", "worker", "migrate")}
    assert "@pgbouncer:6432/" in urls["api"]
    assert "@db:5432/" in urls["worker"] and "@db:5432/" in urls["migrate"]  # LISTEN, session locks

    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[name]["read_only"] is True and "/tmp" in services[name]["tmpfs"]
    for name in ("db", "replica", "pgbouncer", "api"):
        assert "disable" not in services[name]["healthcheck"], name
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def test_compose_mounts_files_that_exist_and_takes_keys_as_secrets() -> None:
    document = compose()
    for service in document["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), source
                assert os.access(DEPLOY / source, os.X_OK) or not source.endswith(".sh"), source
    assert {s["file"] for s in document["secrets"].values()} == {"./keys/signing-key.pem", "./keys/audit-key.pem"}
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/keys/signing-key.pem"], cwd=PROJECT_ROOT,
                             check=False)
    assert ignored.returncode == 0, "the keys directory is not committed"


def test_compose_holds_no_secret_but_overridable_development_defaults() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    for match in re.finditer(r"(PASSWORD\w*:\s*|//patientkontrakt:)(\S+?)[@\s]", text):
        assert match.group(2).startswith("${"), match.group(0)
    services = compose()["services"]
    variables = {name for s in services.values() for name in s.get("environment", {}) if name.startswith("PK_")}
    assert variables and {v for v in variables if not known(v)} == set()


# -- the image ------------------------------------------------------------------------------------

def instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def stages() -> list[list[str]]:
    """The Dockerfile's instructions split into its stages (what comes before the first FROM,
    its ARGs, left out)."""
    result: list[list[str]] = []
    for line in instructions():
        if line.startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def test_the_image_is_built_in_stages_and_runs_slim_and_not_as_root() -> None:
    arguments = instructions()[:instructions().index(stages()[0][0])]
    assert arguments == ["ARG PYTHON_IMAGE=python:3.11-slim"], "one base, python's slim image by default"
    builder, runtime = stages()
    assert builder[0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert runtime[0] == "FROM ${PYTHON_IMAGE} AS runtime"
    assert any("pip install" in line for line in builder)
    assert not any("pip install" in line or "apt-get" in line for line in runtime), "nothing built at run time"
    [user] = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert user.split(":")[0] not in ("root", "0")
    assert [line for line in runtime if line.startswith("COPY --from=builder")] == [
        "COPY --from=builder /opt/venv /opt/venv"]


def test_the_image_checks_its_health_and_enters_through_the_script() -> None:
    runtime = stages()[-1]
    [health] = [line for line in runtime if line.startswith("HEALTHCHECK ")]
    assert "/healthz" in health and "urllib.request" in health
    [entrypoint] = [line for line in runtime if line.startswith("ENTRYPOINT ")]
    assert entrypoint == 'ENTRYPOINT ["/app/deploy/entrypoint.sh"]'
    assert any(line.startswith("COPY ") and "deploy/entrypoint.sh ./deploy/" in line for line in runtime)
    assert any(line.startswith("WORKDIR /app") for line in runtime)
    assert os.access(DEPLOY / "entrypoint.sh", os.X_OK)
    variables = {m for line in runtime if line.startswith("ENV ") for m in re.findall(r"\b(PK_\w+)=", line)}
    assert variables and {v for v in variables if not known(v)} == set()


def test_everything_the_image_copies_is_in_the_repository_and_sent_to_the_build() -> None:
    ignored = [line.strip() for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for stage in stages():
        for line in stage:
            if line.startswith("COPY ") and "--from=" not in line:
                for source in line.split()[1:-1]:
                    assert (PROJECT_ROOT / source).exists(), line
                    assert not any(fnmatch.fnmatch(source, pattern) or source.startswith(pattern.rstrip("/") + "/")
                                   for pattern in ignored), f"{source} is left out by .dockerignore"


def test_the_wheel_carries_the_pages_files() -> None:
    """The image installs a wheel, not the checkout: every file of the api package that is not
    Python must be in its package-data (else the pages have no templates in the image)."""
    patterns = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    listed = subprocess.run(["git", "ls-files", "api"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    for name in (n for n in listed if not n.endswith(".py")):
        relative = name.removeprefix("api/")
        assert any(fnmatch.fnmatchcase(relative, p) and relative.count("/") == p.count("/")
                   for p in patterns["api"]), name
