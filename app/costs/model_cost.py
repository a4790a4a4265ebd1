"""A model's training cost, phase by phase: the V3 report's table, from measured usage."""

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    case,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.core.labels import IDLE, UNATTRIBUTED, phase_order
from app.core.sql import per_row
from app.core.sums import exact_sum
from app.core.units import hours, rounded, usd_from_micro
from app.costs._efficiency import Counted, counted_by_phase, efficiency
from app.costs.figures import Exact
from app.costs.query import (
    built_once,
    in_period,
    price_columns,
    priced_usage,
    prices_for,
    resum,
)
from app.costs.schemas import ModelCost, PhaseCost, RateUsed
from app.costs.service import rollup_filters
from app.models import Cluster, HourlyUsage, Job
from app.pricing.atom_prices import SOURCES, AtomPrices
from app.totals.levels import MODEL_HOURS, over
from app.totals.store import labels_of

if TYPE_CHECKING:
    from app.scenarios.prices import ScenarioPrices

SHARE_PLACES = 6
# Each phase is a column of the peaks query: a model with more phases is asked in parts.
PHASES_PER_PEAKS_QUERY = 16


def model_cost(
    session: Session,
    *,
    model: str,
    start: datetime | None,
    end: datetime | None,
    cluster: str | None,
    default_micro_usd: int,
    scenario: "ScenarioPrices | None" = None,
) -> ModelCost:
    """A model's cost phase by phase, in training order, then the total, at the books'
    prices or a `scenario`'s."""
    filters = rollup_filters({"cluster": cluster}, True)
    where = [*in_period(start, end), *filters]
    connection = session.connection()
    by_phase: dict[str, Exact] = {}
    names: dict[str | None, str] = {}  # each phase as stored, and as shown
    used: set[tuple[str, int, int]] = set()
    prices = prices_for(session, default_micro_usd=default_micro_usd, scenario=scenario)
    figures_query = _figures_query(
        prices, model=model, start=start, end=end, cluster=cluster, dialect=connection.dialect.name
    )
    for row in connection.execute(figures_query):
        name = names.setdefault(row.phase, _phase_name(row.phase, model))
        by_phase.setdefault(name, Exact()).add_priced(row)
        used.add((row.gpu_model, int(row.rate), int(row.source)))
    if not by_phase:
        raise NotFound(f"no usage recorded for model '{model}' in this period")
    peaks, overall_peak = _peaks(connection, model=model, where=where, names=names)
    spans = _spans(session, model=model, cluster=cluster)
    total = Exact()
    for figures in by_phase.values():
        total.add(figures)
    counted, total_counted = (
        ({}, None)  # idle capacity has no jobs, so no tokens
        if model == IDLE
        else counted_by_phase(
            connection,
            owned=_owned(model),
            where=filters,
            start=start,
            end=end,
            shown=lambda phase: _phase_name(phase, model),
        )
    )

    def phase_cost(name: str, figures: Exact, peak: int, tokens: Counted | None) -> PhaseCost:
        first, last = spans.get(name, (None, None)) if name != "total" else _overall(spans)
        return PhaseCost(
            phase=name,
            share=_share(figures, total),
            first_usage=max(first, start) if first and start else first,
            last_usage=min(last, end) if last and end else last,
            peak_gpus=hours(peak),
            **figures.shown(),
            **efficiency(figures, tokens),
        )

    return ModelCost(
        model=model,
        start=start,
        end=end,
        scenario=None if scenario is None else scenario.name,
        phases=[
            phase_cost(name, by_phase[name], peaks[name], counted.get(name))
            for name in sorted(by_phase, key=phase_order)
        ],
        total=phase_cost("total", total, overall_peak, total_counted),
        rates=[
            RateUsed(gpu_model=m, usd_per_gpu_hour=usd_from_micro(r), source=SOURCES[s])
            for m, r, s in sorted(used)
        ],
    )


def _phase_name(phase: str | None, model: str) -> str:
    # A job without a phase, or idle capacity, has no phase of its own to group by.
    if phase is not None:
        return phase
    return IDLE if model == IDLE else UNATTRIBUTED


def _owned(model: str) -> ColumnElement[bool]:
    """The model's jobs (the unattributed model's are the jobs without one)."""
    return Job.model.is_(None) if model == UNATTRIBUTED else Job.model == model


