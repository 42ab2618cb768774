"""gunicorn with uvicorn workers (design §9). Tune with environment variables."""

import multiprocessing
import os

bind = os.environ.get("PK_BIND", "0.0.0.0:8000")
worker_class = "uvicorn.workers.UvicornWorker"
workers = int(os.environ.get("PK_WORKERS", multiprocessing.cpu_count()))
timeout = int(os.environ.get("PK_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5
# gunicorn's access log prints the request line with ids and the query string (patient data):
# never on. PK_REQUEST_LOG=true logs requests without them (api/requestlog.py).
accesslog = None
forwarded_allow_ips = os.environ.get("PK_FORWARDED_ALLOW_IPS", "127.0.0.1")
