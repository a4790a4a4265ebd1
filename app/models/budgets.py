"""Budgets: a limit on what a team, model or cluster may spend, per month or over a range.

A budget is in USD or in GPU-hours, kept as millionths (micro-USD, micro-GPU-hours) like
every other amount. A monthly budget applies to each UTC month in turn; a range budget to
the hours from `starts_at` up to `ends_at`. The database refuses a budget whose period and
bounds disagree, an empty range, and a limit that is not positive.
"""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime

SCOPES = ("team", "model", "cluster")
PERIODS = ("month", "range")
UNITS = ("usd", "gpu_hours")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Budget(Base):
    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint(_one_of("scope", SCOPES), name="scope"),
        CheckConstraint(_one_of("period", PERIODS), name="period"),
        CheckConstraint(_one_of("unit", UNITS), name="unit"),
        CheckConstraint(
            "(period = 'month' AND starts_at IS NULL AND ends_at IS NULL)"
            " OR (period = 'range' AND starts_at IS NOT NULL AND ends_at IS NOT NULL"
            " AND starts_at < ends_at)",
            name="period_bounds",
        ),
        CheckConstraint("amount_micro > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    scope_value: Mapped[str] = mapped_column(String(128))
    period: Mapped[str] = mapped_column(String(8))
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unit: Mapped[str] = mapped_column(String(16))
    amount_micro: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(128))
