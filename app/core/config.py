"""Settings read from `GPUCOST_*` environment variables and an optional `.env` file."""

from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.core.timestamps import utc_instant


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUCOST_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./gpucost.db"
    db_pool_size: int = Field(default=10, ge=1)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)

    # Ingest limits: each one is checked and named in the error that enforces it.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # How long a request's body may take to arrive, before the request takes a database slot.
    body_read_seconds: float = Field(default=30.0, gt=0)
    # Request bodies one server process holds at once (at least one of the largest).
    body_buffer_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    max_batch_reports: int = Field(default=1000, ge=1)
    max_gpus_per_report: int = Field(default=1024, ge=1)
    max_report_interval_seconds: int = Field(default=3600, ge=1)
    max_future_skew_seconds: int = Field(default=300, ge=0)
    # Physical bounds (see app.reports._checks): a report may not start before this date, nor
    # carry more energy per GPU than its interval at this power.
    earliest_report_start: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_gpu_power_watts: int = Field(default=2000, ge=1, le=100_000)
    # How far a report may overlap time already stored for one of its GPUs (clock steps),
    # at most: never more than a sixtieth of its own interval (see app.reports._occupancy).
    occupancy_tolerance_seconds: Decimal = Field(default=Decimal("1"), ge=0, le=60)
    # At most one transaction of single reports per process this often: under load, a report
    # waits at most this long for others to join it (see app.reports._group_commit); one sender's
    # reports alone, or reports at a trickle, never wait.
    ingest_gather_seconds: float = Field(default=0.1, ge=0, le=1)

    default_rate_usd: Decimal = Field(default=Decimal("2.00"), ge=0)

    # Raw per-report usage older than this is folded into per-GPU-hour records and deleted
    # by `gpucost db prune` (the rollup, which every figure comes from, is kept).
    raw_retention_days: int = Field(default=62, ge=1)

    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Who bills whom, as the FOCUS export names them.
    billing_account_id: str = Field(default="gpucost", min_length=1, max_length=128)
    billing_account_name: str = Field(default="GPU cluster", min_length=1, max_length=256)
    provider_name: str = Field(default="gpucost", min_length=1, max_length=256)
    publisher_name: str = Field(default="gpucost", min_length=1, max_length=256)
    invoice_issuer_name: str = Field(default="gpucost", min_length=1, max_length=256)
    service_name: str = Field(default="GPU Compute", min_length=1, max_length=256)

    # /metrics reads accounting figures from the database at most this often; a scrape
    # finding an older snapshot (up to metrics_max_stale_seconds) is answered from it
    # while a fresh one is read in the background. 0 reads on every scrape.
    metrics_cache_seconds: float = Field(default=5.0, ge=0)
    metrics_max_stale_seconds: float = Field(default=120.0, ge=0)
    # A node (and its GPUs) or a job that reported within this window counts as reporting.
    metrics_reporting_window_seconds: int = Field(default=300, ge=1)
    # When set, /metrics answers only `Authorization: Bearer <this>` (Prometheus'
    # `authorization.credentials_file`); unset, it answers anyone who can reach it.
    metrics_token: SecretStr | None = Field(default=None, min_length=16)

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `GPUCOST_METRICS_TOKEN=` (as compose leaves an unset variable): no token.
        return None if value == "" else value

    @field_validator("earliest_report_start")
    @classmethod
    def _earliest_in_utc(cls, value: datetime) -> datetime:
        return utc_instant(value)

    @field_validator("database_url")
    @classmethod
    def _use_psycopg3(cls, url: str) -> str:
        # A bare postgresql:// URL would make SQLAlchemy look for psycopg2, which is not installed.
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                url = "postgresql+psycopg://" + url.removeprefix(prefix)
        try:
            parsed = make_url(url)
        except ArgumentError:
            return url  # not a URL at all: said when it is used (app.cli.common.database)
        if parsed.drivername not in SUPPORTED_DATABASES:
            raise ValueError(
                f"{parsed.drivername!r} is not supported: use sqlite:///PATH (embedded)"
                " or postgresql://USER@HOST/DATABASE (through psycopg 3)"
            )
        if parsed.password == PLACEHOLDER_SECRET:
            raise ValueError(
                f"the password is {PLACEHOLDER_SECRET!r}, the placeholder of deploy/env.example:"
                " choose your own (with docker compose: POSTGRES_PASSWORD in .env)"
            )
        return url


# Backends and the drivers installed with gpucost.
SUPPORTED_DATABASES = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")
# What deploy/env.example ships for every password; a service started with it is refused.
PLACEHOLDER_SECRET = "change-me"


@lru_cache
def get_settings() -> Settings:
    return Settings()
