"""Private PostgreSQL clusters for tests that stop, crash, replicate or promote a server.

The shared server on 5432 is every other test's; a test that needs to stop the server, crash it,
or run a standby makes its own cluster here: ``initdb`` in a directory of its own, its own free
port on 127.0.0.1, a Unix socket in its own directory, trust authentication (replication too,
from 127.0.0.1), and a configuration made for speed (``fsync=off``: a test's cluster need not
survive a power cut; a crash, ``stop("immediate")``, loses nothing the kernel has).

``Cluster.create`` makes and starts a primary (about a second); ``primary.standby`` a hot standby
of it with ``pg_basebackup -R`` (about a second more). When the tests run as root, the server
programs run as user ``postgres`` (``runuser``) and the cluster's directory lives in a fresh
``/tmp/pk-pg-*`` directory owned by postgres (pytest's own temporary directories are root's
alone), with a symbolic link to it at the ``root`` the caller named.

    with primary_and_standby(tmp_path_factory.mktemp("pg")) as (primary, standby):
        ...

or, for a module, ``pg_pair = module_pair_fixture()`` at module level (a module-scoped fixture).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.processes import free_port, stop


def _server_bin() -> Path:
    """The server programs (initdb, pg_ctl, pg_basebackup) of PK_TEST_PG_BIN, else of the newest
    PostgreSQL that Debian's packages installed (/usr/lib/postgresql/<major>/bin)."""
    if "PK_TEST_PG_BIN" in os.environ:
        return Path(os.environ["PK_TEST_PG_BIN"])
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin")
             if p.parent.name.isdigit() and (p / "initdb").exists()]
    return max(found, key=lambda p: int(p.parent.name)) if found else Path("/usr/lib/postgresql/15/bin")


BIN = _server_bin()

# Small and fast; replication on. Later lines of postgresql.conf win, so these override initdb's.
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "shared_buffers": "16MB",
    "max_connections": "100",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "max_replication_slots": "5",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "wal_receiver_status_interval": "1s",
    "checkpoint_timeout": "30min",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "jit": "off",
}


