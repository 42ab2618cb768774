"""The deployment files (deploy/) and docs/operations.md."""

from patientkontrakt.config import Settings

SETTINGS = {f"PK_{name.upper()}" for name in Settings.model_fields}
# variables the deployment files may set that are not Settings: deploy/gunicorn.conf.py's and the entrypoint's
SERVER_VARIABLES = {"PK_BIND", "PK_WORKERS", "PK_TIMEOUT", "PK_FORWARDED_ALLOW_IPS", "PK_GUNICORN_CONFIG"}
