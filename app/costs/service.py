"""Cost roll-ups: any grouping of the priced hourly atoms, and a model's per-phase table."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Subquery, select
from sqlalchemy.orm import Session

from app.core.units import from_nano, seconds, usd_from_micro
from app.costs.query import (
    FIGURES,
    LABELS,
    in_period,
    joined,
    label,
    label_is,
    period,
    priced_usage,
    resum,
)
from app.costs.schemas import CostReport, CostRow, Figures
from app.jobs.phases import canonical_phase
from app.models import Cluster, HourlyUsage, Job

SHARE_PLACES = Decimal("1e-6")


def _key_columns(group_by: list[str], priced: Subquery) -> dict[str, Any]:
    """The stage-two columns each group key reads (days and months come from stage one)."""
    columns: dict[str, Any] = {}
    for key in group_by:
        if key in LABELS:
            columns[key] = label(key, priced.c.job_id)
        elif key == "job":
            # A scheduler's job id is unique within its cluster only.
            columns["cluster"] = Cluster.name
            columns["job"] = Job.scheduler_job_id
        elif key == "cluster":
            columns["cluster"] = Cluster.name
        elif key == "gpu_model":
            columns["gpu_model"] = priced.c.gpu_model
        else:
            columns[key] = priced.c[key]
    return columns


def _period_keys(session: Session, group_by: list[str]) -> dict[str, Any]:
    return {key: period(session, key) for key in group_by if key in ("day", "month")}


def rollup_filters(filters: dict[str, str | None], include_idle: bool) -> list[ColumnElement[bool]]:
    """Conditions on the rollup itself; label filters go through the jobs' indexes."""
    conditions = []
    for name, value in filters.items():
        if value is None:
            continue
        if name in LABELS:
            conditions.append(label_is(name, canonical_phase(value) if name == "phase" else value))
        elif name == "cluster":
            conditions.append(
                HourlyUsage.cluster_id.in_(select(Cluster.id).where(Cluster.name == value))
            )
        elif name == "gpu_model":
            conditions.append(HourlyUsage.gpu_model == value)
        elif name == "job_id":
            conditions.append(
                HourlyUsage.job_id.in_(select(Job.id).where(Job.scheduler_job_id == value))
            )
    if not include_idle:
        conditions.append(HourlyUsage.job_id.is_not(None))
    return conditions


def figures_of(sums: dict[str, int | None]) -> dict[str, Any]:
    atoms, defaulted = sums["atoms"] or 0, sums["defaulted"] or 0
    sources = (["card"] if defaulted < atoms else []) + (["default"] if defaulted else [])
    energy_cost = sums["energy_cost_nano"]
    return {
        "gpu_seconds": seconds(sums["gpu_us"] or 0),
        "gpu_hours": from_nano(sums["gpu_nano_hours"] or 0),
        "busy_gpu_hours": from_nano(sums["busy_nano_hours"] or 0),
        "energy_kwh": from_nano(sums["energy_nano_kwh"] or 0),
        "cost_usd": from_nano(sums["cost_nano"] or 0),
        "energy_cost_usd": None if energy_cost is None else from_nano(energy_cost),
        "rate_sources": sources,
    }


def sums_of(row: Any) -> dict[str, int | None]:
    # PostgreSQL sums bigints into numerics; either way the values are whole numbers.
    return {
        name: None if getattr(row, name) is None else int(getattr(row, name)) for name in FIGURES
    }


def add_into(total: dict[str, int | None], part: dict[str, int | None]) -> None:
    for name, value in part.items():
        if value is not None:
            total[name] = (total.get(name) or 0) + value


def cost_report(
    session: Session,
    *,
    start: datetime | None,
    end: datetime | None,
    group_by: list[str],
    filters: dict[str, str | None],
    include_idle: bool,
    default_micro_usd: int,
) -> CostReport:
    """Usage and cost grouped by the keys asked for, with the total of the rows."""
    priced = priced_usage(
        session,
        default_micro_usd=default_micro_usd,
        where=[*in_period(start, end), *rollup_filters(filters, include_idle)],
        by=_period_keys(session, group_by),
    ).subquery("priced")
    keys = _key_columns(group_by, priced)
    query = (
        joined(priced)
        .add_columns(
            *(column.label(f"key_{name}") for name, column in keys.items()), *resum(priced)
        )
        .group_by(*keys.values())
        .order_by(*(column.nulls_first() for column in keys.values()))
    )
    rows, total = [], dict.fromkeys(FIGURES, None)
    for row in session.execute(query):
        figures = sums_of(row)
        add_into(total, figures)
        rows.append(CostRow(**{n: getattr(row, f"key_{n}") for n in keys}, **figures_of(figures)))
    return CostReport(
        start=start,
        end=end,
        group_by=group_by,
        default_usd_per_gpu_hour=usd_from_micro(default_micro_usd),
        rows=rows,
        total=Figures(**figures_of(total)),
    )
