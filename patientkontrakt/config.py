"""Configuration from ``PK_*`` environment variables (design §4)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PK_", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///./patientkontrakt.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Public base of the service; the FHIR base is this plus /fhir.",
    )
    profiles_dir: Path = Field(default=PROJECT_ROOT / "fhir_profiles")
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: `time LEVEL logger: message`; json: one JSON object per line, with "
                                    "the request id (docs/operations.md, \"Observability\").")
    request_log: bool = Field(
        default=False,
        description="Log one line per request: method, route template, status, duration (never ids or queries).")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, description="Largest accepted request body.")
    default_page_size: int = 20
    max_page_size: int = 1000
    db_pool_size: int = 20
    # -- replicas and PgBouncer (docs/operations.md, "Replicas, PgBouncer, failover") ----------
    database_replica_url: str = Field(
        default="", description="postgresql+asyncpg URL of a hot standby: reads and searches go there once it "
                                "has replayed what the client wrote (else the primary answers). Empty: none.")
    replica_wait: float = Field(
        default=0.2, ge=0, description="Seconds a read waits for the replica to replay the client's last write "
                                       "before it goes to the primary instead.")
    replica_max_lag: float = Field(
        default=1.0, ge=0, description="Seconds a read on the replica may lag the primary: each replica read needs "
                                       "at least what the primary had written this long ago (else the primary "
                                       "answers), so a spärr or a withdrawn samtycke holds there within it.")
    replica_clients: int = Field(
        default=10_000, ge=0, description="Clients whose last write position each process remembers.")
    database_pgbouncer: bool = Field(
        default=False, description="The database URLs go through PgBouncer in transaction mode: no prepared "
                                   "statement cache, no startup settings (set them on the role), no LISTEN.")
    database_listen_url: str = Field(
        default="", description="With PK_DATABASE_PGBOUNCER: a direct URL (not through the pooler) on which "
                                "workers LISTEN for queued notifications; empty: they poll.")
    db_connect_timeout: float = Field(default=10, description="Seconds to wait for a new database connection.")
    retry_after: int = Field(
        default=10, description="Seconds a client is told to wait (Retry-After) when the database is unavailable.")

    # -- what the patient pages say to do when the care unit is closed (docs/operations.md) ------
    advice_phone: str = Field(
        default="1177", description="Number for medical advice day and night (1177 Vårdguiden).")
    emergency_phone: str = Field(default="112", description="Number for emergencies.")
    out_of_hours_text: str = Field(
        default="", description="The region's own words on care out of hours (e.g. the nearest jourcentral), "
                                "shown as written, in Swedish, under the numbers above; empty: none.")

    # -- limits on what one request may ask (docs/security.md, "Limits") ----------------------
    max_search_parameters: int = Field(
        default=100, ge=1, description="Parameters in one search request (query and form together).")
    max_search_values: int = Field(
        default=100, ge=1, description="Comma-separated values of one search parameter (ORed).")
    max_chained_parameters: int = Field(default=5, ge=0, description="Chained parameters in one search.")
    max_include_parameters: int = Field(default=20, ge=0, description="_include and _revinclude parameters.")
    max_include_iterations: int = Field(
        default=4, ge=0, description="Rounds of _include:iterate after the first; beyond: Bundle marked incomplete.")
    max_included_resources: int = Field(
        default=1000, ge=0, description="Resources includes may add to one page; beyond: Bundle marked incomplete.")
    max_sort_keys: int = Field(default=5, ge=1, description="_sort keys in one search.")
    max_elements: int = Field(default=50, ge=1, description="_elements entries in one request.")
    max_bundle_entries: int = Field(default=500, ge=1, description="Entries of a batch or transaction Bundle.")
    max_json_depth: int = Field(
        default=100, ge=2, le=1000, description="Nesting of objects and arrays in a request body (JSON parser: 1024).")
    header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a client may take to send a request's headers (then 408).")
    body_timeout: float = Field(
        default=60.0, gt=0, description="Seconds a client may take to send a request's body (then 408).")
    statement_timeout: float = Field(
        default=10.0, gt=0, description="Seconds one database statement may run before it is cancelled.")

    # -- Bulk Data $export (docs/api.md, "Bulk export") ---------------------------------------
    export_expiry: int = Field(
        default=3600, ge=1, description="Seconds a finished export (its status and files) is kept; then 404.")
    export_max_jobs: int = Field(
        default=2, ge=1, description="Exports one client may have queued or running at once; beyond: 429.")
    export_batch_size: int = Field(default=2000, ge=1, description="Resources read by one statement of an export.")
    export_file_size: int = Field(
        default=20000, ge=1, description="Resources in one ndjson file of an export (more: further files).")
    export_retry_after: int = Field(
        default=2, ge=1, description="Seconds a client polling a running export is told to wait (Retry-After).")
    export_poll_interval: float = Field(
        default=1.0, ge=0, description="Seconds an API process waits before looking for export work again when "
                                       "there was none (0: the API processes run no exports; a worker must).")
    export_lease: float = Field(
        default=60.0, gt=0, description="Seconds an export's runner holds it without news; then another takes over.")

    # -- authorization (design §5; docs/security.md) ----------------------------------------
    signing_key: Path = Field(
        default=Path("patientkontrakt-signing-key.pem"),
        description="PEM file of the active RSA key that signs tokens (`patientkontrakt keys generate`).",
    )
    signing_keys_previous: str = Field(
        default="", description="Comma-separated PEM files of keys still accepted and published (rollover).")
    access_token_lifetime: int = Field(default=600, description="Seconds an access token lives (at most 900).")
    refresh_token_lifetime: int = Field(default=8 * 3600, description="Seconds a refresh token lives.")
    emergency_access_lifetime: int = Field(
        default=600, ge=60, le=900,
        description="Seconds an emergency access (nödåtkomst) lasts before a new reason must be given.")
    revocation_refresh_seconds: float = Field(
        default=5.0, ge=0,
        description="Seconds a process keeps its copy of the revocation list before it reloads it (0: every "
                    "request); a token revoked on another process is refused here within this time.")
    test_idp: bool = Field(
        default=False,
        description="Sign in through the built-in test identity provider (demo users; never in production).")
    oidc_issuer: str | None = Field(default=None, description="External OpenID Connect provider (its issuer URL).")
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_scope: str = "openid profile"
    oidc_staff_claim: str = Field(default="employeeHsaId", description="Claim with a staff member's HSA-id.")
    oidc_commission_claim: str = Field(default="commissionHsaId",
                                       description="Claim with the chosen commission's HSA-id, if the IdP sends one.")
    oidc_patient_claims: str = Field(
        default="https://id.oidc.se/claim/personalIdentityNumber,https://id.oidc.se/claim/coordinationNumber",
        description="Claims with a patient's personnummer or samordningsnummer (12 digits), in order.")

    # -- the access log (docs/security.md, "The access log") -------------------------------------
    audit_key: Path = Field(
        default=Path("patientkontrakt-audit-key.pem"),
        description="Ed25519 PEM file of the key that signs the access log's checkpoints "
                    "(`patientkontrakt audit key --generate`). Never in the database.")
    audit_keys_previous: str = Field(
        default="", description="Comma-separated PEM files of keys that signed older checkpoints (public halves do).")
    audit_origin: str = Field(
        default="", description="The log's name in its checkpoints (C2SP origin). Default: the host and path of "
                                "PK_BASE_URL + /audit. Keep it once checkpoints exist: they are signed with it.")
    audit_seal_interval: float = Field(
        default=5.0, description="Seconds between seals in each API process (0: none; run `patientkontrakt audit "
                                 "seal` instead). Entries newer than the last exported checkpoint are unproven.")
    audit_checkpoint_file: Path | None = Field(
        default=None, description="File every new checkpoint is appended to: somewhere the database's "
                                  "administrators cannot write (`audit verify` checks the log against its last).")
    audit_accept_broken_chain: bool = Field(
        default=False, description="Migration 0005 only: migrate an access log whose hash chain (0002-0004) is "
                                   "broken, once someone has looked at why.")

    # -- subscriptions and their delivery (docs/api.md, "Subscriptions"; docs/security.md) --------
    subscription_allowed_hosts: str = Field(
        default="", description="Comma-separated host names or addresses a Subscription may deliver to although "
                                "they are not public (or over http): e.g. 127.0.0.1 for the demo. Default: "
                                "https to public addresses only.")
    subscription_max_failures: int = Field(
        default=10, ge=1, description="Consecutive failed deliveries after which a Subscription's status is error.")
    subscription_timeout: float = Field(
        default=10.0, gt=0, description="Seconds one delivery (connect, send, answer) may take.")
    subscription_backoff: float = Field(
        default=2.0, gt=0, description="Seconds before the first retry; doubled per failure, with jitter.")
    subscription_backoff_max: float = Field(
        default=600.0, gt=0, description="Longest wait between two attempts of one Subscription.")
    worker_lease: float = Field(
        default=60.0, gt=0, description="Seconds a worker holds a Subscription it delivers; another worker takes "
                                        "it over once the lease runs out (a worker that died).")
    worker_poll_interval: float = Field(
        default=0.5, gt=0, description="Seconds an idle worker waits before looking for due notifications.")
    worker_status_interval: float = Field(
        default=60.0, ge=0, description="Seconds between the worker's delivery-status log lines (0: none).")
    worker_heartbeat_interval: float = Field(
        default=10.0, gt=0, description="Seconds between the worker's heartbeats in the database (/readyz).")

    # -- observability (docs/operations.md, "Observability") -------------------------------------
    ready_worker: bool = Field(
        default=True, description="/readyz requires a delivery worker's heartbeat younger than "
                                  "PK_READY_WORKER_MAX_AGE (false: a deployment without notifications).")
    ready_worker_max_age: float = Field(
        default=60.0, gt=0, description="Seconds after which the newest worker heartbeat is stale (/readyz 503).")
    metrics_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token a scraper must send to GET /metrics; empty: /metrics is off (404).")
    ready_timeout: float = Field(
        default=2.0, gt=0, description="Seconds each /readyz check may take before it counts as failed.")

    @property
    def subscription_allowed(self) -> frozenset[str]:
        from patientkontrakt.notify.endpoints import allowed_hosts

        return allowed_hosts(self.subscription_allowed_hosts)

    @property
    def audit_log_origin(self) -> str:
        if self.audit_origin:
            return self.audit_origin
        parsed = urlsplit(self.base_url)
        return f"{parsed.netloc}{parsed.path.rstrip('/')}/audit"

    @property
    def previous_audit_keys(self) -> list[Path]:
        return [Path(p.strip()) for p in self.audit_keys_previous.split(",") if p.strip()]

    @property
    def fhir_base(self) -> str:
        return self.base_url.rstrip("/") + "/fhir"

    @property
    def previous_keys(self) -> list[Path]:
        return [Path(p.strip()) for p in self.signing_keys_previous.split(",") if p.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
