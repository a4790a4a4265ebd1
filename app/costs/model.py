"""A model's training cost, phase by phase: the V3 report's table, from measured usage."""

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import Select, String, func, literal, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.core.units import hours, usd_from_micro
from app.costs.query import FIGURES, IDLE, UNATTRIBUTED, atom_prices, in_period
from app.costs.schemas import ModelCost, PhaseCost, RateUsed
from app.costs.service import add_into, figures_of, rollup_filters, sums_of
from app.jobs.phases import phase_order
from app.models import Cluster, HourlyUsage, Job

SHARE_PLACES = Decimal("1e-6")


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
        add_into(by_phase.setdefault(name, dict.fromkeys(FIGURES, None)), sums_of(row))
        peaks[name] = max(peaks.get(name, 0), int(row.phase_peak))
        overall_peak = max(overall_peak, int(row.overall_peak))
        used.add((row.gpu_model, int(row.rate), bool(row.is_default)))
    if not by_phase:
        raise NotFound(f"no usage recorded for model '{model}' in this period")
    spans = _spans(session, model=model, cluster=cluster)
    total: dict[str, int | None] = dict.fromkeys(FIGURES, None)
    for figures in by_phase.values():
        add_into(total, figures)

    def phase_cost(name: str, figures: dict[str, int | None], peak: int) -> PhaseCost:
        first, last = spans.get(name, (None, None)) if name != "total" else _overall(spans)
        return PhaseCost(
            phase=name,
            share=_share(figures, total),
            first_usage=max(first, start) if first and start else first,
            last_usage=min(last, end) if last and end else last,
            peak_gpus=hours(peak),
            **figures_of(figures),
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
        .where(*in_period(start, end), *rollup_filters({"cluster": cluster}, True))
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
