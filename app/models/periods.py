"""Closed billing months and the lines booked in them.

Closing a month copies its priced usage, hour by hour, into period lines, together with
the corrections for earlier closed months found by then. A closed month is read from its
lines alone, so nothing that happens later changes what was booked.
"""

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntPK, UTCDateTime


class Period(Base):
    __tablename__ = "periods"

    # A UTC month, `2025-01`.
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_by: Mapped[str] = mapped_column(String(128))


class PeriodLine(Base):
    """One hour of one job's (or idle capacity's) usage at one price, as booked."""

    __tablename__ = "period_lines"
    __table_args__ = (Index("ix_period_lines_month_kind", "billing_month", "kind"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    billing_month: Mapped[str] = mapped_column(String(7))
    # "usage" for the month's own hours, "correction" for a difference found in an
    # earlier closed month (whose hour `charge_hour` is).
    kind: Mapped[str] = mapped_column(String(16))
    charge_hour: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    cluster: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[str | None] = mapped_column(String(128))
    job_name: Mapped[str | None] = mapped_column(String(256))
    model: Mapped[str] = mapped_column(String(128))
    phase: Mapped[str] = mapped_column(String(128))
    team: Mapped[str] = mapped_column(String(128))
    user_name: Mapped[str] = mapped_column(String(128))
    # The job's labels when booked, the text of a JSON object ("{}" for none).
    labels: Mapped[str] = mapped_column(Text, server_default="{}")
    gpu_model: Mapped[str] = mapped_column(String(128))
    micro_usd_per_gpu_hour: Mapped[int] = mapped_column(BigInteger)
    default_rate: Mapped[bool] = mapped_column(Boolean)
    gpu_nano_hours: Mapped[int] = mapped_column(BigInteger)
    busy_nano_hours: Mapped[int] = mapped_column(BigInteger)
    energy_nano_kwh: Mapped[int] = mapped_column(BigInteger)
    cost_nano: Mapped[int] = mapped_column(BigInteger)
    energy_cost_nano: Mapped[int | None] = mapped_column(BigInteger)
