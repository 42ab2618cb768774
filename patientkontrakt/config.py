"""Configuration from ``PK_*`` environment variables (design §4)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
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
    max_body_bytes: int = Field(default=10 * 1024 * 1024, description="Largest accepted request body.")
    default_page_size: int = 20
    max_page_size: int = 1000
    db_pool_size: int = 20

    @property
    def fhir_base(self) -> str:
        return self.base_url.rstrip("/") + "/fhir"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
