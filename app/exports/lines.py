"""Billing lines: priced usage per charge period, job, GPU model and price, live or booked.

Open months are read live from the hourly rollup. Closed months are read from the lines
booked when they closed. Differences found since, in closed months, are corrections: they
are billed in the first open month, each pointing at the hour it corrects.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.costs.query import atom_prices, in_period, joined, label, period, priced_usage
from app.models import Cluster, HourlyUsage, Job, Period, PeriodLine

GRANULARITIES = ("hour", "day", "month")
FIGURES = ("gpu_nano_hours", "busy_nano_hours", "energy_nano_kwh", "cost_nano", "energy_cost_nano")
# What makes two lines the same charge, apart from when: a re-labelled job or a restated
# price is a different line, so a correction shows what moved from where to where.
KEY = ("cluster", "job_id", "model", "phase", "team", "user", "gpu_model", "rate", "default_rate")


@dataclass(frozen=True, slots=True)
class Line:
    charge_start: datetime
    kind: str  # "usage" or "correction"
    cluster: str
    job_id: str | None
    job_name: str | None
    model: str
    phase: str
    team: str
    user: str
    gpu_model: str
    rate: int  # micro-USD per GPU-hour
    default_rate: bool
    gpu_nano_hours: int
    busy_nano_hours: int
    energy_nano_kwh: int
    cost_nano: int
    energy_cost_nano: int | None


def month_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def month_start(month: str) -> datetime:
    year, number = (int(part) for part in month.split("-"))
    return datetime(year, number, 1, tzinfo=UTC)


def next_month(month: str) -> str:
    start = month_start(month)
    return f"{start.year + start.month // 12:04d}-{start.month % 12 + 1:02d}"


def _charge_start(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value if len(value) > 7 else value + "-01").replace(tzinfo=UTC)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def live_lines(
    session: Session, *, start: datetime, end: datetime, granularity: str, default_micro_usd: int
) -> Iterator[Line]:
    """Current usage with current labels and prices, charge periods in [start, end)."""
    if granularity == "hour":
        query = _hourly_atoms(session, start=start, end=end, default_micro_usd=default_micro_usd)
    else:
        query = _summed_atoms(
            session,
            start=start,
            end=end,
            granularity=granularity,
            default_micro_usd=default_micro_usd,
        )
    row: Any
    # Core execution: the ORM's per-row bookkeeping would double the cost of a big export.
    for row in session.connection().execute(query.execution_options(yield_per=2000)):
        yield Line(
            _charge_start(row[0]), "usage", row[1], row[2], row[3], row[4], row[5], row[6],
            row[7], row[8], int(row[9]), bool(row[10]), int(row[11]), int(row[12]),
            int(row[13]), int(row[14]), _int(row[15]),
        )  # fmt: skip


def _hourly_atoms(
    session: Session, *, start: datetime, end: datetime, default_micro_usd: int
) -> Select[Any]:
    # Atoms are already one per job (or idle cluster), GPU model and hour: nothing to sum.
    prices = atom_prices(session, default_micro_usd=default_micro_usd)
    job = HourlyUsage.job_id
    columns: list[Any] = [
        HourlyUsage.hour,
        Cluster.name,
        Job.scheduler_job_id,
        Job.name,
        *(label(name, job) for name in ("model", "phase", "team", "user")),
        HourlyUsage.gpu_model,
        prices.rate,
        prices.defaulted,
        *prices.figures.values(),
    ]
    query: Select[Any] = (
        select(*columns)
        .join(Cluster, Cluster.id == HourlyUsage.cluster_id)
        .outerjoin(Job, Job.id == job)
        .where(*in_period(start, end))
        .order_by(
            HourlyUsage.hour,
            Cluster.name,
            Job.scheduler_job_id.nulls_first(),
            HourlyUsage.gpu_model,
        )
    )
    return query


def _summed_atoms(
    session: Session, *, start: datetime, end: datetime, granularity: str, default_micro_usd: int
) -> Select[Any]:
    priced = priced_usage(
        session,
        default_micro_usd=default_micro_usd,
        where=in_period(start, end),
        by={"charge": period(session, granularity)},
        by_rate=True,
    ).subquery("priced")
    p = priced.c
    labels = [label(name, p.job_id) for name in ("model", "phase", "team", "user")]
    keys = [
        p.charge,
        Cluster.name,
        Job.scheduler_job_id,
        Job.name,
        *labels,
        p.gpu_model,
        p.rate,
        p.is_default,
    ]
    query: Select[Any] = (
        joined(priced)
        .add_columns(*keys, *(func.sum(p[name]) for name in FIGURES))
        .group_by(*keys)
        .order_by(p.charge, Cluster.name, Job.scheduler_job_id.nulls_first(), p.gpu_model, p.rate)
    )
    return query


def booked_lines(
    session: Session, *, month: str, kind: str, start: datetime, end: datetime, granularity: str
) -> Iterator[Line]:
    """Lines booked in a closed month, charge hours in [start, end), summed per period."""
    line = PeriodLine
    charge = (
        line.charge_hour
        if granularity == "hour"
        else period(session, granularity, line.charge_hour)
    )
    keys = [
        charge, line.cluster, line.job_id, line.job_name, line.model, line.phase, line.team,
        line.user_name, line.gpu_model, line.micro_usd_per_gpu_hour, line.default_rate,
    ]  # fmt: skip
    query = (
        select(*keys, *(func.sum(getattr(line, name)) for name in FIGURES))
        .where(
            line.billing_month == month,
            line.kind == kind,
            line.charge_hour >= start,
            line.charge_hour < end,
        )
        .group_by(*keys)
        .order_by(
            charge,
            line.cluster,
            line.job_id.nulls_first(),
            line.gpu_model,
            line.micro_usd_per_gpu_hour,
        )
        .execution_options(yield_per=2000)
    )
    row: Any
    for row in session.connection().execute(query):
        yield Line(
            _charge_start(row[0]), kind, row[1], row[2], row[3], row[4], row[5], row[6], row[7],
            row[8], int(row[9]), bool(row[10]), int(row[11]), int(row[12]), int(row[13]),
            int(row[14]), _int(row[15]),
        )  # fmt: skip


def closed_months(session: Session) -> list[str]:
    return list(session.execute(select(Period.month).order_by(Period.month)).scalars())
