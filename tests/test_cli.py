"""The ``patientkontrakt`` command, run as a user runs it (a subprocess with PK_* variables)."""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patientkontrakt import cli
from patientkontrakt.config import get_settings
from patientkontrakt.storage.database import head_revision

_SCRIPT = Path(sys.executable).parent / "patientkontrakt"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "patientkontrakt.cli"]
APP_TABLES = {"resource", "resource_version", "idx_token", "idx_string", "idx_date", "idx_reference", "idx_uri"}


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    environment.update(env)
    return subprocess.run([*COMMAND, *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=120, check=False)


def subcommands() -> list[str]:
    parser = cli.build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(action.choices)


def test_help_lists_the_commands_and_the_environment(tmp_path: Path) -> None:
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: patientkontrakt")
    for name in subcommands():
        assert name in result.stdout
    assert "PK_DATABASE_URL" in result.stdout


def test_there_are_serve_and_migrate_commands() -> None:
    assert {"serve", "migrate"} <= set(subcommands())


@pytest.mark.parametrize("name", subcommands())
def test_every_subcommand_has_help(name: str, tmp_path: Path) -> None:
    result = run(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: patientkontrakt {name}")
    assert not list(tmp_path.iterdir()), "help touches no database"


@pytest.mark.parametrize("args", [(), ("no-such-command",), ("serve", "--port", "eighty")])
def test_bad_usage_exits_2_with_usage_on_stderr(args: tuple[str, ...], tmp_path: Path) -> None:
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: patientkontrakt" in result.stderr
    assert result.stdout == ""


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "pk.db"
    url = f"sqlite+aiosqlite:///{path}"
    result = run("migrate", cwd=tmp_path, PK_DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    assert "database is up to date" in result.stdout
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        [(revision,)] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert APP_TABLES <= tables
    assert revision == head_revision()

    again = run("migrate", cwd=tmp_path, PK_DATABASE_URL=url)
    assert again.returncode == 0, again.stderr


def test_migrate_uses_the_default_database_in_the_working_directory(tmp_path: Path) -> None:
    result = run("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "patientkontrakt.db").exists()


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    result = run("serve", "--port", "1", cwd=tmp_path, PK_DATABASE_URL=url)
    assert result.returncode == 1
    assert "refusing to start" in result.stderr
    assert "has no schema" in result.stderr
    assert "`patientkontrakt migrate`" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Uvicorn running" not in result.stderr + result.stdout


def test_serve_refuses_an_unreachable_database(tmp_path: Path) -> None:
    result = run("serve", cwd=tmp_path, PK_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    assert result.returncode == 1
    assert "refusing to start" in result.stderr
    assert "cannot open the database" in result.stderr
    assert "Traceback" not in result.stderr


# -- serve on a migrated database: what it hands to uvicorn (no server is started) -------------


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch, signing_key: Path, audit_key: Path) -> Iterator[None]:
    """PK_* variables changed by a test (or by ``main``) are restored, and the settings re-read;
    the session's signing key and access-log key are configured."""
    for name in ("PK_DATABASE_URL", "PK_BASE_URL"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.setenv("PK_SIGNING_KEY", str(signing_key))
    monkeypatch.setenv("PK_AUDIT_KEY", str(audit_key))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import uvicorn

    calls: list[dict[str, Any]] = []

    def fake_run(app: str, **kwargs: Any) -> None:
        calls.append({"app": app, "base_url": os.environ.get("PK_BASE_URL"), **kwargs})

    monkeypatch.setattr(uvicorn, "run", fake_run)
    return calls


@pytest.fixture
def migrated(fresh_settings: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PK_DATABASE_URL names a SQLite file that ``patientkontrakt migrate`` has brought up to date."""
    monkeypatch.setenv("PK_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'pk.db'}")
    assert cli.main(["migrate"]) == 0


@pytest.mark.usefixtures("migrated")
def test_serve_starts_uvicorn_on_a_migrated_database(uvicorn_calls: list[dict[str, Any]]) -> None:
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "8123", "--workers", "3"]) == 0
    [call] = uvicorn_calls
    assert call["app"] == "api.app:create_app"
    assert call["factory"] is True
    assert (call["host"], call["port"], call["workers"]) == ("0.0.0.0", 8123, 3)
    assert call["base_url"] == "http://0.0.0.0:8123"


@pytest.mark.usefixtures("migrated")
def test_serve_base_url_option_wins(uvicorn_calls: list[dict[str, Any]]) -> None:
    assert cli.main(["serve", "--base-url", "https://pk.example.se"]) == 0
    assert uvicorn_calls[0]["base_url"] == "https://pk.example.se"


@pytest.mark.usefixtures("fresh_settings")
@pytest.mark.parametrize(("setting", "missing", "remedy"), [
    ("PK_SIGNING_KEY", "missing.pem", "keys generate"),  # the signing key
    ("PK_AUDIT_KEY", "missing-audit.pem", "audit key --generate"),  # the access log's key
])
def test_serve_refuses_without_its_key(
    setting: str, missing: str, remedy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    uvicorn_calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PK_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'pk.db'}")
    monkeypatch.setenv(setting, str(tmp_path / missing))
    assert cli.main(["migrate"]) == 0
    assert cli.main(["serve"]) == 1
    assert uvicorn_calls == []
    error = capsys.readouterr().err
    assert "refusing to start" in error and missing in error and remedy in error


@pytest.mark.usefixtures("fresh_settings")
def test_serve_in_process_refuses_without_calling_uvicorn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uvicorn_calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PK_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    assert cli.main(["serve"]) == 1
    assert uvicorn_calls == []
    assert "`patientkontrakt migrate`" in capsys.readouterr().err


def test_demo_that_cannot_write_its_keys_says_so_before_loading_anything(tmp_path: Path) -> None:
    """The image's keys are a read-only mount: ``demo`` there names the directory it needs to
    write, before it loads anything (it used to load the region, then fail with a traceback).
    The keys' folder lies under a file, so it cannot be made, even by root."""
    (tmp_path / "secrets").write_text("a file, not a folder")
    database = tmp_path / "pk.db"
    for keys in ({}, {"PK_SIGNING_KEY": str(tmp_path / "secrets" / "signing-key.pem")}):
        result = run("demo", "--migrate", "--agreements", "1", cwd=tmp_path,
                     PK_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
                     PK_AUDIT_KEY=str(tmp_path / "secrets" / "audit-key.pem"), **keys)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "patientkontrakt: demo: cannot make or read the key " in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert "loading the demo region" not in result.stdout
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM resource").fetchone() == (0,)
    # with the signing key in place and its folder read-only to the demo, the EHR's key fails alike
    keys = tmp_path / "keys"
    keys.mkdir()
    signing = dict(PK_SIGNING_KEY=str(keys / "signing-key.pem"), PK_AUDIT_KEY=str(keys / "audit-key.pem"))
    assert run("keys", "generate", cwd=tmp_path, **signing).returncode == 0
    assert run("audit", "key", "--generate", cwd=tmp_path, **signing).returncode == 0
    (keys / "demo-ehr-key.pem").mkdir()  # what cannot be opened as a file
    result = run("demo", "--agreements", "1", cwd=tmp_path, PK_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
                 **signing)
    assert result.returncode == 1 and "demo-ehr-key.pem" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "loading the demo region" not in result.stdout


def test_demo_migrates_loads_with_progress_and_follows_the_base_url(tmp_path: Path) -> None:
    """What ``make run PORT=8123`` runs before serving: one command that migrates, loads the demo
    region saying how far it got, and prints addresses (and the token command) for the port."""
    base = "http://127.0.0.1:8123"
    result = run("demo", "--migrate", "--agreements", "3", "--base-url", base, cwd=tmp_path,
                 PK_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'pk.db'}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("database is up to date")
    progress = [line.strip() for line in lines if re.fullmatch(r"\s*(directory loaded.*|agreements: \d+/3)", line)]
    assert progress[0].startswith("directory loaded") and progress[-1] == "agreements: 3/3", result.stdout
    assert f"{base}/personal" in result.stdout and f"{base}/mitt" in result.stdout
    assert f"token demo-ehr --base-url {base})" in result.stdout
    assert "127.0.0.1:8000" not in result.stdout
    assert "Warning" not in result.stderr, result.stderr