def _as_owner() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(args: list[str], cwd: Path, timeout: float = 60) -> str:
    done = subprocess.run([*_as_owner(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        output = done.stderr.strip() or done.stdout.strip()
        raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {output}")
    return done.stdout


class Cluster:
    """A private PostgreSQL 15 cluster: initdb in its own directory, its own free port, run as user postgres."""

    def __init__(self, root: Path, home: Path, port: int) -> None:
        self.root = root  # where the caller asked for it (a link to ``home`` when run as root)
        self.home = home  # the cluster's own directory: data/, sock/, server.log
        self.port = port
        self.datadir = home / "data"
        self.socket_dir = home / "sock"
        self.log = home / "server.log"

    # -- making ---------------------------------------------------------------------------------

    @classmethod
    def _place(cls, root: Path, port: int | None) -> Cluster:
        if os.geteuid() == 0:
            home = Path(tempfile.mkdtemp(prefix="pk-pg-"))
            shutil.chown(home, "postgres", "postgres")
            root.parent.mkdir(parents=True, exist_ok=True)
            if root.is_symlink() or root.exists():
                shutil.rmtree(root) if root.is_dir() and not root.is_symlink() else root.unlink()
            root.symlink_to(home, target_is_directory=True)
        else:
            root.mkdir(parents=True, exist_ok=True)
            home = root
        cluster = cls(root, home, port or free_port())
        cluster.socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(cluster.socket_dir, "postgres", "postgres")
        return cluster

    @classmethod
    def create(cls, root: Path, port: int | None = None) -> Cluster:
        """initdb (trust auth, replication allowed from 127.0.0.1), start."""
        cluster = cls._place(root, port)
        _run([str(BIN / "initdb"), "-D", str(cluster.datadir), "-U", "postgres", "--auth=trust",
              "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"], cwd=cluster.home)
        cluster._write_settings(dict(_SETTINGS))
        cluster.start()
        return cluster

    def standby(self, root: Path, port: int | None = None, name: str | None = None) -> Cluster:
        """A hot standby of this cluster (``pg_basebackup -R``), started. ``name`` is its
        ``application_name`` towards the primary (for ``synchronous_standby_names``); by default
        ``standby<port>``."""
        replica = type(self)._place(root, port)
        replica.name = name or f"standby{replica.port}"
        _run([str(BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
              "-D", str(replica.datadir), "-X", "stream", "-c", "fast", "--no-sync"], cwd=replica.home)
        (replica.datadir / "standby.signal").touch()
        if os.geteuid() == 0:
            shutil.chown(replica.datadir / "standby.signal", "postgres", "postgres")
        replica._write_settings({
            "primary_conninfo": f"'host=127.0.0.1 port={self.port} user=postgres application_name={replica.name}'",
        })
        replica.start()
        return replica

    name: str = "primary"

    def _write_settings(self, settings: dict[str, str]) -> None:
        settings = {**settings, "port": str(self.port), "unix_socket_directories": f"'{self.socket_dir}'",
                    "cluster_name": f"'{self.name}'"}
        with (self.datadir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# tests/pgcluster.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    # -- using ----------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """The libpq/asyncpg form of ``url``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run ``statement`` with psql; its output, unaligned, without headers."""
        done = subprocess.run([str(BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                               "-d", database, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", statement],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"psql on port {self.port} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def configure(self, **settings: str) -> None:
        """ALTER SYSTEM SET each setting and reload (settings that need a restart need ``restart``)."""
        for key, value in settings.items():
            self.sql(f"ALTER SYSTEM SET {key} = '{value}'")
        self.sql("SELECT pg_reload_conf()")

    def is_in_recovery(self) -> bool:
        return self.sql("SELECT pg_is_in_recovery()") == "t"

    def wait_replayed(self, primary: Cluster, timeout: float = 10) -> None:
        """Wait until this standby has replayed everything ``primary`` has written so far."""
        target = primary.sql("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while self.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") != "t":
            if time.monotonic() > deadline:
                raise TimeoutError(f"standby on port {self.port} has not replayed {target}")
            time.sleep(0.02)

    # -- running --------------------------------------------------------------------------------

    def start(self) -> None:
        _run([str(BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log), "-w", "-t", "60", "start"],
             cwd=self.home, timeout=90)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean), ``immediate`` (a crash: no shutdown checkpoint)."""
        _run([str(BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"],
             cwd=self.home, timeout=90)

    def running(self) -> bool:
        done = subprocess.run([*_as_owner(), str(BIN / "pg_ctl"), "-D", str(self.datadir), "status"],
                              cwd=self.home, capture_output=True, timeout=30)
        return done.returncode == 0

    def restart(self) -> None:
        self.stop()
        self.start()

    def promote(self) -> None:
        """Promote this standby to a primary; returns once it accepts writes."""
        _run([str(BIN / "pg_ctl"), "-D", str(self.datadir), "-w", "-t", "60", "promote"], cwd=self.home, timeout=90)

    def destroy(self) -> None:
        """Stop immediately (if running) and remove every file."""
        if self.datadir.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.home, ignore_errors=True)
        if self.root.is_symlink():
            self.root.unlink()


@contextmanager
def primary_and_standby(root: Path, synchronous: bool = False) -> Iterator[tuple[Cluster, Cluster]]:
    """A primary and a hot standby of it, destroyed after. ``synchronous``: the primary's commits
    wait until the standby has the commit record (``synchronous_standby_names``), so a promoted
    standby has every commit the primary acknowledged."""
    primary = Cluster.create(root / "primary")
    standby: Cluster | None = None
    try:
        standby = primary.standby(root / "standby")
        if synchronous:
            primary.configure(synchronous_standby_names=standby.name)
        yield primary, standby
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()


def module_pair_fixture(synchronous: bool = False) -> Callable[..., Any]:
    """A module-scoped fixture giving ``(primary, standby)``; assign it at a test module's top
    level: ``pg_pair = module_pair_fixture()``."""

    @pytest.fixture(scope="module")
    def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Cluster]]:
        with primary_and_standby(tmp_path_factory.mktemp("pgcluster"), synchronous) as clusters:
            yield clusters

    return pair


class PgBouncer:
    """A PgBouncer (Debian's package) in transaction mode on a free port in front of the server at
    ``port``, every database, trust authentication for user postgres; run as user postgres when
    the tests run as root (PgBouncer refuses to run as root)."""

    PROGRAM = "/usr/sbin/pgbouncer"

    def __init__(self, server_port: int, pool_size: int = 5) -> None:
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="pk-pgbouncer-"))
        (self.home / "users.txt").write_text('"postgres" ""\n', encoding="utf-8")
        (self.home / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.home / 'users.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 500\n"
            f"logfile = {self.home / 'pgbouncer.log'}\npidfile = {self.home / 'pgbouncer.pid'}\n"
            "ignore_startup_parameters = extra_float_digits\n", encoding="utf-8")
        if os.geteuid() == 0:
            for path in (self.home, *self.home.iterdir()):
                shutil.chown(path, "postgres", "postgres")
        owner: dict[str, Any] = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        self.process = subprocess.Popen([self.PROGRAM, "-q", str(self.home / "pgbouncer.ini")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **owner)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    error = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"pgbouncer did not start: {error}") from None
                time.sleep(0.02)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        stop(self.process)
        shutil.rmtree(self.home, ignore_errors=True)
