"""Billing lines: priced usage per charge period, job, GPU model and price, live or booked.

Open months are read live from the hourly rollup. Closed months are read from the lines
booked when they closed. Differences found since, in closed months, are corrections: they
are billed in the first open month, each pointing at the hour it corrects.

A line's figures are exact, in `PARTS` of an hour, kWh or USD (`app.core.units`), and are
rounded where they are shown. Closed months book each hourly line in billionths (rounded
half up, the `*_nano` properties), and are read back exactly as booked.
"""

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, Text, cast, func, literal_column, select
from sqlalchemy.orm import Session

from app.core.calendar import month_of
from app.core.sums import exact_sum
from app.core.units import PARTS_PER_MJ, PARTS_PER_US, booked_nano
from app.costs.query import (
    in_period,
    joined,
    label,
    price_columns,
    priced_usage,
    prices_for,
)
from app.models import Cluster, HourlyUsage, Job, Period, PeriodLine
from app.pricing.atom_prices import DEFAULT
from app.totals.levels import FIGURES as SUMMED

FIGURES = ("gpu_parts", "busy_parts", "kwh_parts", "cost_parts", "energy_cost_parts")
# The same figures as closed months book them, in billionths (columns of `PeriodLine`).
BOOKED = ("gpu_nano_hours", "busy_nano_hours", "energy_nano_kwh", "cost_nano", "energy_cost_nano")
# What makes two lines the same charge, apart from when: a re-labelled job or a restated
# price is a different line, so a correction shows what moved from where to where.
KEY = ("cluster", "job_id", "model", "phase", "team", "user", "labels", "gpu_model", "rate",
       "default_rate")  # fmt: skip
# A job's own labels (`PUT /v1/jobs`) as the text of their JSON object, "{}" for none (and for
# idle capacity). Inline constant: PostgreSQL matches GROUP BY expressions by their text.
LABELS_TEXT = func.coalesce(cast(Job.labels, Text), literal_column("'{}'", Text))


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
    labels: str  # the job's labels, a JSON object's text
    gpu_model: str
    rate: int  # micro-USD per GPU-hour
    default_rate: bool
    gpu_parts: int
    busy_parts: int
    kwh_parts: int
    cost_parts: int
    energy_cost_parts: int | None

    @property
    def gpu_nano_hours(self) -> int:
        return booked_nano(self.gpu_parts)

    @property
    def busy_nano_hours(self) -> int:
        return booked_nano(self.busy_parts)

    @property
    def energy_nano_kwh(self) -> int:
        return booked_nano(self.kwh_parts)

    @property
    def cost_nano(self) -> int:
        return booked_nano(self.cost_parts)

    @property
    def energy_cost_nano(self) -> int | None:
        parts = self.energy_cost_parts
        return None if parts is None else booked_nano(parts)


def charge_of(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value if len(value) > 7 else value + "-01").replace(tzinfo=UTC)


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
    # Core execution: the ORM's per-row bookkeeping would double the cost of a big export.
    rows = session.connection().execute(query.execution_options(yield_per=2000))
    if granularity == "hour":  # one atom a row: one price, one line
        for row in rows:
            yield _live_line(row)
        return
    # Rows are per energy price too: a line is its rows until the key changes.
    line: Line | None = None
    for row in rows:
        new = _live_line(row)
        if line is not None and _summed_key(new) == _summed_key(line):
            line = plus(line, new)
            continue
        if line is not None:
            yield line
        line = new
    if line is not None:
        yield line


def _summed_key(line: Line) -> tuple[Any, ...]:
    return (line.charge_start, line.cluster, line.job_id, line.gpu_model, line.rate,
            line.default_rate)  # fmt: skip


def _live_line(row: Any) -> Line:
    """A line from a row: its keys, rate, default, energy rate, then the summed integers."""
    rate, energy_rate = int(row[10]), row[12]
    gpu_us, busy_us, energy_mj = int(row[13]), int(row[14]), int(row[15])
    return Line(
        charge_of(row[0]), "usage", row[1], row[2], row[3], row[4], row[5], row[6], row[7],
        row[8], row[9], rate, row[11] == DEFAULT, gpu_us * PARTS_PER_US,
        busy_us * PARTS_PER_US, energy_mj * PARTS_PER_MJ, gpu_us * rate,
        None if energy_rate is None else energy_mj * int(energy_rate),
    )  # fmt: skip


def plus(line: Line, other: Line) -> Line:
    """Two lines of one key as one (the first's keys): their figures added exactly."""
    sums: dict[str, Any] = {
        name: None if a is None and b is None else (a or 0) + (b or 0)
        for name, a, b in ((n, getattr(line, n), getattr(other, n)) for n in FIGURES)
    }
    return replace(line, **sums)


def _hourly_atoms(
    session: Session, *, start: datetime, end: datetime, default_micro_usd: int
) -> Select[Any]:
    # Atoms are already one per job (or idle cluster), GPU model and hour: nothing to sum.
    prices = prices_for(session, default_micro_usd=default_micro_usd)
    job = HourlyUsage.job_id
    columns: list[Any] = [
        HourlyUsage.hour,
        Cluster.name,
        Job.scheduler_job_id,
        Job.name,
        *(label(name, job) for name in ("model", "phase", "team", "user")),
        LABELS_TEXT,
        HourlyUsage.gpu_model,
        prices.rate,
        prices.source,
        prices.energy_rate,
        *(getattr(HourlyUsage, name) for name in SUMMED),
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
        prices_for(session, default_micro_usd=default_micro_usd),
        start=start,
        end=end,
        where=[],
        by={"charge": granularity},
    ).subquery("priced")
    p = priced.c
    labels = [label(name, p.job_id) for name in ("model", "phase", "team", "user")]
    keys = [
        p.charge,
        Cluster.name,
        Job.scheduler_job_id,
        Job.name,
        *labels,
        LABELS_TEXT,
        p.gpu_model,
        *price_columns(priced),
    ]
    query: Select[Any] = (
        joined(priced)
        .add_columns(*keys, *(exact_sum(p[name]) for name in SUMMED))
        .group_by(*keys)
        .order_by(
            p.charge,
            Cluster.name,
            Job.scheduler_job_id.nulls_first(),
            p.gpu_model,
            p.rate,
            p.source,
        )
    )
    return query


def months_with_lines(
    session: Session, *, start: datetime, end: datetime, also: str | None
) -> tuple[str, str] | None:
    """The first and the last month from `start` to `end` with usage or booked lines (or the
    month `also`), or None: an export visits those and the months between, never the empty
    years around them."""
    live = session.execute(
        select(func.min(HourlyUsage.hour), func.max(HourlyUsage.hour)).where(*in_period(start, end))
    ).one()
    last = month_of(end - timedelta(hours=1))  # `end` is a whole hour, exclusive
    booked = session.execute(
        select(func.min(PeriodLine.billing_month), func.max(PeriodLine.billing_month)).where(
            PeriodLine.billing_month >= month_of(start), PeriodLine.billing_month <= last
        )
    ).one()
    months = [month_of(charge_of(hour)) for hour in live if hour is not None]
    months += [month for month in (*booked, also) if month is not None]
    return (min(months), max(months)) if months else None


def closed_months(session: Session) -> list[str]:
    return list(session.execute(select(Period.month).order_by(Period.month)).scalars())
