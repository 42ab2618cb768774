"""gunicorn with uvicorn workers (design §9). Tune with environment variables."""

import multiprocessing
import os
import shutil
import tempfile

from uvicorn.workers import UvicornWorker


class Worker(UvicornWorker):
    """uvicorn's worker with the header timeout of `patientkontrakt serve` (PK_HEADER_TIMEOUT,
    api/limits.py); the body timeout and the other limits are the application's own."""

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": "api.limits:HeaderTimeoutProtocol"}


bind = os.environ.get("PK_BIND", "0.0.0.0:8000")
worker_class = Worker
workers = int(os.environ.get("PK_WORKERS", multiprocessing.cpu_count()))
timeout = int(os.environ.get("PK_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5
# gunicorn's access log prints the request line with ids and the query string (patient data):
# never on. PK_REQUEST_LOG=true logs requests without them (api/requestlog.py).
accesslog = None
forwarded_allow_ips = os.environ.get("PK_FORWARDED_ALLOW_IPS", "127.0.0.1")

# Prometheus metrics over every worker process (patientkontrakt/metrics.py): each process keeps
# its counters in files in PROMETHEUS_MULTIPROC_DIR and /metrics sums them. Unset, a fresh
# temporary directory (set here, in the master, before any worker imports prometheus_client).
# The directory is emptied at start (old processes' files would be counted) and a dead worker's
# live gauges are dropped.
_made_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _made_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="patientkontrakt-metrics-")


def on_starting(server):
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.remove(os.path.join(folder, name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _made_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

