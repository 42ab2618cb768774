"""deploy/Dockerfile built and its image run: deploy/check-image.sh builds it with buildah (no
Docker engine) and runs the image's entrypoint in it against a database of its own. This
machine reaches no container registry, so the base is a stand-in for python:3.11-slim (Debian
bookworm's Python, ``--stand-in``); PK_IMAGE_CHECK_ARGS="" takes the real base where a registry
answers."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest
from sqlalchemy.engine import make_url

from patientkontrakt.config import PROJECT_ROOT
from tests.conftest import TEST_URL, _dsn

SCRIPT = PROJECT_ROOT / "deploy" / "check-image.sh"

# What the script must have checked and found right (a check dropped from it fails here too).
EXPECTED = (
    "the image builds",
    "it runs as uid 10001, not root",
    "its entrypoint is deploy/entrypoint.sh, api by default",
    "without settings the entrypoint exits 78 naming them",
    "migrate creates the schema",
    "the API (2 workers, read-only root) answers /healthz",
    "a FHIR search without a token is refused (401)",
    "/readyz is 503 without a worker",
    "/readyz is 200 once the worker runs",
    "the image's HEALTHCHECK passes",
    "the demo loads",
    "the access log verifies",
    "the image's user cannot write the service's files",
)


def _admin_url() -> str:
    """The test server's maintenance database, as a plain PostgreSQL URL (psql's)."""
    return _dsn(make_url(TEST_URL).set(database="postgres").render_as_string(hide_password=False))


@pytest.mark.skipif(os.geteuid() != 0, reason="buildah's chroot isolation and the read-only run need root")
@pytest.mark.skipif(not all(shutil.which(t) for t in ("buildah", "debootstrap", "psql")),
                    reason="buildah, debootstrap and psql are installed by `make test` (make image-tools)")
def test_the_image_builds_and_serves_from_a_read_only_root() -> None:
    arguments = shlex.split(os.environ.get("PK_IMAGE_CHECK_ARGS", "--stand-in"))
    result = subprocess.run([str(SCRIPT), *arguments], env={**os.environ, "PK_IMAGE_CHECK_DATABASE": _admin_url()},
                            capture_output=True, text=True, timeout=900, check=False)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    passed = {line[6:] for line in result.stdout.splitlines() if line.startswith("ok    ")}
    assert not [line for line in result.stdout.splitlines() if line.startswith("FAIL")], report
    for check in EXPECTED:
        assert check in passed, f"{check!r} not reported as passed:\n{report}"
    assert any(c.startswith("the demo EHR's token finds its agreements (") for c in passed), report
    assert result.stdout.rstrip().endswith("check-image: every check passed")
