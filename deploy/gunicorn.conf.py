"""gunicorn with uvicorn workers (design §9). Tune with environment variables."""

import multiprocessing
import os

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
