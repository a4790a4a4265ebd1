"""Collector reports, the raw per-GPU usage they carry, and the hourly rollup kept at ingest.

Quantities are integers in small units (microseconds, millijoules) so that sums are exact
on every backend; the API turns them back into seconds and joules as decimals.
"""

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from app.core.sums import integers_only
from app.models.base import Base, BigIntPK, UTCDateTime


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("node_id", "seq"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload_sha256: Mapped[str] = mapped_column(String(64))
    entries: Mapped[int] = mapped_column(Integer)


# Raw usage: a row per GPU entry of every collector report, stored by COPY on the hottest
# insert path (app.reports.service). A core table: no key of its own, as nothing reads a row
# by one and every index is paid for on each row stored (migration 0016).
USAGE = Table(
    "usage",
    Base.metadata,
    # No foreign keys: see migration 0007. Only ingest writes these ids, each one read or
    # created in the same transaction; GPUs and jobs are never deleted.
    Column("report_id", BigIntPK, nullable=False),
    Column("gpu_id", Integer, nullable=False),
    Column("job_id", Integer),
    Column("period_start", UTCDateTime, nullable=False),
    Column("gpu_us", BigInteger, nullable=False),
    Column("busy_us", BigInteger, nullable=False),
    Column("util_pct", Float, nullable=False),
    Column("energy_mj", BigInteger, nullable=False),
    Column("mem_peak_bytes", BigInteger, nullable=False),
    # A job's rows over a range of period_start (app.retention.gpu_hours): PostgreSQL ANDs
    # the bitmaps of this index and the next.
    Index("ix_usage_job_id", "job_id"),
    # A B-tree, not a BRIN: besides the prune's range deletes (app.retention._fold), it
    # answers where the raw usage left starts (a BRIN index cannot give a minimum) and
    # whether a report has rows (`delete_rowless_reports`).
    Index("ix_usage_period_start", "period_start"),
)


# When each GPU was counted: spans of reports' time per GPU (and MIG device; see
# app.reports._occupancy), each GPU's never overlapping from `guard_start` to `period_end`.
# PostgreSQL enforces that with an exclusion constraint, SQLite with triggers (migration
# 0009); ingest looks first, to answer a 409 per report. A core table: no key of its own.
GPU_OCCUPANCY = Table(
    "gpu_occupancy",
    Base.metadata,
    Column("gpu_id", Integer, nullable=False),
    Column("report_id", BigInteger, nullable=False),
    Column("period_start", UTCDateTime, nullable=False),
    Column("period_end", UTCDateTime, nullable=False),
    # The start the constraint reads: `period_start` plus the overlap tolerated.
    Column("guard_start", UTCDateTime, nullable=False),
    Index("ix_gpu_occupancy_gpu_id_period_end", "gpu_id", "period_end"),
)


class _Sums:
    """What each level of the rollup holds: a job's (or idle capacity's, job_id null) sums
    on one cluster and GPU model over one UTC period, whose start each level names."""

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        # Sums past 64 bits refused on SQLite too (see migration 0014).
        return tuple(integers_only("gpu_us", "busy_us", "energy_mj"))

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    gpu_model: Mapped[str] = mapped_column(String(128))
    gpu_us: Mapped[int] = mapped_column(BigInteger)
    busy_us: Mapped[int] = mapped_column(BigInteger)
    energy_mj: Mapped[int] = mapped_column(BigInteger)


class HourlyUsage(_Sums, Base):
    """Usage per job (or idle capacity), GPU model and UTC hour: what ingest adds to."""

    __tablename__ = "usage_hourly"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class DailyUsage(_Sums, Base):
    """The hourly rollup summed per UTC day (app.totals)."""

    __tablename__ = "usage_daily"

    day: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class MonthlyUsage(_Sums, Base):
    """The hourly rollup summed per UTC month (app.totals)."""

    __tablename__ = "usage_monthly"

    month: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ModelHourlyUsage(Base):
    """GPU-time per model and phase, as the jobs are labelled ('' for none), cluster and UTC
    hour: what a model's busiest hour is read from (app.totals)."""

    __tablename__ = "usage_model_hourly"
    __table_args__ = (
        Index(
            # By hour after the model: a model's busiest hour sums its hours in index order.
            "uq_usage_model_hourly_model_hour_phase_cluster_id",
            "model",
            "hour",
            "phase",
            "cluster_id",
            unique=True,
            postgresql_include=["gpu_us"],
        ),
        *integers_only("gpu_us"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id"))
    model: Mapped[str] = mapped_column(String(128))
    phase: Mapped[str] = mapped_column(String(64))
    hour: Mapped[datetime] = mapped_column(UTCDateTime)
    gpu_us: Mapped[int] = mapped_column(BigInteger)


def _unique_keys(level: type[HourlyUsage | DailyUsage | MonthlyUsage], unit: str) -> None:
    # NULLs never collide in a unique index, so job rows and idle rows each get their own.
    table = cast(Table, level.__table__)
    start = table.c[unit]
    job, idle = table.c.job_id.is_not(None), table.c.job_id.is_(None)
    Index(
        f"uq_{table.name}_job_{unit}",
        table.c.job_id,
        table.c.gpu_model,
        start,
        unique=True,
        # Covering on PostgreSQL: a model's or team's cost reads only this index.
        postgresql_include=["cluster_id", "gpu_us", "busy_us", "energy_mj"],
        postgresql_where=job,
        sqlite_where=job,
    )
    Index(
        f"uq_{table.name}_idle_{unit}",
        table.c.cluster_id,
        table.c.gpu_model,
        start,
        unique=True,
        postgresql_where=idle,
        sqlite_where=idle,
    )


_unique_keys(HourlyUsage, "hour")
_unique_keys(DailyUsage, "day")
_unique_keys(MonthlyUsage, "month")


# Raw usage past its retention, folded per GPU, job (null: idle) and UTC hour: which job
# held which GPU when, how busy, how much energy (app.retention._fold). A core table: no key
# of its own, as it is kept for ever and only ever looked up by GPU or by job.
GPU_HOURS = Table(
    "usage_gpu_hourly",
    Base.metadata,
    Column("gpu_id", Integer, nullable=False),
    Column("job_id", Integer),
    Column("hour", UTCDateTime, nullable=False),
    Column("gpu_us", BigInteger, nullable=False),
    Column("busy_us", BigInteger, nullable=False),
    Column("energy_mj", BigInteger, nullable=False),
)
# A job's GPUs hour by hour, and a GPU's idle hours: one row each.
Index(
    "uq_usage_gpu_hourly_job",
    GPU_HOURS.c.job_id,
    GPU_HOURS.c.gpu_id,
    GPU_HOURS.c.hour,
    unique=True,
    postgresql_where=GPU_HOURS.c.job_id.is_not(None),
    sqlite_where=GPU_HOURS.c.job_id.is_not(None),
)
Index(
    "uq_usage_gpu_hourly_idle",
    GPU_HOURS.c.gpu_id,
    GPU_HOURS.c.hour,
    unique=True,
    postgresql_where=GPU_HOURS.c.job_id.is_(None),
    sqlite_where=GPU_HOURS.c.job_id.is_(None),
)
# Who held a GPU when.
Index("ix_usage_gpu_hourly_gpu_id_hour", GPU_HOURS.c.gpu_id, GPU_HOURS.c.hour)
