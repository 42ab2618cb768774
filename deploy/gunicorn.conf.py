"""gunicorn with uvicorn workers (design §9). Tune with environment variables."""

import multiprocessing
import os

bind = os.environ.get("PK_BIND", "0.0.0.0:8000")
worker_class = "uvicorn.workers.UvicornWorker"
workers = int(os.environ.get("PK_WORKERS", multiprocessing.cpu_count()))
timeout = int(os.environ.get("PK_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5
accesslog = "-" if os.environ.get("PK_ACCESS_LOG") else None
forwarded_allow_ips = os.environ.get("PK_FORWARDED_ALLOW_IPS", "127.0.0.1")