@built_once
def _figures_query(
    prices: AtomPrices,
    *,
    model: str,
    start: datetime | None,
    end: datetime | None,
    cluster: str | None,
    dialect: str,
) -> Select[Any]:
    """The model's figures per phase, GPU model and price: priced and summed per job first,
    as every cost roll-up is, then per phase."""
    where = rollup_filters({"cluster": cluster}, True)
    if model == IDLE:
        idle = priced_usage(
            prices, start=start, end=end, where=[*where, HourlyUsage.job_id.is_(None)]
        ).subquery("priced")
        keys: list[Any] = [idle.c.gpu_model, *price_columns(idle)]
        return select(literal(None, String).label("phase"), *keys, *resum(idle)).group_by(*keys)

    # Each job's atoms grouped on their own where the database can (a lateral subquery per
    # job, PostgreSQL): a few hundred small groupings that the planner hashes. Grouped all
    # at once by the price expressions, a model's atoms are estimated at one group per atom,
    # and sorted instead, which takes half as long again on a year of a model's usage.
    def job_atoms(atoms: Sequence[ColumnElement[bool]]) -> Select[Any]:
        return priced_usage(prices, start=start, end=end, where=[*atoms, *where])

    priced, on = per_row(
        dialect,
        job_atoms,
        name="priced",
        each_row=[HourlyUsage.job_id == Job.id],
        all_rows=[HourlyUsage.job_id.in_(select(Job.id).where(_owned(model)))],
        on=lambda priced: priced.c.job_id == Job.id,
    )
    keys = [Job.phase, priced.c.gpu_model, *price_columns(priced)]
    return (
        select(*keys, *resum(priced))
        .select_from(Job)
        .join(priced, on)
        .where(_owned(model))
        .group_by(*keys)
    )


def _peaks(
    connection: Connection,
    *,
    model: str,
    where: list[ColumnElement[bool]],
    names: dict[str | None, str],
) -> tuple[dict[str, int], int]:
    """The GPU-time of each phase's busiest hour (by the name it is shown under), and of
    the model's."""
    stored = list(names)
    # One phase: its hours are the model's, and so is its busiest hour, asked once (the
    # sums per hour, one column fewer, are most of the query's time).
    alone = len(stored) == 1
    peaks: dict[str, int] = {}
    overall_peak = 0
    for first in range(0, len(stored), PHASES_PER_PEAKS_QUERY):
        phases = stored[first : first + PHASES_PER_PEAKS_QUERY]
        query = _peaks_query(model=model, where=where, phases=[] if alone else phases)
        overall, *busiest = connection.execute(query).one()
        overall_peak = int(overall)
        for phase, peak in zip(phases, [overall] if alone else busiest, strict=True):
            peaks[names[phase]] = max(peaks.get(names[phase], 0), int(peak))
    return peaks, overall_peak


def _peaks_query(
    *, model: str, where: list[ColumnElement[bool]], phases: list[str | None]
) -> Select[Any]:
    """The GPU-time of the model's busiest hour, then of each phase's: summed per hour in all
    and per phase, one column a phase (a model has a handful), so that one grouping of the
    hours by hour answers them all. Grouped by hour and phase, they would need a second
    grouping by hour, and a sort, for the model's busiest hour. A model's hours are read
    from the rollup's model level; idle capacity's from the hourly level."""
    if model == IDLE:  # idle capacity is one phase of its own
        atoms = HourlyUsage.__table__
        base = select().select_from(atoms).where(atoms.c.job_id.is_(None))
        in_phase: list[Any] = [atoms.c.gpu_us for _ in phases]
        conditions = where
    else:
        atoms = MODEL_HOURS
        named = labels_of(None if model == UNATTRIBUTED else model, None)[0]
        base = select().select_from(atoms).where(atoms.c.model == named)
        in_phase = [
            case((atoms.c.phase == labels_of(None, phase)[1], atoms.c.gpu_us)) for phase in phases
        ]
        conditions = [over(condition, atoms) for condition in where]
    hourly = (
        base.add_columns(
            exact_sum(atoms.c.gpu_us).label("model_us"),
            *(exact_sum(column).label(f"phase_us_{i}") for i, column in enumerate(in_phase)),
        )
        .where(*conditions)
        .group_by(atoms.c.hour)
        .subquery("hourly")
    )
    return select(*(func.max(column) for column in hourly.c))


def _share(part: Exact, whole: Exact) -> Decimal:
    for part_of, whole_of in ((part.cost, whole.cost), (part.gpu_us, whole.gpu_us)):
        if whole_of:
            return rounded(part_of, whole_of, SHARE_PLACES)
    return Decimal(0)


def _spans(session: Session, *, model: str, cluster: str | None) -> dict[str, tuple[Any, Any]]:
    """First and last reported instant of the model's jobs, per phase."""
    phase = func.coalesce(Job.phase, UNATTRIBUTED, type_=String)
    query = (
        select(phase.label("phase"), func.min(Job.first_seen), func.max(Job.last_seen))
        .join(Cluster, Cluster.id == Job.cluster_id)
        .where(_owned(model))
        .group_by(phase)
    )
    if cluster is not None:
        query = query.where(Cluster.name == cluster)
    return {row[0]: (row[1], row[2]) for row in session.execute(query)}


def _overall(spans: dict[str, tuple[Any, Any]]) -> tuple[Any, Any]:
    firsts = [f for f, _ in spans.values() if f is not None]
    lasts = [last for _, last in spans.values() if last is not None]
    return (min(firsts) if firsts else None, max(lasts) if lasts else None)
