"""Cost roll-ups: any grouping of the priced hourly atoms, and a model's per-phase table."""

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, String, Subquery, func, literal, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.core.units import from_nano, hours, seconds, usd_from_micro
from app.costs.query import (
    FIGURES,
    IDLE,
    LABELS,
    UNATTRIBUTED,
    atom_prices,
    in_period,
    joined,
    label,
    label_is,
    period,
    priced_usage,
    resum,
)
from app.costs.schemas import CostReport, CostRow, Figures, ModelCost, PhaseCost, RateUsed
from app.jobs.phases import canonical_phase, phase_order
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


def _filters(filters: dict[str, str | None], include_idle: bool) -> list[ColumnElement[bool]]:
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


def _figures(sums: dict[str, int | None]) -> dict[str, Any]:
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


def _sums(row: Any) -> dict[str, int | None]:
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
    priced = priced_usage(
        session,
        default_micro_usd=default_micro_usd,
        where=[*in_period(start, end), *_filters(filters, include_idle)],
        by=_period_keys(session, group_by),
    )
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
        figures = _sums(row)
        _add(total, figures)
        rows.append(CostRow(**{n: getattr(row, f"key_{n}") for n in keys}, **_figures(figures)))
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
    by_phase: dict[str, dict[str, int | None]] = {}
    peaks: dict[str, int] = {}
    overall_peak = 0
    used: set[tuple[str, int, bool]] = set()
    for row in session.connection().execute(
        _model_query(
            session, model=model, start=start, end=end, cluster=cluster, default=default_micro_usd
        )
    ):
        # A job without a phase, or idle capacity, has no phase of its own to group by.
        name = row.phase if row.phase is not None else (IDLE if model == IDLE else UNATTRIBUTED)
        _add(by_phase.setdefault(name, dict.fromkeys(FIGURES, None)), _sums(row))
        peaks[name] = max(peaks.get(name, 0), int(row.phase_peak))
        overall_peak = max(overall_peak, int(row.overall_peak))
        used.add((row.gpu_model, int(row.rate), bool(row.is_default)))
    if not by_phase:
        raise NotFound(f"no usage recorded for model '{model}' in this period")
    spans = _spans(session, model=model, cluster=cluster)
    total: dict[str, int | None] = dict.fromkeys(FIGURES, None)
    for figures in by_phase.values():
        _add(total, figures)

    def phase_cost(name: str, figures: dict[str, int | None], peak: int) -> PhaseCost:
        first, last = spans.get(name, (None, None)) if name != "total" else _overall(spans)
        return PhaseCost(
            phase=name,
            share=_share(figures, total),
            first_usage=max(first, start) if first and start else first,
            last_usage=min(last, end) if last and end else last,
            peak_gpus=hours(peak),
            **_figures(figures),
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
        rates=[
            RateUsed(
                gpu_model=m, usd_per_gpu_hour=usd_from_micro(r), source="default" if d else "card"
            )
            for m, r, d in sorted(used)
        ],
    )


def _model_query(
    session: Session,
    *,
    model: str,
    start: datetime | None,
    end: datetime | None,
    cluster: str | None,
    default: int,
) -> Select[Any]:
    """One pass over a model's atoms: summed per phase, hour, GPU model and cluster (each
    such group has one price), then per phase and price, with the busiest hour of each
    phase and of the model. Joins jobs on the raw columns, which the database groups by
    far faster than by the label expressions."""
    prices = atom_prices(session, default_micro_usd=default)
    atoms = HourlyUsage
    # Grouping sorts by the phase: byte order is all it needs, and far cheaper than the
    # locale's collation on PostgreSQL.
    postgres = session.get_bind().dialect.name == "postgresql"
    if model == IDLE:
        phase: Any = literal(None, String)
        base = select().select_from(atoms).where(atoms.job_id.is_(None))
    else:
        phase = Job.phase.collate("C") if postgres else Job.phase
        owned = Job.model.is_(None) if model == UNATTRIBUTED else Job.model == model
        base = select().select_from(atoms).join(Job, Job.id == atoms.job_id).where(owned)
    keys = [atoms.hour, atoms.cluster_id, atoms.gpu_model]
    hourly = (
        base.add_columns(
            phase.label("phase"),
            *keys,
            # One price per group: it depends on the GPU model, the cluster and the hour only.
            prices.rate.label("rate"),
            prices.defaulted.label("is_default"),
            func.sum(atoms.gpu_us).label("gpu_us"),
            *(func.sum(column).label(name) for name, column in prices.figures.items()),
            func.sum(prices.defaulted).label("defaulted"),
            func.count().label("atoms"),
        )
        .where(*in_period(start, end), *_filters({"cluster": cluster}, True))
        # Sorted by hour, then phase: the texts are compared only within an hour, and both
        # windows below read the groups in this order without sorting them again.
        .group_by(atoms.hour, phase, atoms.cluster_id, atoms.gpu_model)
        .subquery("hourly")
    )
    h = hourly.c
    windowed = select(
        hourly,
        func.sum(h.gpu_us).over(partition_by=(h.hour, h.phase)).label("phase_hour_us"),
        func.sum(h.gpu_us).over(partition_by=h.hour).label("hour_us"),
    ).subquery("windowed")
    w = windowed.c
    query: Select[Any] = select(
        w.phase,
        w.gpu_model,
        w.rate,
        w.is_default,
        *(func.sum(w[name]).label(name) for name in FIGURES),
        func.max(w.phase_hour_us).label("phase_peak"),
        func.max(w.hour_us).label("overall_peak"),
    ).group_by(w.phase, w.gpu_model, w.rate, w.is_default)
    return query


def _share(part: dict[str, int | None], whole: dict[str, int | None]) -> Decimal:
    for name in ("cost_nano", "gpu_us"):
        if whole[name]:
            return (Decimal(part[name] or 0) / Decimal(whole[name] or 1)).quantize(
                SHARE_PLACES, ROUND_HALF_EVEN
            )
    return Decimal(0)


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
