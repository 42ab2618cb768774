"""The startup's freeze of the long-lived object graph (``api/app.py``, ``_freeze_once``): a
process freezes once, when its first app starts (a server process starts one); an app started
after it in the same process (as the tests start hundreds) freezes nothing more, and is collected
once it has stopped and nothing refers to it. Run in a process of its own, whose first app is the
one this test starts."""

from __future__ import annotations

import os
import subprocess
import sys

from patientkontrakt.config import PROJECT_ROOT
from tests.conftest import make_settings

_PROCESS = """
import gc, weakref
from fastapi.testclient import TestClient
from api.app import create_app
from patientkontrakt.config import Settings

settings = Settings()  # from the PK_ variables the test sets
assert gc.get_freeze_count() == 0, "frozen before any app started"
with TestClient(create_app(settings)) as client:
    assert client.get("/healthz").status_code == 200
    print("first", gc.get_freeze_count())
print("stopped", gc.get_freeze_count())  # fewer: frozen objects freed by reference counting leave

second = create_app(settings)
gone = weakref.ref(second)
with TestClient(second) as client:
    assert client.get("/healthz").status_code == 200
    print("second", gc.get_freeze_count())
del client, second
gc.collect()
print("collected", gone() is None)
"""


def test_a_process_freezes_once_and_later_apps_are_collected(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url)
    env = {**os.environ, "PK_DATABASE_URL": sqlite_url, "PK_BASE_URL": settings.base_url,
           "PK_SIGNING_KEY": str(settings.signing_key), "PK_AUDIT_KEY": str(settings.audit_key),
           "PK_AUDIT_SEAL_INTERVAL": "0", "PK_READY_WORKER": "false"}
    done = subprocess.run([sys.executable, "-c", _PROCESS], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    said = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    # the imports and the first app: hundreds of thousands of objects, still frozen once it stopped
    assert int(said["first"]) >= int(said["stopped"]) > 10_000
    assert int(said["second"]) <= int(said["stopped"])  # the second app froze nothing
    assert said["collected"] == "True"
