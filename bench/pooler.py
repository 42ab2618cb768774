"""PgBouncer and a replica for the benchmark (issue 16): the read scenario through a pooler, the
search scenario with a hot standby answering.

``PgBouncer`` runs Debian's ``pgbouncer`` (installed with apt-get when missing, as wrk is) on a
free loopback port in transaction mode, in front of the bench's PostgreSQL, as user postgres
(PgBouncer refuses to run as root). A server behind it needs the service's PgBouncer mode
(``PK_DATABASE_PGBOUNCER``: no prepared statement cache, no startup settings) and the
connection settings on the database instead (``database_settings``, ``ALTER DATABASE … SET``).

The replica is one that exists (``--replica-url``): a hot standby of the bench's cluster (made
with ``pg_basebackup -R``, docs/operations.md), on which the run database appears by itself (its
clone is WAL-logged); ``wait_replayed`` waits until the standby has replayed the primary's
position of now.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from bench.servers import free_port

# What the service sets on each connection (storage/database.py ``server_settings``) and must be
# the database's behind PgBouncer, which refuses such startup parameters.
FALLBACK_SETTINGS = {"plan_cache_mode": "force_generic_plan", "jit": "off"}


def database_settings(statement_timeout: float | None) -> dict[str, str]:
    """The connection settings of the service under test (its own function where it has one)."""
    from patientkontrakt.storage import database

    made = getattr(database, "server_settings", None)
    if made is not None:
        return dict(made(statement_timeout))
    settings = dict(FALLBACK_SETTINGS)
    if statement_timeout is not None:
        settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
    return settings


async def set_database_settings(admin_dsn: str, database: str, settings: dict[str, str]) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        for name, value in settings.items():
            await conn.execute(f'ALTER DATABASE "{database}" SET {name} = \'{value}\'')
    finally:
        await conn.close()


def ensure_pgbouncer() -> str | None:
    """The pgbouncer binary; installed from Debian's packages when missing (as root), else None."""
    found = shutil.which("pgbouncer") or (os.path.exists("/usr/sbin/pgbouncer") and "/usr/sbin/pgbouncer") or None
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("pgbouncer is missing; installing the Debian package 'pgbouncer'", flush=True)
    for command in (["apt-get", "install", "-y", "-q", "pgbouncer"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "pgbouncer"]):
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if shutil.which("pgbouncer") or os.path.exists("/usr/sbin/pgbouncer"):
            break
    return shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)


@dataclass
class PgBouncer:
    """A private PgBouncer in transaction mode before ``upstream`` (a postgresql URL); ``url(db)``
    once started (``with``)."""

    binary: str
    upstream: str
    pool_size: int = 20
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    home: Path | None = None

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        user = make_url(self.upstream).username or "postgres"
        return f"{driver}://{user}@127.0.0.1:{self.port}/{database}"

    def __enter__(self) -> PgBouncer:
        up = make_url(self.upstream)
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="pk-bench-pgbouncer-"))
        ini = self.home / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={up.host or '127.0.0.1'} port={up.port or 5432} user={up.username or 'postgres'}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = any\npool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\nmax_client_conn = 2000\n"
            # asyncpg sends extra_float_digits; nothing else the service sends in PgBouncer mode
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.home / 'pgbouncer.log'}\n",
            encoding="utf-8")
        as_owner = []
        if os.geteuid() == 0:
            shutil.chown(self.home, "postgres")
            shutil.chown(ini, "postgres")
            as_owner = ["runuser", "-u", "postgres", "--"]
        self.process = subprocess.Popen([*as_owner, self.binary, str(ini)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}: {self.log()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        self.__exit__(None)
        raise RuntimeError(f"pgbouncer did not listen on {self.port} in 15 s: {self.log()}")

    def log(self) -> str:
        path = self.home / "pgbouncer.log" if self.home else None
        return path.read_text(errors="replace")[-2000:] if path and path.exists() else ""

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # its own session: runuser and pgbouncer
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)


def replica_url(base: str, database: str) -> str:
    """``base`` (a standby's URL, any database) naming ``database``, for the service (asyncpg)."""
    return make_url(base).set(drivername="postgresql+asyncpg", database=database).render_as_string(
        hide_password=False)


async def wait_replayed(primary_dsn: str, standby_dsn: str, timeout: float = 120.0) -> float:
    """Wait until the standby has replayed the primary's current WAL position (the run database
    cloned just now included); the seconds waited."""
    started = time.perf_counter()
    primary = await asyncpg.connect(primary_dsn)
    try:
        target = str(await primary.fetchval("SELECT pg_current_wal_lsn()::text"))
    finally:
        await primary.close()
    while True:
        try:
            standby = await asyncpg.connect(standby_dsn)
            try:
                if not await standby.fetchval("SELECT pg_is_in_recovery()"):
                    raise RuntimeError("--replica-url is not a standby (pg_is_in_recovery() is false)")
                replayed = await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", target)
            finally:
                await standby.close()
            if replayed:
                return round(time.perf_counter() - started, 2)
        except (OSError, asyncpg.InvalidCatalogNameError, asyncpg.CannotConnectNowError):
            pass  # not there yet
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"the replica did not replay {target} within {timeout:.0f} s")
        await asyncio.sleep(0.2)
