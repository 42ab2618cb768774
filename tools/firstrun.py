"""How long until a freshly started service answers: ``python3 tools/firstrun.py PORT LOG -- COMMAND...``

Starts COMMAND (e.g. ``make run PORT=8700`` in a fresh clone) in its own process group, writes its
output to LOG with the seconds since the start in front of each line, asks for ``GET /`` and
``GET /fhir/metadata`` on 127.0.0.1:PORT every 0.1 s, prints when each first answered 200, and
then ends the process group it started. Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

PATHS = ("/", "/fhir/metadata")


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 2:
        print(__doc__, file=sys.stderr)
        return 2
    port, log, command = argv[0], argv[1], argv[3:]
    start = time.monotonic()
    answered: dict[str, float] = {}
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

        def copy() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                out.write(f"{time.monotonic() - start:6.1f} {raw.decode(errors='replace')}")
                out.flush()

        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
        try:
            while len(answered) < len(PATHS) and process.poll() is None and time.monotonic() - start < 900:
                for path in PATHS:
                    if path not in answered and _ok(f"http://127.0.0.1:{port}{path}"):
                        answered[path] = time.monotonic() - start
                time.sleep(0.1)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            reader.join(timeout=5)
    for path in PATHS:
        print(f"GET {path}: {answered[path]:.1f} s" if path in answered else f"GET {path}: no answer")
    return 0 if len(answered) == len(PATHS) else 1


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
