"""Jobs: the scheduler's unit of work, and the labels that attribute its usage."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("cluster_id", "scheduler_job_id"),
        CheckConstraint("tokens >= 0", name="tokens_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id"))
    scheduler_job_id: Mapped[str] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128), index=True)
    phase: Mapped[str | None] = mapped_column(String(64))
    team: Mapped[str | None] = mapped_column(String(128), index=True)
    user_name: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(String(256))
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Tokens the job processed (its whole run's), as sent with its labels; null when unknown.
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    # Span of the usage reported for this job; null until its first report arrives.
    first_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
