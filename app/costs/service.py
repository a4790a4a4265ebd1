"""Cost roll-ups: any grouping of the priced hourly atoms, and a model's per-phase table."""

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import ColumnElement, Row, String, func, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.core.units import hours, kwh, seconds, usd_from_micro, usd_from_nano
from app.costs.query import LABELS, in_period, label, period, priced_atoms
from app.costs.schemas import CostReport, CostRow, Figures, ModelCost, PhaseCost, RateUsed
from app.jobs.phases import canonical_phase, phase_order
from app.models import Cluster, HourlyUsage, Job

FIGURES = ("gpu_us", "busy_us", "energy_mj", "cost_nano", "energy_cost_nano", "defaulted", "atoms")
SHARE_PLACES = Decimal("1e-6")


def _key_columns(session: Session, group_by: list[str]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for key in group_by:
        if key in LABELS:
            columns[key] = label(key)
        elif key == "job":
            # A scheduler's job id is unique within its cluster only.
            columns["cluster"] = Cluster.name
            columns["job"] = Job.scheduler_job_id
        elif key == "cluster":
            columns["cluster"] = Cluster.name
        elif key == "gpu_model":
            columns["gpu_model"] = HourlyUsage.gpu_model
        else:
            columns[key] = period(session, key)
    return columns


def _filters(filters: dict[str, str | None], include_idle: bool) -> list[ColumnElement[bool]]:
    conditions = []
    for name, value in filters.items():
        if value is None:
            continue
        if name in LABELS:
            conditions.append(label(name) == (canonical_phase(value) if name == "phase" else value))
        elif name == "cluster":
            conditions.append(Cluster.name == value)
        elif name == "gpu_model":
            conditions.append(HourlyUsage.gpu_model == value)
        elif name == "job_id":
            conditions.append(Job.scheduler_job_id == value)
    if not include_idle:
        conditions.append(HourlyUsage.job_id.is_not(None))
    return conditions


def _figures(sums: dict[str, int | None]) -> dict[str, Any]:
    atoms, defaulted = sums["atoms"] or 0, sums["defaulted"] or 0
    sources = (["card"] if defaulted < atoms else []) + (["default"] if defaulted else [])
    energy_cost = sums["energy_cost_nano"]
    return {
        "gpu_seconds": seconds(sums["gpu_us"] or 0),
        "gpu_hours": hours(sums["gpu_us"] or 0),
        "busy_gpu_hours": hours(sums["busy_us"] or 0),
        "energy_kwh": kwh(sums["energy_mj"] or 0),
        "cost_usd": usd_from_nano(sums["cost_nano"] or 0),
        "energy_cost_usd": None if energy_cost is None else usd_from_nano(energy_cost),
        "rate_sources": sources,
    }


def _sums(row: Row[Any]) -> dict[str, int | None]:
    # PostgreSQL sums bigints into numerics; either way the values are whole numbers.
    return {
        name: None if getattr(row, name) is None else int(getattr(row, name)) for name in FIGURES
    }


def _add(total: dict[str, int | None], part: dict[str, int | None]) -> None:
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
    atoms, figures = priced_atoms(default_micro_usd)
    keys = _key_columns(session, group_by)
    query = (
        atoms.add_columns(*(col.label(f"key_{n}") for n, col in keys.items()))
        .add_columns(*(figures[name].label(name) for name in FIGURES))
        .where(*in_period(start, end), *_filters(filters, include_idle))
        .group_by(*keys.values())
        .order_by(*keys.values())
    )
    rows, total = [], dict.fromkeys(FIGURES, None)
    for row in session.execute(query):
        sums = _sums(row)
        _add(total, sums)
        rows.append(CostRow(**{n: getattr(row, f"key_{n}") for n in keys}, **_figures(sums)))
    return CostReport(
        start=start,
        end=end,
        group_by=group_by,
        default_usd_per_gpu_hour=usd_from_micro(default_micro_usd),
        rows=rows,
        total=Figures(**_figures(total)),
    )


def model_cost(
    session: Session,
    *,
    model: str,
    start: datetime | None,
    end: datetime | None,
    cluster: str | None,
    default_micro_usd: int,
) -> ModelCost:
    """A model's cost phase by phase, in training order, then the total."""
    where = [label("model") == model, *in_period(start, end), *_filters({"cluster": cluster}, True)]
    atoms, figures = priced_atoms(default_micro_usd)
    phase = label("phase")
    by_phase = {
        row.phase: _sums(row)
        for row in session.execute(
            atoms.add_columns(phase.label("phase"), *(figures[n].label(n) for n in FIGURES))
            .where(*where)
            .group_by(phase)
        )
    }
    if not by_phase:
        raise NotFound(f"no usage recorded for model '{model}' in this period")
    peaks, overall_peak = _peaks(session, where)
    spans = _spans(session, model=model, cluster=cluster)
    total: dict[str, int | None] = dict.fromkeys(FIGURES, None)
    for sums in by_phase.values():
        _add(total, sums)

    def phase_cost(name: str, sums: dict[str, int | None], peak: int) -> PhaseCost:
        first, last = spans.get(name, (None, None)) if name != "total" else _overall(spans)
        return PhaseCost(
            phase=name,
            share=_share(sums, total),
            first_usage=max(first, start) if first and start else first,
            last_usage=min(last, end) if last and end else last,
            peak_gpus=hours(peak),
            **_figures(sums),
        )

    return ModelCost(
        model=model,
        start=start,
        end=end,
        phases=[
            phase_cost(name, by_phase[name], peaks[name])
            for name in sorted(by_phase, key=phase_order)
        ],
        total=phase_cost("total", total, overall_peak),
        rates=_rates_used(session, where, default_micro_usd),
    )


def _share(part: dict[str, int | None], whole: dict[str, int | None]) -> Decimal:
    for name in ("cost_nano", "gpu_us"):
        if whole[name]:
            return (Decimal(part[name] or 0) / Decimal(whole[name] or 1)).quantize(
                SHARE_PLACES, ROUND_HALF_EVEN
            )
    return Decimal(0)


def _peaks(session: Session, where: list[ColumnElement[bool]]) -> tuple[dict[str, int], int]:
    """Per phase and overall, the most GPU-time used in any one hour (in microseconds)."""
    base = (
        select(
            label("phase").label("phase"),
            HourlyUsage.hour,
            func.sum(HourlyUsage.gpu_us).label("us"),
        )
        .select_from(HourlyUsage)
        .join(Cluster, Cluster.id == HourlyUsage.cluster_id)
        .outerjoin(Job, Job.id == HourlyUsage.job_id)
        .where(*where)
    )
    per_phase = base.group_by(label("phase"), HourlyUsage.hour).subquery()
    peaks = {
        row.phase: int(row.peak)
        for row in session.execute(
            select(per_phase.c.phase, func.max(per_phase.c.us).label("peak")).group_by(
                per_phase.c.phase
            )
        )
    }
    per_hour = (
        select(func.sum(HourlyUsage.gpu_us).label("us"))
        .select_from(HourlyUsage)
        .join(Cluster, Cluster.id == HourlyUsage.cluster_id)
        .outerjoin(Job, Job.id == HourlyUsage.job_id)
        .where(*where)
        .group_by(HourlyUsage.hour)
        .subquery()
    )
    overall = session.execute(select(func.max(per_hour.c.us))).scalar_one()
    return peaks, int(overall or 0)


def _spans(session: Session, *, model: str, cluster: str | None) -> dict[str, tuple[Any, Any]]:
    """First and last reported instant of the model's jobs, per phase."""
    phase = func.coalesce(Job.phase, "(unattributed)", type_=String)
    query = (
        select(phase.label("phase"), func.min(Job.first_seen), func.max(Job.last_seen))
        .join(Cluster, Cluster.id == Job.cluster_id)
        .where(Job.model == model)
        .group_by(phase)
    )
    if cluster is not None:
        query = query.where(Cluster.name == cluster)
    return {row[0]: (row[1], row[2]) for row in session.execute(query)}


def _overall(spans: dict[str, tuple[Any, Any]]) -> tuple[Any, Any]:
    firsts = [f for f, _ in spans.values() if f is not None]
    lasts = [last for _, last in spans.values() if last is not None]
    return (min(firsts) if firsts else None, max(lasts) if lasts else None)


def _rates_used(
    session: Session, where: list[ColumnElement[bool]], default_micro_usd: int
) -> list[RateUsed]:
    atoms, figures = priced_atoms(default_micro_usd)
    query = (
        atoms.add_columns(
            HourlyUsage.gpu_model, figures["rate"].label("rate"), figures["is_default"].label("d")
        )
        .where(*where)
        .distinct()
    )
    used = {(row.gpu_model, int(row.rate), bool(row.d)) for row in session.execute(query)}
    return [
        RateUsed(gpu_model=m, usd_per_gpu_hour=usd_from_micro(r), source="default" if d else "card")
        for m, r, d in sorted(used)
    ]
