"""Starting the servers under test as subprocesses, and reading CPU time off /proc."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from patientkontrakt.audit.checkpoint import generate_key as generate_audit_key
from patientkontrakt.config import PROJECT_ROOT

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process and its descendants (uvicorn workers)."""
    tree = _children()
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        todo.extend(tree.get(current, []))
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return float(total - idle), float(total)


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    cwd: Path = PROJECT_ROOT
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="pk-bench-", suffix=".log")[1]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, env={**os.environ, **self.env}, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not become healthy in {timeout:.0f} s:\n{self.log()}")

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid) if self.process else 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.stop()
        if exc_type is None:
            self.log_path.unlink(missing_ok=True)
        else:
            print(f"{self.name} log: {self.log_path}", flush=True)


def patientkontrakt_server(database_url: str, workers: int, signing_key: Path, root: Path = PROJECT_ROOT,
                           *, auth: bool = True, env: dict[str, str] | None = None) -> Server:
    """The real service: ``python -m patientkontrakt.cli serve`` on a free loopback port, from
    the source tree ``root`` (another checkout can be compared with this one).

    ``auth=False`` serves the same app without authentication, access rules or access log
    (``bench.noauth_app``), for the cost of those on a read; the service itself has no such mode.
    ``env``: more settings (e.g. ``PK_SUBSCRIPTION_ALLOWED_HOSTS``).
    """
    port = free_port()
    root = root.resolve()
    serve = ["-m", "patientkontrakt.cli", "serve"] if auth else ["-m", "bench.noauth_app"]
    audit_key = signing_key.with_name("audit.pem")  # the access log's checkpoint key, beside the token key
    if not audit_key.exists():
        generate_audit_key(audit_key)
    return Server(
        name="patientkontrakt" if auth else "patientkontrakt-noauth",
        command=[sys.executable, *serve, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env={"PK_DATABASE_URL": database_url, "PK_LOG_LEVEL": "warning", "PK_BASE_URL": f"http://127.0.0.1:{port}",
             "PK_SIGNING_KEY": str(signing_key), "PK_AUDIT_KEY": str(audit_key),
             "PYTHONPATH": f"{root}:{PROJECT_ROOT}", **(env or {})},
        port=port,
        cwd=root,
    )


class Worker(Server):
    """A process without an HTTP port (``patientkontrakt worker``): started when it is still
    running a moment later."""

    def start(self, timeout: float = 60.0) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, env={**os.environ, **self.env}, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        time.sleep(1.0)
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")


def worker_process(server: Server, number: int = 1) -> Worker:
    """``patientkontrakt worker`` (the outbox's delivery and other background jobs) with the
    settings of ``server`` (same database, keys and source tree)."""
    return Worker(name=f"patientkontrakt-worker-{number}",
                  command=[sys.executable, "-m", "patientkontrakt.cli", "worker"],
                  env=dict(server.env), port=0, cwd=server.cwd)


def baseline_server(dsn: str, workers: int, pool_size: int) -> Server:
    """The bare FastAPI app (``bench.baseline_app``) under the same uvicorn settings."""
    port = free_port()
    return Server(
        name="baseline-fastapi",
        command=[sys.executable, "-m", "bench.baseline_app", "--host", "127.0.0.1", "--port", str(port),
                 "--workers", str(workers), "--database-url", dsn, "--pool-size", str(pool_size),
                 "--log-level", "warning"],
        env={},
        port=port,
    )
